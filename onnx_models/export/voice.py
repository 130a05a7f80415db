"""``voice``: resemblyzer's 256-d speaker encoder (weights shipped in the ``resemblyzer`` wheel).

The network — a 3-layer LSTM over 40-band mel frames, the last layer's final hidden state, a linear layer,
ReLU, L2 normalization — is exported with torch.onnx for a dynamic batch of ``[160, 40]`` partial utterances.
Everything around it runs in numpy at run time (``onnx_models.audio_encoder``): volume normalization, the mel
spectrogram (its filter bank is computed here with librosa and stored beside the graph as ``mel_filters.npy``),
the 1.6 s partials at 1.3 per second and their normalized mean. Parity is measured against
``VoiceEncoder.embed_utterance`` after resemblyzer's own ``normalize_volume`` on fixed synthetic voiced signals
of 0.4–5.3 s, quiet and loud.

resemblyzer's voice-activity trimming (webrtcvad) is not part of the model: ingestion trims silence itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.export.drafts import catalog_draft, versions
from embedstream.onnx_models.export.graphs import export_torch, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.export.parity_inputs import parity_waves
from embedstream.onnx_models.manifest import AudioManifest, AudioSpec, ModelManifest, ParityReport, as_kind

VOICE = AudioSpec(
    sample_rate=16_000,
    front_end="mel_partials",
    n_fft=400,
    hop_length=160,
    n_mels=40,
    partial_frames=160,
    partial_rate=1.3,
    min_coverage=0.75,
    target_dbfs=-30.0,
)


def load_voice_encoder() -> Any:
    from resemblyzer import VoiceEncoder

    return VoiceEncoder(device="cpu", verbose=False).eval()


def voice_parity(manifest: ModelManifest, folder: Path) -> ParityReport:
    audio = as_kind(manifest, AudioManifest)
    from resemblyzer.audio import normalize_volume

    reference = load_voice_encoder()
    waves = parity_waves()
    expected = np.stack(
        [reference.embed_utterance(normalize_volume(w, VOICE.target_dbfs, increase_only=True)) for w in waves]
    )
    actual = AudioEncoder.from_folder(audio, folder).embed(waves)
    return compare(actual, expected, "resemblyzer VoiceEncoder.embed_utterance")


def build_voice(entry: CatalogEntry, cache_dir: Path) -> ModelManifest:
    import librosa
    import torch

    class PartialEmbedding(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.lstm, self.linear = encoder.lstm, encoder.linear

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            unit: torch.Tensor = raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True)
            return unit

    with staging_dir(entry.name) as staging:
        filters = librosa.filters.mel(sr=VOICE.sample_rate, n_fft=VOICE.n_fft, n_mels=VOICE.n_mels)
        np.save(staging / VOICE.mel_filters_file, filters.astype(np.float32))
        export_torch(
            PartialEmbedding(load_voice_encoder()),
            (torch.zeros(2, VOICE.partial_frames, VOICE.n_mels),),
            staging / "model.onnx",
            ["mels"],
            "embedding",
            {"mels": {0: "partials"}, "embedding": {0: "partials"}},
        )
        draft = catalog_draft(
            entry,
            staging,
            inputs=["mels"],
            output="embedding",
            pooled_in_graph=False,
            normalized_in_graph=False,
            audio=VOICE,
            built_with=versions("torch", "onnxruntime", "resemblyzer", "librosa"),
        )
        return install(draft, staging, cache_dir, voice_parity)
