"""What every export shares: the parity measure and bar, torch.onnx with our settings, and install-if-faithful.

A build happens in a staging folder; ``install`` measures parity there with the recipe's own parity function
(the same one ``embedstream models verify`` re-runs later), refuses a build below ``PARITY_MIN_COSINE`` and only
then publishes it into the cache — a bad export never becomes loadable.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.manifest import ModelManifest, Origin, ParityReport, make_manifest
from embedstream.onnx_models.registry import publish
from embedstream.schemas.errors import EmbedstreamError

PARITY_MIN_COSINE = 0.9999

Parity = Callable[[ModelManifest, Path], ParityReport]


def compare(actual: np.ndarray, expected: np.ndarray, reference: str) -> ParityReport:
    """Row-wise cosine (and the largest element difference) between ONNX output and the reference's."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    cos = (actual * expected).sum(axis=1) / (np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1))
    return ParityReport(
        reference=reference,
        inputs=len(actual),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(actual - expected).max()),
        measured_at=datetime.now(UTC),
    )


def versions(*distributions: str) -> dict[str, str]:
    """The versions of the packages a build used (recorded in the manifest's ``built_with``)."""
    return {name: importlib.metadata.version(name) for name in distributions}


def export_torch(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    inputs: Sequence[str],
    output: str,
    dynamic: dict[str, dict[int, str]],
) -> None:
    """torch.onnx with the settings every recipe here uses: opset 17, the TorchScript exporter (the dynamo
    exporter mis-handles LSTMs and top-k in torch 2.13 on these graphs), the module in eval mode."""
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


class ParityError(EmbedstreamError):
    """An export does not reproduce its reference closely enough; it is not installed."""


def install(draft: ModelManifest, staging: Path, cache_dir: Path, parity: Parity) -> ModelManifest:
    """Measure parity on the staged build, refuse it below the bar, else publish it with the figure recorded."""
    report = parity(draft, staging)
    if report.min_cosine < PARITY_MIN_COSINE:
        raise ParityError(
            f"{draft.ref}: ONNX parity min cosine {report.min_cosine:.6f} < {PARITY_MIN_COSINE} against "
            f"{report.reference}; not installed"
        )
    manifest = draft.model_copy(update={"parity": report})
    publish(staging, manifest, cache_dir)
    return manifest


@contextmanager
def staging_dir(name: str) -> Iterator[Path]:
    """An empty folder to build ``name`` in; ``install`` moves it into the cache, anything left is removed."""
    with tempfile.TemporaryDirectory(prefix=f"embedstream-{name}-") as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        yield staging


def optimum_export(source: str, staging: Path, keep: Sequence[str] = (), library: str = "transformers") -> list[str]:
    """optimum's ``feature-extraction`` export of a local Hugging Face model into ``staging`` (never the hub):
    the graph, its external weights when over 2 GB (``model.onnx_data``) and the ``keep`` files (a tokenizer).
    ``library="sentence_transformers"`` exports the pooled, normalized ``sentence_embedding`` graph.
    Returns the graph's input names."""
    import os
    import shutil

    import onnx
    from optimum.exporters.onnx import main_export

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="embedstream-optimum-") as tmp:
        main_export(
            model_name_or_path=source,
            output=tmp,
            task="feature-extraction",
            library_name=library,
            local_files_only=True,
            do_validation=False,
        )
        for file in [*Path(tmp).glob("model.onnx*"), *(Path(tmp) / name for name in keep)]:
            shutil.copy(file, staging / file.name)
    return [i.name for i in onnx.load(str(staging / "model.onnx"), load_external_data=False).graph.input]


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
