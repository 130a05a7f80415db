"""Text encoder batches by padded tokens and by size: which plan encodes a corpus fastest on this CPU.

    python -m bench.text_batches [--texts 2000] [--rounds 3]

The pipeline plans a text batch by its padded tokens (``pipeline.max_batch_tokens``) and its size
(``pipeline.max_batch_size``) over a sorted window of ``pipeline.sort_window`` texts (``onnx_models.batching``).
This bench encodes two corpora with exactly that planning (windows of 1024, ``plan_batches``, ``embed_batch``)
under every pair of limits, the pairs alternating within each round so that a slow moment of this shared
machine falls on all of them: the sample corpus (short sentences), ``--texts`` first paragraphs of
standard-library docstrings (``bench.int8.docstrings``: 20-80 tokens, cycled) and 300 long texts (twelve of those
paragraphs each, cut at the model's 256 tokens: a long document's chunk). More padded tokens per run is not
cheaper per token on a CPU: past a point a run's activations leave the cache. Writes
``bench/reports/text_batches.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import pyplot, save_figure, write_json

REPORTS = Path(__file__).parent / "reports"
COSTS = (512, 1024, 2048, 4096)
SIZES = (32, 64, 128)
WINDOW = 1024  # the pipeline's sort_window
LONG_TEXTS = 300  # twelve docstring paragraphs each: a chunk's length (the tokenizer stops at 256 tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tqdm import tqdm

    from bench.int8 import docstrings
    from embedstream.onnx_models.corpus import corpus_texts
    from embedstream.onnx_models.text_encoder import TextEncoder
    from embedstream.schemas.settings import ModelSettings

    encoder = TextEncoder.from_settings(ModelSettings())
    natural = docstrings(limit=100_000)
    cycled = [natural[i % len(natural)] for i in range(max(args.texts, 12 * LONG_TEXTS))]
    corpora = {
        "sample corpus": encoder.tokenize(corpus_texts()),
        "docstrings": encoder.tokenize(cycled[: args.texts]),
        "long texts": encoder.tokenize([" ".join(cycled[i : i + 12]) for i in range(0, 12 * LONG_TEXTS, 12)]),
    }
    pairs = [(cost, size) for cost in COSTS for size in SIZES]
    seconds: dict[str, dict[str, list[float]]] = {name: {_key(*p): [] for p in pairs} for name in corpora}
    padded: dict[str, dict[str, int]] = {name: {} for name in corpora}
    for tokens in corpora.values():  # warm-up: the session's first runs allocate
        encode(encoder, tokens[:256], 1024, 64)
    with tqdm(total=args.rounds * len(pairs) * len(corpora), desc="plans", unit="plan") as bar:
        for _ in range(args.rounds):
            for cost, size in pairs:
                for name, tokens in corpora.items():
                    took, pad = encode(encoder, tokens, cost, size)
                    seconds[name][_key(cost, size)].append(took)
                    padded[name][_key(cost, size)] = pad
                    bar.update(1)
    result = {
        "texts": {name: len(tokens) for name, tokens in corpora.items()},
        "tokens": {name: sum(map(len, tokens)) for name, tokens in corpora.items()},
        "rounds": args.rounds,
        "seconds": seconds,
        "padded": padded,
    }
    write_report(result)


def encode(encoder: Any, tokens: list[list[int]], cost: int, size: int) -> tuple[float, int]:
    """Seconds to encode ``tokens`` planned as the pipeline plans them, and the padded tokens run."""
    from embedstream.onnx_models.batching import plan_batches

    padded = 0
    began = time.perf_counter()
    for start in range(0, len(tokens), WINDOW):
        window = tokens[start : start + WINDOW]
        for planned in plan_batches([len(t) for t in window], cost, size):
            batch = [window[j] for j in planned]
            padded += len(batch) * max(map(len, batch))
            encoder.embed_batch(batch)
    return time.perf_counter() - began, padded


def _key(cost: int, size: int) -> str:
    return f"{cost}/{size}"


def write_report(result: dict[str, Any]) -> None:
    import onnxruntime

    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "text_batches.json", result, 2)
    lines = [
        "# Text batches: padded tokens and size per encoder run",
        "",
        f"`python -m bench.text_batches` — minilm, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs, "
        f"median of {result['rounds']} alternating rounds; windows of {WINDOW} sorted texts as the pipeline plans.",
        "",
    ]
    for name, by_pair in result["seconds"].items():
        medians = {pair: statistics.median(times) for pair, times in by_pair.items()}
        best = min(medians, key=medians.__getitem__)
        texts, tokens = result["texts"][name], result["tokens"][name]
        lines += [
            f"## {name}: {texts:,} texts, {tokens:,} tokens",
            "",
            "| max padded tokens / max texts | texts/s | vs the best | padded tokens | every round s |",
            "|---|---|---|---|---|",
        ]
        for pair, median in medians.items():
            every = ", ".join(f"{s:.2f}" for s in by_pair[pair])
            mark = " **best**" if pair == best else ""
            lines.append(
                f"| {pair}{mark} | {texts / median:.1f} | {medians[best] / median:.2f} | "
                f"{result['padded'][name][pair]:,} | {every} |"
            )
        lines.append("")
    lines += [
        "The rate is the encode alone (tokenized beforehand). The pipeline's default (`max_batch_tokens` 1024,",
        "`max_batch_size` 64) is chosen on the docstrings and the long texts, whose runs are the costly ones; the",
        "sample corpus's short sentences cost little under any plan. On a GPU larger runs pay: raise it there.",
    ]
    (REPORTS / "text_batches.md").write_text("\n".join(lines) + "\n")
    plot(result, REPORTS / "text_batches.png")
    print("\n".join(lines))


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result["seconds"]), figsize=(13, 3.6))
    for axis, (name, by_pair) in zip(axes, result["seconds"].items(), strict=True):
        texts = result["texts"][name]
        for size, marker in zip(SIZES, "osd", strict=True):
            rates = [texts / statistics.median(by_pair[_key(cost, size)]) for cost in COSTS]
            axis.plot(COSTS, rates, marker=marker, label=f"at most {size} texts")
        axis.set(title=name, xlabel="max padded tokens per run", ylabel="texts/s", xscale="log")
        axis.set_xticks(COSTS, [str(c) for c in COSTS])
        axis.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
