"""Full drain pipeline (broker → Beam → ONNX Runtime → qdrant-edge) versus bare ONNX Runtime, side by side.

    python -m bench.ingest_text [--events 10000] [--rounds 2]

Every variant runs in its own subprocess (so peak RSS is its own) on the same texts, the same model file and
the same ONNX Runtime threads, alternating rounds so drift on a shared machine hits all alike:

* ``bare``: tokenize everything, sort by length, encode in batches of the best size (8/16/32/64, picked on a
  2,000-event sample) — ONNX Runtime in its best configuration (docs/measurements.md);
* ``naive``: one text per ``session.run``, in arrival order (what a hand-written consumer loop does);
* ``pipeline``: the events produced to a tansu topic, then ``run_ingest`` in drain mode into a fresh store.

Writes ``bench/reports/ingest_text.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import pyplot, run_phase, save_figure, write_json
from embedstream.schemas.settings import Settings

REPORTS = Path(__file__).parent / "reports"


def phase(*args: str) -> dict[str, Any]:
    """One phase of this benchmark in its own subprocess."""
    return run_phase("bench.ingest_text", *args)


BATCH_SIZES = (8, 16, 32, 64)
NAIVE_EVENTS = 1500
TUNE_EVENTS = 2000


def corpus_texts(n: int) -> list[str]:
    """The sample corpus cycled to ``n`` texts."""
    from embedstream.onnx_models.corpus import corpus_texts as sample_texts

    lines = sample_texts()
    return [lines[i % len(lines)] for i in range(n)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_bare(n: int) -> dict[str, Any]:
    from embedstream.onnx_models.text_encoder import TextEncoder

    encoder = TextEncoder.from_settings(Settings.load().model)
    texts = corpus_texts(n)
    encoder.embed(texts[:64])  # warm-up

    def sorted_batches(subset: list[str], size: int) -> float:
        started = time.perf_counter()
        tokens = encoder.tokenize(subset)
        order = sorted(range(len(subset)), key=lambda i: len(tokens[i]))
        for first in range(0, len(subset), size):
            encoder.embed_batch([tokens[i] for i in order[first : first + size]])
        return len(subset) / (time.perf_counter() - started)

    # Pick the batch size on a sample, then time the whole set once: the max of several noisy full runs
    # would flatter the baseline.
    by_batch = {size: sorted_batches(texts[:TUNE_EVENTS], size) for size in BATCH_SIZES}
    best = max(by_batch, key=lambda k: by_batch[k])
    rate = sorted_batches(texts, best)
    tokens_total = sum(len(t) for t in encoder.tokenize(texts))
    return {
        "events_per_s": rate,
        "best_batch": best,
        "by_batch": by_batch,
        "tokens": tokens_total,
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_naive(n: int) -> dict[str, Any]:
    from embedstream.onnx_models.text_encoder import TextEncoder

    encoder = TextEncoder.from_settings(Settings.load().model)
    texts = corpus_texts(n)
    encoder.embed(texts[:16])
    started = time.perf_counter()
    for text in texts:
        encoder.embed_batch(encoder.tokenize([text]))
    return {"events_per_s": n / (time.perf_counter() - started), "peak_rss_mb": peak_rss_mb()}


def phase_pipeline(n: int, bootstrap: str, topic: str, store: str, group: str) -> dict[str, Any]:
    from embedstream.onnx_models.text_encoder import TextEncoder
    from embedstream.pipelines.ingest import run_ingest

    # Time the encoder inside the pipeline (the in-process runner runs the DoFns here) to split the wall time
    # into start-up, ONNX Runtime and everything else.
    encode = {"busy": 0.0, "first": 0.0, "last": 0.0}
    original = TextEncoder.embed_batch

    def timed(self: TextEncoder, batch: Any) -> Any:
        began = time.perf_counter()
        encode["first"] = encode["first"] or began
        try:
            return original(self, batch)
        finally:
            encode["last"] = time.perf_counter()
            encode["busy"] += encode["last"] - began

    setattr(TextEncoder, "embed_batch", timed)  # noqa: B010 (a method replaced for timing)

    settings = Settings.load(
        kafka={"bootstrap_servers": bootstrap, "topic": topic, "dead_letter_topic": f"{topic}.dlq", "group_id": group},
        qdrant={"backend": "edge", "path": store},
        pipeline={"progress_interval_s": 10.0},
    )
    started = time.perf_counter()
    result = run_ingest(settings)
    elapsed = time.perf_counter() - started
    if result.points_upserted != n or result.dead_letters:
        raise RuntimeError(f"pipeline stored {result.points_upserted} of {n} ({result.dead_letters} dead letters)")
    startup = encode["first"] - started
    return {
        "events_per_s": n / elapsed,
        "seconds": elapsed,
        "startup_s": startup,
        "encode_s": encode["busy"],
        "other_s": elapsed - startup - encode["busy"],
        "peak_rss_mb": peak_rss_mb(),
    }


def produce(bootstrap: str, topic: str, n: int) -> None:
    from embedstream.pipelines.io.kafka_clients import ensure_topics
    from embedstream.schemas.envelope import Envelope
    from embedstream.workers.produce import produce_events

    settings = Settings.load(kafka={"bootstrap_servers": bootstrap, "topic": topic})
    ensure_topics(settings.kafka, [topic])
    events = (
        Envelope.model_validate({"schema": 1, "id": f"bench-{i}", "modality": "text", "text": text})
        for i, text in enumerate(corpus_texts(n))
    )
    produce_events(settings, events, total=n, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, rest = args.phase[0], args.phase[1:]
        phases: dict[str, Callable[..., dict[str, Any]]] = {
            "bare": phase_bare,
            "naive": phase_naive,
            "pipeline": phase_pipeline,
        }
        result = phases[name](int(rest[0]), *rest[1:])
        print(json.dumps(result))
        return

    from embedstream.workers.broker import start_broker

    broker = start_broker()
    rounds: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="embedstream-bench-") as tmp:
            for r in range(args.rounds):
                topic = f"bench-{r}-{int(time.time())}"
                produce(broker.bootstrap, topic, args.events)
                print(f"round {r + 1}/{args.rounds}…", flush=True)
                pipeline_args = (
                    "pipeline",
                    str(args.events),
                    broker.bootstrap,
                    topic,
                    f"{tmp}/store-{r}",
                    f"g-{topic}",
                )
                if r % 2:  # alternate the order so drift on a shared machine does not favour one side
                    pipe, bare = (
                        phase(*pipeline_args),
                        phase("bare", str(args.events)),
                    )
                else:
                    bare, pipe = (
                        phase("bare", str(args.events)),
                        phase(*pipeline_args),
                    )
                ratio = pipe["events_per_s"] / bare["events_per_s"]
                print(
                    f"  bare {bare['events_per_s']:.1f} ev/s (batch {bare['best_batch']}), "
                    f"pipeline {pipe['events_per_s']:.1f} ev/s, ratio {ratio:.3f}",
                    flush=True,
                )
                naive = phase("naive", str(min(NAIVE_EVENTS, args.events)))
                rounds.append({"bare": bare, "pipeline": pipe, "naive": naive})
    finally:
        broker.stop()
    write_report(rounds, args.events)


def write_report(rounds: list[dict[str, Any]], events: int) -> None:
    import onnxruntime

    REPORTS.mkdir(parents=True, exist_ok=True)
    ratios = [r["pipeline"]["events_per_s"] / r["bare"]["events_per_s"] for r in rounds]
    median = {k: statistics.median(r[k]["events_per_s"] for r in rounds) for k in ("bare", "pipeline", "naive")}
    tokens = rounds[0]["bare"]["tokens"]
    split = sorted((r["pipeline"] for r in rounds), key=lambda p: p["seconds"])[len(rounds) // 2]
    summary = {
        "events": events,
        "rounds": rounds,
        "ratio_pipeline_to_bare": {"per_round": ratios, "median": statistics.median(ratios)},
        "median_events_per_s": median,
        "tokens_per_event": tokens / events,
        "onnxruntime": onnxruntime.__version__,
    }
    write_json(REPORTS / "ingest_text.json", summary, 2)
    plot(median, REPORTS / "ingest_text.png")
    lines = [
        "# Text ingest: pipeline vs bare ONNX Runtime",
        "",
        f"{events:,} text events (the 520-sentence sample corpus cycled, {tokens / events:.1f} tokens/event), "
        f"minilm fp32, onnxruntime {onnxruntime.__version__}, default threads, {len(rounds)} alternating rounds. "
        "Command: `make bench` (`python -m bench.ingest_text`).",
        "",
        "| round | bare ORT ev/s (best batch) | pipeline ev/s | pipeline / bare | naive loop ev/s "
        "| tokens/s (pipeline) | peak RSS bare / pipeline MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        b, p, nv = r["bare"], r["pipeline"], r["naive"]
        lines.append(
            f"| {i} | {b['events_per_s']:.1f} ({b['best_batch']}) | {p['events_per_s']:.1f} | "
            f"{p['events_per_s'] / b['events_per_s']:.3f} | {nv['events_per_s']:.1f} | "
            f"{p['events_per_s'] * tokens / events:,.0f} | {b['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"**Median pipeline / bare: {statistics.median(ratios):.3f}.** Bare ORT by batch size (round 1, "
        f"{TUNE_EVENTS:,}-event sample): "
        + ", ".join(f"{k}: {v:.0f}/s" for k, v in rounds[0]["bare"]["by_batch"].items())
        + ".",
        "",
        "![events per second](ingest_text.png)",
        "",
        "## Where the pipeline's time goes (median round)",
        "",
        f"Wall {split['seconds']:.1f} s = start-up to first encode {split['startup_s']:.1f} s (Beam, model load with "
        f"sha256 check, store open, consumer joins) + ONNX Runtime {split['encode_s']:.1f} s + the rest "
        f"{split['other_s']:.1f} s ({split['other_s'] / events * 1000:.2f} ms/event: Kafka record decoding, JSON and "
        "envelope validation, payload building, qdrant-edge point conversion and upsert, Beam's per-element "
        "overhead, offset commits). Inside the pipeline ONNX Runtime encodes at "
        f"{events / split['encode_s']:.0f} events/s versus {median['bare']:.0f}/s bare.",
        "",
    ]
    (REPORTS / "ingest_text.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(median: dict[str, float], path: Path) -> None:
    plt = pyplot()

    labels = ["naive loop\n(batch 1)", "pipeline\n(Kafka → Qdrant)", "bare ORT\n(sorted batches)"]
    values = [median["naive"], median["pipeline"], median["bare"]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.barh(labels, values, color=["#bbb", "#2b7bb9", "#555"])
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.0f}/s", va="center")
    ax.set_xlabel("text events per second (median of rounds)")
    ax.set_xlim(0, max(values) * 1.2)
    ax.set_title("minilm on 2 CPU cores")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
