"""The embedded store at 100k points, with and without scalar (int8) quantization: memory, recall@10, latency.

    python -m bench.store_scale [--points 100000] [--queries 200]

The points are real ``minilm`` vectors of distinct texts (two corpus sentences each, 270k pairs to draw from),
embedded once and shared by both configurations; the queries are other pairs. Each configuration is built in
its own subprocess (upsert, flush, ``optimize`` as a drain leaves the store) and searched in another fresh one,
so the memory it reports is that of a process that opened the store and answered queries: RSS split into
anonymous memory (the heap: what quantized vectors kept in RAM cost) and file pages (memory-mapped segments,
which the OS can drop). recall@10 is against exact search (numpy over the same vectors). Writes
``bench/reports/store_scale.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import pyplot, run_phase, save_figure, write_json

REPORTS = Path(__file__).parent / "reports"
# name → (collection options, qdrant.hnsw_ef): the defaults, then each with a wider HNSW search
CONFIGS: dict[str, tuple[dict[str, Any], int | None]] = {
    "float32": ({}, None),
    "int8": ({"scalar_quantization": True}, None),
    "float32, ef 128": ({}, 128),
    "int8, ef 128": ({"scalar_quantization": True}, 128),
}
CACHE = Path(".embedstream") / "bench-cache"  # the embedded vectors, so a rerun skips the encoder


def texts(count: int, seed: int) -> list[str]:
    from embedstream.onnx_models.corpus import corpus_texts

    corpus = corpus_texts()
    rng = np.random.default_rng(seed)
    pairs = rng.choice(len(corpus) * len(corpus), size=count, replace=False)
    return [f"{corpus[p // len(corpus)]} {corpus[p % len(corpus)]}" for p in pairs]


def embed(points: int, queries: int, folder: Path) -> None:
    cached = CACHE / f"store_scale-{points}-{queries}.npz"
    if cached.exists():
        saved = np.load(cached)
        np.save(folder / "points.npy", saved["points"])
        np.save(folder / "queries.npy", saved["queries"])
        return
    from tqdm import tqdm

    from embedstream.onnx_models.text_encoder import TextEncoder
    from embedstream.schemas.settings import Settings

    encoder = TextEncoder.from_settings(Settings.load().model)
    drawn = texts(points + queries, seed=1)
    started = time.perf_counter()
    step = 5000
    parts = [
        encoder.embed(drawn[at : at + step]) for at in tqdm(range(0, len(drawn), step), desc="embedding", unit="5k")
    ]
    vectors = np.concatenate(parts)
    print(f"embedded {len(drawn)} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    np.save(folder / "points.npy", vectors[:points])
    np.save(folder / "queries.npy", vectors[points:])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, points=vectors[:points], queries=vectors[points:])


def settings_for(folder: Path, config: str) -> Any:
    from embedstream.schemas.settings import Settings

    options, ef = CONFIGS[config]
    qdrant = {"path": str(folder / _slug(config)), "collection_options": options, "min_free_mb": 0, "hnsw_ef": ef}
    return Settings.load(qdrant=qdrant)


def _slug(config: str) -> str:
    return config.replace(", ", "-").replace(" ", "")


def build(folder: Path, config: str) -> dict[str, Any]:
    from embedstream.pipelines.stores import SpaceSpec, open_store
    from embedstream.schemas.point import PointRecord, point_id

    vectors = np.load(folder / "points.npy")
    store = open_store(settings_for(folder, config).qdrant)
    try:
        store.ensure_spaces([SpaceSpec("minilm", vectors.shape[1], "minilm@1")])
        for start in range(0, len(vectors), 1000):
            store.upsert(
                [
                    PointRecord(id=point_id("text", f"p{i}"), vectors={"minilm": vectors[i].tolist()}, payload={"i": i})
                    for i in range(start, min(start + 1000, len(vectors)))
                ]
            )
        store.flush()
        started = time.perf_counter()
        store.optimize()
        built = time.perf_counter() - started
    finally:
        store.close()
    disk = sum(f.stat().st_size for f in (folder / _slug(config)).rglob("*") if f.is_file())
    return {"index_seconds": round(built, 1), "disk_mb": round(disk / 1e6, 1)}


def memory() -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile")}


def search(folder: Path, config: str) -> dict[str, Any]:
    from embedstream.pipelines.stores import open_store

    points, queries = np.load(folder / "points.npy"), np.load(folder / "queries.npy")
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    exact = np.argsort(-(queries @ unit.T), axis=1)[:, :10]
    del unit, points
    before = memory()
    store = open_store(settings_for(folder, config).qdrant)
    try:
        found, seconds = [], []
        for query in queries:
            started = time.perf_counter()
            hits = store.search("minilm", query.tolist(), limit=10)
            seconds.append(time.perf_counter() - started)
            found.append({int(h.payload["i"]) for h in hits})
        after = memory()
    finally:
        store.close()
    recall = float(np.mean([len(got & set(want.tolist())) / 10 for got, want in zip(found, exact, strict=True)]))
    return {
        "recall@10": round(recall, 4),
        "p50_ms": round(float(np.median(seconds)) * 1000, 2),
        "p99_ms": round(float(np.percentile(seconds, 99)) * 1000, 2),
        "store_rss_mb": round(after["VmRSS"] - before["VmRSS"], 1),
        "store_anon_mb": round(after["RssAnon"] - before["RssAnon"], 1),
        "store_file_mb": round(after["RssFile"] - before["RssFile"], 1),
    }


def write_report(measured: dict[str, Any]) -> str:
    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "store_scale.json", measured, 1)
    rows = measured["results"]
    lines = [
        f"# The embedded store at {measured['points']:,} points: float32 vs int8 (scalar quantization)",
        "",
        f"`python -m bench.store_scale` — real `minilm` vectors (384-d) of {measured['points']:,} distinct texts,",
        f"{measured['queries']} other texts as queries; recall@10 against exact search. Memory: what opening the",
        "store and answering the queries added to a fresh process (anonymous = heap, file = mapped segments).",
        "int8: `qdrant.collection_options.scalar_quantization = true` when the collection is made; its searches",
        "take 2× the hits by int8 and rescore them with the originals (`quantization_oversampling`). ef 128:",
        "`qdrant.hnsw_ef = 128` (the engine's default explores fewer candidates).",
        "",
        "| vectors | recall@10 | p50 ms | p99 ms | RSS MB | anon MB | file MB | disk MB | index s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config in CONFIGS:
        r = rows[config]
        lines.append(
            f"| {config} | {r['recall@10']:.4f} | {r['p50_ms']} | {r['p99_ms']} | {r['store_rss_mb']} | "
            f"{r['store_anon_mb']} | {r['store_file_mb']} | {r['disk_mb']} | {r['index_seconds']} |"
        )
    lines += [
        "",
        "Read with the set in mind: every text is two of 520 corpus sentences, so each sentence recurs in hundreds",
        "of texts and the 10th and 11th exact neighbours are near-ties (median score gap 0.003, a quarter under",
        "0.001 on this seed); an approximate index swaps them, so recall@10 against the exact order stays near 0.9",
        "and a wider search (ef 128) gains a few hundredths. Two runs differed by up to 0.02 in recall (the HNSW",
        "build is multi-threaded, not deterministic). What the rows compare: int8 with rescoring stays within a",
        "few hundredths of float32's recall; its int8 copy of the vectors is heap (100k × 384 bytes ≈",
        "38 MB) on top of the float32 originals, which stay memory-mapped file pages the OS can drop under",
        "pressure (so the saving is in what must stay resident, not in RSS here); the index builds faster.",
    ]
    text = "\n".join(lines) + "\n"
    (REPORTS / "store_scale.md").write_text(text)
    plot(measured, REPORTS / "store_scale.png")
    return text


def plot(measured: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    rows = measured["results"]
    fig, (memory_axis, recall_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(CONFIGS)
    anon = [rows[c]["store_anon_mb"] for c in names]
    mapped = [rows[c]["store_file_mb"] for c in names]
    memory_axis.bar(names, anon, label="anonymous (heap)")
    memory_axis.bar(names, mapped, bottom=anon, label="file pages (mapped)")
    memory_axis.tick_params(axis="x", labelsize=7)
    memory_axis.set(ylabel="MB", title=f"Store memory at {measured['points']:,} points")
    memory_axis.legend(fontsize=8)
    recall_axis.bar(names, [rows[c]["recall@10"] for c in names], color="tab:green")
    recall_axis.tick_params(axis="x", labelsize=7)
    recall_axis.set(ylim=(0.8, 1.0), title="recall@10 vs exact search")
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--phase", nargs=2, metavar=("WHAT", "FOLDER_CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # one phase in its own process (bench.common.run_phase): its memory is its own
        what, where = args.phase
        folder, config = where.rsplit(":", 1)
        result = build(Path(folder), config) if what == "build" else search(Path(folder), config)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="store-scale-") as tmp:
        folder = Path(tmp)
        embed(args.points, args.queries, folder)
        results = {}
        for config in CONFIGS:
            results[config] = run_phase("bench.store_scale", "build", f"{folder}:{config}")
            results[config] |= run_phase("bench.store_scale", "search", f"{folder}:{config}")
            print(config, results[config], flush=True)
    print(write_report({"points": args.points, "queries": args.queries, "results": results}))


if __name__ == "__main__":
    main()
