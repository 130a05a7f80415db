"""The runtime audio encoder: a mono waveform at the manifest's sample rate → one vector, numpy + ONNX Runtime.

Two front ends (``AudioSpec.front_end``):

- ``mel_partials`` (resemblyzer's voice encoder): volume raised to ``target_dbfs`` (never lowered), a power mel
  spectrogram computed here in numpy exactly as librosa does it (periodic Hann window, centred zero-padded
  frames, the filter bank stored beside the model), cut into overlapping partials; the partials of many clips go
  through the network together and each clip's vector is the normalized mean of its partials' vectors.
- ``waveform`` (wav2vec2 and kin): the samples, optionally standardized per clip; the frame vectors the model
  returns are averaged over time. Clips run one at a time: these graphs take no attention mask, so padding a
  batch would change the result.

Decoding files, resampling and rejecting silence belong to the ingestion side; this module gets clean samples.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedstream.onnx_models.encoder import OnnxEncoder
from embedstream.onnx_models.manifest import AudioManifest, AudioSpec
from embedstream.onnx_models.registry import load_manifest_of
from embedstream.onnx_models.session import OrtSession, session_for
from embedstream.onnx_models.vectors import l2_normalize
from embedstream.schemas.defaults import MEDIA_BATCH_SIZE
from embedstream.schemas.settings import ModelSettings

PARTIALS_PER_RUN = 64
INT16_MAX = 2**15 - 1


def raise_volume(wave: np.ndarray, target_dbfs: float) -> np.ndarray:
    """resemblyzer's ``normalize_volume(increase_only=True)``: quiet clips are raised to ``target_dbfs``."""
    rms = float(np.sqrt(np.mean((wave.astype(np.float64) * INT16_MAX) ** 2)))
    if rms == 0.0:
        return wave
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    return wave if change < 0 else (wave * 10 ** (change / 20)).astype(np.float32)


def power_mel(wave: np.ndarray, filters: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``[frames, n_mels]`` power mel spectrogram, the same numbers as ``librosa.feature.melspectrogram``."""
    padded = np.pad(wave.astype(np.float32), n_fft // 2)  # librosa ≥ 0.10: centred frames, zero padding
    frames = 1 + (len(padded) - n_fft) // hop
    strided = np.lib.stride_tricks.as_strided(
        padded, shape=(frames, n_fft), strides=(padded.strides[0] * hop, padded.strides[0])
    )
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(strided * window, axis=1)) ** 2
    mel: np.ndarray = (power @ filters.T).astype(np.float32)
    return mel


def partial_slices(samples: int, spec: AudioSpec) -> list[slice]:
    """Where the partial utterances start and end, in mel frames (resemblyzer's ``compute_partial_slices``)."""
    frames = int(np.ceil((samples + 1) / spec.hop_length))
    step = max(1, int(np.round((spec.sample_rate / spec.partial_rate) / spec.hop_length)))
    steps = max(1, frames - spec.partial_frames + step + 1)
    slices = [slice(start, start + spec.partial_frames) for start in range(0, steps, step)]
    last = slices[-1]
    coverage = (samples - last.start * spec.hop_length) / (spec.partial_frames * spec.hop_length)
    if coverage < spec.min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


class AudioEncoder(OnnxEncoder[np.ndarray, np.ndarray]):
    """Encodes mono float waveforms at ``spec.sample_rate`` into the manifest's space (rows L2-normalized).

    ``mel_partials``: an item is a clip's ``[partials, frames, mels]``, its cost the number of partials, and a
    batch's partials run together (in runs of at most ``PARTIALS_PER_RUN``, a memory bound); a clip's vector is
    the mean of its partials' vectors, normalized again in ``finish`` as resemblyzer does.
    ``waveform``: an item is a clip's samples (standardized when the spec says), cost 1; the clips of a batch
    run one at a time, because these graphs take no attention mask and padding would change the result."""

    batch_cost = PARTIALS_PER_RUN
    batch_size = MEDIA_BATCH_SIZE

    def __init__(self, manifest: AudioManifest, folder: Path, session: OrtSession) -> None:
        super().__init__(manifest, session)
        self.audio_manifest = manifest
        self.spec: AudioSpec = manifest.audio
        self._filters = np.load(folder / self.spec.mel_filters_file) if self.spec.front_end == "mel_partials" else None

    @classmethod
    def from_folder(cls, manifest: AudioManifest, folder: Path, runtime: ModelSettings | None = None) -> AudioEncoder:
        return cls(manifest, folder, session_for(folder / manifest.onnx_file, runtime))

    @classmethod
    def load(cls, cache_dir: Path, name: str, runtime: ModelSettings | None = None) -> AudioEncoder:
        manifest, folder = load_manifest_of(AudioManifest, cache_dir, name)
        return cls.from_folder(manifest, folder, runtime)

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    def prepare(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._prepare_one(np.asarray(wave, dtype=np.float32)) for wave in inputs]

    def cost(self, item: np.ndarray) -> int:
        return len(item) if self._filters is not None else 1

    def run(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        if self._filters is None:
            return np.concatenate([self._pooled(self._run_graph({self._input_names[0]: c[None, :]})) for c in batch])
        stacked = np.concatenate(batch)
        vectors = np.concatenate(
            [
                self._run_graph({self._input_names[0]: stacked[i : i + PARTIALS_PER_RUN]})
                for i in range(0, len(stacked), PARTIALS_PER_RUN)
            ]
        )
        bounds = np.cumsum([0] + [len(partials) for partials in batch])
        return np.stack([vectors[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)])

    def finish(self, raw: np.ndarray) -> np.ndarray:
        if self._filters is not None:  # the mean of unit partial vectors is not unit: always renormalize
            return l2_normalize(raw.astype(np.float32, copy=False))
        return super().finish(raw)

    def _prepare_one(self, wave: np.ndarray) -> np.ndarray:
        """A clip's network input: ``[partials, partial_frames, n_mels]``, or its (standardized) samples."""
        spec, filters = self.spec, self._filters
        if filters is None:
            if spec.standardize:  # wav2vec2's feature extractor: zero mean, unit variance per clip
                standardized: np.ndarray = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
                return standardized
            return wave
        if spec.target_dbfs is not None:
            wave = raise_volume(wave, spec.target_dbfs)
        slices = partial_slices(len(wave), spec)
        end = slices[-1].stop * spec.hop_length
        if end >= len(wave):
            wave = np.pad(wave, (0, end - len(wave)))
        mel = power_mel(wave, filters, spec.n_fft, spec.hop_length)
        return np.stack([mel[s] for s in slices])

    @staticmethod
    def _pooled(frames: np.ndarray) -> np.ndarray:
        return (frames.mean(axis=1) if frames.ndim == 3 else frames).astype(np.float32)
