"""Why a Kafka client could not connect, in words a user can act on.

kafka-python raises only a timeout when it cannot bootstrap; the cause (credentials the broker refused, a TLS
certificate it could not verify) goes to its connection loggers (``kafka.net``). A handler there keeps the last
cause it saw, so the one-line "no broker" error can name it instead of suggesting that nothing is listening.
The handler is installed on import and records only; whether those log lines are shown is the CLI's choice
(``workers/cli/logs.py``).
"""

from __future__ import annotations

import logging
import re
import threading
import time

# (pattern over kafka-python's log line, what to tell the user; {} = the broker's or the TLS library's words)
CAUSES = (
    (
        re.compile(r"SaslAuthenticationFailedError: (?:SaslAuthenticationFailedError: )?([^\n]*?)(?: \(backoff|$)"),
        "refused the credentials ({}): check kafka.sasl_mechanism, sasl_plain_username and sasl_plain_password",
    ),
    (
        re.compile(r"UnsupportedSaslMechanismError: ([^\n]*?)(?: \(backoff|$)"),
        "does not offer that SASL mechanism ({}): check kafka.sasl_mechanism",
    ),
    (
        re.compile(r"Handshake failed: ([^\n]*?)(?: \(backoff|$)"),
        "failed the TLS handshake ({}): check kafka.security_protocol and kafka.ssl_cafile",
    ),
)


class _LastCause(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._lock = threading.Lock()
        self._last: tuple[float, str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for pattern, words in CAUSES:
            found = pattern.search(message)
            if found:
                with self._lock:
                    self._last = (time.monotonic(), words.format(found.group(1).strip().rstrip(")")))
                return

    def since(self, seconds: float) -> str | None:
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] > seconds:
                return None
            return self._last[1]


_RECORDER = _LastCause()
logging.getLogger("kafka.net").addHandler(_RECORDER)


def recent_cause(within_s: float) -> str | None:
    """The last connection failure kafka-python logged in the past ``within_s`` seconds, as advice; None if none
    (then nothing answered at all)."""
    return _RECORDER.since(within_s)
