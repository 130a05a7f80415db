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

# (pattern over kafka-python's log line, what to tell the user; {} = the broker's or the TLS library's words).
# "SaslHandshake failed" is SASL's own handshake (a mechanism the broker does not offer, or SASL on a listener that
# does not speak it), not TLS's: the TLS pattern must not match inside it.
CAUSES = (
    (
        re.compile(r"SaslAuthenticationFailedError: (?:SaslAuthenticationFailedError: )?([^\n]*?)(?: \(backoff|$)"),
        "refused the credentials ({}): check kafka.sasl_mechanism, sasl_plain_username and sasl_plain_password",
    ),
    (
        re.compile(r"SaslHandshake failed: (\w+)"),
        "refused the SASL handshake ({}): check kafka.sasl_mechanism and kafka.security_protocol",
    ),
    (
        re.compile(r"(?<!Sasl)Handshake failed: ([^\n]*?)(?: \(backoff|$)"),
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
                detail = found.group(1).strip()
                if detail.count(")") > detail.count("("):  # the closing parenthesis of the line's own wrapper
                    detail = detail[: detail.rindex(")")]
                with self._lock:
                    self._last = (time.monotonic(), words.format(detail))
                return

    def since(self, started: float) -> str | None:
        with self._lock:
            if self._last is None or self._last[0] < started:
                return None
            return self._last[1]


_RECORDER = _LastCause()
logging.getLogger("kafka.net").addHandler(_RECORDER)


def cause_since(started: float) -> str | None:
    """The last connection failure kafka-python logged at or after ``started`` (``time.monotonic()`` when the
    failing client began), as advice; None if none (then nothing answered at all). Process-wide: another client
    failing in the same seconds could be named instead, which a client of other settings in the same process
    would have to be doing at the same moment."""
    return _RECORDER.since(started)
