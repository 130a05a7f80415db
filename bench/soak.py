"""Soak: a stream run under steady mixed traffic, with the faults a long-lived deployment meets.

    python -m bench.soak [--minutes 30] [--rate 20] [--kill-every 5] [--broker-restart-at 15]

One tansu broker keeping its data in S3 (moto's server on loopback, so a restart keeps topics and committed
offsets), one ``embedstream ingest --mode stream`` process on a 2-partition topic and an embedded store.
A producer sends ``--rate`` events/s, batched 15 s at a time: sentences from the sample corpus, a picture in
every 20, a malformed record in every 100 (each must become a dead letter). Meanwhile:

* every ``--kill-every`` minutes the ingest process is killed with SIGKILL and started again at once
  (the one due at the broker restart is moved 30 s later, so that the two faults are told apart);
* at ``--broker-restart-at`` minutes the broker is killed with SIGKILL and started again 5 s later.

Every 5 s it samples the consumer lag (high watermarks − committed offsets) and the ingest process's RSS.
At the end the producer stops, the run catches up, gets SIGTERM, and the store is checked against what the
broker acknowledged: every valid event stored exactly once, every malformed one dead-lettered, the group's
offsets at the high watermarks. Not in CI (it runs for half an hour). Writes ``bench/reports/soak.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from bench.common import pyplot, save_figure, write_json
from embedstream.onnx_models.corpus import corpus_texts
from embedstream.onnx_models.export import build
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics, topic_watermarks
from embedstream.pipelines.stores import open_store
from embedstream.schemas.settings import Settings, default_cache_dir
from embedstream.workers.broker import Broker, free_port, start_broker
from embedstream.workers.sample_media import sample_photos
from tests.s3_server import S3Server

REPORTS = Path(__file__).parent / "reports"
SAMPLE_S = 5.0
CATCH_UP_S = 600.0
PARTITIONS = 2


@dataclass
class Ledger:
    """What the broker acknowledged, by kind; filled from the producer's callbacks."""

    valid: set[str] = field(default_factory=set)
    poison: set[bytes] = field(default_factory=set)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Sample:
    t_s: float
    lag: int | None
    rss_mb: float | None
    produced: int
    anon_mb: float | None = None  # RssAnon: the heap; RSS also counts the store's memory-mapped files


def photo_bytes() -> list[bytes]:
    """The sample photos as camera-sized JPEGs (decoding them is real work)."""
    from PIL import Image

    out = []
    for path in sample_photos().values():
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((1024, 768)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def produce(settings: Settings, rate: float, stop: threading.Event, ledger: Ledger, counter: list[int]) -> None:
    """``rate`` events/s until ``stop``; the producer waits out a broker restart (its sends are retried)."""
    texts, photos = corpus_texts(), photo_bytes()
    producer = KafkaProducer(
        bootstrap_servers=[settings.kafka.bootstrap_servers],
        acks="all",
        retries=1_000_000,
        delivery_timeout_ms=300_000,
        request_timeout_ms=10_000,
        max_request_size=16 << 20,
        # a batch every 15 s per partition: tansu's S3 engine stores each batch as an object and lists them all on
        # every fetch; moto (pure Python) takes over a second per listing past ~300 objects, which stalls reads
        linger_ms=15_000,
        batch_size=8 << 20,
    )

    def acked(kind: str, ident: Any) -> Any:
        def callback(_: Any) -> None:
            with ledger.lock:
                if kind == "valid":
                    ledger.valid.add(ident)
                else:
                    ledger.poison.add(ident)

        return callback

    def failed(_: Any) -> None:
        with ledger.lock:
            ledger.failed += 1

    started, i = time.monotonic(), 0
    while not stop.is_set():
        due = started + i / rate
        if (wait := due - time.monotonic()) > 0:
            stop.wait(wait)
            continue
        key = f"s{i}"
        headers: list[tuple[str, bytes]]
        ident: str | bytes
        if i % 100 == 99:
            value = f'{{"schema": 1, "id": "{key}"'.encode()  # cut short: not JSON
            headers, kind, ident = [], "poison", value
        elif i % 20 == 19:
            value = photos[i % len(photos)]
            headers, kind, ident = [("es-id", key.encode()), ("es-modality", b"image")], "valid", key
        else:
            text = f"{texts[i % len(texts)]} (soak {i})"
            value = json.dumps({"schema": 1, "id": key, "modality": "text", "text": text}).encode()
            headers, kind, ident = [], "valid", key
        future = producer.send(settings.kafka.topic, key=key.encode(), value=value, headers=headers)
        future.add_callback(acked(kind, ident)).add_errback(failed)
        i += 1
        counter[0] = i
    producer.flush()
    producer.close()


def ingest_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "EMBEDSTREAM_KAFKA__TOPIC": settings.kafka.topic,
        "EMBEDSTREAM_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "EMBEDSTREAM_KAFKA__GROUP_ID": settings.kafka.group_id,
        "EMBEDSTREAM_QDRANT__PATH": settings.qdrant.path,
        "EMBEDSTREAM_MODEL__CACHE_DIR": str(settings.model.cache_dir),
        "EMBEDSTREAM_MEDIA__MODALITIES": '["text", "image"]',
        "PYTHONUNBUFFERED": "1",
    }


