"""Records sent now and confirmed before a bundle ends: what the dead-letter topic and the embeddings topic share.

``send`` produces an item at once; ``confirm`` flushes the producer and checks every send. What the broker took
is returned. A record refused as too large goes to ``too_large``, which returns a smaller item to send instead
or raises (no retry would pass). Anything else the broker refused (it is down, restarting, the leader moved) is
an outage, not a property of the record: those items are sent again with backoff (1 s, doubling to 30 s), the
bundle waiting, until ``retry_s`` has passed; then ``unavailable`` makes the error that fails the bundle, and
nothing of it is committed. Items are resent in the order they were sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

log = logging.getLogger(__name__)
T = TypeVar("T")
SEND_TIMEOUT_S = 30
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class AckedSends(Generic[T]):
    """Items of one kind (``what``, for the log) sent by ``produce`` and confirmed together."""

    def __init__(
        self,
        flush: Callable[[], None],
        produce: Callable[[T], Any],
        retry_s: float,
        what: str,
        too_large: Callable[[T, KafkaError], T],
        unavailable: Callable[[int, float, KafkaError], Exception],
    ) -> None:
        """``unavailable(count, waited_s, last_error)``: the error raised when ``count`` items are still refused."""
        self._flush, self._produce, self._retry_s, self._what = flush, produce, retry_s, what
        self._too_large, self._unavailable = too_large, unavailable
        self._sends: list[tuple[T, Any]] = []

    def send(self, item: T) -> None:
        self._sends.append((item, self._produce(item)))

    def discard(self) -> None:
        """Forget unconfirmed sends (a failed bundle's: its retry sends them again)."""
        self._sends = []

    def confirm(self) -> list[T]:
        """Wait until the broker has every item sent so far (see the module's docstring); the items it took."""
        taken: list[T] = []
        started, delay = time.monotonic(), RETRY_FIRST_S
        while self._sends:
            self._flush()
            failed: list[tuple[T, KafkaError]] = []
            smaller: list[T] = []
            for item, future in self._sends:
                try:
                    future.get(timeout=SEND_TIMEOUT_S)
                    taken.append(item)
                except TOO_LARGE as exc:
                    smaller.append(self._too_large(item, exc))
                except KafkaError as exc:
                    failed.append((item, exc))
            self._sends = [(item, self._produce(item)) for item in smaller]
            if failed:
                waited = time.monotonic() - started
                error = failed[-1][1]
                if waited + delay > self._retry_s:
                    raise self._unavailable(len(failed), waited, error)
                log.warning(
                    "%d %s were not taken (%s: %s); sending them again in %.0f s",
                    len(failed),
                    self._what,
                    type(error).__name__,
                    error,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._sends += [(item, self._produce(item)) for item, _ in failed]
        return taken
