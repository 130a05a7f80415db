"""The int8 text model: ORT's per-tensor dynamic quantization vs embedstream's per-token variant vs fp32.

    python -m bench.int8

Side by side in one run, on the sample corpus (520 sentences) and on a held-out-style corpus built here from
the Python standard library's docstrings (other vocabulary, other lengths): speed-up over fp32 and agreement
with fp32 as ``models build --quantize`` records them (``quantize.compare_variant``: timed alternately; mean
and minimum cosine, recall@10 of fp32's nearest neighbours, each text a query), and batch dependence — how far
a text's vector moves when it is embedded alone instead of in a batch (what a replay or a backfill would see).
Writes ``bench/reports/int8.{md,json,png}``.
"""

from __future__ import annotations

import importlib
import inspect
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.common import pyplot, save_figure, write_json
from embedstream.onnx_models.corpus import corpus_texts
from embedstream.onnx_models.export.per_token import per_token_activations
from embedstream.onnx_models.export.quantize import compare_variant, cpu_isa
from embedstream.onnx_models.manifest import TextManifest
from embedstream.onnx_models.registry import load_manifest_of
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.schemas.settings import ModelSettings

REPORTS = Path(__file__).parent / "reports"
QUALITY = ("speedup", "mean_cosine", "min_cosine", "recall_at_10")
STDLIB = (
    "json",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "re",
    "os",
    "shutil",
    "tarfile",
    "zipfile",
    "typing",
    "asyncio",
    "datetime",
    "decimal",
    "fractions",
    "statistics",
    "string",
    "textwrap",
    "logging",
    "argparse",
    "csv",
    "sqlite3",
    "socket",
    "subprocess",
    "threading",
    "unittest",
    "inspect",
    "email.message",
    "http.client",
    "urllib.parse",
    "random",
    "heapq",
    "bisect",
    "contextlib",
    "dataclasses",
    "enum",
    "io",
)


def docstrings(limit: int = 520) -> list[str]:
    """The first paragraph of the docstrings of some standard-library modules' functions and classes."""
    texts: list[str] = []
    for name in STDLIB:
        module = importlib.import_module(name)
        for _, member in sorted(inspect.getmembers(module)):
            doc = inspect.getdoc(member) if inspect.isfunction(member) or inspect.isclass(member) else None
            first = (doc or "").split("\n\n")[0].replace("\n", " ").strip()
            if len(first) >= 40 and first not in texts:
                texts.append(first)
    return texts[:limit]


def encoders(folder: Path) -> dict[str, TextEncoder]:
    """fp32, int8 per-tensor (``quantize_dynamic`` as ORT makes it) and int8 per-token, one tokenizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    base, base_folder = load_manifest_of(TextManifest, ModelSettings().cache_dir, "minilm")
    reduce_range = cpu_isa() not in ("avx512_vnni", "avx_vnni")
    tensor, token = folder / "per_tensor", folder / "per_token"
    for variant in (tensor, token):  # the base's tokenizer beside each graph: only the graph differs
        variant.mkdir()
        shutil.copy(base_folder / base.tokenizer.file, variant / base.tokenizer.file)
    quantize_dynamic(
        base_folder / base.onnx_file,
        tensor / base.onnx_file,
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
    )
    graph = onnx.load(tensor / base.onnx_file)
    per_token_activations(graph)
    onnx.save(graph, token / base.onnx_file)
    return {
        "fp32": TextEncoder.from_folder(base, base_folder),
        "int8 per-tensor (ORT)": TextEncoder.from_folder(base, tensor),
        "int8 per-token": TextEncoder.from_folder(base, token),
    }


def measure_corpus(models: dict[str, TextEncoder], texts: list[str]) -> dict[str, Any]:
    """Each int8 variant against fp32 as the build measures it (``quantize.compare_variant``: timed alternately,
    cosine, recall@10), and every model's batch dependence."""
    out: dict[str, Any] = {}
    base = models["fp32"]
    for name, encoder in models.items():
        together = encoder.embed(texts[:128])
        alone = np.stack([encoder.embed([text])[0] for text in texts[:128]])
        dependence = {"batch_dependence": float(np.abs(together - alone).max())}
        if encoder is base:
            out[name] = {**dict.fromkeys(QUALITY, 1.0), **dependence}
            continue
        quality = compare_variant(base, encoder, texts)
        out[name] = {
            **quality.model_dump(include={"speedup", "mean_cosine", "min_cosine", "recall_at_10"}),
            **dependence,
        }
    return out


