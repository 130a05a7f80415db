"""Sound decoding: WAV, FLAC, OGG/Vorbis/Opus and MP3 (libsndfile via soundfile) → mono float32 at the model's
rate (soxr), bounded in duration (``max_seconds`` as stored, ``min_seconds`` once trimmed), silence refused.

The duration is read from the header before the samples are; channels are averaged; leading and trailing
silence (30 ms frames below ``silence_dbfs``) is trimmed, and a sound that is silence throughout raises
``MediaError(SILENT)`` — an all-quiet clip would give the voice model nothing but noise to describe.
"""

from __future__ import annotations

import io

import numpy as np

from embedstream.pipelines.media.errors import MediaError
from embedstream.schemas.dead_letter import Reason

FRAME_SECONDS = 0.03


def decode_audio(
    data: bytes, rate: int, max_seconds: float, silence_dbfs: float, min_seconds: float = 0.0
) -> np.ndarray:
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            seconds = sound.frames / sound.samplerate if sound.frames > 0 else 0.0
            if seconds > max_seconds:
                raise MediaError(Reason.OVERSIZED, f"sound of {seconds:.1f} s is over the limit of {max_seconds} s")
            samples = sound.read(dtype="float32", always_2d=True)
            source_rate = sound.samplerate
    except MediaError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise MediaError(Reason.UNDECODABLE, f"not a sound soundfile can read (WAV, FLAC, OGG, MP3): {exc}") from exc
    wave = prepare_wave(samples, source_rate, rate, silence_dbfs)
    if len(wave) < min_seconds * rate:
        raise MediaError(
            Reason.TOO_SHORT, f"{len(wave) / rate:.2f} s of sound once silence is trimmed, under {min_seconds} s"
        )
    return wave


def prepare_wave(samples: np.ndarray, source_rate: int, rate: int, silence_dbfs: float) -> np.ndarray:
    """``[frames, channels]`` (or mono) samples at ``source_rate`` → trimmed mono float32 at ``rate``."""
    import soxr

    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if len(mono) == 0:
        raise MediaError(Reason.SILENT, "the sound has no samples")
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate).astype(np.float32)
    return trim_silence(mono, rate, silence_dbfs)


def trim_silence(wave: np.ndarray, rate: int, silence_dbfs: float) -> np.ndarray:
    size = max(1, int(rate * FRAME_SECONDS))
    count = max(1, len(wave) // size)
    frames = wave[: count * size].reshape(count, size) if len(wave) >= size else wave[None, :]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-10)) >= silence_dbfs)
    if len(loud) == 0:
        loudest = 20 * np.log10(max(float(rms.max()), 1e-10))
        raise MediaError(Reason.SILENT, f"silence throughout: loudest 30 ms at {loudest:.0f} dBFS < {silence_dbfs}")
    return wave[loud[0] * size : (loud[-1] + 1) * size]
