"""What an ingest run embeds and which named vectors it writes, decided before anything starts.

``media.modalities = None`` (the default) enables every modality whose models are built — text always (its
model is required), pictures when the image models are, sounds when the audio model is, video when both are —
and logs what it left off; events of a modality left off become ``unsupported_modality`` dead letters, which
``dlq replay`` brings back once the model is built. Naming modalities explicitly makes a missing model an error.

Spaces come from manifests only (no session is opened here). Two models writing one space (``minilm`` text and
``effnet-conse`` pictures) must be fenced to the same defining model, or the run stops before any write.
A video's fused vector has its own space, ``fused``, fenced to the two models and the weights that make it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from embedstream.onnx_models.bm25 import BM25_REF, BM25_SPACE
from embedstream.onnx_models.manifest import ImageManifest, ModelManifest
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest
from embedstream.pipelines.stores import SpaceSpec, StoreSchemaError
from embedstream.schemas.envelope import Modality
from embedstream.schemas.settings import ModelSettings, Settings

log = logging.getLogger(__name__)

FUSED_SPACE = "fused"
GROUPS: dict[str, frozenset[Modality]] = {
    "text": frozenset({Modality.TEXT}),
    "image": frozenset({Modality.IMAGE}),
    "audio": frozenset({Modality.AUDIO}),
    "video": frozenset({Modality.VIDEO_FRAME, Modality.VIDEO_AUDIO, Modality.VIDEO_END}),
}


@dataclass(frozen=True)
class VideoFusion:
    """How a video's vectors are made from its frames and audio segments (``pipelines.video_views``)."""

    visual_space: str
    audio_space: str
    text_space: str | None  # the frames' vectors in the text space (ConSE), averaged too
    weights: tuple[float, float]
    dims: tuple[int, int]  # visual, audio
    models: dict[str, str]  # space → the ref recorded in the video point's payload


@dataclass(frozen=True)
class IngestPlan:
    groups: tuple[str, ...]
    modalities: frozenset[Modality]
    spaces: list[SpaceSpec]
    fusion: VideoFusion | None


def _manifest(settings: Settings, name: str) -> ModelManifest:
    return load_manifest(settings.model.cache_dir, name, verify=False)[0]


def plan_ingest(settings: Settings) -> IngestPlan:
    model, media = settings.model, settings.media
    wanted = set(media.modalities) if media.modalities is not None else None
    image_models = [model.image_model, *([model.image_text_model] if model.image_text_model else [])]
    manifests: dict[str, list[ModelManifest]] = {"text": [_manifest(settings, model.text_model)]}
    for group, names in (("image", image_models), ("audio", [model.audio_model])):
        if wanted is not None and not wanted & {group, "video"}:  # video needs both the image and audio models
            continue
        try:
            manifests[group] = [_manifest(settings, name) for name in names]
        except ModelNotBuiltError as exc:
            if wanted is not None:
                raise
            log.info("%s events off: %s", group, exc)
    video = "image" in manifests and "audio" in manifests and (wanted is None or "video" in wanted)
    if wanted is not None and "video" in wanted and not video:
        raise ModelNotBuiltError("video needs both the image and the audio models built")
    groups: list[str] = [g for g in ("text", "image", "audio") if g in manifests and (wanted is None or g in wanted)]
    groups += ["video"] if video else []
    fusion = _fusion(manifests["image"], manifests["audio"][0], media.fused_weights) if video else None
    spaces = _spaces([m for group in manifests.values() for m in group], fusion)
    modalities = frozenset().union(*(GROUPS[g] for g in groups))
    if model.bm25 and Modality.TEXT in modalities:
        spaces.append(SpaceSpec(BM25_SPACE, 0, BM25_REF, sparse=True))
    return IngestPlan(tuple(groups), modalities, spaces, fusion)


def model_sessions(settings: Settings, plan: IngestPlan) -> list[tuple[Path, ModelSettings]]:
    """The ONNX files the run's embedding steps open and the runtime settings each opens them with, text first:
    what a launcher can build ahead (``onnx_models.session.preload_sessions``). The same choices as the
    adapters (``transforms.adapters``) make: text as configured; pictures (and video frames) and sounds with
    ORT's threads sleeping unless set; the picture-to-text model by its head graph when it has one for this
    image model. A drift between the two only wastes the preload, and the ingest warns of it."""
    model = settings.model
    media = model.sleeping_unless_set()

    def onnx(name: str) -> tuple[ModelManifest, Path]:
        manifest, folder = load_manifest(model.cache_dir, name, verify=False)
        return manifest, folder / manifest.onnx_file

    found = [(onnx(model.text_model)[1], model)]
    if {"image", "video"} & set(plan.groups):
        backbone, path = onnx(model.image_model)
        found.append((path, media))
        if model.image_text_model:
            bridge, bridge_path = onnx(model.image_text_model)
            head = bridge.head if isinstance(bridge, ImageManifest) else None
            if head is not None and head.input_model == backbone.ref:
                bridge_path = bridge_path.parent / head.file
            found.append((bridge_path, media))
    if {"audio", "video"} & set(plan.groups):
        found.append((onnx(model.audio_model)[1], media))
    return found


def _fusion(image: list[ModelManifest], audio: ModelManifest, weights: tuple[float, float]) -> VideoFusion:
    visual, *bridge = image
    models = {visual.space: visual.ref, audio.space: audio.ref, FUSED_SPACE: fused_ref(visual, audio, weights)}
    if bridge:
        models[bridge[0].space] = bridge[0].ref
    text_space = bridge[0].space if bridge else None
    return VideoFusion(visual.space, audio.space, text_space, weights, (visual.dim, audio.dim), models)


def fused_ref(visual: ModelManifest, audio: ModelManifest, weights: tuple[float, float]) -> str:
    """What the fused named vector is fenced to: both models and both weights (any change = other vectors)."""
    return f"fused({visual.ref}*{weights[0]:g}+{audio.ref}*{weights[1]:g})"


def _spaces(manifests: list[ModelManifest], fusion: VideoFusion | None) -> list[SpaceSpec]:
    spaces: dict[str, SpaceSpec] = {}
    for manifest in manifests:
        spec = SpaceSpec(manifest.space, manifest.dim, manifest.space_ref)
        have = spaces.setdefault(spec.name, spec)
        if have != spec:
            raise StoreSchemaError(
                f"{manifest.ref} writes space {spec.name!r} as {spec.model} ({spec.dim}-d) but another model of "
                f"this run writes it as {have.model} ({have.dim}-d); build them against the same text model"
            )
    if fusion is not None:
        spaces[FUSED_SPACE] = SpaceSpec(FUSED_SPACE, sum(fusion.dims), fusion.models[FUSED_SPACE])
    return list(spaces.values())
