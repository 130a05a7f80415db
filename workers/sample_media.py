"""The shipped sample media (``workers/samples/photos``, ``voices``; sources in ``MEDIA_SOURCES.md``) and a
short sample video made from them with PyAV — for the demo, the tests and the benchmarks.

The video shows each photo for ``seconds_per_photo`` seconds with a slow zoom (so consecutive frames differ
like real footage) over the voice clips played back to back, encoded as H.264 + AAC in MP4 (or VP9 + Opus in
WebM, Matroska likewise), so ``produce`` reads it like any camera file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SAMPLES = Path(str(resources.files("embedstream.workers").joinpath("samples")))
FPS = 12
AUDIO_RATE = 16_000


def sample_photos() -> dict[str, Path]:
    return {p.stem: p for p in sorted((SAMPLES / "photos").glob("*.jpg"))}


def sample_voices() -> dict[str, Path]:
    """``{voice-sentence: file}``, e.g. ``us-m3-1``."""
    return {p.stem: p for p in sorted((SAMPLES / "voices").glob("*.flac"))}


def make_sample_video(path: Path, photos: list[Path], voices: list[Path], seconds_per_photo: float = 2.0) -> Path:
    import av
    import soundfile

    codecs = {".mp4": ("libx264", "aac"), ".webm": ("libvpx-vp9", "libopus"), ".mkv": ("libx264", "libopus")}
    video_codec, audio_codec = codecs[path.suffix.lower()]
    size = (320, 240)
    with av.open(str(path), "w") as container:
        video: Any = container.add_stream(video_codec, rate=FPS)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio: Any = container.add_stream(audio_codec, rate=48_000 if audio_codec == "libopus" else AUDIO_RATE)
        audio.layout = "mono"
        for photo in photos:
            source = Image.open(photo).convert("RGB")
            frames = int(seconds_per_photo * FPS)
            for i in range(frames):
                zoom = 1.0 + 0.15 * i / frames
                w, h = source.width / zoom, source.height / zoom
                box = ((source.width - w) / 2, (source.height - h) / 2, (source.width + w) / 2, (source.height + h) / 2)
                picture = source.resize(size, Image.Resampling.BILINEAR, box=box)
                container.mux(video.encode(av.VideoFrame.from_image(picture)))
        container.mux(video.encode(None))
        waves = []
        for voice in voices:
            wave, rate = soundfile.read(voice, dtype="float32")
            waves.append(wave if rate == audio.rate else _resample(wave, rate, audio.rate))
        samples = np.concatenate(waves)[None, :].astype(np.float32)
        block = 960 if audio_codec == "libopus" else 1024
        for start in range(0, samples.shape[1], block):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + block]), format="flt", layout="mono"
            )
            frame.sample_rate = audio.rate
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def _resample(wave: np.ndarray, source: int, target: int) -> np.ndarray:
    import soxr

    return np.asarray(soxr.resample(wave, source, target), dtype=np.float32)
