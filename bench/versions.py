"""What version-guarded writes cost: the store's conditional upsert against a plain one, and a whole drain.

    python -m bench.versions [--points 20480] [--events 20000] [--rounds 2] [--baseline REV]

1. **Store.** ``upsert_newer`` (one conditional write per batch: each point's id with its own version, decided by
   the engine) against ``upsert`` at batch sizes 64–512, on qdrant-edge (on disk) and qdrant-client's local mode
   (``:memory:``), for new ids and for overwriting stored ids with newer versions; the two alternate per size.
2. **Drain.** ``embedstream ingest --mode drain`` of ``--events`` texts in a fresh process, this revision against
   ``--baseline REV`` (the code before versions), alternating, ``--rounds`` times each; events per second from
   launch to exit.

Writes ``bench/reports/versions.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import checkout, pyplot, save_figure, write_json
from bench.startup import alternating_drains

REPORTS = Path(__file__).parent / "reports"
BATCHES = (64, 128, 256, 512)
DIM = 384


def points(count: int, major: int, seed: int) -> list[Any]:
    from embedstream.schemas.point import PointRecord, point_id
    from embedstream.schemas.version import Version

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return [
        PointRecord.model_construct(
            id=point_id("text", f"p{i}"),
            vectors={"minilm": vectors[i].tolist()},
            payload={"modality": "text", "id": f"p{i}", "text": f"point {i}", **Version(major, i).fields()},
            sparse={},
        )
        for i in range(count)
    ]


def store_rates(backend: str, count: int, folder: Path) -> dict[str, dict[str, float]]:
    """Points per second for each batch size: plain and conditional, new ids and overwrites."""
    from embedstream.pipelines.stores import SpaceSpec, open_store
    from embedstream.schemas.settings import QdrantSettings

    first, newer = points(count, 1, seed=1), points(count, 2, seed=2)
    rates: dict[str, dict[str, float]] = {}
    for size in BATCHES:
        row: dict[str, float] = {}
        for way in ("plain", "conditional"):
            path = ":memory:" if backend == "local" else str(folder / f"{backend}-{size}-{way}")
            store = open_store(QdrantSettings.model_validate({"backend": backend, "path": path}))
            store.ensure_spaces([SpaceSpec("minilm", DIM, "minilm@1")])
            write = store.upsert if way == "plain" else store.upsert_newer
            try:
                for label, batch_points in (("new", first), ("overwrite", newer)):
                    began = time.perf_counter()
                    for start in range(0, count, size):
                        write(batch_points[start : start + size])
                    store.flush()
                    row[f"{way} {label}"] = count / (time.perf_counter() - began)
            finally:
                store.close()
        rates[str(size)] = row
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20480)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="a git revision from before versions, drained alternately with this one")
    args = parser.parse_args()

    from tqdm import tqdm

    from embedstream.workers.demo import sample_corpus

    result: dict[str, Any] = {"points": args.points, "events": args.events, "baseline": args.baseline}
    with tempfile.TemporaryDirectory(prefix="embedstream-versions-") as tmp:
        result["store"] = {
            backend: store_rates(backend, args.points, Path(tmp))
            for backend in tqdm(("edge", "local"), desc="store", unit="backend")
        }
        corpus = [json.loads(line)["text"] for line in sample_corpus().read_text().splitlines()]
        texts = [f"{corpus[i % len(corpus)]} ({i})" for i in range(args.events)]
        variants: list[tuple[str, dict[str, str] | None]] = [("versioned", None)]
        if args.baseline:
            variants.insert(0, (f"before versions @{args.baseline}", checkout(args.baseline, Path(tmp) / "base")))
        walls = alternating_drains(texts, {label: _fixed(code) for label, code in variants}, args.rounds, tmp)
        result["drain"] = {
            label: {"walls_s": rows, "events_per_s": args.events / statistics.median(rows)}
            for label, rows in walls.items()
        }
    write_report(result)


def _fixed(environment: dict[str, str] | None) -> Callable[[str], dict[str, str] | None]:
    """The same environment for every drain of a variant, whatever its topic."""
    return lambda topic: environment


def write_report(result: dict[str, Any]) -> None:
    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "versions.json", result, 2)
    lines = [
        "# Version-guarded writes: what they cost",
        "",
        "Measured by `python -m bench.versions` on this machine (2 cores); ratios side by side in one run.",
        "",
        f"## The store: conditional upsert against plain, {result['points']} points of {DIM} dimensions",
        "",
        "| backend | batch | plain new /s | conditional new /s | ratio | plain overwrite /s | conditional "
        "overwrite /s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, rows in result["store"].items():
        for size, row in rows.items():
            lines.append(
                f"| {backend} | {size} | {row['plain new']:.0f} | {row['conditional new']:.0f} | "
                f"{row['conditional new'] / row['plain new']:.2f} | {row['plain overwrite']:.0f} | "
                f"{row['conditional overwrite']:.0f} | {row['conditional overwrite'] / row['plain overwrite']:.2f} |"
            )
    lines += ["", f"## A whole drain of {result['events']} texts (fresh process, launch to exit)", ""]
    lines += ["| code | events/s (median) | walls (s) |", "|---|---|---|"]
    drains = result["drain"]
    for label, row in drains.items():
        walls = ", ".join(f"{w:.1f}" for w in row["walls_s"])
        lines.append(f"| {label} | {row['events_per_s']:.1f} | {walls} |")
    if len(drains) == 2:
        (before, after) = drains.values()
        lines += ["", f"Versioned against before: **{after['events_per_s'] / before['events_per_s']:.2f}×**."]
    (REPORTS / "versions.md").write_text("\n".join(lines) + "\n")
    plot(result, REPORTS / "versions.png")


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result["store"]), figsize=(5 * len(result["store"]), 3.6), squeeze=False)
    for ax, (backend, rows) in zip(axes[0], result["store"].items(), strict=True):
        sizes = [int(s) for s in rows]
        for key, style in (
            ("plain new", "o-"),
            ("conditional new", "o--"),
            ("plain overwrite", "s-"),
            ("conditional overwrite", "s--"),
        ):
            ax.plot(sizes, [rows[str(s)][key] for s in sizes], style, label=key)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("points per upsert")
        ax.set_ylabel("points / s")
        ax.set_title(backend)
        ax.legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
