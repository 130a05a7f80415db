"""Prometheus metrics of the ingest, and the HTTP endpoint that serves them with health and readiness probes.

The metrics live in one registry per process (``INGEST``). Steps that run in the launcher's process (Beam's
in-process runner, LOOPBACK workers, ``serve --ingest``) update it directly; on Flink or Dataflow the steps
run on the runner's workers and report through Beam's own metrics (the same names under the ``embedstream``
namespace), while the launcher still serves consumer lag, which it reads from the broker.

| metric | type | labels |
|---|---|---|
| ``embedstream_consumer_lag`` | gauge: high watermark − committed offset | topic, partition |
| ``embedstream_oldest_unprocessed_age_seconds`` | gauge: age of the first uncommitted record | topic, partition |
| ``embedstream_event_latency_seconds`` | histogram: event's Kafka timestamp → point/dead letter durable | |
| ``embedstream_records_read_total`` | counter: records read from Kafka (minus delivered: in flight) | topic |
| ``embedstream_events_total`` | counter: events delivered | outcome (``point``, ``dead_letter``, ``deleted``) |
| ``embedstream_points_upserted_total`` | counter | space |
| ``embedstream_dead_letters_total`` | counter | reason |
| ``embedstream_batch_size`` | histogram: events per encoder batch | modality |
| ``embedstream_encode_seconds`` | histogram: one encoder batch | modality |
| ``embedstream_commit_failures_total`` | counter: offset commits that failed after their retries | |
| ``embedstream_broker_up`` | gauge: 1 when the last lag read reached the broker, 0 while it is away | |

``/healthz`` answers 200 while the process runs; ``/readyz`` answers 200 when the broker, the store and the
models answer (checked at most every ``READY_CACHE_S``), 503 naming what does not.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)
READY_CACHE_S = 5.0


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.lag = Gauge(
            "embedstream_consumer_lag", "high watermark minus committed offset", ["topic", "partition"], registry=r
        )
        self.oldest_age = Gauge(
            "embedstream_oldest_unprocessed_age_seconds",
            "seconds since the first record not yet committed reached Kafka (0 when none waits)",
            ["topic", "partition"],
            registry=r,
        )
        self.event_latency = Histogram(
            "embedstream_event_latency_seconds",
            "from an event's Kafka timestamp to its point or dead letter being durable",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.records_read = Counter(
            "embedstream_records_read", "records the readers took from Kafka", ["topic"], registry=r
        )
        self.events = Counter("embedstream_events", "events delivered", ["outcome"], registry=r)
        self.points = Counter("embedstream_points_upserted", "points upserted", ["space"], registry=r)
        self.dead_letters = Counter("embedstream_dead_letters", "dead letters published", ["reason"], registry=r)
        self.output_records = Counter(
            "embedstream_output_records", "records acknowledged on the embeddings topic", ["kind"], registry=r
        )
        self.batch_size = Histogram(
            "embedstream_batch_size",
            "events per encoder batch",
            ["modality"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.encode_seconds = Histogram(
            "embedstream_encode_seconds",
            "seconds one encoder batch takes",
            ["modality"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.broker_up = Gauge(
            "embedstream_broker_up", "1 when the broker answered the last lag read, 0 while it does not", registry=r
        )
        self.commit_failures = Counter(
            "embedstream_commit_failures", "offset commits that failed after their retries", registry=r
        )

    def encoded(self, modality: str, size: int, seconds: float) -> None:
        self.batch_size.labels(modality).observe(size)
        self.encode_seconds.labels(modality).observe(seconds)


INGEST = IngestMetrics()


class ProbeServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a background thread."""

    def __init__(self, host: str, port: int, ready: Callable[[], str | None], metrics: IngestMetrics = INGEST) -> None:
        self._ready = ready
        self._metrics = metrics
        self._checked: tuple[float, str | None] = (0.0, "not checked yet")
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server._metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b'{"status":"ok"}', "application/json")
                elif path == "/readyz":
                    problem = server.readiness()
                    body = json.dumps(
                        {"status": "ready"} if problem is None else {"status": "not ready", "detail": problem}
                    )
                    self._send(200 if problem is None else 503, body.encode(), "application/json")
                else:
                    self._send(404, b'{"detail":"not found"}', "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("probe %s", format % args)

        self._http = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, name="probes", daemon=True)

    def readiness(self) -> str | None:
        with self._lock:
            when, problem = self._checked
            if time.monotonic() - when >= READY_CACHE_S:
                try:
                    problem = self._ready()
                except Exception as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                self._checked = (time.monotonic(), problem)
            return problem

    def start(self) -> ProbeServer:
        self._thread.start()
        log.info("metrics and probes on http://%s:%d/metrics", *self._http.server_address[:2])
        return self

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _aged(age_s: float, read_at: float) -> float:
    """The age of a record that was ``age_s`` old at ``read_at``, now (0 stays 0: nothing was waiting)."""
    return age_s + time.monotonic() - read_at if age_s > 0 else 0.0


class LagWatcher:
    """Publishes ``embedstream_consumer_lag`` and ``embedstream_oldest_unprocessed_age_seconds`` for the run's
    partitions every ``interval_s`` (read from the broker: high watermarks, the group's committed offsets and
    the record at each), whatever runner does the reading, and ``embedstream_broker_up``. The age is computed
    when scraped, from the last read: it rises between reads. While the broker is away the lag keeps its last
    value (it cannot be read) and the waiting records keep ageing: an outage shows as ``broker_up`` 0 and a
    rising oldest-unprocessed age, not as a flat line."""

    def __init__(
        self,
        read_lag: Callable[[], Mapping[tuple[str, int], tuple[int, float]]],
        interval_s: float,
        metrics: IngestMetrics = INGEST,
    ) -> None:
        self._read_lag = read_lag
        self._interval_s = interval_s
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-watcher", daemon=True)

    def start(self) -> LagWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                read = self._read_lag()
            except Exception as exc:  # the broker is away: lag keeps its last value, waiting records keep ageing
                log.debug("consumer lag not read: %s", exc)
                self._metrics.broker_up.set(0)
            else:
                self._metrics.broker_up.set(1)
                read_at = time.monotonic()
                for (topic, partition), (lag, oldest_age_s) in read.items():
                    self._metrics.lag.labels(topic, str(partition)).set(lag)
                    age = self._metrics.oldest_age.labels(topic, str(partition))
                    age.set_function(functools.partial(_aged, oldest_age_s if lag else 0.0, read_at))
            if self._stop.wait(self._interval_s):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
