"""A picture space and a sound space moved to another model in place: backfilled from the files' URIs and, for
those that came inline, from their events read again from the topic; an ingest meanwhile writes both models'
vectors.

The bar, as for text spaces: after the switch every point holds the new model's vector, equal (1e-6) to what a
fresh ingest of the same topic with the new model writes; rollback gives back the old answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from embedstream.onnx_models.registry import load_manifest
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.pipelines.spaces import migration
from embedstream.pipelines.stores import open_store
from embedstream.schemas.settings import Settings
from embedstream.workers.sample_media import sample_photos, sample_voices
from embedstream.workers.search import Query, Searcher
from embedstream.workers.spaces import migrate_here, run_step
from tests.helpers import b64, send_raw, settings_env
from tests.tiny_models import tiny_resnet, tiny_wav2vec2  # ResNet: its own 64-px crop; wav2vec2

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Kind:
    """One kind of media space: its space and model, the new model (exported to take it over), the samples."""

    modality: str
    space: str
    new: str
    setting: str  # the model setting that names the space's model
    maker: Callable[[Path], None]
    samples: Callable[[], dict[str, Path]]
    query: Callable[[bytes], Query]


KINDS = {
    "image": Kind("image", "effnet", "pics", "image_model", tiny_resnet, sample_photos, Query.of_image),
    "audio": Kind("audio", "voice", "sounds", "audio_model", tiny_wav2vec2, sample_voices, Query.of_audio),
}


@pytest.fixture(scope="module")
def media_cache(media_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spaces' models (effnet, voice), minilm (searches load the text model), and the new models ``pics``
    and ``sounds``, exported to take over spaces ``effnet`` and ``voice`` — in a private cache."""
    import torch

    cache = tmp_path_factory.mktemp("media-cache")
    for name in ("effnet", "voice", "minilm"):
        manifest, folder = load_manifest(media_models, name)
        shutil.copytree(folder, cache / name / manifest.version)
    env = {**os.environ, "EMBEDSTREAM_MODEL__CACHE_DIR": str(cache)}
    for kind in KINDS.values():
        source = tmp_path_factory.mktemp(f"{kind.new}-source")
        torch.manual_seed(0)
        kind.maker(source)
        command = [sys.executable, "-m", "embedstream.workers.cli", "models", "export", kind.new]
        done = subprocess.run(
            [*command, "--source", str(source), "--space", kind.space],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert load_manifest(cache, kind.new)[0].space == kind.space
    return cache


def media_events(kind: Kind, files: list[Path], by_uri: set[str]) -> list[bytes]:
    events = []
    for file in files:
        event = {"schema": 1, "id": file.stem, "modality": kind.modality}
        event |= {"uri": file.as_uri()} if file.stem in by_uri else {"data": b64(file.read_bytes())}
        events.append(json.dumps(event).encode())
    return events


def vectors(settings: Settings, space: str) -> dict[str, np.ndarray]:
    store = open_store(settings.qdrant)
    try:
        return {p.id: np.asarray(p.vectors[space]) for p in store.scroll(with_vectors=True) if space in p.vectors}
    finally:
        store.close()


def nearest(settings: Settings, kind: Kind, file: Path) -> list[tuple[str, float]]:
    searcher = Searcher(settings)
    try:
        hits = searcher.search(kind.query(file.read_bytes()), limit=3, modality=kind.modality)
        return [(h.payload["id"], round(h.score, 4)) for h in hits]
    finally:
        searcher.close()


def state(settings: Settings, space: str) -> migration.SpaceState:
    return next(s for s in run_step(settings, migration.space_states) if s.name == space)


@pytest.mark.parametrize("modality", sorted(KINDS))
def test_a_media_space_migrates_from_uris_and_from_the_topic(make_settings, media_cache, tmp_path, modality):
    kind = KINDS[modality]
    space, new = kind.space, f"{kind.new}@1"
    roots = tmp_path / "files"
    roots.mkdir()
    files = [Path(shutil.copy(p, roots / p.name)) for p in list(kind.samples().values())[:6]]
    settings = make_settings(
        kafka={"partitions": 1},
        model={"cache_dir": str(media_cache), kind.setting: space, "image_text_model": ""},
        media={"roots": [str(roots)], "modalities": [kind.modality]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    first, later = files[:4], files[4:]
    by_uri = {files[0].stem, files[1].stem, files[4].stem}  # the others come inline, so only the topic has them
    send_raw(settings, [(None, value, []) for value in media_events(kind, first, by_uri)])
    run_ingest(settings)
    assert state(settings, space).points == 4 and nearest(settings, kind, files[2])[0][0] == files[2].stem

    # a file that is gone cannot be made again: the backfill stops and names it, the rest is kept
    hidden = files[1].rename(tmp_path / files[1].name)
    with pytest.raises(migration.MigrationError, match="cannot be embedded again"):
        migrate_here(settings, space, new, progress=False)
    assert (state(settings, space).state, state(settings, space).backfilled) == ("migrating", 3)
    hidden.rename(files[1])
    assert migrate_here(settings, space, new, progress=False) == 1  # resumed: only the one left

    # an ingest while the space migrates writes both models' vectors (a URI fetched, an inline one re-read)
    send_raw(settings, [(None, value, []) for value in media_events(kind, later, by_uri)])
    run_ingest(settings)
    moving = state(settings, space)
    assert (moving.points, moving.backfilled, moving.to_model) == (len(files), len(files), new)
    before = nearest(settings, kind, files[2])  # still searched with the old model

    switched = subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "spaces", "switch", space],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert switched.returncode == 0, switched.stderr[-2000:]
    assert state(settings, space).searched_model == new

    fresh = settings.replace(
        kafka={"group_id": f"{settings.kafka.group_id}.fresh"},
        qdrant={"path": str(tmp_path / "fresh-store")},
        model={kind.setting: kind.new},
    )
    run_ingest(fresh)
    migrated, rebuilt = vectors(settings, space), vectors(fresh, space)
    assert migrated.keys() == rebuilt.keys() and len(rebuilt) == len(files)
    worst = max(float(np.abs(migrated[k] - rebuilt[k]).max()) for k in rebuilt)
    assert worst <= 1e-6, f"migrated vectors differ from a fresh ingest by up to {worst}"
    assert nearest(settings, kind, files[2]) == nearest(
        fresh, kind, files[2]
    )  # a query is encoded by the new model now

    run_step(settings, lambda store: migration.rollback(store, space))
    assert nearest(settings, kind, files[2]) == before


def test_bytes_come_back_only_from_the_same_event(make_settings, tmp_path):
    """``MediaSources.fetch`` reads an inline picture again at its stored offset, and refuses a record that is
    another event (other id) or the same id with other bytes (a later version at that place is impossible in
    Kafka, but a payload can be stale or edited)."""
    import hashlib

    from embedstream.pipelines.spaces.event_bytes import MediaSources

    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    files = list(sample_photos().values())[:2]
    send_raw(settings, [(None, value, []) for value in media_events(KINDS["image"], files, set())])
    topic = settings.kafka.topic

    def payload(file: Path, offset: int, data: bytes | None = None) -> dict[str, object]:
        digest = hashlib.sha256(data or file.read_bytes()).hexdigest()
        source = {"topic": topic, "partition": 0, "offset": offset}
        return {"id": file.stem, "modality": "image", "source": source, "content_sha256": digest}

    sources = MediaSources(settings.media, settings.kafka, settings.pipeline.max_event_bytes)
    reader = sources.reader()
    try:
        found = sources.fetch(
            [
                payload(files[0], 0),  # its own event
                payload(files[1], 1),  # its own event
                payload(files[1], 0),  # the other event's place: another id
                payload(files[0], 0, b"other bytes"),  # its place, but the payload says other bytes made it
            ],
            reader,
        )
        assert found == [files[0].read_bytes(), files[1].read_bytes(), None, None]
        # A caller that fetches again and again (the ingest's dual writes: once per batch) keeps one consumer.
        for _ in range(3):
            assert sources.fetch([payload(files[1], 1), payload(files[0], 0)], reader) == [
                files[1].read_bytes(),
                files[0].read_bytes(),
            ]
        assert reader.opened == 1
    finally:
        reader.close()


@pytest.mark.brokers("kafka")
def test_a_picture_whose_event_the_broker_deleted_is_reported_by_the_backfill_not_guessed(
    make_settings, media_cache, tmp_path, caplog
):
    """Pictures that came inline live only in their events. Apache Kafka deletes the first two (DeleteRecords, as
    retention would) before a migration: the backfill makes the others, stops on the two it cannot make and says
    why; nothing is written from a record that is not the event (the next offset is another picture)."""
    from kafka import KafkaAdminClient, TopicPartition

    kind = KINDS["image"]
    space, new = kind.space, f"{kind.new}@1"
    files = list(kind.samples().values())[:4]
    settings = make_settings(
        kafka={"partitions": 1},
        model={"cache_dir": str(media_cache), kind.setting: space, "image_text_model": ""},
        media={"modalities": [kind.modality]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(None, value, []) for value in media_events(kind, files, set())])
    run_ingest(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    admin.delete_records({TopicPartition(settings.kafka.topic, 0): 2})
    admin.close()

    with caplog.at_level("WARNING"), pytest.raises(migration.MigrationError, match="cannot be embedded again"):
        migrate_here(settings, space, new, progress=False)
    assert "no longer retains offsets [0, 1]" in caplog.text
    assert (state(settings, space).state, state(settings, space).backfilled) == ("migrating", 2)
