"""A video file → the events the pipeline ingests: frames, audio segments, then ``video_end`` (PyAV).

Frames are sampled at ``fps`` (plus, with ``scene_threshold``, any frame whose 32x32 grayscale thumbnail differs
from the last kept one by more than that mean absolute difference, 0–255: scene-change keyframes) and sent as
JPEG; audio is resampled to 16 kHz mono and cut into ``segment_seconds`` WAV segments. Every event carries
``video = {video_id, index, t, duration}``: frames and segments are keyed by (video, index), so re-producing
a file overwrites the same points.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstream.schemas.envelope import Envelope, Modality, VideoRef

AUDIO_RATE = 16_000


@dataclass(frozen=True)
class VideoOptions:
    fps: float = 1.0
    scene_threshold: float | None = None
    segment_seconds: float = 2.0
    jpeg_quality: int = 90


def video_events(path: Path, video_id: str, options: VideoOptions | None = None) -> Iterator[Envelope]:
    import av

    options = options or VideoOptions()
    metadata = {"file": path.name}
    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
        if container.streams.video:
            yield from _frames(container, video_id, options, metadata)
    if has_audio:
        with av.open(str(path)) as container:
            yield from _segments(container, video_id, options, metadata)
    yield Envelope(schema=1, id=f"{video_id}:end", modality=Modality.VIDEO_END, video=VideoRef(video_id=video_id))


def _frames(container: Any, video_id: str, options: VideoOptions, metadata: dict[str, str]) -> Iterator[Envelope]:
    step = 1.0 / options.fps
    next_t, index, last_thumb = 0.0, 0, None
    for frame in container.decode(video=0):
        t = float(frame.time or 0.0)
        thumb = frame.reformat(width=32, height=32, format="gray").to_ndarray().astype(np.float32)
        scene_cut = (
            options.scene_threshold is not None
            and last_thumb is not None
            and float(np.abs(thumb - last_thumb).mean()) > options.scene_threshold
        )
        if t + 1e-6 < next_t and not scene_cut:
            continue
        buffer = io.BytesIO()
        frame.to_image().save(buffer, format="JPEG", quality=options.jpeg_quality)
        yield Envelope(
            schema=1,
            id=f"{video_id}:frame:{index}",
            modality=Modality.VIDEO_FRAME,
            data=buffer.getvalue(),
            mime="image/jpeg",
            video=VideoRef(video_id=video_id, index=index, t=round(t, 3), duration=step),
            metadata={**metadata, "scene_cut": bool(scene_cut)},
        )
        index += 1
        last_thumb = thumb
        next_t = (int(t / step) + 1) * step


def _segments(container: Any, video_id: str, options: VideoOptions, metadata: dict[str, str]) -> Iterator[Envelope]:
    import av
    import soundfile

    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    chunks: list[np.ndarray] = []
    for frame in container.decode(audio=0):
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    if not chunks:
        return
    samples = np.concatenate(chunks).astype(np.float32)
    size = int(options.segment_seconds * AUDIO_RATE)
    for index, start in enumerate(range(0, len(samples), size)):
        piece = samples[start : start + size]
        if len(piece) < AUDIO_RATE // 4 and index > 0:  # a sliver at the end says nothing about the voice
            break
        buffer = io.BytesIO()
        soundfile.write(buffer, piece, AUDIO_RATE, format="WAV", subtype="PCM_16")
        yield Envelope(
            schema=1,
            id=f"{video_id}:audio:{index}",
            modality=Modality.VIDEO_AUDIO,
            data=buffer.getvalue(),
            mime="audio/wav",
            video=VideoRef(video_id=video_id, index=index, t=start / AUDIO_RATE, duration=len(piece) / AUDIO_RATE),
            metadata=metadata,
        )
