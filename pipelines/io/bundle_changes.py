"""What a bundle changed in the store, point id by point id, as the store holds it once the bundle is durable.

The writer tells this log every point it wrote (as laid out for the store: a migrating space's both vectors) and
every id a delete marked with a tombstone. ``settle`` then reads the versions the store holds for those ids — one
``retrieve`` per bundle — and answers one change per id:

* the point, when the store holds it at the version this bundle wrote (a write the store refused because it
  holds a newer version is left out: whoever wrote the newer one reports it);
* a removal, when the store holds a tombstone for the id or nothing at all.

Points removed outright — a document's chunks that a shorter version or a delete dropped, a video's members —
leave nothing in the store that a retried bundle could find again, so their removals go out *before* the store
deletes them (``removing``: published and acknowledged at once): a crash after the delete has already put them
on the topic, and a crash before it deletes and publishes them again.

So the embeddings topic carries each id's state after the bundle, whatever order the bundle's events came in,
and a bundle retried after a crash reports the same ids at the same versions again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from embedstream.pipelines.stores import VectorStore
from embedstream.schemas.embeddings_wire import EmbeddingRecord
from embedstream.schemas.point import PointRecord
from embedstream.schemas.version import Version, is_tombstone


@dataclass
class BundleChanges:
    """The ids one bundle wrote or removed; ``settle`` once the bundle's writes are durable."""

    collection: str
    publish_now: Callable[[list[EmbeddingRecord]], None]  # sends and waits for the broker's acknowledgement

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget what was logged (a bundle that failed: its retry logs it again)."""
        self._written: dict[str, PointRecord] = {}
        self._removed: dict[str, Version | None] = {}

    def wrote(self, points: Iterable[PointRecord]) -> None:
        """Points written; of two with one id the newer is kept (an older one's conditional write did nothing)."""
        for point in points:
            held = self._written.get(point.id)
            version = Version.stored(point.payload)
            if held is None or version is None or version >= (Version.stored(held.payload) or version):
                self._written[point.id] = point

    def marked(self, ids: Iterable[str], version: Version) -> None:
        """Ids a delete left its tombstone at."""
        for pid in ids:
            held = self._removed.get(pid)
            self._removed[pid] = max(held, version) if held is not None else version

    def removing(self, ids: list[str], version: Version) -> None:
        """Ids the store is about to delete outright: their removals are published and acknowledged now."""
        if ids:
            self.publish_now([EmbeddingRecord(id=pid, version=version, deleted=True) for pid in ids])

    def settle(self, store: VectorStore) -> list[EmbeddingRecord]:
        """One change per id this bundle touched, as the store holds it now (see the module's docstring); the log
        starts empty again."""
        written, removed = self._written, self._removed
        self._written, self._removed = {}, {}
        touched = list(dict.fromkeys([*removed, *written]))
        if not touched:
            return []
        held = {s.id: s.payload for s in store.retrieve(touched, tombstones=True)}
        layout = store.layout()
        changes: list[EmbeddingRecord] = []
        for pid in touched:
            payload = held.get(pid)
            point = written.get(pid)
            if payload is None or is_tombstone(payload):  # every touched id was written or removed here
                version = Version.stored(payload) if payload is not None else removed.get(pid)
                if version is None and point is not None:  # deleted meanwhile by another writer
                    version = Version.stored(point.payload)
                changes.append(EmbeddingRecord(id=pid, version=version, deleted=True))
            elif point is not None and Version.stored(payload) == Version.stored(point.payload):
                vectors = {layout.writes.get(k, k): v for k, v in point.vectors.items()}
                sparse = {
                    layout.writes.get(k, k): (s.indices, s.values)
                    for k, s in point.sparse.items()
                    if k in layout.sparse
                }
                version = Version.stored(point.payload)
                changes.append(EmbeddingRecord(pid, self.collection, vectors, sparse, point.payload, version))
        return changes
