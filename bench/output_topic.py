"""What the embeddings topic costs: a whole drain with and without ``pipeline.output_topic``, side by side.

    python -m bench.output_topic [--events 20000] [--rounds 2]

``embedstream ingest --mode drain`` of ``--events`` texts in a fresh process (text only, the embedded store, a local
tansu broker), without an output topic, with the Qdrant-sink JSON form and with the binary form, alternating,
``--rounds`` times each; events per second from launch to exit, the ratio of each form to the run without, and the
bytes each form put on the topic. Writes ``bench/reports/output_topic.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import pyplot, save_figure, write_json
from bench.startup import alternating_drains

REPORTS = Path(__file__).parent / "reports"
VARIANTS = ("none", "qdrant", "binary")


def topic_bytes(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records, value bytes) on ``topic``."""
    from kafka import KafkaConsumer

    from embedstream.pipelines.io.kafka_clients import assign_readable, output_limit, records_until
    from embedstream.schemas.settings import Settings

    settings = Settings.load(kafka={"bootstrap_servers": bootstrap})
    reader = KafkaConsumer(
        bootstrap_servers=[bootstrap], enable_auto_commit=False, max_partition_fetch_bytes=output_limit(1 << 20)
    )
    try:
        records = list(records_until(reader, assign_readable(reader, settings.kafka, topic), 300))
    finally:
        reader.close()
    return len(records), sum(len(r.value or b"") for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from embedstream.workers.demo import sample_corpus

    corpus = [json.loads(line)["text"] for line in sample_corpus().read_text().splitlines()]
    texts = [f"{corpus[i % len(corpus)]} ({i})" for i in range(args.events)]
    sizes: dict[str, tuple[int, int]] = {}

    def environment(variant: str) -> Callable[[str], dict[str, str] | None]:
        if variant == "none":
            return lambda topic: None
        return lambda topic: {
            "EMBEDSTREAM_PIPELINE__OUTPUT_TOPIC": f"{topic}.vectors",
            "EMBEDSTREAM_PIPELINE__OUTPUT_FORMAT": variant,
        }

    def measure(variant: str, bootstrap: str, topic: str) -> None:
        if variant != "none" and variant not in sizes:
            sizes[variant] = topic_bytes(bootstrap, f"{topic}.vectors")

    with tempfile.TemporaryDirectory(prefix="embedstream-output-") as tmp:
        walls = alternating_drains(texts, {v: environment(v) for v in VARIANTS}, args.rounds, tmp, measure)
    rates = {v: args.events / statistics.median(rows) for v, rows in walls.items()}
    result: dict[str, Any] = {
        "events": args.events,
        "rounds": args.rounds,
        "drain": {
            v: {"walls_s": walls[v], "events_per_s": rates[v], "vs_none": rates[v] / rates["none"]} for v in walls
        },
        "topic": {
            v: {"records": n, "value_bytes": b, "bytes_per_record": b / max(n, 1)} for v, (n, b) in sizes.items()
        },
    }
    write_report(result)


def write_report(result: dict[str, Any]) -> None:
    write_json(REPORTS / "output_topic.json", result, 2)
    lines = [
        "# The embeddings topic's cost",
        "",
        f"`python -m bench.output_topic --events {result['events']} --rounds {result['rounds']}`: a drain of "
        f"{result['events']:,} texts (text only, embedded store, local tansu), fresh process each, the variants "
        "alternating. Events per second from launch to exit (median of the rounds).",
        "",
        "| output topic | events/s | vs none | walls (s) | records | bytes/record |",
        "|---|---|---|---|---|---|",
    ]
    for variant, row in result["drain"].items():
        topic = result["topic"].get(variant, {})
        walls = ", ".join(f"{w:.1f}" for w in row["walls_s"])
        records = f"{topic['records']:,}" if topic else "–"
        size = f"{topic['bytes_per_record']:,.0f}" if topic else "–"
        lines.append(
            f"| {variant} | {row['events_per_s']:.1f} | {row['vs_none']:.2f}× | {walls} | {records} | {size} |"
        )
    (REPORTS / "output_topic.md").write_text("\n".join(lines) + "\n")
    plot(result, REPORTS / "output_topic.png")
    print("\n".join(lines))


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(result["drain"])
    ax.bar(names, [result["drain"][n]["events_per_s"] for n in names], color=["#888", "#4c72b0", "#55a868"])
    for i, name in enumerate(names):
        row = result["drain"][name]
        ax.annotate(f"{row['vs_none']:.2f}×", (i, row["events_per_s"]), ha="center", va="bottom")
    ax.set_ylabel("events/s (drain, launch to exit)")
    ax.set_title(f"{result['events']:,} texts: without and with the embeddings topic")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
