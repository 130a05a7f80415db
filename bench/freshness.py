"""Freshness: how long an event takes from Kafka to a durable point, a committed offset and a search hit.

    python -m bench.freshness [--seconds 20] [--rates 10 100 400] [--backlog 20000] [--searchable 200]

Each scenario runs in its own subprocess against one tansu broker, on a fresh topic of 2 partitions and a
fresh embedded store, with ``ingest --mode stream`` (Beam's in-process runner) and the default settings
(``pipeline.max_latency_ms`` = 500):

* ``rate R``: a producer sends R events/s for ``--seconds`` (after a warm-up the pipeline has delivered).
  For every event: Kafka timestamp → the flush that made its point durable (the store's ``flush`` is timed
  in-process), and → the moment the group's committed offset passed it (a consumer polls the committed
  offsets every 50 ms: what a restart would resume from). The producer and that consumer run in a process
  of their own, so that they do not take the measured pipeline's CPU.
* ``backlog``: ``--backlog`` events are produced first, then the stream run starts; its rate from the first
  encoder call to the last durable point is compared with ``bench.ingest_text``'s drain pipeline on the same
  number of events, run in the same bench (today's throughput: a drain is a backlog by definition).
* ``searchable``: ``embedstream serve --ingest`` in a subprocess; ``--searchable`` events at 20 events/s;
  each event is looked up (``GET /points/{id}``) until it exists, then searched for once through
  ``POST /search`` (its text, filtered to its id), which must return it: event → search hit.

Writes ``bench/reports/freshness.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import pyplot, run_phase, save_figure, write_json
from embedstream.schemas.settings import Settings

REPORTS = Path(__file__).parent / "reports"


def phase(*args: str) -> dict[str, Any]:
    """One phase of this benchmark in its own subprocess."""
    return run_phase("bench.freshness", *args)


PARTITIONS = 2
WARMUP_EVENTS = 20
SEARCH_RATE = 20.0


def texts(n: int, tag: str) -> list[str]:
    """Corpus lines made unique per event (a search for one must not find its twins)."""
    from bench.ingest_text import corpus_texts

    return [f"{line} ({tag} {i})" for i, line in enumerate(corpus_texts(n))]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def curve(values: list[float], points: int = 200) -> list[float]:
    """The sorted values thinned to ``points`` evenly spaced ranks (enough for the plot, small in the report)."""
    ordered = sorted(values)
    if len(ordered) <= points:
        return [round(v, 4) for v in ordered]
    return [round(ordered[round(i * (len(ordered) - 1) / (points - 1))], 4) for i in range(points)]


def event_settings(bootstrap: str, topic: str, store: str) -> Settings:
    return Settings.load(
        kafka={
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "group_id": f"{topic}.group",
            "partitions": PARTITIONS,
        },
        qdrant={"backend": "edge", "path": store},
        pipeline={"mode": "stream", "progress_interval_s": 30.0},
    )


class DurableClock:
    """Times the store's flushes in this process: each flushed point's event id → when it became durable."""

    def __init__(self) -> None:
        from embedstream.pipelines.stores.shared import SharedStore

        self.durable: dict[str, float] = {}
        self.first_upsert: float | None = None
        self._pending: list[str] = []
        self._lock = threading.Lock()
        upsert, flush = SharedStore.upsert, SharedStore.flush
        clock = self

        def timed_upsert(store: Any, points: Any) -> None:
            upsert(store, points)
            with clock._lock:
                clock.first_upsert = clock.first_upsert or time.time()
                clock._pending.extend(point.payload["id"] for point in points)

        def timed_flush(store: Any) -> None:
            flush(store)
            now = time.time()
            with clock._lock:
                for event_id in clock._pending:
                    clock.durable.setdefault(event_id, now)
                clock._pending = []

        setattr(SharedStore, "upsert", timed_upsert)  # noqa: B010 (methods replaced for timing)
        setattr(SharedStore, "flush", timed_flush)  # noqa: B010


class CommitClock:
    """Polls the group's committed offsets: (partition, offset) → when the committed offset passed it."""

    def __init__(self, settings: Settings) -> None:
        from kafka import TopicPartition

        from embedstream.pipelines.io.kafka_clients import consumer

        self._client = consumer(settings.kafka, 1 << 20, group=True)
        self._tps = [TopicPartition(settings.kafka.topic, p) for p in range(PARTITIONS)]
        self.passed: dict[int, list[tuple[int, float]]] = {p: [] for p in range(PARTITIONS)}  # (offset, when)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            now = time.time()
            for tp in self._tps:
                committed = self._client.committed(tp)
                history = self.passed[tp.partition]
                if committed is not None and (not history or committed > history[-1][0]):
                    history.append((committed, now))

    def when(self, partition: int, offset: int) -> float | None:
        for committed, when in self.passed[partition]:
            if committed > offset:
                return when
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()


