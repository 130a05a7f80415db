"""Turn files into events on the events topic.

* ``.jsonl``: one JSON object per line. A full v1 envelope (it has ``schema``) is sent as is; an object with
  ``text`` (and optional ``id`` / ``metadata``) is wrapped into a text envelope.
* ``.txt`` (or any other text file): every non-empty line is a text event with id ``<file stem>:<line number>``.
* pictures (``.jpg .png .gif .webp .bmp .tif``) and sounds (``.wav .flac .ogg .opus .mp3``): one image / audio
  event each, the file's bytes as content (binary wire form: no base64), id = the path below the folder given.
* videos (``.mp4 .webm .mkv .mov .avi``): frame events at ``--fps`` (plus scene cuts with
  ``--scene-threshold``), audio segment events of ``--segment-seconds``, then ``video_end`` — keyed by the
  video id (the path below the folder given, without suffix), so a video's events stay in order on one partition.
* folders: every such file below them, in sorted order.

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

from embedstream.pipelines.io.kafka_clients import ensure_topics, producer
from embedstream.pipelines.media.video import VideoOptions, video_events
from embedstream.schemas.envelope import (
    Envelope,
    Limits,
    Modality,
    Rejection,
    envelope_to_binary,
    envelope_to_json,
    validate_fields,
)
from embedstream.schemas.errors import NotFoundError
from embedstream.schemas.settings import Settings

IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif"}
IMAGE_SUFFIXES |= {".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}
AUDIO_SUFFIXES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg"}
AUDIO_SUFFIXES |= {".mp3": "audio/mpeg"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".avi"}
TEXT_SUFFIXES = {".jsonl", ".ndjson", ".txt", ".text", ".md"}

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


def expand(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(file, the folder it was named under) for every file given or found below a folder given."""
    known = TEXT_SUFFIXES | set(IMAGE_SUFFIXES) | set(AUDIO_SUFFIXES) | VIDEO_SUFFIXES
    files: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            files.extend((f, path) for f in sorted(path.rglob("*")) if f.is_file() and f.suffix.lower() in known)
        elif path.is_file():
            files.append((path, path.parent))
        else:
            raise NotFoundError(f"no such file or folder: {path}")
    return files


def read_events(
    paths: Iterable[Path], limits: Limits | None = None, video: VideoOptions | None = None
) -> Iterator[Envelope | str]:
    """Envelopes from the files, or a message string for each line or file that is not a valid event."""
    limits = limits or Limits()
    for path, root in expand(paths):
        suffix = path.suffix.lower()
        name = path.relative_to(root).as_posix()
        if suffix in IMAGE_SUFFIXES or suffix in AUDIO_SUFFIXES:
            image = suffix in IMAGE_SUFFIXES
            fields = {
                "schema": 1,
                "id": name,
                "modality": Modality.IMAGE if image else Modality.AUDIO,
                "data": path.read_bytes(),
                "mime": IMAGE_SUFFIXES[suffix] if image else AUDIO_SUFFIXES[suffix],
                "metadata": {"file": name},
            }
            result = validate_fields(fields, limits)
            yield f"{path}: {result.reason.value}: {result.message}" if isinstance(result, Rejection) else result
        elif suffix in VIDEO_SUFFIXES:
            try:
                yield from video_events(path, name.rsplit(".", 1)[0], video)
            except Exception as exc:  # PyAV raises its own error family for unreadable containers
                yield f"{path}: not a video PyAV can read: {exc}"
        else:
            yield from _text_events(path, limits)


def _text_events(path: Path, limits: Limits) -> Iterator[Envelope | str]:
    """Text events from a .jsonl (envelopes or {text: ...} objects) or a plain text file (one per line)."""
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
                f"{path}:{lineno}: {result.reason.value}: {result.message}" if isinstance(result, Rejection) else result
            )


def count_events(paths: Iterable[Path]) -> int | None:
    """How many events the files make (None when a video is among them: its frame count is not known)."""
    total = 0
    for path, _ in expand(paths):
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return None
        if suffix in IMAGE_SUFFIXES or suffix in AUDIO_SUFFIXES:
            total += 1
            continue
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def produce_files(
    settings: Settings, paths: list[Path], progress: bool = True, video: VideoOptions | None = None
) -> ProduceReport:
    """Send every valid event in ``paths`` (files or folders) to ``settings.kafka.topic``, with a progress bar."""
    total = count_events(paths)  # also fails early on a missing path
    ensure_topics(settings.kafka, [settings.kafka.topic])
    limits = Limits(settings.pipeline.max_event_bytes, settings.pipeline.max_text_chars)
    return produce_events(settings, read_events(paths, limits, video), total=total, progress=progress)


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
                if event.data is not None:  # media: raw bytes as the value, the envelope in es-* headers
                    headers, value = envelope_to_binary(event)
                    client.send(settings.kafka.topic, key=key, value=value, headers=headers)
                else:
                    client.send(settings.kafka.topic, key=key, value=envelope_to_json(event))
                report.sent += 1
        client.flush()
    finally:
        client.close()
    return report


def produce_deletes(settings: Settings, ids: list[str], modality: Modality | None = None) -> int:
    """Send a deletion for each id, keyed by it (the key orders it after the id's earlier events): a tombstone
    (null value: everything the id made) or, with ``modality``, an ``op: delete`` event for that modality only
    (a video modality: the whole video)."""
    ensure_topics(settings.kafka, [settings.kafka.topic])
    client = producer(settings.kafka, settings.pipeline.max_event_bytes)
    try:
        for event_id in ids:
            if modality is None:
                client.send(settings.kafka.topic, key=event_id.encode("utf-8"), value=None)
            else:
                event = {"schema": 1, "id": event_id, "modality": modality.value, "op": "delete"}
                client.send(settings.kafka.topic, key=event_id.encode("utf-8"), value=json.dumps(event).encode())
        client.flush()
    finally:
        client.close()
    return len(ids)