def measure() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="int8-"))
    try:
        models = encoders(folder)
        corpora = {"sample corpus": corpus_texts(), "stdlib docstrings": docstrings()}
        return {
            "machine": f"{platform.processor() or platform.machine()}, {cpu_isa()}",
            "corpora": {name: len(texts) for name, texts in corpora.items()},
            "results": {name: measure_corpus(models, texts) for name, texts in corpora.items()},
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_report(measured: dict[str, Any]) -> str:
    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "int8.json", measured, 1)
    lines = [
        "# The int8 text model: per-tensor (ORT) vs per-token activations vs fp32",
        "",
        f"`python -m bench.int8` — minilm, measured side by side in one run on {measured['machine']}.",
        "",
        "| corpus | model | × fp32 | mean cosine | min cosine | recall@10 | batch dependence |",
        "|---|---|---|---|---|---|---|",
    ]
    for corpus, models in measured["results"].items():
        for name, m in models.items():
            lines.append(
                f"| {corpus} ({measured['corpora'][corpus]}) | {name} | {m['speedup']:.2f} | "
                f"{m['mean_cosine']:.4f} | {m['min_cosine']:.4f} | {m['recall_at_10']:.3f} | "
                f"{m['batch_dependence']:.1e} |"
            )
    lines += [
        "",
        "*recall@10*: of each text's 10 nearest neighbours by fp32, how many the variant also ranks in its 10.",
        "*batch dependence*: the largest change of a vector component between a text embedded in its batch and",
        "alone. ORT's dynamic quantization scales each MatMul's input by the largest value of the whole batch, so a",
        "text's int8 vector depends on its neighbours: a replay, a re-ingest or a migration's backfill does not",
        "reproduce it. Per-token scales (`onnx_models/export/per_token.py`, what `models build --quantize` makes)",
        "remove that and agree better with fp32, for a slower int8 model: the extra passes over the activations",
        "(a reduction and a scale per token before each quantized MatMul) cost part of int8's gain. The issue's",
        "goal (≥ 1.8× with recall@10 ≥ 0.98) is met by neither: per-tensor has the speed, per-token comes closer",
        "on agreement. The other levers (the most sensitive MatMuls in fp32, int8 for the feed-forward layers only,",
        "static calibration, 8-bit weight-only) are measured in `int8_levers.md` (`python -m bench.int8_levers`).",
    ]
    text = "\n".join(lines) + "\n"
    (REPORTS / "int8.md").write_text(text)
    plot(measured["results"], REPORTS / "int8.png")
    return text


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, axis = plt.subplots(figsize=(7, 4.2))
    markers = {"sample corpus": "o", "stdlib docstrings": "s"}
    for corpus, models in results.items():
        for n, (name, m) in enumerate(models.items()):
            axis.scatter(m["speedup"], m["recall_at_10"], marker=markers.get(corpus, "o"), color=f"C{n}", s=60)
            axis.annotate(
                f"{name}\n({corpus})",
                (m["speedup"], m["recall_at_10"]),
                fontsize=7,
                xytext=(5, -10),
                textcoords="offset points",
            )
    axis.axvline(1.8, color="grey", linestyle=":", linewidth=1)
    axis.axhline(0.98, color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="speed-up over fp32", ylabel="recall@10 agreement with fp32", title="int8 variants of minilm")
    save_figure(fig, path, dpi=110)


def main() -> None:
    print(write_report(measure()))


if __name__ == "__main__":
    main()