def send_at_rate(settings: Settings, items: list[tuple[str, str]], rate: float) -> dict[str, tuple[int, int, float]]:
    """Send (id, text) events evenly spaced at ``rate``/s; id → (partition, offset, Kafka timestamp in s)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[settings.kafka.bootstrap_servers], linger_ms=5, acks=1)
    futures = {}
    started = time.perf_counter()
    for i, (event_id, text) in enumerate(items):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        value = json.dumps({"schema": 1, "id": event_id, "modality": "text", "text": text}).encode()
        futures[event_id] = producer.send(settings.kafka.topic, key=event_id.encode(), value=value)
    producer.flush()
    sent = {}
    for event_id, future in futures.items():
        meta = future.get(timeout=30)
        sent[event_id] = (meta.partition, meta.offset, meta.timestamp / 1000)
    producer.close()
    return sent


def wait_until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_stream(settings: Settings) -> tuple[threading.Event, threading.Thread]:
    """A stream run on a thread, its store shared from here (so ``DurableClock`` sees its flushes)."""
    from embedstream.pipelines.handles import Handle
    from embedstream.pipelines.ingest import run_ingest
    from embedstream.pipelines.stores import open_store
    from embedstream.pipelines.stores.shared import SharedStore

    stop = threading.Event()
    store = Handle.register(SharedStore(open_store(settings.qdrant)), "store")
    thread = threading.Thread(target=run_ingest, args=(settings,), kwargs={"stop": stop, "store": store}, daemon=True)
    thread.start()
    return stop, thread


def phase_produce(bootstrap: str, topic: str, rate: float, seconds: float) -> dict[str, Any]:
    """The load and the commit clock, in a process of their own (so they do not take the pipeline's CPU):
    send ``rate`` events/s for ``seconds``, then follow the committed offsets until all of them are passed."""
    settings = event_settings(bootstrap, topic, "unused")
    commits = CommitClock(settings)
    n = max(1, int(rate * seconds))
    sent = send_at_rate(settings, [(f"r{i}", text) for i, text in enumerate(texts(n, f"rate {rate}"))], rate)
    wait_until(lambda: all(commits.when(p, o) for p, o, _ in sent.values()), 300)
    commits.close()
    committed = {i: commits.when(p, o) for i, (p, o, _) in sent.items()}
    return {"sent": {i: ts for i, (_, _, ts) in sent.items()}, "committed": committed}


def phase_rate(bootstrap: str, topic: str, rate: float, seconds: float) -> dict[str, Any]:
    from embedstream.pipelines.io.kafka_clients import ensure_topics

    durable = DurableClock()
    with tempfile.TemporaryDirectory() as store:
        settings = event_settings(bootstrap, topic, store)
        ensure_topics(settings.kafka, [topic])
        stop, thread = start_stream(settings)
        warm = [(f"warm-{i}", text) for i, text in enumerate(texts(WARMUP_EVENTS, "warm"))]
        send_at_rate(settings, warm, 50.0)
        if not wait_until(lambda: all(w in durable.durable for w, _ in warm), 120):
            raise RuntimeError("the pipeline did not deliver the warm-up events")
        load = phase("produce", bootstrap, topic, str(rate), str(seconds))
        delivered = wait_until(lambda: all(i in durable.durable for i in load["sent"]), 300)
        stop.set()
        thread.join(120)
    sent, committed = load["sent"], load["committed"]
    to_durable = [durable.durable[i] - ts for i, ts in sent.items() if i in durable.durable]
    to_commit = [committed[i] - ts for i, ts in sent.items() if committed.get(i) is not None]
    return {
        "rate": rate,
        "events": len(sent),
        "all_delivered": delivered,
        "durable_s": percentiles(to_durable),
        "committed_s": percentiles(to_commit),
        "durable_samples": curve(to_durable),
    }


def phase_backlog(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    from bench.ingest_text import produce
    from embedstream.onnx_models.text_encoder import TextEncoder

    durable = DurableClock()
    first_encode: list[float] = []
    original = TextEncoder.embed_batch

    def timed(self: TextEncoder, batch: Any) -> Any:
        if not first_encode:
            first_encode.append(time.time())
        return original(self, batch)

    setattr(TextEncoder, "embed_batch", timed)  # noqa: B010 (a method replaced for timing)
    produce(bootstrap, topic, n)
    with tempfile.TemporaryDirectory() as store:
        settings = event_settings(bootstrap, topic, store)
        stop, thread = start_stream(settings)
        done = wait_until(lambda: len(durable.durable) >= n, 1800)
        stop.set()
        thread.join(120)
    last = max(durable.durable.values())
    return {"events": n, "all_delivered": done, "events_per_s": n / (last - first_encode[0])}


def phase_drain(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    """``bench.ingest_text``'s pipeline phase (drain), its rate taken the same way: from the first encode."""
    from bench.ingest_text import phase_pipeline, produce

    produce(bootstrap, topic, n)
    with tempfile.TemporaryDirectory() as store:
        result = phase_pipeline(n, bootstrap, topic, store, f"{topic}.group")
    return {"events": n, "events_per_s": n / (result["seconds"] - result["startup_s"])}


def phase_searchable(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    import httpx

    from embedstream.pipelines.io.kafka_clients import ensure_topics
    from embedstream.schemas.point import point_id
    from embedstream.workers.broker import free_port

    with tempfile.TemporaryDirectory() as store:
        settings = event_settings(bootstrap, topic, store)
        ensure_topics(settings.kafka, [topic])
        port = free_port()
        env = {
            **os.environ,
            "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "EMBEDSTREAM_KAFKA__TOPIC": topic,
            "EMBEDSTREAM_KAFKA__DEAD_LETTER_TOPIC": f"{topic}.dlq",
            "EMBEDSTREAM_KAFKA__GROUP_ID": f"{topic}.group",
            "EMBEDSTREAM_QDRANT__PATH": store,
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "embedstream.workers.cli", "serve", "--ingest", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api = f"http://127.0.0.1:{port}"
        client = httpx.Client(timeout=30)

        def found(event_id: str, text: str) -> bool:
            body = {"text": text, "k": 1, "where": {"id": event_id}}
            hits = client.post(f"{api}/search", json=body).json().get("hits", [])
            return bool(hits)

        try:
            if not wait_until(lambda: _healthy(client, api), 120):
                raise RuntimeError("serve --ingest did not come up")
            warm = [(f"warm-{i}", text) for i, text in enumerate(texts(WARMUP_EVENTS, "warm"))]
            send_at_rate(settings, warm, 50.0)
            if not wait_until(lambda: all(found(i, t) for i, t in warm[-3:]), 120):
                raise RuntimeError("the warm-up events never became searchable")
            items = [(f"s{i}", text) for i, text in enumerate(texts(n, "searchable"))]
            seen: dict[str, float] = {}
            pending = dict(items)
            polling = threading.Event()

            def poll() -> None:
                # A cheap look-up finds when a point exists; one search then confirms that search returns it
                # (searching for every pending event on every sweep would take the server's CPU).
                while not polling.is_set() or pending:
                    for event_id, text in list(pending.items()):
                        exists = client.get(f"{api}/points/{point_id('text', event_id)}").status_code == 200
                        if exists and found(event_id, text):
                            seen[event_id] = time.time()
                            del pending[event_id]
                    if polling.is_set() and time.monotonic() > give_up:
                        return
                    time.sleep(0.01)

            give_up = time.monotonic() + n / SEARCH_RATE + 120
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            sent = {}
            for event_id, text in items:  # one at a time, so each is polled from the moment it is sent
                sent.update(send_at_rate(settings, [(event_id, text)], 1000.0))
                time.sleep(1 / SEARCH_RATE)
            polling.set()
            poller.join()
        finally:
            server.terminate()
            server.wait(60)
            client.close()
    latencies = [seen[i] - sent[i][2] for i, _ in items if i in seen]
    return {"events": n, "rate": SEARCH_RATE, "searchable_s": percentiles(latencies)}


def _healthy(client: Any, api: str) -> bool:
    try:
        return bool(client.get(f"{api}/healthz").status_code == 200)
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 100.0, 400.0])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--searchable", type=int, default=200)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from its JSON")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((REPORTS / "freshness.json").read_text()), args)
        return
    if args.phase:
        name, bootstrap, topic, *rest = args.phase
        if name == "rate":
            result = phase_rate(bootstrap, topic, float(rest[0]), float(rest[1]))
        elif name == "produce":
            result = phase_produce(bootstrap, topic, float(rest[0]), float(rest[1]))
        elif name == "backlog":
            result = phase_backlog(bootstrap, topic, int(rest[0]))
        elif name == "drain":
            result = phase_drain(bootstrap, topic, int(rest[0]))
        else:
            result = phase_searchable(bootstrap, topic, int(rest[0]))
        print(json.dumps(result))
        return

    from embedstream.workers.broker import start_broker

    broker = start_broker(log_dir=Path(tempfile.mkdtemp()))
    results: dict[str, Any] = {"rates": []}
    try:
        for rate in args.rates:
            print(f"rate {rate:g} events/s for {args.seconds:g} s …", flush=True)
            results["rates"].append(
                run_phase(
                    "bench.freshness", "rate", broker.bootstrap, f"fresh-rate-{int(rate)}", str(rate), str(args.seconds)
                )
            )
        if args.backlog:
            print(f"backlog of {args.backlog} events: stream, then drain (bench.ingest_text's pipeline) …", flush=True)
            results["backlog"] = run_phase(
                "bench.freshness", "backlog", broker.bootstrap, "fresh-backlog", str(args.backlog)
            )
            results["drain"] = phase("drain", broker.bootstrap, "fresh-drain", str(args.backlog))
        if args.searchable:
            print(f"searchable: {args.searchable} events at {SEARCH_RATE:g}/s through serve --ingest …", flush=True)
            results["searchable"] = run_phase(
                "bench.freshness", "searchable", broker.bootstrap, "fresh-search", str(args.searchable)
            )
    finally:
        broker.stop()
    write_report(results, args)


