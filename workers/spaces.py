"""The migration steps (``pipelines.spaces.migration``) as a user runs them: from the CLI on a store this
process opens, or through ``serve``'s API, where the backfill runs on a thread beside the searches (and, with
``serve --ingest``, beside the ingest) sharing the one open store — zero downtime on the embedded store too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tqdm import tqdm

from embedstream.pipelines.spaces import migration
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import StoreLockedError, VectorStore, open_store
from embedstream.schemas.errors import ConflictError
from embedstream.schemas.settings import Settings

T = TypeVar("T")


@dataclass
class Backfill:
    """A backfill running (or run) on a thread of ``serve``: points filled so far, and how it ended."""

    to: str
    filled: int = 0
    running: bool = True
    error: str | None = None


class BackfillJobs:
    """``serve``'s migrations: ``start`` adds the shadow at once and backfills on a thread; one job per space.
    ``check_idle`` refuses a step on a space whose backfill still runs (the API answers 409)."""

    def __init__(self, store: VectorStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._jobs: dict[str, Backfill] = {}
        self._lock = threading.Lock()

    def job(self, space: str) -> Backfill | None:
        return self._jobs.get(space)

    def check_idle(self, space: str) -> None:
        job = self._jobs.get(space)
        if job is not None and job.running:
            raise BackfillRunningError(
                f"space {space!r} is being backfilled ({job.filled} points so far); wait until GET /spaces says done"
            )

    def start(self, space: str, to: str) -> Backfill:
        with self._lock:
            self.check_idle(space)
            spec = migration.start(self._store, RemakeFrom.of(self._settings), space, to)
            assert spec.shadow is not None
            job = self._jobs[space] = Backfill(spec.shadow.model)
        threading.Thread(target=self._run, args=(space, job), name=f"backfill-{space}", daemon=True).start()
        return job

    def _run(self, space: str, job: Backfill) -> None:
        def advance(count: int) -> None:
            job.filled += count

        try:
            migration.backfill(self._store, RemakeFrom.of(self._settings), space, advance)
        except Exception as exc:  # reported through GET /spaces; a rerun of migrate resumes
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.running = False


class BackfillRunningError(ConflictError):
    """A step asked for on a space whose backfill is still running."""


def run_step(settings: Settings, step: Callable[[VectorStore], T]) -> T:
    """``step`` on the store the settings name, opened here and closed after."""
    try:
        store = open_store(settings.qdrant)
    except StoreLockedError as exc:
        raise StoreLockedError(
            f"{exc}. If `embedstream serve` holds it, go through its API instead, with an admin key: POST "
            "/spaces/SPACE/migrate (/switch, /rollback, /drop-old, /cancel), POST /store/snapshot"
        ) from exc
    try:
        return step(store)
    finally:
        store.close()


def migrate_here(settings: Settings, space: str, to: str, progress: bool = True) -> int:
    """``spaces migrate`` in this process: add the shadow (or resume), backfill with a progress bar."""

    def step(store: VectorStore) -> int:
        spec = migration.start(store, RemakeFrom.of(settings), space, to)
        assert spec.shadow is not None
        left = store.count(having=spec.engine_name, lacking=spec.shadow.vector)
        with tqdm(total=left, desc=f"backfilling {space} with {spec.shadow.model}", disable=not progress) as bar:
            return migration.backfill(store, RemakeFrom.of(settings), space, bar.update)

    return run_step(settings, step)
