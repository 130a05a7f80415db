"""The model manifest: everything needed to run, trust and fence an ONNX encoder, stored beside it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"


class TokenizerSpec(BaseModel):
    """How text becomes token ids. Padding is always to the longest text of a batch (never a fixed length)."""

    model_config = ConfigDict(frozen=True)

    file: str = "tokenizer.json"
    max_length: int = Field(ge=1)
    pad_id: int = 0


class ImageSpec(BaseModel):
    """How a picture becomes the model's input: RGB, short side resized, center crop, scaled, standardized."""

    model_config = ConfigDict(frozen=True)

    resize_short: int = Field(ge=1)
    crop: int = Field(ge=1)
    resample: Literal["bicubic", "bilinear"] = "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class AudioSpec(BaseModel):
    """How a mono waveform at ``sample_rate`` becomes the model's input.

    ``waveform``: the samples themselves (``[batch, samples]``), optionally standardized per clip (wav2vec2's
    feature extractor); the model's frame vectors are pooled over time.
    ``mel_partials`` (resemblyzer): volume raised to ``target_dbfs``, a power mel spectrogram (periodic Hann window,
    centred frames, filter bank stored beside the model), cut into overlapping partials of ``partial_frames``; the
    model embeds each partial and the clip vector is their normalized mean."""

    model_config = ConfigDict(frozen=True)

    sample_rate: int = Field(ge=1000)
    front_end: Literal["waveform", "mel_partials"]
    standardize: bool = False
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 40
    mel_filters_file: str = "mel_filters.npy"
    partial_frames: int = 160
    partial_rate: float = 1.3
    min_coverage: float = 0.75
    target_dbfs: float | None = None


class HeadSpec(BaseModel):
    """A second, small graph that computes this model's output from another model's raw output — so a pipeline
    that runs both models runs their shared backbone once (``effnet-conse`` on ``effnet``'s pooled features)."""

    model_config = ConfigDict(frozen=True)

    file: str = "head.onnx"
    sha256: str
    input_model: str  # the ref whose raw (unnormalized) output feeds it
    input: str
    output: str


class Origin(BaseModel):
    """How the model was built, so ``embedstream models verify`` can rebuild the reference and re-measure."""

    model_config = ConfigDict(frozen=True)

    recipe: str  # a catalog recipe (onnx_models.export.RECIPES) or an exporter: hf_text, hf_image, hf_audio, clip
    source: str | None = None  # the model folder, local id or vectors file it was exported from
    binary: bool | None = None  # word vectors: the file was word2vec binary


class ParityReport(BaseModel):
    """How closely the ONNX model reproduces its reference implementation on a fixed input set."""

    model_config = ConfigDict(frozen=True)

    reference: str
    inputs: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    measured_at: datetime


class Quantization(BaseModel):
    """How a variant's weights were quantized (ONNX Runtime dynamic quantization)."""

    model_config = ConfigDict(frozen=True)

    method: Literal["dynamic"] = "dynamic"
    weights: Literal["int8"] = "int8"
    per_channel: bool
    reduce_range: bool
    isa: str  # the instruction set it was built for: avx512_vnni, avx2, ...


class VariantQuality(BaseModel):
    """A variant against its fp32 base, measured side by side in one run on the sample corpus."""

    model_config = ConfigDict(frozen=True)

    corpus: str
    texts: int
    speedup: float
    mean_cosine: float
    min_cosine: float
    recall_at_10: float
    measured_at: datetime


class ModelManifest(BaseModel):
    """A built encoder. ``ref`` (name@version) is what points record and what a named vector is fenced to."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    modality: Literal["text", "image", "audio"]
    space: str
    space_model: str | None = None  # the ref of the model that defines a shared space (effnet-conse → minilm@1)
    onnx_file: str = "model.onnx"
    sha256: str
    inputs: list[str]
    output: str
    dim: int = Field(ge=1)
    pooling: Literal["mean", "cls", "last_token", "none"]
    pooled_in_graph: bool
    normalize: bool
    normalized_in_graph: bool
    tokenizer: TokenizerSpec | None = None
    image: ImageSpec | None = None
    audio: AudioSpec | None = None
    origin: Origin | None = None
    head: HeadSpec | None = None
    source: str
    license: str
    parity: ParityReport | None = None
    variant_of: str | None = None  # the base model's ref, for quantized variants
    quantization: Quantization | None = None
    quality: VariantQuality | None = None
    built_with: dict[str, str] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def space_ref(self) -> str:
        """What a named vector is fenced to: the space's defining model (itself, unless it maps into another's)."""
        return self.space_model or self.ref