class Ingest:
    """The stream-mode ingest process, restartable; its output appended to one log."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self._env, self._log = ingest_env(settings), log
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with open(self._log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "embedstream.workers.cli", "ingest", "--mode", "stream"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill_and_restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = self._start()

    def memory_mb(self, field: str = "VmRSS") -> float | None:
        """A memory line of /proc/PID/status in MB: ``VmRSS`` (all), ``RssAnon`` (heap), ``RssFile`` (mapped)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":")), None)
        return None if kb is None else kb / 1024

    def sample(self, elapsed_s: float, lag: int | None, produced: int) -> Sample:
        return Sample(round(elapsed_s, 1), lag, self.memory_mb(), produced, self.memory_mb("RssAnon"))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def lag(settings: Settings) -> int | None:
    """High watermarks − committed offsets over the partitions (None while the broker does not answer)."""
    try:
        marks = {tp.partition: mark for tp, mark in topic_watermarks(settings.kafka, settings.kafka.topic).items()}
        committed = committed_offsets(settings.kafka)
    except Exception:
        return None
    return sum(mark - (committed.get(p) or 0) for p, mark in marks.items())


def final_check(settings: Settings, ledger: Ledger) -> dict[str, Any]:
    """The store and the dead-letter topic against what the broker acknowledged."""
    from kafka import KafkaConsumer

    from embedstream.pipelines.io.kafka_clients import assign_readable, records_until

    store = open_store(settings.qdrant)
    try:
        ids = [str(point.payload["id"]) for point in store.scroll()]
    finally:
        store.close()
    consumer = KafkaConsumer(bootstrap_servers=[settings.kafka.bootstrap_servers], enable_auto_commit=False)
    try:
        tps = assign_readable(consumer, settings.kafka, settings.kafka.dead_letter_topic)
        dead = {record.value for record in records_until(consumer, tps, 30)}
    finally:
        consumer.close()
    marks = {tp.partition: mark for tp, mark in topic_watermarks(settings.kafka, settings.kafka.topic).items()}
    return {
        "acknowledged_valid": len(ledger.valid),
        "acknowledged_malformed": len(ledger.poison),
        "sends_failed": ledger.failed,
        "stored": len(ids),
        "stored_twice": len(ids) - len(set(ids)),
        "valid_missing": len(ledger.valid - set(ids)),
        "stored_unexpected": len(set(ids) - ledger.valid),
        "malformed_not_dead_lettered": len(ledger.poison - dead),
        "offsets_at_watermarks": committed_offsets(settings.kafka) == marks,
    }


