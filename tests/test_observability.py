"""Operators can see the ingest: Prometheus metrics and probes on --metrics-port while it streams, JSON logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx

from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.workers.broker import free_port
from tests.helpers import send_raw, settings_env, text_event


def sample(body: str, name: str, **labels: str) -> float | None:
    """A sample's value from Prometheus text format (None when absent)."""
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


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
