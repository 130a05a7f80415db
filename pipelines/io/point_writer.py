"""Write a bundle's points into the store: last write wins by Kafka order, one refused point costs one point.

Points arrive in Kafka order per partition (the ingest chain is one fused stage). A later point with the same
id replaces an earlier one still in the buffer, or is upserted after it. ``flush`` upserts what is left,
makes it durable, then recomputes the views of the videos the bundle touched (``pipelines.video_views``); the Kafka
read commits the bundle's offsets only after the delivery step has finished.

What can go wrong, and what happens:

* **The store refuses some points of a batch** (a payload it cannot convert): the batch is retried point by
  point; the points it takes land, each one it refuses becomes a ``store_rejected`` dead letter by reference.
* **The store refuses every point** (down, full, read-only — or a batch of one poisonous point, which looks
  the same): ``StoreWriteError`` fails the bundle, so nothing is committed and the runner retries. Its message
  names the first point's record and how to get past it if the store is healthy (``pipeline.skip``).
* **A deletion** (``op: delete`` or a tombstone) removes what it covers now — buffered points and stored ones —
  in Kafka order with the points around it: a point of the same partition read *before* it but delivered after
  it (an earlier event still being embedded while the deletion passed through) is dropped, so "create, delete"
  leaves nothing and "delete, create" re-creates, on every replay.
* **A document got shorter** (a long text re-sent with fewer chunks, or short enough now to be one point):
  before its new document point is written, the chunks past its new count are deleted — the count the stored
  document point had, or the chunks this bundle already wrote. A document's older version still in the buffer
  loses its chunks when the newer one arrives. No orphan chunk survives, across batches and replays.
* **A space is migrating to another model** (``embedstream spaces migrate``): each batch is laid out for the
  store's spaces as they are now — both models' vectors, the one missing made from the payload — and written
  again if a migration step landed meanwhile (``pipelines.spaces.dual_write``).
* **A replayed event is older than what the store holds for its id** (``dlq replay`` after a newer version
  landed): it becomes a ``superseded`` dead letter instead of overwriting newer data. Versions compare by
  their origin position (same partition: offsets; otherwise Kafka timestamps); see ``KafkaRecord.origin``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from embedstream.pipelines.plan import VideoFusion
from embedstream.pipelines.spaces.dual_write import MigrationWrites
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import StoredPoint, StoreFullError, StoreLockedError, StoreWriteError, VectorStore
from embedstream.pipelines.video_views import refresh_views
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Deletion
from embedstream.schemas.point import CHUNK_MODALITY, PointRecord, SourceRef, point_id

log = logging.getLogger(__name__)
UNAVAILABLE = (StoreLockedError, StoreFullError, ConnectionError, TimeoutError)


def is_newer(stored: dict[str, Any] | None, incoming: dict[str, Any] | None) -> bool:
    """Is the stored version (``payload["source"]``) strictly newer than the incoming one?"""
    if not stored or not incoming:
        return False
    if (stored.get("topic"), stored.get("partition")) == (incoming.get("topic"), incoming.get("partition")):
        return int(stored.get("offset", -1)) > int(incoming.get("offset", -1))
    stored_ts, incoming_ts = stored.get("ts_ms"), incoming.get("ts_ms")
    return stored_ts is not None and incoming_ts is not None and int(stored_ts) > int(incoming_ts)


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
    ) -> None:
        """``remake``: where a migrating space's other model loads from and media bytes come back from;
        ``made_by``: space → the model the run writes it with, as fenced (``pipelines.spaces.dual_write``)."""
        self._store = store
        self._migrations = MigrationWrites(store, remake, made_by)
        self._batch_size = batch_size
        self._fusion = fusion
        self._on_written = on_written
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
        self._deletions: list[tuple[Deletion, SourceRef]] = []  # this bundle's, to drop points they overtook
        self._buffered_chunks: dict[str, tuple[SourceRef | None, list[str]]] = {}  # doc → its version, chunk ids
        self._chunks_written: dict[str, int] = {}  # doc → chunk indexes this bundle wrote (at most)

    def video_ended(self, video_id: str) -> None:
        self._ended.add(video_id)
        self._touched.add(video_id)

    def delete(self, deletion: Deletion, source: SourceRef) -> None:
        """Remove what ``deletion`` covers, buffered and stored, now (see the module's docstring)."""
        self._buffer = {pid: p for pid, p in self._buffer.items() if not deletion.covers(p.payload)}
        ids, matches = deletion.targets()
        self._store.delete(ids)
        for match in matches:
            self._store.delete([], match)
        self._deletions.append((deletion, source))
        self._buffered_chunks.pop(deletion.id, None)
        self._chunks_written.pop(deletion.id, None)
        if deletion.whole_video:  # its view is gone with it: forget what the bundle knew of the video
            gone = deletion.id
            self._touched.discard(gone)
            self._ended.discard(gone)
            members = self._members.pop(gone, {})
            self._previous = {
                pid: held
                for pid, held in self._previous.items()
                if pid not in members and (held is None or held.payload.get("video_id") != gone)
            }

    def _overtook(self, point: PointRecord) -> bool:
        """Was this point's event read before a deletion of this bundle that covers it (same partition)?"""
        source = point.source
        return source is not None and any(
            (at.topic, at.partition) == (source.topic, source.partition)
            and source.offset < at.offset
            and deletion.covers(point.payload)
            for deletion, at in self._deletions
        )

    def add(self, point: PointRecord) -> None:
        if self._deletions and self._overtook(point):
            return  # deleted by a later event: writing it now would resurrect it
        video_id = point.payload.get("video_id")
        if video_id is not None:
            self._touched.add(str(video_id))
        if point.payload.get("modality") in ("text", CHUNK_MODALITY):
            self._track_document(point)
        self._buffer.pop(point.id, None)  # re-insert at the end: buffer order stays Kafka order
        self._buffer[point.id] = point
        if len(self._buffer) >= self._batch_size:
            self._upsert()

    def _track_document(self, point: PointRecord) -> None:
        """A text or chunk point of another version than the chunks buffered for its id drops those chunks."""
        doc = str(point.payload.get("id"))
        version, chunk_ids = self._buffered_chunks.get(doc, (point.source, []))
        if version != point.source:
            for stale in chunk_ids:
                self._buffer.pop(stale, None)
            version, chunk_ids = point.source, []
        if point.payload.get("modality") == CHUNK_MODALITY:
            chunk_ids.append(point.id)
        self._buffered_chunks[doc] = (version, chunk_ids)

    def flush(self) -> tuple[int, list[DeadLetter]]:
        """Make the bundle's points (and touched video views) durable; the views written, and dead letters."""
        self._upsert()
        self._store.flush()
        views = self._refresh_videos() if self._touched and self._fusion is not None else 0
        dead, self._dead = self._dead, []
        self._touched, self._ended, self._members, self._previous = set(), set(), {}, {}
        self._deletions, self._buffered_chunks, self._chunks_written = [], {}, {}
        return views, dead

    def _upsert(self) -> None:
        if not self._buffer:
            return
        points = self._not_superseded(list(self._buffer.values()))
        self._buffer, self._buffered_chunks = {}, {}
        if not points:
            return
        documents = [p for p in points if p.payload.get("modality") == "text"]
        if documents:
            self._remove_stale_chunks(documents)
        members = [p for p in points if p.payload.get("video_id") is not None]
        if members and self._fusion is not None:
            self._remember_previous(members)
        laid = self._migrations.prepare(points)  # a migrating space gets both models' vectors
        try:
            self._store.upsert(laid)
        except UNAVAILABLE:
            raise  # the store itself, not a point: fail the bundle, commit nothing, let the run be retried
        except Exception as exc:
            log.warning("store refused a batch of %d (%s); retrying point by point", len(points), exc)
            written = {p.id for p in self._one_by_one(laid, exc)}
            points = [p for p in points if p.id in written]
        if self._migrations.stale():  # a migration step landed while this batch was laid out: write it again
            self._store.upsert(self._migrations.prepare(points))
        for point in points:
            video_id = point.payload.get("video_id")
            if video_id is not None:
                self._members.setdefault(str(video_id), {})[point.id] = point
            elif point.payload.get("modality") == CHUNK_MODALITY:
                doc = str(point.payload.get("id"))
                self._chunks_written[doc] = max(self._chunks_written.get(doc, 0), int(point.payload["chunk"]) + 1)
        self._on_written(points)

    def _remove_stale_chunks(self, documents: list[PointRecord]) -> None:
        """Before texts are written over their ids: delete the chunks their previous versions had beyond theirs
        (the stored document point's ``chunks``, and what this bundle wrote)."""
        stored = {s.id: s.payload for s in self._store.retrieve([p.id for p in documents])}
        stale: list[str] = []
        for point in documents:
            doc, keep = str(point.payload["id"]), int(point.payload.get("chunks") or 0)
            before = max(int(stored.get(point.id, {}).get("chunks") or 0), self._chunks_written.get(doc, 0))
            stale += [point_id(CHUNK_MODALITY, doc, index=i) for i in range(keep, before)]
        if stale:
            self._store.delete(stale)

    def _remember_previous(self, members: list[PointRecord]) -> None:
        """What the store holds for these members before this bundle first overwrites them (for view deltas)."""
        new = [p.id for p in members if p.id not in self._previous]
        if not new:
            return
        found = {s.id: s for s in self._store.retrieve(new, with_vectors=True)}
        for pid in new:
            self._previous[pid] = found.get(pid)

    def _one_by_one(self, points: list[PointRecord], batch_error: Exception) -> list[PointRecord]:
        written: list[PointRecord] = []
        refused: list[tuple[PointRecord, Exception]] = []
        for point in points:
            try:
                self._store.upsert([point])
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
        """Replayed events older than what is stored for their ids become ``superseded`` dead letters, one per
        event: all the points of such an event (a document's chunks too) are dropped."""
        replayed = {p.id for p in points if "replayed_from" in (p.payload.get("source") or {})}
        if not replayed:
            return points
        stored = {s.id: s for s in self._store.retrieve(sorted(replayed))}
        superseded: set[SourceRef | None] = set()
        for point in points:
            have = stored.get(point.id)
            if (
                have is not None
                and point.id in replayed
                and point.source not in superseded
                and is_newer(have.payload.get("source"), point.payload["source"])
            ):
                superseded.add(point.source)
                message = (
                    f"a newer version of {point.payload.get('id')!r} is stored (from {have.payload.get('source')}); "
                    f"this replay of {point.payload['source']} would overwrite it"
                )
                self._dead.append(_reference(point, Reason.SUPERSEDED, message, "upsert"))
        return [point for point in points if point.source not in superseded]

    def _refresh_videos(self) -> int:
        """Update every touched video's view (``video_views.refresh_views``), then make the views durable."""
        if self._fusion is None:
            return 0
        views = refresh_views(self._store, self._touched, self._ended, self._members, self._previous, self._fusion)
        if views:
            self._store.upsert(views)
            self._store.flush()
        return len(views)
