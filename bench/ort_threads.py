"""ONNX Runtime threads and memory arena for minilm on this machine: the measurements behind the defaults.

    python -m bench.ort_threads [--events 3000] [--rounds 2]

Each configuration runs in its own process (peak RSS is its own) on the same texts, batched exactly as the
pipeline batches them (windows of ``sort_window`` sorted by length, ``max_batch_tokens`` per run); rounds
alternate the order. Writes ``bench/reports/ort_threads.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import pyplot, save_figure, write_json
from bench.ingest_text import REPORTS, corpus_texts, peak_rss_mb
from embedstream.schemas.settings import Settings

# (intra_op_threads, inter_op_threads, cpu_mem_arena); 0 = ORT's default (one thread per physical core).
CONFIGS = [(0, 1, True), (1, 1, True), (2, 1, True), (4, 1, True), (2, 2, True), (0, 1, False)]


def phase(n: int, intra: int, inter: int, arena: bool) -> dict[str, Any]:
    from embedstream.onnx_models.batching import plan_batches
    from embedstream.onnx_models.text_encoder import TextEncoder

    settings = Settings.load(model={"intra_op_threads": intra, "inter_op_threads": inter, "cpu_mem_arena": arena})
    encoder = TextEncoder.from_settings(settings.model)
    texts = corpus_texts(n)
    encoder.embed(texts[:64])
    window, budget, size = (
        settings.pipeline.sort_window,
        settings.pipeline.max_batch_tokens,
        settings.pipeline.max_batch_size,
    )
    started = time.perf_counter()
    for first in range(0, n, window):
        tokens = encoder.tokenize(texts[first : first + window])
        for batch in plan_batches([len(t) for t in tokens], budget, size):
            encoder.embed_batch([tokens[i] for i in batch])
    return {"events_per_s": n / (time.perf_counter() - started), "peak_rss_mb": peak_rss_mb()}


def label(config: tuple[int, int, bool]) -> str:
    intra, inter, arena = config
    return f"intra={intra or 'default'} inter={inter} arena={'on' if arena else 'off'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phase", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        n, intra, inter, arena = args.phase
        print(json.dumps(phase(int(n), int(intra), int(inter), arena == "1")))
        return
    results: dict[str, list[dict[str, Any]]] = {label(c): [] for c in CONFIGS}
    for r in range(args.rounds):
        order = CONFIGS if r % 2 == 0 else list(reversed(CONFIGS))
        for config in order:
            intra, inter, arena = config
            cmd = [
                sys.executable,
                "-m",
                "bench.ort_threads",
                "--phase",
                str(args.events),
                str(intra),
                str(inter),
                "1" if arena else "0",
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[label(config)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {label(config)}: {results[label(config)][-1]['events_per_s']:.0f} ev/s", flush=True)
    write_report(results, args.events, args.rounds)


def write_report(results: dict[str, list[dict[str, Any]]], events: int, rounds: int) -> None:
    import onnxruntime

    REPORTS.mkdir(parents=True, exist_ok=True)
    median = {k: statistics.median(r["events_per_s"] for r in v) for k, v in results.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
    base = median[label(CONFIGS[0])]
    write_json(REPORTS / "ort_threads.json", {"events": events, "results": results}, 2)
    lines = [
        "# ONNX Runtime threads and memory arena (minilm, fp32)",
        "",
        f"{events:,} sample-corpus texts batched as the pipeline batches them, {rounds} rounds in alternating "
        f"order, each configuration in its own process; {os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}. "
        "Command: `python -m bench.ort_threads` (part of `make bench`).",
        "",
        "| configuration | events/s (median) | vs default | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for name in results:
        lines.append(f"| {name} | {median[name]:.0f} | {median[name] / base:.2f} | {rss[name]:.0f} |")
    lines += [
        "",
        "Defaults (`schemas/settings.py`, `[model]`): `intra_op_threads = 0` (ONNX Runtime's one thread per physical "
        "core), `inter_op_threads = 1`, `cpu_mem_arena = true`. Differences under ~15 % are run-to-run noise on these "
        "shared machines (the default and an explicit 2 are the same configuration); beyond the noise, one thread or "
        "oversubscribing the cores halves throughput, and a second inter-op thread buys nothing for this sequential "
        "graph.",
        "",
        "![events per second by configuration](ort_threads.png)",
        "",
    ]
    (REPORTS / "ort_threads.md").write_text("\n".join(lines))
    plot(median, REPORTS / "ort_threads.png")
    print("\n".join(lines))


def plot(median: dict[str, float], path: Path) -> None:
    plt = pyplot()

    names = list(median)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bars = ax.barh(names, [median[n] for n in names], color=["#2b7bb9"] + ["#999"] * (len(names) - 1))
    for bar in bars:
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():.0f}/s", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("events per second (median of rounds)")
    ax.set_xlim(0, max(median.values()) * 1.2)
    ax.set_title("minilm fp32, ONNX Runtime threads / arena")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
