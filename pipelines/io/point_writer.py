"""Write a bundle's points into the store: the newest version of each id wins, one refused point costs one point.

Every point an event makes carries the event's version (``schemas.version``: the envelope's ``version`` or the
record's timestamp, ties by origin partition and offset; a replay keeps its original one). The store applies a
write only when it holds no newer version of that id (``VectorStore.upsert_newer``: a conditional upsert decided by
the engine per point), so replays, re-reads, a second reader, partitions added later and kill -9 all converge to
the newest version of each id, whatever order the events arrive in. Within a bundle the buffer keeps the newer of
two points with one id. ``flush`` upserts what is left, makes it durable, then recomputes the views of the videos
the bundle touched (``pipelines.video_views``); the Kafka read commits the bundle's offsets only after the
delivery step has finished.

What can go wrong, and what happens:

* **The store refuses some points of a batch** (a payload it cannot convert): the batch is retried point by
  point; the points it takes land, each one it refuses becomes a ``store_rejected`` dead letter by reference.
* **The store refuses every point** (down, full, read-only — or a batch of one poisonous point, which looks
  the same): ``StoreWriteError`` fails the bundle, so nothing is committed and the runner retries. Its message
  names the first point's record and how to get past it if the store is healthy (``pipeline.skip``).
* **A deletion** (``op: delete`` or a Kafka tombstone) has a version too. It leaves a tombstone at each id it
  owns (a point without vectors, ``modality: tombstone``, never returned by a search, read or the API), so an
  older write arriving later — a replay, another partition's event, a stalled reader — loses to it; it removes
  what belongs to the id (a document's chunks, a video's members and view) when older than itself, and the
  buffered points it covers when older. Tombstones go after ``pipeline.tombstone_retention_s``.
* **A document is one version.** Its chunks carry its version; a chunk older than the document (or tombstone)
  the store or this bundle holds for its id is dropped before it is buffered, so a superseded document writes
  nothing; once a document point is written, chunks of its id older than the version that won are deleted (a
  shorter new version leaves no orphans, a stale writer's chunks go with it).
* **A video's members** are gated the same way by the floor a whole-video delete left (its tombstone, or the
  ``floor`` its next view keeps).
* **A space is migrating to another model** (``embedstream spaces migrate``): each batch is laid out for the
  store's spaces as they are now — both models' vectors, the one missing made from the payload — and written
  again if a migration step landed meanwhile (``pipelines.spaces.dual_write``).
* **A replayed event is older than what the store holds for its id** (``dlq replay`` after a newer version
  landed): it becomes a ``superseded`` dead letter, so the operator who replayed it learns why nothing changed.
* **This reader lost its partition** to another (``fence``, called before every store write): the bundle fails
  before writing; the conditional writes keep even a write that slipped past the check from going backwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from embedstream.pipelines.io.bundle_changes import BundleChanges
from embedstream.pipelines.plan import VideoFusion
from embedstream.pipelines.spaces.dual_write import MigrationWrites
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import StoredPoint, StoreFullError, StoreLockedError, StoreWriteError, VectorStore
from embedstream.pipelines.stores.base import Where
from embedstream.pipelines.video_views import refresh_views
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Deletion
from embedstream.schemas.point import CHUNK_MODALITY, PointRecord, SourceRef, point_id
from embedstream.schemas.version import DELETED_KEY, TOMBSTONE, Version

log = logging.getLogger(__name__)
UNAVAILABLE = (StoreLockedError, StoreFullError, ConnectionError, TimeoutError)


def tombstone(deletion: Deletion, pid: str, version: Version, source: SourceRef) -> PointRecord:
    """The marker a deletion leaves at ``pid``: no vectors, its version, when it was written (for compaction)."""
    payload = {
        "modality": TOMBSTONE,
        "id": deletion.id,
        "deleted": deletion.modality.value if deletion.modality is not None else None,
        DELETED_KEY: int(time.time() * 1000),
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        **version.fields(),
    }
    return PointRecord.model_construct(id=pid, vectors={}, payload=payload, source=source, sparse={})


def head_of(payload: Mapping[str, Any]) -> str | None:
    """The point whose version bounds this member's: a chunk's document, a frame's or segment's video."""
    if payload.get("modality") == CHUNK_MODALITY:
        return point_id("text", str(payload.get("doc_id")))
    video_id = payload.get("video_id")
    return point_id("video", str(video_id)) if video_id is not None and payload.get("modality") != "video" else None


def floor_of(head: StoredPoint | None) -> Version | None:
    """What a stored head says its members must not be older than: a document's own version, a tombstone's, a
    video view's (the version of the last whole-video delete, which the view keeps as its own)."""
    return Version.stored(head.payload) if head is not None else None


