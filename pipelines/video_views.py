"""A video's own point, kept as a materialized view of its stored frame and audio-segment points (docs/contracts.md).

The view holds the visual mean (image space), the audio mean (audio space), the fused vector (weighted,
normalized concatenation of the two means; a missing half is zeros) and the mean of the frames' text-space
vectors. ``video_end`` marks the video complete (``ended``); a frame arriving after it still updates the view,
and a ``video_end`` that arrives before any member leaves a marker point (no vectors) that keeps ``ended``.
No windows, GroupByKey or timers. The delivery step (``io.point_writer``) calls ``refresh_views`` after a
bundle's members are durable; search reads the views like any point (and fuses queries with the same ``fuse``).

Running sums, not rescans: the view's payload keeps its ``state`` — float64 sums and counts per space, and
each counted member's content hash (``members``: ``video_frame/12`` → sha256 prefix). A bundle's members
update it by delta (``ViewState.apply``): a member already counted with the same content is skipped (a
duplicate or a replay), a changed one has its previous vector subtracted. So a bundle costs what it touched,
not the video's length. Where the previous vector of a changed member is no longer at hand (a crash between
writing the members and writing the view), or the view has no state (written by an older version), the view
is rebuilt from all stored members (``ViewState.of_members``) — the same result, at the old cost. Sums run in
float64: shuffled, duplicated or late events give the same vectors to ~1e-12.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedstream.onnx_models.vectors import fuse
from embedstream.pipelines.plan import FUSED_SPACE, VideoFusion
from embedstream.pipelines.stores import StoredPoint, VectorStore
from embedstream.schemas.point import PointRecord, point_id
from embedstream.schemas.version import Version, is_tombstone

MEMBER_MODALITIES = ("video_frame", "video_audio")


def member_key(payload: Mapping[str, Any]) -> str:
    return f"{payload.get('modality')}/{(payload.get('video') or {}).get('index')}"


def _sha(payload: Mapping[str, Any]) -> str:
    return str(payload.get("content_sha256") or "")[:16]


class StaleViewError(Exception):
    """A delta cannot be applied (a changed member's previous vector is gone): rebuild from the members."""


@dataclass
class ViewState:
    """What a view keeps to be updated by delta (stored in its payload under ``state``)."""

    members: dict[str, str] = field(default_factory=dict)
    sums: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    segments: int = 0
    seconds: float = 0.0
    thumb_index: int | None = None
    thumbnail: str | None = None

    @staticmethod
    def of_payload(payload: Mapping[str, Any]) -> ViewState | None:
        """The state a view point keeps (None for a view written before views kept one)."""
        state = payload.get("state")
        if not isinstance(state, dict):
            return None
        return ViewState(
            members=dict(state.get("members", {})),
            sums={k: list(v) for k, v in state.get("sums", {}).items()},
            counts={k: int(v) for k, v in state.get("counts", {}).items()},
            frames=int(state.get("frames", 0)),
            segments=int(state.get("segments", 0)),
            seconds=float(state.get("seconds", 0.0)),
            thumb_index=state.get("thumb_index"),
            thumbnail=(payload.get("media") or {}).get("thumbnail"),
        )

    @staticmethod
    def of_members(members: Sequence[StoredPoint | PointRecord], fusion: VideoFusion) -> ViewState:
        state = ViewState()
        for member in sorted(members, key=lambda m: str(m.id)):
            state.apply(member.payload, member.vectors, None, fusion)
        return state

    def _spaces(self, modality: str, fusion: VideoFusion) -> list[str]:
        if modality == "video_frame":
            return [fusion.visual_space] + ([fusion.text_space] if fusion.text_space else [])
        return [fusion.audio_space]

    def _add(self, space: str, vector: Sequence[float], sign: int) -> None:
        # Unit vectors, as the store keeps them (cosine spaces are normalized on insert): a delta from a point
        # about to be written and one read back from the store must weigh the same.
        unit = np.asarray(vector, dtype=np.float64)
        norm = np.linalg.norm(unit)
        unit = unit / norm if norm > 0 else unit
        total = np.asarray(self.sums.get(space) or np.zeros(len(unit)), dtype=np.float64)
        self.sums[space] = (total + sign * unit).tolist()
        self.counts[space] = self.counts.get(space, 0) + sign

    def apply(
        self,
        payload: Mapping[str, Any],
        vectors: Mapping[str, Sequence[float]],
        previous: StoredPoint | None,
        fusion: VideoFusion,
    ) -> None:
        """Count one member's current version; ``previous`` is what the store held before it was written."""
        modality = str(payload.get("modality"))
        key, sha = member_key(payload), _sha(payload)
        counted = self.members.get(key)
        if counted == sha:
            return  # a duplicate, a replay, or a member already counted before a crash
        spaces = self._spaces(modality, fusion)
        if counted is not None:  # changed content: take the old vector out first
            if previous is None or _sha(previous.payload) != counted:
                raise StaleViewError(key)
            for space in spaces:
                if space in previous.vectors:
                    self._add(space, previous.vectors[space], -1)
        elif modality == "video_frame":
            self.frames += 1
        else:
            self.segments += 1
        for space in spaces:
            if space in vectors:
                self._add(space, vectors[space], +1)
        self.members[key] = sha
        video = payload.get("video") or {}
        self.seconds = max(self.seconds, float(video.get("t") or 0.0) + float(video.get("duration") or 0.0))
        index = video.get("index")
        thumbnail = (payload.get("media") or {}).get("thumbnail")
        if modality == "video_frame" and thumbnail and (self.thumb_index is None or (index or 0) <= self.thumb_index):
            self.thumb_index, self.thumbnail = int(index or 0), thumbnail

    def mean(self, space: str) -> np.ndarray | None:
        if not self.counts.get(space):
            return None
        mean = np.asarray(self.sums[space], dtype=np.float64) / self.counts[space]
        norm = np.linalg.norm(mean)
        return mean / norm if norm > 0 else None

    def to_payload(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "sums": self.sums,
            "counts": self.counts,
            "frames": self.frames,
            "segments": self.segments,
            "seconds": self.seconds,
            "thumb_index": self.thumb_index,
        }


def view_point(
    video_id: str, state: ViewState, fusion: VideoFusion, ended: bool, floor: Version | None = None
) -> PointRecord | None:
    """The video's point from its state (``None`` when it has no usable vector yet and has not ended); ``floor``:
    the version of the last whole-video delete, kept for members that arrive late."""
    visual, audio = state.mean(fusion.visual_space), state.mean(fusion.audio_space)
    if visual is None and audio is None and not ended:
        return None
    # An ended video with no usable member yet is kept as a marker point without vectors: members that arrive
    # later find it, so the video stays ``ended``.
    vectors: dict[str, list[float]] = {}
    if visual is not None:
        vectors[fusion.visual_space] = visual.tolist()
    if audio is not None:
        vectors[fusion.audio_space] = audio.tolist()
    fused = fuse(visual, audio, fusion.weights, fusion.dims)
    if fused is not None:
        vectors[FUSED_SPACE] = fused.tolist()
    if fusion.text_space is not None:
        text = state.mean(fusion.text_space)
        if text is not None:
            vectors[fusion.text_space] = text.tolist()
    payload: dict[str, Any] = {
        "modality": "video",
        "id": video_id,
        "video_id": video_id,
        "frames": state.frames,
        "segments": state.segments,
        "seconds": round(state.seconds, 3) if state.members else None,
        "ended": ended,
        "ingested_at": datetime.now(UTC).isoformat(),
        "models": {space: fusion.models[space] for space in vectors if space in fusion.models},
        "state": state.to_payload(),
    }
    if state.thumbnail:
        payload["media"] = {"thumbnail": state.thumbnail}
    if floor is not None:  # the last whole-video delete's version, kept as the view's own: members older than it
        payload.update(floor.fields())  # are not written, and an older delete cannot replace the view
    return PointRecord.model_construct(id=point_id("video", video_id), vectors=vectors, payload=payload, source=None)


def video_point(video_id: str, members: Sequence[StoredPoint], fusion: VideoFusion, ended: bool) -> PointRecord | None:
    """The video's point rebuilt from all its members (the full recompute behind every delta)."""
    return view_point(video_id, ViewState.of_members(members, fusion), fusion, ended)


def refresh_views(
    store: VectorStore,
    touched: set[str],
    ended: set[str],
    members: dict[str, dict[str, PointRecord]],
    previous: dict[str, StoredPoint | None],
    fusion: VideoFusion,
) -> list[PointRecord]:
    """The new views of the ``touched`` videos after a bundle wrote ``members`` (video id → member id → point;
    ``previous``: what the store held for each member before). Each view is updated by the delta of its
    members, or rebuilt from all its stored members when a delta cannot apply. ``ended``: videos whose
    ``video_end`` this bundle saw. The caller upserts the views and makes them durable."""
    ids = {video_id: point_id("video", video_id) for video_id in touched}
    stored = {s.id: s for s in store.retrieve(sorted(ids.values()), tombstones=True)}
    views = []
    for video_id in sorted(touched):
        previous_view = stored.get(ids[video_id])
        floor = Version.stored(previous_view.payload) if previous_view is not None else None
        deleted = previous_view is not None and is_tombstone(previous_view.payload)
        if deleted:  # a whole-video delete: rebuilt from what is stored (the members it left)
            previous_view = None
        is_ended = video_id in ended or bool(previous_view and previous_view.payload.get("ended"))
        state = ViewState.of_payload(previous_view.payload) if previous_view is not None else ViewState()
        state = None if deleted else state
        try:
            if state is None:
                raise StaleViewError("the view has no state")
            for member in members.get(video_id, {}).values():
                state.apply(member.payload, member.vectors, previous.get(member.id), fusion)
        except StaleViewError:
            stored_members = [
                m
                for m in store.scroll(with_vectors=True, where={"video_id": video_id})
                if m.payload.get("modality") != "video"
            ]
            state = ViewState.of_members(stored_members, fusion)
        view = view_point(video_id, state, fusion, is_ended, floor)
        if view is not None:
            views.append(view)
    return views
