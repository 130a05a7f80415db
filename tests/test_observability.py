"""Operators can see the ingest: Prometheus metrics and probes on --metrics-port while it streams, JSON logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from embedstream.pipelines.io.kafka_clients import PartitionSpec, ensure_topics, partition_backlog
from embedstream.pipelines.observability import IngestMetrics, LagWatcher
from embedstream.workers.broker import free_port, start_broker
from tests.helpers import sample, send_raw, settings_env, text_event, wait_for

pytestmark = pytest.mark.integration


def test_stream_ingest_serves_metrics_lag_falls_to_zero_and_probes_answer(make_settings):
    settings = make_settings(kafka={"partitions": 2}, pipeline={"lag_interval_s": 0.5}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(f"k{i}".encode(), text_event(f"m{i}", f"observed sentence {i}"), []) for i in range(60)])
    send_raw(settings, [(None, b"{broken", [])])
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedstream.workers.cli",
            "--log-format",
            "json",
            "ingest",
            "--mode",
            "stream",
            "--metrics-port",
            str(port),
        ],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        lags: list[float] = []
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                body = httpx.get(f"{url}/metrics", timeout=2).text
            except httpx.HTTPError:
                body = ""
            lag = [sample(body, "embedstream_consumer_lag", partition=str(p)) for p in (0, 1)]
            if None not in lag:
                lags.append(sum(v for v in lag if v is not None))
            if sample(body, "embedstream_events_total", outcome="point") == 60 and lags and lags[-1] == 0:
                break
            assert time.monotonic() < deadline, body[-3000:]
            time.sleep(0.3)
        assert max(lags) >= 0 and lags[-1] == 0
        assert sample(body, "embedstream_events_total", outcome="dead_letter") == 1
        assert sample(body, "embedstream_dead_letters_total", reason="malformed_json") == 1
        assert sample(body, "embedstream_points_upserted_total", space="minilm") == 60
        assert (sample(body, "embedstream_batch_size_count", modality="text") or 0) >= 1
        assert sample(body, "embedstream_encode_seconds_count", modality="text") is not None
        assert sample(body, "embedstream_commit_failures_total") == 0
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(entry["logger"].startswith("embedstream") and entry["level"] == "info" for entry in lines), err[-2000:]


def test_while_the_broker_is_away_broker_up_is_0_and_waiting_records_keep_ageing(make_settings, tmp_path):
    """A broker of its own with 20 records nobody has consumed, killed: the lag cannot be read any more, but
    the outage shows (broker_up 0) and the oldest waiting record's age keeps rising instead of freezing."""
    broker = start_broker(port=free_port(), log_dir=tmp_path)
    settings = make_settings(kafka={"bootstrap_servers": broker.bootstrap, "partitions": 1})
    metrics = IngestMetrics()
    watcher = None
    try:
        ensure_topics(settings.kafka, [settings.kafka.topic])
        send_raw(settings, [(f"k{i}".encode(), text_event(f"k{i}", f"waiting {i}"), []) for i in range(20)])
        spec = PartitionSpec(settings.kafka.topic, 0, 0, None)
        watcher = LagWatcher(lambda: partition_backlog(settings.kafka, [spec]), 0.3, metrics).start()
        labels = {"topic": settings.kafka.topic, "partition": "0"}

        def value(name: str, **extra: str) -> float | None:
            return metrics.registry.get_sample_value(name, extra)

        assert wait_for(lambda: value("embedstream_consumer_lag", **labels) == 20, 30)
        assert value("embedstream_broker_up") == 1
        broker.stop()  # gone: connections are refused
        assert wait_for(lambda: value("embedstream_broker_up") == 0, 60)
        first = value("embedstream_oldest_unprocessed_age_seconds", **labels)
        time.sleep(3)
        later = value("embedstream_oldest_unprocessed_age_seconds", **labels)
        assert first is not None and later is not None and later - first >= 2, (first, later)
        assert value("embedstream_consumer_lag", **labels) == 20  # the last value read, not a made-up 0
    finally:
        if watcher is not None:
            watcher.close()
        broker.stop()