def write_report(results: dict[str, Any], args: argparse.Namespace) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    write_json(REPORTS / "freshness.json", results, 2)
    plot(results, REPORTS / "freshness.png")
    lines = [
        "# Freshness: event → durable point, committed offset, search hit",
        "",
        f"`python -m bench.freshness --seconds {args.seconds:g} --rates {' '.join(f'{r:g}' for r in args.rates)} "
        f"--backlog {args.backlog} --searchable {args.searchable}` on this machine "
        f"({os.cpu_count()} CPUs), stream mode, in-process runner, 2 partitions, `max_latency_ms` = 500.",
        "Latency is from each event's Kafka timestamp. Goals: p99 ≤ 1 s at 10 and 100 events/s, ≤ 2 s at 400;",
        "backlog throughput ≥ 0.95× the drain pipeline's.",
        "",
        "| events/s | events | → durable p50 / p99 / max (s) | → committed p50 / p99 / max (s) |",
        "|---|---|---|---|",
    ]
    capacity = results.get("backlog", {}).get("events_per_s")
    before = [{**row, "label": ", before"} for row in results.get("before", [])]  # the same phase, older reader
    added = results.get("added_rows", [])  # rows run by hand with `--phase rate` (their label says how)
    for row in before + results["rates"] + added:
        d, c = row["durable_s"], row["committed_s"]
        over = row.get("label", "") + (" (above capacity)" if capacity and row["rate"] > capacity else "")
        lines.append(
            f"| {row['rate']:g}{over} | {row['events']} | {d['p50']:.3f} / {d['p99']:.3f} / {d['max']:.3f} "
            f"| {c['p50']:.3f} / {c['p99']:.3f} / {c['max']:.3f} |"
        )
    if capacity and any(row["rate"] > capacity for row in results["rates"]):
        lines += [
            "",
            f"A rate above what this machine can embed ({capacity:.0f} events/s under the backlog below) is a "
            "growing backlog: its latency is the queue's, not the pipeline's, and rises for as long as the load "
            "lasts. Meeting it needs more throughput (more cores or workers), not a shorter wait.",
        ]
    if "backlog" in results:
        stream, drain = results["backlog"]["events_per_s"], results["drain"]["events_per_s"]
        lines += [
            "",
            f"Backlog of {results['backlog']['events']} events, rate from the first encoder call to the last "
            f"durable point: stream mode **{stream:.0f} events/s**, the drain pipeline of `bench.ingest_text` "
            f"**{drain:.0f} events/s**: ratio **{stream / drain:.2f}**.",
        ]
    if "searchable" in results:
        s = results["searchable"]["searchable_s"]
        lines += [
            "",
            f"`serve --ingest`, {results['searchable']['events']} events at {SEARCH_RATE:g}/s, each looked up "
            f"(`GET /points/ID`) until it exists, then searched for once (`POST /search`, its text filtered to its "
            f"id), which returned it: event → search hit p50 **{s['p50']:.3f} s**, "
            f"p99 **{s['p99']:.3f} s**, max {s['max']:.3f} s.",
        ]
    if results.get("before"):
        lines += ["", f'"before" rows: {results["before_note"]}']
    for row in added:
        lines += ["", f'"{row["label"].lstrip(", ")}" row: {row["note"]}']
    lines += ["", "![event to durable point, by rate](freshness.png)", ""]
    (REPORTS / "freshness.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in results["rates"]:
        samples = row["durable_samples"]
        if samples:
            ax.plot(samples, [i / len(samples) for i in range(1, len(samples) + 1)], label=f"{row['rate']:g} events/s")
    ax.set_xscale("log")
    ax.set_xlabel("event → durable point (s, log scale)")
    ax.set_ylabel("fraction of events")
    ax.set_title("Freshness (stream mode, max_latency_ms = 500)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
