"""Export recipes: one explicit dict literal, no registration by import side effects.

Each recipe turns a catalog entry into an ONNX model + manifest in the cache and records its parity figure.
Recipes import torch / optimum lazily: they are needed only to build, never to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from embedstream.onnx_models.catalog import CATALOG, CatalogEntry
from embedstream.onnx_models.export.conse import build_conse
from embedstream.onnx_models.export.efficientnet import build_efficientnet
from embedstream.onnx_models.export.sentence_transformers import build_sentence_transformer
from embedstream.onnx_models.export.voice import build_voice
from embedstream.onnx_models.manifest import ModelManifest
from embedstream.schemas.errors import NotFoundError

Recipe = Callable[[CatalogEntry, Path], ModelManifest]

RECIPES: dict[str, Recipe] = {
    "sentence_transformers": build_sentence_transformer,
    "efficientnet_lite": build_efficientnet,
    "conse": build_conse,
    "resemblyzer": build_voice,
}


def build(name: str, cache_dir: Path, force: bool = False) -> ModelManifest:
    """Build catalog model ``name`` into ``cache_dir`` unless a verified build of this version is there."""
    from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest

    if name not in CATALOG:
        raise NotFoundError(f"no model {name!r} in the catalog; known: {sorted(CATALOG)}")
    entry = CATALOG[name]
    if not force:
        try:
            manifest, _ = load_manifest(cache_dir, name)
            if manifest.version == entry.version:
                return manifest
        except ModelNotBuiltError:
            pass
    for needed in entry.needs:  # what the recipe reads from the cache, built first when missing
        build(needed, cache_dir)
    return RECIPES[entry.recipe](entry, cache_dir)