def soak(minutes: float, rate: float, kill_every: float, broker_restart_at: float, out: Path) -> dict[str, Any]:
    cache = default_cache_dir() / "models"
    for name in ("minilm", "effnet", "effnet-conse"):
        build(name, cache)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    s3 = S3Server(work)
    port = free_port()

    def start() -> Broker:
        return start_broker(port=port, log_dir=work, storage=s3.storage, env=s3.env())

    broker = start()
    settings = Settings.load(
        kafka={
            "bootstrap_servers": broker.bootstrap,
            "topic": "soak.events",
            "dead_letter_topic": "soak.dlq",
            "group_id": "soak",
            "partitions": PARTITIONS,
        },
        qdrant={"path": str(work / "store")},
        model={"cache_dir": str(cache)},
        media={"modalities": ["text", "image"]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    ledger, stop, counter = Ledger(), threading.Event(), [0]
    producer = threading.Thread(target=produce, args=(settings, rate, stop, ledger, counter), daemon=True)
    producer.start()
    ingest = Ingest(settings, work / "ingest.log")
    kills = [k * kill_every for k in range(1, int(minutes / kill_every) + 1) if k * kill_every < minutes]
    kills = [k + 0.5 if abs(k - broker_restart_at) < 1e-9 else k for k in kills]
    faults: list[tuple[float, str]] = []
    samples: list[Sample] = []
    began = time.monotonic()
    broker_done = False
    try:
        while (elapsed := time.monotonic() - began) < minutes * 60:
            if kills and elapsed >= kills[0] * 60:
                kills.pop(0)
                ingest.kill_and_restart()
                faults.append((elapsed, "ingest kill -9"))
            if not broker_done and elapsed >= broker_restart_at * 60:
                broker_done = True
                os.kill(broker.pid, signal.SIGKILL)
                faults.append((elapsed, "broker kill -9 + restart"))
                time.sleep(5)
                broker = start()
            samples.append(ingest.sample(elapsed, lag(settings), counter[0]))
            if len(samples) % 6 == 0:
                last = samples[-1]
                print(
                    f"[{elapsed / 60:5.1f} min] produced {last.produced}, lag {last.lag}, RSS {last.rss_mb} MB",
                    flush=True,
                )
            time.sleep(SAMPLE_S)
        stop.set()
        producer.join()
        deadline = time.monotonic() + CATCH_UP_S
        while (current := lag(settings)) != 0 and time.monotonic() < deadline:
            samples.append(ingest.sample(time.monotonic() - began, current, counter[0]))
            time.sleep(SAMPLE_S)
        exit_code = ingest.stop()
        check = final_check(settings, ledger)
    finally:
        if ingest.process.poll() is None:
            ingest.process.kill()
        broker.stop()
        s3.close()
    result = {
        "minutes": minutes,
        "rate": rate,
        "faults": [{"t_s": round(t, 1), "what": what} for t, what in faults],
        "exit_code_on_sigterm": exit_code,
        "check": check,
        "samples": [s.__dict__ for s in samples],
        "log": str(work / "ingest.log"),
    }
    write_report(result, out)
    return result


def rss_by_process(result: dict[str, Any], key: str = "rss_mb", settle_s: float = 60.0) -> list[dict[str, float]]:
    """One row per ingest process (each kill -9 starts a new one): its memory (``key``) once settled
    (``settle_s`` after its start: models loaded, pools warm), at its end, its max, and its trend in MB/min."""
    kills = [f["t_s"] for f in result["faults"] if "ingest" in f["what"]]
    bounds = [0.0, *kills, float("inf")]
    rows = []
    for begin, end in itertools.pairwise(bounds):
        points = [
            (s["t_s"], s[key])
            for s in result["samples"]
            if s.get(key) is not None and begin + settle_s <= s["t_s"] < end
        ]
        if len(points) < 3:
            continue
        n = len(points)
        mean_t, mean_r = sum(t for t, _ in points) / n, sum(r for _, r in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points) or 1.0
        slope = sum((t - mean_t) * (r - mean_r) for t, r in points) / var * 60
        rss = [r for _, r in points]
        rows.append(
            {"from_min": begin / 60, "settled": rss[0], "end": rss[-1], "max": max(rss), "trend_mb_per_min": slope}
        )
    return rows


def write_report(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result, 1)
    samples, check = result["samples"], result["check"]
    rss = rss_by_process(result)
    anon = rss_by_process(result, "anon_mb")
    lags = [s["lag"] for s in samples if s["lag"] is not None]
    faults = "\n".join(f"| {f['t_s'] / 60:.1f} min | {f['what']} |" for f in result["faults"])
    verdict = (
        check["valid_missing"] == 0
        and check["stored_twice"] == 0
        and check["stored_unexpected"] == 0
        and check["malformed_not_dead_lettered"] == 0
        and check["offsets_at_watermarks"]
    )
    rows = "\n".join(f"| {key} | {value} |" for key, value in check.items())
    rss_rows = "\n".join(
        f"| {r['from_min']:.1f} | {r['settled']:.0f} | {r['end']:.0f} | {r['max']:.0f} | {r['trend_mb_per_min']:+.2f} |"
        + (
            f" {a['settled']:.0f} → {a['end']:.0f} ({a['trend_mb_per_min']:+.2f}/min) |"
            if (a := next((a for a in anon if a["from_min"] == r["from_min"]), None))
            else " n/a |"
        )
        for r in rss
    )
    out.write_text(
        f"""# Soak

`python -m bench.soak --minutes {result["minutes"]:g} --rate {result["rate"]:g}` on {os.cpu_count()} cores:
a stream run of `embedstream ingest` under {result["rate"]:g} events/s (sentences, a 1024×768 JPEG in every 20,
a malformed record in every 100), tansu keeping its data in S3 (moto on loopback), 2 partitions, the embedded
store.

## Faults

| when | what |
|---|---|
{faults}

## Over time

- Consumer lag (records): max {max(lags) if lags else "n/a"}; once the producer stopped the run caught up
  ({"offsets at the high watermarks" if check["offsets_at_watermarks"] else "NOT caught up"}). Each
  restart costs ~20 s of reading (start-up, and the wait before taking over a killed reader's partitions), so
  lag peaks after each fault and then drains. The short spikes between faults are the producer's 15-second
  batches (half a batch per partition) landing at once, each read within seconds.
- SIGTERM at the end: exit code {result["exit_code_on_sigterm"]}.

Ingest RSS per process (each kill -9 starts a new one), from a minute after its start (MB). RSS also counts the
embedded store's memory-mapped files, which grow with the store; the heap (RssAnon) is what a leak would grow.
{result.get("notes", "")}

| process from (min) | settled | at its end | max | trend (MB/min) | heap (RssAnon) |
|---|---|---|---|---|---|
{rss_rows}

![lag and RSS over time](soak.png)

## Final check: {"passed" if verdict else "FAILED"}

| | |
|---|---|
{rows}
"""
    )
    plot(result, out.with_suffix(".png"))


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    samples = result["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    lag_points = [(s["t_s"] / 60, s["lag"]) for s in samples if s["lag"] is not None]
    rss_points = [(s["t_s"] / 60, s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    anon_points = [(s["t_s"] / 60, s["anon_mb"]) for s in samples if s.get("anon_mb") is not None]
    top.plot(*zip(*lag_points, strict=True), color="tab:blue")
    top.set_ylabel("consumer lag (records)")
    bottom.plot(*zip(*rss_points, strict=True), color="tab:green", label="RSS")
    if anon_points:
        bottom.plot(*zip(*anon_points, strict=True), color="tab:olive", label="heap (RssAnon)")
        bottom.legend(fontsize=8)
    bottom.set_ylabel("ingest memory (MB)")
    bottom.set_xlabel("minutes")
    for fault in result["faults"]:
        color = "tab:red" if "broker" in fault["what"] else "tab:gray"
        for axis in (top, bottom):
            axis.axvline(fault["t_s"] / 60, color=color, linestyle="--", linewidth=0.8)
    top.set_title("Soak: lag and memory (grey: ingest kill -9; red: broker kill -9 + restart)")
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--kill-every", type=float, default=5.0, help="minutes between kill -9 of the ingest")
    parser.add_argument("--broker-restart-at", type=float, default=15.0, help="minute of the broker kill -9")
    parser.add_argument("--out", type=Path, default=REPORTS / "soak.md")
    parser.add_argument("--report-only", action="store_true", help="render the report again from OUT's .json")
    args = parser.parse_args()
    if args.report_only:
        result = json.loads(args.out.with_suffix(".json").read_text())
        write_report(result, args.out)
    else:
        result = soak(args.minutes, args.rate, args.kill_every, args.broker_restart_at, args.out)
    print(json.dumps(result["check"], indent=1))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
