"""Periodic progress counts for long runs (rule: long jobs show progress).

The sinks of one worker process share these counters; the point sink logs a line every
``progress_interval_s``. Beam metrics carry the same counts to the runner for the final summary.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("embedstream.pipelines.progress")


class Progress:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.points = 0
        self.dead_letters = 0
        self._last = time.monotonic()
        self._last_done = 0

    def add(self, points: int = 0, dead_letters: int = 0) -> None:
        with self._lock:
            self.points += points
            self.dead_letters += dead_letters

    def report(self, interval_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            done = self.points + self.dead_letters
            if now - self._last < interval_s or done == self._last_done:
                return
            rate = (done - self._last_done) / (now - self._last)
            self._last, self._last_done = now, done
            log.info(
                "ingest progress: %d points stored, %d dead letters (%.0f events/s)",
                self.points,
                self.dead_letters,
                rate,
            )


PROGRESS = Progress()
