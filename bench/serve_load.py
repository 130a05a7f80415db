"""Load on the search API: concurrent clients on loopback against ``embedstream serve`` over 100k points.

    python -m bench.serve_load [--points 100000] [--seconds 12] [--concurrency 1 4 16]

The store is the embedded one (qdrant-edge), indexed with ``optimize`` as a drain leaves it. Its 100k
``minilm`` points are the 520 sample-corpus vectors (really encoded), each repeated with small Gaussian jitter and
re-normalized: the distribution of real text vectors at the size asked for, without encoding 100k texts first.
Two kinds of request, each at every concurrency level, for ``--seconds`` each:

* ``text``: ``POST /search {"text": …, "k": 10}`` — the query is encoded by ``minilm`` (ONNX Runtime) then searched,
  run twice: with ``api.batch_queries`` off (each query encoded and searched alone) and on (the default: the
  queries that arrive together are encoded in one model call and searched in one store call), side by side;
* ``point``: ``POST /search {"point_id": …, "k": 10}`` — no encoding: the store's search alone.

Clients are threads with keep-alive connections, in this process; the server is its own process. On a 2-core
machine clients and server share the CPU, so the numbers are a floor. Writes ``bench/reports/serve_load.*``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import pyplot, save_figure

REPORTS = Path(__file__).parent / "reports"
QUERIES = (
    "which planets can I see without a telescope",
    "how do I keep bread dough from sticking",
    "saving money for retirement",
    "fixing a memory leak",
    "best time to plant tomatoes",
    "why do trains need signals",
    "how do whales communicate",
    "warming up before running",
)


def fill_store(path: str, points: int) -> list[str]:
    from tqdm import tqdm

    from embedstream.onnx_models.corpus import corpus_texts as sample_texts
    from embedstream.onnx_models.text_encoder import TextEncoder
    from embedstream.pipelines.stores import SpaceSpec, open_store
    from embedstream.schemas.point import PointRecord, point_id
    from embedstream.schemas.settings import Settings

    settings = Settings.load(qdrant={"backend": "edge", "path": path})
    texts = sample_texts()
    encoder = TextEncoder.from_settings(settings.model)
    base = encoder.embed(texts)
    rng = np.random.default_rng(0)
    store = open_store(settings.qdrant)
    ids = []
    try:
        store.ensure_spaces([SpaceSpec("minilm", encoder.dim, encoder.manifest.ref)])
        for start in tqdm(range(0, points, 1000), desc="filling the store", unit="k points"):
            batch = []
            for i in range(start, min(points, start + 1000)):
                vector = base[i % len(base)] + rng.normal(0, 0.03, encoder.dim)
                vector /= np.linalg.norm(vector)
                pid = point_id("text", f"load-{i}")
                text = texts[i % len(texts)]
                payload = {"modality": "text", "id": f"load-{i}", "text": text}
                batch.append(PointRecord(id=pid, vectors={"minilm": vector.tolist()}, payload=payload))
                ids.append(pid)
            store.upsert(batch)
        store.flush()
        started = time.perf_counter()
        store.optimize()  # what a drain does at its end: build the HNSW index
        print(f"HNSW index built in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        store.close()
    return ids


def start_server(path: str, batch_queries: bool) -> tuple[subprocess.Popen[str], str]:
    import httpx

    from embedstream.workers.broker import free_port

    port = free_port()
    env = dict(
        os.environ,
        EMBEDSTREAM_QDRANT__PATH=path,
        EMBEDSTREAM_QDRANT__BACKEND="edge",
        EMBEDSTREAM_API__BATCH_QUERIES=str(batch_queries).lower(),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "embedstream.workers.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the server did not start")


def drive(url: str, kind: str, clients: int, seconds: float, ids: list[str], label: str = "") -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as http:
            while time.perf_counter() < stop_at:
                body = (
                    {"point_id": rng.choice(ids), "k": 10}
                    if kind == "point"
                    else {"text": rng.choice(QUERIES), "k": 10}
                )
                began = time.perf_counter()
                response = http.post(f"{url}/search", json=body)
                elapsed = time.perf_counter() - began
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "kind": label or kind,
        "clients": clients,
        "requests": len(latencies),
        "errors": errors[0],
        "requests_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="embedstream-load-") as tmp:
        ids = fill_store(tmp, args.points)
        # one server at a time (one process may hold the embedded store): each alone, then batched (and points)
        for batch_queries, kinds in (
            (False, [("text", "text alone")]),
            (True, [("text", "text batched"), ("point", "point")]),
        ):
            server, url = start_server(tmp, batch_queries)
            try:
                for kind, label in kinds:
                    drive(url, kind, 2, 2.0, ids)  # warm-up: sessions, caches, connection pools
                    for clients in args.concurrency:
                        row = drive(url, kind, clients, args.seconds, ids, label)
                        rows.append(row)
                        print(
                            f"{label:<12} {clients:>3} clients: {row['requests_per_s']:7.1f} req/s, "
                            f"p50 {row['p50_ms']:6.1f} ms, p99 {row['p99_ms']:6.1f} ms, errors {row['errors']}",
                            flush=True,
                        )
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
    write_report(rows, args.points)


def write_report(rows: list[dict[str, Any]], points: int) -> None:
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "serve_load.json").write_text(json.dumps({"points": points, "rows": rows}, indent=2))
    lines = [
        f"# Search API under load: {points:,} points, embedded store, loopback",
        "",
        "`python -m bench.serve_load` — client threads (keep-alive) and the server share this machine's cores.",
        "",
        "| query | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['kind']} | {row['clients']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['errors']} |"
        )
    alone = {r["clients"]: r for r in rows if r["kind"] == "text alone"}
    batched = {r["clients"]: r for r in rows if r["kind"] == "text batched"}
    lines += ["", "Batched text queries against each alone, same run:", ""]
    for clients in sorted(set(alone) & set(batched)):
        a, b = alone[clients], batched[clients]
        lines.append(
            f"- {clients} clients: {b['requests_per_s'] / a['requests_per_s']:.2f}x requests/s; "
            f"p99 {b['p99_ms']:.1f} ms batched vs {a['p99_ms']:.1f} ms alone; "
            f"p50 {b['p50_ms']:.1f} vs {a['p50_ms']:.1f} ms"
        )
    lines += [
        "",
        "*text* = encode the query with minilm, then search (*alone*: `api.batch_queries = false`, one model call",
        "and one store call per query; *batched*: the default, queries that arrive together share both); *point* =",
        "search by a stored point's vector (no encoding): the difference is the encoder's share.",
    ]
    (REPORTS / "serve_load.md").write_text("\n".join(lines) + "\n")
    plot(rows, points, REPORTS / "serve_load.png")
    print("\n".join(lines))


def plot(rows: list[dict[str, Any]], points: int, path: Path) -> None:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind, marker in (("text alone", "o"), ("text batched", "^"), ("point", "s")):
        mine = [r for r in rows if r["kind"] == kind]
        clients = [r["clients"] for r in mine]
        left.plot(clients, [r["requests_per_s"] for r in mine], marker=marker, label=kind)
        right.plot(clients, [r["p50_ms"] for r in mine], marker=marker, label=f"{kind} p50")
        right.plot(clients, [r["p99_ms"] for r in mine], marker=marker, linestyle="--", label=f"{kind} p99")
    left.set(title=f"throughput ({points:,} points)", xlabel="concurrent clients", ylabel="requests/s", xscale="log")
    right.set(title="latency", xlabel="concurrent clients", ylabel="ms", xscale="log", yscale="log")
    left.legend()
    right.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
