"""Turn files into events on the events topic.

* ``.jsonl``: one JSON object per line. A full v1 envelope (it has ``schema``) is sent as is; an object with
  ``text`` (and optional ``id`` / ``metadata``) is wrapped into a text envelope.
* ``.txt`` (or anything else): every non-empty line is a text event with id ``<file stem>:<line number>``.

Each event is validated before it is sent (a bad line is reported and skipped: fix the file, the pipeline
would only dead-letter it). The Kafka key is the event id (a video's id for video events), so all versions
of an id go to one partition and "last write wins" follows Kafka order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipelines.io.kafka_clients import ensure_topics, producer
from schemas.envelope import Envelope, Limits, Rejection, envelope_to_json, validate_fields
from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ProduceReport:
    sent: int = 0
    skipped: list[str] = field(default_factory=list)


def _line_fields(obj: Any, path: Path, lineno: int) -> dict[str, Any]:
    if isinstance(obj, dict) and "schema" in obj:
        return obj
    if isinstance(obj, dict) and "text" in obj:
        return {
            "schema": 1,
            "id": str(obj.get("id", f"{path.stem}:{lineno}")),
            "modality": "text",
            "text": obj["text"],
            "metadata": obj.get("metadata", {}),
        }
    raise ValueError("line is neither a v1 envelope nor an object with 'text'")


def read_events(paths: Iterable[Path], limits: Limits | None = None) -> Iterator[Envelope | str]:
    """Envelopes from the files, or a message string for each line that is not a valid event."""
    limits = limits or Limits()
    for path in paths:
        jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    if jsonl:
                        fields = _line_fields(json.loads(line), path, lineno)
                    else:
                        fields = {
                            "schema": 1,
                            "id": f"{path.stem}:{lineno}",
                            "modality": "text",
                            "text": line.rstrip("\n"),
                        }
                except ValueError as exc:
                    yield f"{path}:{lineno}: {exc}"
                    continue
                result = validate_fields(fields, limits)
                yield (
                    f"{path}:{lineno}: {result.reason.value}: {result.message}"
                    if isinstance(result, Rejection)
                    else result
                )


def count_lines(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def produce_files(settings: Settings, paths: list[Path], progress: bool = True) -> ProduceReport:
    """Send every valid event in ``paths`` to ``settings.kafka.topic``, with a progress bar."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such file(s): {missing}")
    ensure_topics(settings.kafka, [settings.kafka.topic])
    return produce_events(settings, read_events(paths), total=count_lines(paths), progress=progress)


def produce_events(
    settings: Settings, events: Iterable[Envelope | str], total: int | None = None, progress: bool = True
) -> ProduceReport:
    report = ProduceReport()
    client = producer(settings.kafka, settings.pipeline.max_event_bytes)
    try:
        with tqdm(total=total, unit="ev", desc=f"produce → {settings.kafka.topic}", disable=not progress) as bar:
            for event in events:
                bar.update(1)
                if isinstance(event, str):
                    report.skipped.append(event)
                    log.warning("skipped %s", event)
                    continue
                key = (event.video_id or event.id).encode("utf-8")
                client.send(settings.kafka.topic, key=key, value=envelope_to_json(event))
                report.sent += 1
        client.flush()
    finally:
        client.close()
    return report
