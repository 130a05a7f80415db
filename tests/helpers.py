"""Helpers shared by the tests: raw Kafka access (a real tansu broker) and event builders."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from embedstream.onnx_models.corpus import corpus_texts, documents_path
from embedstream.pipelines.io.kafka_clients import assign_readable, partitions_of, records_until
from embedstream.pipelines.io.kafka_clients import topic_watermarks as kafka_topic_watermarks
from embedstream.schemas.envelope import Envelope, envelope_to_binary
from embedstream.schemas.settings import Settings
from embedstream.workers.broker import Broker, free_port
from embedstream.workers.search import Query, Searcher


def text_event(event_id: str, text: str, **extra: Any) -> bytes:
    return json.dumps({"schema": 1, "id": event_id, "modality": "text", "text": text, **extra}).encode()


def delete_event(event_id: str, modality: str = "text") -> bytes:
    """An ``op: delete`` envelope for ``event_id`` (one modality's points; a Kafka tombstone removes them all)."""
    return json.dumps({"schema": 1, "id": event_id, "modality": modality, "op": "delete"}).encode()


Message = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]  # key, value, headers


def binary_message(key: bytes, envelope: Envelope) -> Message:
    """An envelope in the binary wire form (the content as the value, the fields as ``es-`` headers)."""
    headers, value = envelope_to_binary(envelope)
    return key, value, headers


def send_raw(
    settings: Settings,
    values: Sequence[Message],
    max_request_size: int = 4 << 20,
) -> None:
    """Send (key, value, headers) triples exactly as given, in order."""
    producer = KafkaProducer(bootstrap_servers=[settings.kafka.bootstrap_servers], max_request_size=max_request_size)
    for key, value, headers in values:
        producer.send(settings.kafka.topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every record of ``topic`` (up to its high watermarks at call time)."""
    consumer = KafkaConsumer(bootstrap_servers=[settings.kafka.bootstrap_servers], enable_auto_commit=False)
    try:
        return list(records_until(consumer, assign_readable(consumer, settings.kafka, topic), timeout_s))
    finally:
        consumer.close()


def topic_watermarks(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    return kafka_topic_watermarks(settings.kafka, topic)


def watermarks(settings: Settings) -> dict[int, int]:
    return {tp.partition: mark for tp, mark in topic_watermarks(settings, settings.kafka.topic).items()}


def reset_group(settings: Settings) -> None:
    """Commit offset 0 on every partition: the next drain replays the topic from the start."""
    consumer = KafkaConsumer(
        bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=settings.kafka.group_id, enable_auto_commit=False
    )
    try:
        tps = partitions_of(consumer, settings.kafka.topic)
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in tps})
    finally:
        consumer.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def partition_of(record: Any) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a CLI subprocess use ``settings``."""
    env = dict(os.environ)
    env.update(
        {
            "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "EMBEDSTREAM_KAFKA__TOPIC": settings.kafka.topic,
            "EMBEDSTREAM_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
            "EMBEDSTREAM_KAFKA__GROUP_ID": settings.kafka.group_id,
            "EMBEDSTREAM_QDRANT__BACKEND": settings.qdrant.backend,
            "EMBEDSTREAM_QDRANT__PATH": settings.qdrant.path,
            "EMBEDSTREAM_QDRANT__MIN_FREE_MB": str(settings.qdrant.min_free_mb),
            "EMBEDSTREAM_QDRANT__SNAPSHOT_DIR": settings.qdrant.snapshot_dir,
            "EMBEDSTREAM_MODEL__CACHE_DIR": str(settings.model.cache_dir),
            # whole sections as JSON (nested EMBEDSTREAM_PIPELINE__X variables still win over them)
            "EMBEDSTREAM_PIPELINE": settings.pipeline.model_dump_json(),
            "EMBEDSTREAM_MEDIA": settings.media.model_dump_json(),
            "EMBEDSTREAM_API": settings.api.model_dump_json(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def shared_settings(broker: Broker, model_cache: Path, folder: Path, name: str) -> Settings:
    """Settings for a module-scoped fixture: topics and group named ``name``, a store under ``folder``."""
    return Settings.load(
        kafka={
            "bootstrap_servers": broker.bootstrap,
            "topic": f"{name}.events",
            "dead_letter_topic": f"{name}.dlq",
            "group_id": name,
        },
        qdrant={"backend": "edge", "path": str(folder / "store")},
        model={"cache_dir": str(model_cache)},
    )


def stored_ids(settings: Settings) -> set[str]:
    """The event ids of every point in the settings' store (opened and closed here)."""
    from embedstream.pipelines.stores import open_store

    store = open_store(settings.qdrant)
    try:
        return {p.payload["id"] for p in store.scroll()}
    finally:
        store.close()


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 50 ms until it holds (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Server:
    """``embedstream serve`` in a subprocess on a free loopback port, started when ``/healthz`` answers."""

    def __init__(self, settings: Settings, *extra: str, scheme: str = "http", **client: Any) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "embedstream.workers.cli", "serve", "--port", str(self.port), *extra],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2, **client).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.stop()}")
            time.sleep(0.3)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.stdout.read() if self.process.stdout else ""


def start_stream_ingest(
    settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None, extra_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``embedstream ingest --mode stream`` in its own process, as a deployment runs it; output to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "embedstream.workers.cli", "ingest", "--mode", "stream", *extra_args],
            env={**settings_env(settings), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


QUERIES = [  # sample-corpus questions (astronomy, cooking, railways) whose answers stay put
    "which planets can I see without a telescope",
    "how long should bread dough rise",
    "a train timetable",
]


def documents() -> list[bytes]:
    return [text_event(d["id"], d["text"]) for d in map(json.loads, documents_path().read_text().splitlines())]


def fill(settings: Settings, count: int) -> None:
    """``count`` corpus sentences (ids ``s<i>``, several rounds of the corpus if needed) and the long articles."""
    texts = corpus_texts()
    events = [
        text_event(f"s{i}", f"{texts[i % len(texts)]}" + (f" ({i // len(texts)})" if i >= len(texts) else ""))
        for i in range(count)
    ]
    send_raw(settings, [(None, value, []) for value in [*events, *documents()]])


def answers(settings: Settings) -> list[list[tuple[str, float]]]:
    """The dense search results for ``QUERIES`` (ids and cosine scores): what two stores holding the same vectors
    answer alike. Dense, not the default hybrid: keyword scores weigh by IDF over the whole collection, so they
    move with every other point a store holds."""
    searcher = Searcher(settings)
    try:
        found = [searcher.search(Query.of_text(q), limit=5, mode="dense") for q in QUERIES]
        return [[(h.id, round(h.score, 4)) for h in hits] for hits in found]
    finally:
        searcher.close()


def sample(body: str, name: str, **labels: str) -> float | None:
    """A sample's value from Prometheus text format (None when absent)."""
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def embedstream(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("embedstream: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def store_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "embedstream.workers.cli", "store", *args]
    return subprocess.run(command, env=settings_env(settings), capture_output=True, text=True, timeout=300)
