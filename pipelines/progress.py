"""Periodic progress counts for long runs: a line every ``progress_interval_s`` instead of silence.

A run makes one ``Progress`` and shares it with the delivery steps in its process through a ``Handle``
(``pipelines.handles``); a worker in another process counts in its own. Beam metrics carry the same counts
to the runner for the final summary.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("embedstream.pipelines.progress")


class Progress:
    """Points, dead letters and deletions delivered so far, and the rate since the last line; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.points = 0
        self.dead_letters = 0
        self.deletions = 0
        self._last = time.monotonic()
        self._last_done = 0

    def add(self, points: int = 0, dead_letters: int = 0, deletions: int = 0) -> None:
        with self._lock:
            self.points += points
            self.dead_letters += dead_letters
            self.deletions += deletions

    def report(self, interval_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            done = self.points + self.dead_letters + self.deletions
            if now - self._last < interval_s or done == self._last_done:
                return
            rate = (done - self._last_done) / (now - self._last)
            self._last, self._last_done = now, done
            deleted = f", {self.deletions} deletions" if self.deletions else ""
            log.info(
                "ingest progress: %d points stored, %d dead letters%s (%.0f events/s)",
                self.points,
                self.dead_letters,
                deleted,
                rate,
            )
