"""Making ONNX graphs: a staging folder per build, torch.onnx with our settings, optimum's exporter offline."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def staging_dir(name: str) -> Iterator[Path]:
    """An empty folder to build ``name`` in; ``install`` moves it into the cache, anything left is removed."""
    with tempfile.TemporaryDirectory(prefix=f"embedstream-{name}-") as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        yield staging


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
