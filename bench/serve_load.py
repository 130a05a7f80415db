"""Load on the search API: concurrent clients on loopback against ``embedstream serve`` over 100k points.

    python -m bench.serve_load [--points 100000] [--seconds 12] [--concurrency 1 4 16] [--baseline REV]

The store is the embedded one (qdrant-edge), indexed with ``optimize`` as a drain leaves it. Its 100k
``minilm`` points are the 520 sample-corpus vectors (really encoded), each repeated with small Gaussian jitter and
re-normalized: the distribution of real text vectors at the size asked for, without encoding 100k texts first.
Two kinds of request, each at every concurrency level, for ``--seconds`` each:

* ``text``: ``POST /search {"text": …, "k": 10}`` — the query is encoded by ``minilm`` (ONNX Runtime) then searched,
  run four times, side by side: as before batching (``api.batch_queries`` off, each query encoded and searched
  alone, ORT's threads spinning between runs as is its default), alone with the threads sleeping (the query
  encoders' default now), batched with two runners (``api.query_runners = 2``), and batched (the default: the
  queries that arrive together are encoded in one model call and searched in one store call, one batch at a
  time);
* ``point``: ``POST /search {"point_id": …, "k": 10}`` — no encoding: the store's search alone.

``--baseline REV`` (a git revision of this repository) also runs that revision's server, unbatched, first: the
code as it was, in the same run, on the same store and the same Python environment.

Clients are coroutines on one event loop in this process, each with its keep-alive connection, writing HTTP/1.1
by hand so that the load generator takes a few percent of a core (the report's *client cores*); the server is
its own process. On a 2-core machine clients and server share the CPU, so the numbers are a floor. Writes
``bench/reports/serve_load.*``.
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
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import checkout, pyplot, save_figure, write_json

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


# Server configurations compared: the environment each server starts with, and the query kinds driven at it.
CONFIGURATIONS: tuple[tuple[dict[str, str], list[tuple[str, str]]], ...] = (
    (
        {"EMBEDSTREAM_API__BATCH_QUERIES": "false", "EMBEDSTREAM_MODEL__INTRA_OP_SPINNING": "true"},
        [("text", "text alone, spinning")],
    ),
    ({"EMBEDSTREAM_API__BATCH_QUERIES": "false"}, [("text", "text alone")]),
    ({"EMBEDSTREAM_API__QUERY_RUNNERS": "2"}, [("text", "text batched, two runners")]),
    ({"EMBEDSTREAM_API__BATCH_QUERIES": "true"}, [("text", "text batched"), ("point", "point")]),
)
BEFORE, AFTER = "text alone, spinning", "text batched"


def start_server(path: str, environment: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    import httpx

    from embedstream.workers.broker import free_port

    port = free_port()
    env = dict(
        os.environ,
        EMBEDSTREAM_QDRANT__PATH=path,
        EMBEDSTREAM_QDRANT__BACKEND="edge",
        **environment,
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


def batched(url: str) -> tuple[float, float]:
    """(queries, batches) the server's ``embedstream_query_batch_size`` histogram has counted so far."""
    import httpx

    found = {"sum": 0.0, "count": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        for part in found:
            if line.startswith(f"embedstream_query_batch_size_{part} "):
                found[part] = float(line.split()[1])
    return found["sum"], found["count"]


def drive(url: str, kind: str, clients: int, seconds: float, ids: list[str], label: str = "") -> dict[str, Any]:
    """``clients`` keep-alive connections asking one request after another for ``seconds``: the row's figures,
    with the load generator's own CPU (cores busy) to show it left the server the machine."""
    import uvloop

    queries, batches = batched(url)
    cpu, started = time.process_time(), time.perf_counter()
    latencies, errors = uvloop.run(_load(url, kind, clients, seconds, ids))
    wall = time.perf_counter() - started
    client_cores = (time.process_time() - cpu) / wall
    queries_after, batches_after = batched(url)
    ms = np.asarray(latencies) * 1000
    return {
        "mean_batch": (queries_after - queries) / (batches_after - batches) if batches_after > batches else None,
        "kind": label or kind,
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "client_cores": client_cores,
    }


async def _load(url: str, kind: str, clients: int, seconds: float, ids: list[str]) -> tuple[list[float], int]:
    """The clients as coroutines on one event loop writing HTTP/1.1 by hand: ~0.05 of a core at these rates,
    where httpx clients on threads (this bench's first load generator) took 0.4-0.5 of the two cores the
    server needs, and so capped the faster server more than the slower."""
    import asyncio

    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop_at:
                asked = {"point_id": rng.choice(ids)} if kind == "point" else {"text": rng.choice(QUERIES)}
                body = json.dumps({**asked, "k": 10}).encode()
                head = f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                began = time.perf_counter()
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                answer = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in answer.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                elapsed = time.perf_counter() - began
                if answer.startswith(b"HTTP/1.1 200 "):
                    latencies.append(elapsed)
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--baseline", help="a git revision whose server also runs, unbatched (its code as it was)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="embedstream-load-") as tmp:
        ids = fill_store(tmp, args.points)
        configurations = list(CONFIGURATIONS)
        if args.baseline:
            old = checkout(args.baseline, Path(tmp) / "baseline")
            off = {"EMBEDSTREAM_API__BATCH_QUERIES": "false"}
            configurations.insert(0, ({**old, **off}, [("text", f"text alone @{args.baseline}")]))
        # one server at a time (one process may hold the embedded store)
        for environment, kinds in configurations:
            server, url = start_server(tmp, environment)
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
    write_json(REPORTS / "serve_load.json", {"points": points, "rows": rows}, 2)
    lines = [
        f"# Search API under load: {points:,} points, embedded store, loopback",
        "",
        "`python -m bench.serve_load` — the clients (keep-alive connections, coroutines on one event loop) and",
        "the server share this machine's cores; *client cores*: the load generator's own CPU.",
        "",
        "| query | clients | requests/s | p50 ms | p99 ms | errors | queries per encoder call | client cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        batch = f"{row['mean_batch']:.1f}" if row.get("mean_batch") else ""
        lines.append(
            f"| {row['kind']} | {row['clients']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['errors']} | {batch} | {row['client_cores']:.2f} |"
        )
    baselines = sorted({r["kind"] for r in rows if "@" in r["kind"]})
    for before, label in (
        *((kind, f"the server at {kind.split('@')[1]} (unbatched)") for kind in baselines),
        (BEFORE, "as before batching (one at a time, spinning)"),
        ("text alone", "alone"),
        ("text batched, two runners", "batched with two runners"),
    ):
        lines += ["", f"Batched text queries against each {label}, same run:", ""]
        lines += comparison(rows, before, AFTER)
    lines += [
        "",
        "*text* = encode the query with minilm, then search (*alone*: `api.batch_queries = false`, one model call",
        "and one store call per query; *spinning*: ORT's threads spin between runs, its default and the query",
        "encoders' before they were told to sleep; *batched*: the default, queries that arrive together share",
        "both calls); *point* = search by a stored point's vector (no encoding): the difference is the encoder's",
        "share; *two runners*: `api.query_runners = 2`, two batches answered at a time (the default is one). Every",
        "row but a baseline's (*@REV*: that revision's code) runs the ASGI middlewares, uvloop and httptools, and",
        "awaits its batch on the event loop: only batching, runners and spinning are toggled.",
    ]
    (REPORTS / "serve_load.md").write_text("\n".join(lines) + "\n")
    plot(rows, points, REPORTS / "serve_load.png")
    print("\n".join(lines))


def comparison(rows: list[dict[str, Any]], before: str, after: str) -> list[str]:
    """One line per client count: ``after``'s requests/s over ``before``'s, and both latencies."""
    was = {r["clients"]: r for r in rows if r["kind"] == before}
    now = {r["clients"]: r for r in rows if r["kind"] == after}
    return [
        f"- {clients} clients: {now[clients]['requests_per_s'] / was[clients]['requests_per_s']:.2f}x requests/s; "
        f"p99 {now[clients]['p99_ms']:.1f} ms vs {was[clients]['p99_ms']:.1f} ms; "
        f"p50 {now[clients]['p50_ms']:.1f} vs {was[clients]['p50_ms']:.1f} ms"
        for clients in sorted(set(was) & set(now))
    ]


def plot(rows: list[dict[str, Any]], points: int, path: Path) -> None:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    kinds = [*sorted({r["kind"] for r in rows if "@" in r["kind"]}), BEFORE, "text alone"]
    kinds += ["text batched, two runners", "text batched", "point"]
    for kind, marker in zip(kinds, "dxov^s"[-len(kinds) :], strict=True):
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
