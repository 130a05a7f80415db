"""Manifest drafts: the fields a build shares (a catalog entry's, or an optimum export's) and the versions of
the libraries it was built with."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.manifest import ModelManifest, Origin, make_manifest


def versions(*distributions: str) -> dict[str, str]:
    """The versions of the packages a build used (recorded in the manifest's ``built_with``)."""
    return {name: importlib.metadata.version(name) for name in distributions}


def hf_config(source: str) -> Any:
    """The model's transformers config from a folder or the local cache (``HF_HUB_OFFLINE``: never the hub)."""
    import os

    from transformers import AutoConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoConfig.from_pretrained(source, local_files_only=True)


def hf_draft(name: str, source: str, staging: Path, inputs: list[str], **fields: Any) -> ModelManifest:
    """The manifest fields every optimum ``feature-extraction`` export shares (token/patch/frame vectors out,
    pooled and normalized after ONNX Runtime); the exporter adds modality, dim, pooling and preprocessing."""
    from embedstream.onnx_models.registry import sha256_of

    config = hf_config(source)
    return make_manifest(
        name=name,
        version="1",
        space=name,
        sha256=sha256_of(staging / "model.onnx"),
        inputs=inputs,
        output="last_hidden_state",
        pooled_in_graph=False,
        normalized_in_graph=False,
        source=f"{getattr(config, 'model_type', '?')} model from {source}",
        license="as the source model's",
        built_with=versions("optimum", "onnxruntime", "torch", "transformers"),
        **fields,
    )


def catalog_draft(entry: CatalogEntry, staging: Path, **fields: Any) -> ModelManifest:
    """A catalog build's manifest: name, version, space, origin, source and license from its entry, the graph's
    sha256 from ``staging``; the recipe adds what its graph is (inputs, output, pooling, preprocessing…)."""
    from embedstream.onnx_models.registry import sha256_of

    given = {
        "name": entry.name,
        "version": entry.version,
        "modality": entry.modality,
        "space": entry.space,
        "dim": entry.dim,
        "pooling": entry.pooling,
        "normalize": entry.normalize,
        "sha256": sha256_of(staging / "model.onnx"),
        "origin": Origin(recipe=entry.recipe),
        "source": entry.source,
        "license": entry.license,
    }
    return make_manifest(**{**given, **fields})