def _or_oldest(version: Version | None) -> Version:
    return version or Version(-1, -1)


def _version(point: PointRecord) -> Version:
    """A point's version (one without — written by an older release — counts as the oldest)."""
    return _or_oldest(Version.stored(point.payload))


def _reference(point: PointRecord, reason: Reason, message: str, stage: str) -> DeadLetter:
    """A dead letter pointing at the record the point was read from (a replay reads it there again)."""
    source = point.source
    assert source is not None, "derived points (video views) never reach a dead letter"
    return DeadLetter.reference(
        source.topic, source.partition, source.offset, reason, message, stage, point.payload.get("id")
    )


class PointWriter:
    """Buffers, upserts and flushes points for one bundle at a time; returns the dead letters it made."""

    def __init__(
        self,
        store: VectorStore,
        batch_size: int,
        fusion: VideoFusion | None,
        on_written: Callable[[list[PointRecord]], None],
        remake: RemakeFrom | None = None,
        made_by: Mapping[str, str] | None = None,
        fence: Callable[[set[tuple[str, int]]], None] | None = None,
        changes: BundleChanges | None = None,
    ) -> None:
        """``remake``: where a migrating space's other model loads from and media bytes come back from;
        ``made_by``: space → the model the run writes it with, as fenced (``pipelines.spaces.dual_write``);
        ``fence``: called with the partitions a write comes from before the write, raises when this reader no
        longer owns one (``partition_owner.Fence.check``); ``changes``: told every point written and every id
        removed, for the embeddings topic (``bundle_changes``; None: nothing is tracked)."""
        self._store = store
        self._migrations = MigrationWrites(store, remake, made_by)
        self._batch_size = batch_size
        self._fusion = fusion
        self._on_written = on_written
        self._fence = fence
        self._changes = changes
        self.start()

    def close(self) -> None:
        """Release what the dual writes hold open (their Kafka reader); the store is its owner's to close."""
        self._migrations.close()

    def start(self) -> None:
        self._buffer: dict[str, PointRecord] = {}
        self._touched: set[str] = set()
        self._ended: set[str] = set()
        self._dead: list[DeadLetter] = []
        self._members: dict[str, dict[str, PointRecord]] = {}  # video id → its members written this bundle
        self._previous: dict[str, StoredPoint | None] = {}  # member id → what the store held before the bundle
        self._deletions: list[tuple[Deletion, Version]] = []  # this bundle's, to drop older points they cover
        self._floors: dict[str, Version | None] = {}  # head id → the version its members must reach (see add)
        self._buffered_chunks: dict[str, list[str]] = {}  # document head id → its chunks' ids in the buffer
        self._chunked: set[str] = set()  # documents whose older chunks go at the flush (see _note_chunked)
        self._superseded: set[SourceRef | None] = set()  # events of this bundle found older than the store's
        self._partitions: set[tuple[str, int]] = set()  # where this bundle's events came from (the views' fence)

    def video_ended(self, video_id: str, version: Version) -> None:
        """A ``video_end`` older than the video's last whole-video delete is ignored (it would bring back a
        marker of a deleted video)."""
        floor = self._head_floor(point_id("video", video_id))
        if floor is not None and version < floor:
            return
        self._ended.add(video_id)
        self._touched.add(video_id)

    def delete(self, deletion: Deletion, source: SourceRef, version: Version) -> None:
        """Apply ``deletion`` at ``version`` now: tombstones at the ids it owns, what belongs to them removed when
        older, buffered points it covers dropped when older (see the module's docstring)."""
        self._partitions.add((source.topic, source.partition))
        self._check_fence({(source.topic, source.partition)})
        self._buffer = {
            pid: p for pid, p in self._buffer.items() if not (deletion.covers(p.payload) and _version(p) < version)
        }
        ids, matches = deletion.targets()
        if deletion.whole_video:
            ids = [*ids, point_id("video", deletion.id)]  # the view's id keeps the floor for late members
        self._store.upsert_newer([tombstone(deletion, pid, version, source) for pid in ids])
        if self._changes is not None:
            self._changes.marked(ids, version)
        for match in matches:
            self._delete_older(match, version)
        self._deletions.append((deletion, version))
        for head in ids:  # members read later in this bundle compare with it (uncached heads read the tombstone)
            if head in self._floors:
                self._floors[head] = max(self._floors[head] or version, version)
        if deletion.whole_video:  # its view is rebuilt from the members left (a stale delete leaves them all)
            gone = deletion.id
            self._touched.add(gone)
            self._ended.discard(gone)
            members = self._members.pop(gone, {})
            self._previous = {
                pid: held
                for pid, held in self._previous.items()
                if pid not in members and (held is None or held.payload.get("video_id") != gone)
            }

    def _overtook(self, point: PointRecord, version: Version) -> bool:
        """Does a newer deletion of this bundle cover this point?"""
        return any(v > version and deletion.covers(point.payload) for deletion, v in self._deletions)

    def add(self, point: PointRecord) -> None:
        version = _version(point)
        if point.source in self._superseded or (self._deletions and self._overtook(point, version)):
            return
        head = head_of(point.payload)
        if head is not None and self._below_floor(point, head, version):
            return
        held = self._buffer.get(point.id)
        if held is not None and _version(held) > version:
            self._supersede(point, _version(held), "buffered")  # a newer version of this id came first
            return
        video_id = point.payload.get("video_id")
        if video_id is not None:
            self._touched.add(str(video_id))
        if point.payload.get("modality") == "text":
            self._raise_floor(point.id, version)  # a document's chunks older than it are dropped
        elif head is not None and point.payload.get("modality") == CHUNK_MODALITY:
            self._buffered_chunks.setdefault(head, []).append(point.id)
        self._buffer.pop(point.id, None)  # re-insert at the end: buffer order stays Kafka order
        self._buffer[point.id] = point
        if len(self._buffer) >= self._batch_size:
            self._upsert()

    def _head_floor(self, head: str) -> Version | None:
        """``floor_of`` the stored head, read once a bundle (then raised by what the bundle sees)."""
        if head not in self._floors:
            found = self._store.retrieve([head], tombstones=True)
            self._floors[head] = floor_of(found[0] if found else None)
        return self._floors[head]

    def _below_floor(self, point: PointRecord, head: str, version: Version) -> bool:
        """Is this member older than its head allows (a newer document, a later whole-video delete)? Then it and
        (for a document) its whole event are dropped; a replay also gets its ``superseded`` dead letter."""
        floor = self._head_floor(head)
        if point.payload.get("modality") == CHUNK_MODALITY:
            self._raise_floor(head, version)
            floor = self._floors[head]
        if floor is None or version >= floor:
            return False
        self._supersede(point, floor, "stored")
        return True

    def _supersede(self, point: PointRecord, newer: Version, where: str) -> None:
        """Drop ``point``'s whole event (its other points too: a document is one version); a replayed event
        also becomes a ``superseded`` dead letter, once, so the operator who replayed it learns why."""
        if point.source in self._superseded:
            return
        self._superseded.add(point.source)
        if point.payload.get("doc_id") is not None:  # chunks of it may be stored (an earlier batch, a dead run)
            self._chunked.add(str(point.payload["doc_id"]))
        if "replayed_from" in (point.payload.get("source") or {}):
            message = (
                f"a newer version of {point.payload.get('id')!r} is {where} ({newer}); this replay of "
                f"{point.payload['source']} is {_version(point)} and would overwrite it"
            )
            self._dead.append(_reference(point, Reason.SUPERSEDED, message, "upsert"))

    def _raise_floor(self, head: str, version: Version) -> None:
        """A document's newer version seen in this bundle: its older chunks still buffered go, later ones too."""
        floor = self._floors.get(head)
        if floor is not None and floor >= version:
            return
        self._floors[head] = version
        for pid in self._buffered_chunks.pop(head, []):
            held = self._buffer.get(pid)
            if held is not None and _version(held) < version:
                del self._buffer[pid]
            elif held is not None:
                self._buffered_chunks.setdefault(head, []).append(pid)

    def flush(self) -> tuple[int, list[DeadLetter]]:
        """Make the bundle's points (and touched video views) durable; the views written, and dead letters."""
        self._upsert()
        if self._chunked:
            self._remove_older_chunks(sorted(self._chunked))
        self._store.flush()
        views = self._refresh_videos() if self._touched and self._fusion is not None else 0
        dead, self._dead = self._dead, []
        self._touched, self._ended, self._members, self._previous = set(), set(), {}, {}
        self._deletions, self._floors, self._superseded = [], {}, set()
        self._buffered_chunks, self._chunked, self._partitions = {}, set(), set()
        return views, dead

    def _check_fence(self, partitions: set[tuple[str, int]]) -> None:
        if self._fence is not None and partitions:
            self._fence(partitions)

    def _upsert(self) -> None:
        if not self._buffer:
            return
        points = self._not_superseded(list(self._buffer.values()))
        self._buffer, self._buffered_chunks = {}, {}
        if not points:
            return
        partitions = {(p.source.topic, p.source.partition) for p in points if p.source is not None}
        self._partitions |= partitions
        self._check_fence(partitions)
        self._note_chunked(points)
        members = [p for p in points if p.payload.get("video_id") is not None]
        if members and self._fusion is not None:
            points = self._remember_previous(members, points)
        laid = self._migrations.prepare(points)  # a migrating space gets both models' vectors
        try:
            self._store.upsert_newer(laid)
        except UNAVAILABLE:
            raise  # the store itself, not a point: fail the bundle, commit nothing, let the run be retried
        except Exception as exc:
            log.warning("store refused a batch of %d (%s); retrying point by point", len(points), exc)
            written = {p.id for p in self._one_by_one(laid, exc)}
            points = [p for p in points if p.id in written]
            laid = [p for p in laid if p.id in written]
        if self._migrations.stale():  # a migration step landed while this batch was laid out: write it again
            laid = self._migrations.prepare(points)
            self._store.upsert_newer(laid)
        if self._changes is not None:
            self._changes.wrote(laid)
        for point in points:
            video_id = point.payload.get("video_id")
            if video_id is not None:
                self._members.setdefault(str(video_id), {})[point.id] = point
        self._on_written(points)

    def _note_chunked(self, points: list[PointRecord]) -> None:
        """The documents whose older chunks must go at the flush: those this batch writes chunks of, and those
        whose text this batch writes and that have chunks now or had them in the store (a shorter version)."""
        self._chunked.update(
            str(p.payload.get("doc_id")) for p in points if p.payload.get("modality") == CHUNK_MODALITY
        )
        documents = [p for p in points if p.payload.get("modality") == "text" and p.payload["id"] not in self._chunked]
        self._chunked.update(str(p.payload["id"]) for p in documents if p.payload.get("chunks"))
        unknown = [p.id for p in documents if not p.payload.get("chunks")]
        if unknown:
            self._chunked.update(str(s.payload["id"]) for s in self._store.retrieve(unknown) if s.payload.get("chunks"))

    def _remove_older_chunks(self, docs: list[str]) -> None:
        """Delete each document's chunks older than the version its id holds now (whoever wrote it): a shorter
        new version leaves no chunk of the old one, and a superseded writer's chunks are deleted with it."""
        heads = {s.id: s for s in self._store.retrieve([point_id("text", d) for d in docs], tombstones=True)}
        for doc in docs:
            held = Version.stored((heads.get(point_id("text", doc)) or StoredPoint("", {})).payload)
            if held is not None:
                self._delete_older({"doc_id": doc, "modality": CHUNK_MODALITY}, held)

    def _delete_older(self, where: Where, version: Version) -> None:
        """``store.delete_older``; with ``changes``, the ids it removes are read first (the same rule: older than
        ``version`` or without one) and their removals published before they go (``BundleChanges.removing``)."""
        if self._changes is not None:
            gone = [s.id for s in self._store.scroll(where=where) if _or_oldest(Version.stored(s.payload)) < version]
            self._changes.removing(gone, version)
        self._store.delete_older(where, version)

    def _remember_previous(self, members: list[PointRecord], points: list[PointRecord]) -> list[PointRecord]:
        """What the store holds for these members before this bundle first overwrites them (for view deltas);
        ``points`` less the members the store holds a newer version of (the store would not take them, and the
        view must not count them)."""
        new = [p.id for p in members if p.id not in self._previous]
        if new:
            found = {s.id: s for s in self._store.retrieve(new, with_vectors=True)}
            for pid in new:
                self._previous[pid] = found.get(pid)
        older = set()
        for point in members:
            held = self._previous.get(point.id)
            written = self._members.get(str(point.payload["video_id"]), {}).get(point.id)  # earlier this bundle
            newest = max(
                (Version.stored(p.payload) for p in (held, written) if p is not None), key=_or_oldest, default=None
            )
            if newest is not None and newest > _version(point):
                older.add(point.id)
        return [p for p in points if p.id not in older] if older else points

    def _one_by_one(self, points: list[PointRecord], batch_error: Exception) -> list[PointRecord]:
        written: list[PointRecord] = []
        refused: list[tuple[PointRecord, Exception]] = []
        for point in points:
            try:
                self._store.upsert_newer([point])
                written.append(point)
            except Exception as error:
                refused.append((point, error))
        if not written:
            point, first = refused[0]
            source = point.source
            where = f"{source.topic}:{source.partition}:{source.offset}" if source else point.id
            raise StoreWriteError(
                f"the store took none of {len(points)} points ({type(first).__name__}: {first}). If it is down or "
                f"full, fix it and rerun: nothing was committed. If it is healthy, record {where} (id "
                f"{point.payload.get('id')!r}) may be one it cannot take: rerun with "
                f"EMBEDSTREAM_PIPELINE__SKIP='[\"{where}\"]' to dead-letter it, and replay it later"
            ) from batch_error
        for point, reason in refused:
            message = f"the store refused the point: {type(reason).__name__}: {reason}"
            self._dead.append(_reference(point, Reason.STORE_REJECTED, message, "upsert"))
        return written

    def _not_superseded(self, points: list[PointRecord]) -> list[PointRecord]:
        """Replayed events older than what the store holds for their ids (a newer version, or a newer delete's
        tombstone) are superseded (``_supersede``), all their points dropped. Other older writes need no look-up:
        the store's conditional write leaves the newer version in place."""
        replayed = {p.id for p in points if "replayed_from" in (p.payload.get("source") or {})}
        if not replayed:
            return points
        stored = {s.id: Version.stored(s.payload) for s in self._store.retrieve(sorted(replayed), tombstones=True)}
        for point in points:
            held = stored.get(point.id)
            if point.id in replayed and held is not None and held > _version(point):
                self._supersede(point, held, "stored")
        return [point for point in points if point.source not in self._superseded]

    def _refresh_videos(self) -> int:
        """Update every touched video's view (``video_views.refresh_views``), then make the views durable."""
        if self._fusion is None:
            return 0
        views = refresh_views(self._store, self._touched, self._ended, self._members, self._previous, self._fusion)
        if views:
            self._check_fence(self._partitions)
            self._store.upsert_newer(views)  # a view keeping a delete's version loses to a newer delete
            self._store.flush()
            if self._changes is not None:
                self._changes.wrote(views)
        return len(views)
