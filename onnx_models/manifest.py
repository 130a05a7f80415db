"""The model manifest: everything needed to run, trust and fence an ONNX encoder, stored beside it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from embedstream.onnx_models.vectors import Pooling
from embedstream.schemas.errors import UsageError

MANIFEST_FILE = "manifest.json"


class ModelKindError(UsageError):
    """A model was asked for as one kind (a text model) but is another (an image model)."""


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
    # per_token: each token's activations have their own scale, so a text's vector does not depend on its batch
    # mates (``export.per_token``); per_tensor: ORT's default, one scale per batch (builds before it)
    activations: Literal["per_tensor", "per_token"] = "per_tensor"


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


class ManifestBase(BaseModel):
    """What every built encoder records. ``ref`` (name@version) is what points record and what a named vector
    is fenced to. The kinds below add what their modality needs, required, so code never asks whether a text
    model has a tokenizer: its type says so."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    space: str
    space_model: str | None = None  # the ref of the model that defines a shared space (effnet-conse → minilm@1)
    onnx_file: str = "model.onnx"
    sha256: str
    inputs: list[str]
    output: str
    dim: int = Field(ge=1)
    pooling: Pooling
    pooled_in_graph: bool
    normalize: bool
    normalized_in_graph: bool
    origin: Origin | None = None
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

    @property
    def source_folder(self) -> str:
        """The model folder (or local id, or vectors file) an export was made from: what re-measuring its parity
        needs. Catalog builds record none (their recipe knows its source)."""
        if self.origin is None or self.origin.source is None:
            raise UsageError(f"{self.ref} records no source to re-measure against; rebuild it with its exporter")
        return self.origin.source


class TextManifest(ManifestBase):
    """A text encoder: token ids in (``tokenizer``), one vector per text out."""

    modality: Literal["text"]
    tokenizer: TokenizerSpec


class ImageManifest(ManifestBase):
    """A picture encoder: pixels prepared as ``image`` says. With a ``head``, its space can also be reached from
    another image model's raw features (the ConSE bridge over EfficientNet's backbone)."""

    modality: Literal["image"]
    image: ImageSpec
    head: HeadSpec | None = None


class AudioManifest(ManifestBase):
    """A sound encoder: a mono waveform prepared as ``audio`` says."""

    modality: Literal["audio"]
    audio: AudioSpec


ModelManifest = Annotated[TextManifest | ImageManifest | AudioManifest, Field(discriminator="modality")]
"""Any built encoder, told apart by ``modality`` (the JSON field every manifest has)."""

_MANIFEST: TypeAdapter[ModelManifest] = TypeAdapter(ModelManifest)


def parse_manifest(text: str | bytes) -> ModelManifest:
    """A manifest from its JSON (``manifest.json``), as the kind its modality says."""
    return _MANIFEST.validate_json(text)


def make_manifest(**fields: Any) -> ModelManifest:
    """A manifest from fields (an exporter's draft), as the kind ``modality`` says; pydantic checks the rest."""
    return _MANIFEST.validate_python(fields)


Kind = TypeVar("Kind", bound=ManifestBase)


def as_kind(manifest: ManifestBase, kind: type[Kind]) -> Kind:
    """``manifest`` as ``kind`` (``TextManifest``…), or ``ModelKindError`` naming both kinds."""
    if not isinstance(manifest, kind):
        wanted = kind.__name__.removesuffix("Manifest").lower()
        modality = getattr(manifest, "modality", "?")
        raise ModelKindError(f"model {manifest.ref} is a {modality} model, not a {wanted} model")
    return manifest
