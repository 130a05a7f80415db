"""A video's own point, kept as a materialized view of its stored frame and audio-segment points (DESIGN.md).

After a bundle's frames and segments are durable, every video they touched is recomputed from *all* of its
stored members: the visual mean (image space), the audio mean (audio space), the fused vector (weighted,
normalized concatenation of the two means; a missing half is zeros) and the mean of the frames' text-space
vectors. Members are keyed by (video, index), so duplicates overwrite, and the sums run in float64 over the
members in point-id order — shuffled, duplicated or late events give the same vectors. ``video_end`` marks the
video complete (``ended``); a frame arriving after it still updates the view. No windows, GroupByKey or timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedstream.pipelines.plan import FUSED_SPACE, VideoFusion
from embedstream.pipelines.stores import StoredPoint
from embedstream.schemas.point import PointRecord, point_id


def _mean(rows: list[list[float]]) -> np.ndarray | None:
    if not rows:
        return None
    mean = np.asarray(rows, dtype=np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else None


def fuse(
    visual: np.ndarray | None, audio: np.ndarray | None, weights: tuple[float, float], dims: tuple[int, int]
) -> np.ndarray | None:
    """The fused vector: the weighted halves concatenated (a missing half is zeros), L2-normalized. None when
    nothing is left (a zero weight on the only half present) — never a NaN vector. Searches into ``fused``
    place a picture or sound query in its half the same way."""
    fused = np.concatenate(
        [
            weights[0] * visual if visual is not None else np.zeros(dims[0]),
            weights[1] * audio if audio is not None else np.zeros(dims[1]),
        ]
    )
    norm = float(np.linalg.norm(fused))
    return fused / norm if norm > 0 else None


def video_point(video_id: str, members: Sequence[StoredPoint], fusion: VideoFusion, ended: bool) -> PointRecord | None:
    """The video's point from its members (``None`` when none has a usable vector yet)."""
    members = sorted(members, key=lambda p: p.id)
    frames = [m for m in members if m.payload.get("modality") == "video_frame"]
    segments = [m for m in members if m.payload.get("modality") == "video_audio"]
    visual = _mean([m.vectors[fusion.visual_space] for m in frames if fusion.visual_space in m.vectors])
    audio = _mean([m.vectors[fusion.audio_space] for m in segments if fusion.audio_space in m.vectors])
    if visual is None and audio is None:
        return None
    vectors: dict[str, list[float]] = {}
    if visual is not None:
        vectors[fusion.visual_space] = visual.tolist()
    if audio is not None:
        vectors[fusion.audio_space] = audio.tolist()
    fused = fuse(visual, audio, fusion.weights, fusion.dims)
    if fused is not None:
        vectors[FUSED_SPACE] = fused.tolist()
    if fusion.text_space is not None:
        text = _mean([m.vectors[fusion.text_space] for m in frames if fusion.text_space in m.vectors])
        if text is not None:
            vectors[fusion.text_space] = text.tolist()
    ends = [_end(m.payload.get("video") or {}) for m in members]
    first = min(frames, key=lambda m: (m.payload.get("video") or {}).get("index") or 0, default=None)
    thumbnail = ((first.payload.get("media") or {}).get("thumbnail")) if first is not None else None
    payload: dict[str, Any] = {
        "modality": "video",
        "id": video_id,
        "video_id": video_id,
        "frames": len(frames),
        "segments": len(segments),
        "seconds": round(max(ends), 3) if ends else None,
        "ended": ended,
        "ingested_at": datetime.now(UTC).isoformat(),
        "models": {space: fusion.models[space] for space in vectors if space in fusion.models},
    }
    if thumbnail:
        payload["media"] = {"thumbnail": thumbnail}
    return PointRecord.model_construct(id=point_id("video", video_id), vectors=vectors, payload=payload, source=None)


def _end(video: dict[str, Any]) -> float:
    return float(video.get("t") or 0.0) + float(video.get("duration") or 0.0)
