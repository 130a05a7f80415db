"""Moving a space to another model in place (``pipelines.spaces``): minilm@1 → minilm@1-int8 on both stores,
while ``serve --ingest`` streams and answers, and a backfill killed with -9 and resumed.

The bar everywhere: after the switch every point holds the new model's vector, equal (1e-6) to what a fresh
ingest of the same topic with the new model writes; rollback gives back the old answers.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.spaces import migration
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import StoreSchemaError, open_store
from embedstream.schemas.settings import Settings
from embedstream.workers.spaces import migrate_here, run_step
from tests.helpers import QUERIES, Server, answers, fill, send_raw, settings_env, text_event, watermarks

pytestmark = pytest.mark.integration

SPACE, NEW = "minilm", "minilm@1-int8"


def vectors(settings: Settings) -> dict[str, np.ndarray]:
    """Every point's searched vector in the space."""
    store = open_store(settings.qdrant)
    try:
        return {p.id: np.asarray(p.vectors[SPACE]) for p in store.scroll(with_vectors=True) if SPACE in p.vectors}
    finally:
        store.close()


def fresh_ingest(settings: Settings, folder: Path) -> Settings:
    """The same topic ingested from its start with the new model, into a store of its own."""
    fresh = settings.replace(
        kafka={"group_id": f"{settings.kafka.group_id}.fresh"},
        qdrant={"path": str(folder / "fresh-store")},
        model={"text_model": NEW},
    )
    run_ingest(fresh)
    return fresh


def assert_same_vectors(migrated: dict[str, np.ndarray], fresh: dict[str, np.ndarray]) -> None:
    assert migrated.keys() == fresh.keys()
    worst = max(float(np.abs(migrated[k] - fresh[k]).max()) for k in fresh)
    assert worst <= 1e-6, f"migrated vectors differ from a fresh ingest by up to {worst}"


def state(settings: Settings) -> migration.SpaceState:
    return next(s for s in run_step(settings, migration.space_states) if s.name == SPACE)


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_a_space_migrates_switches_rolls_back_and_drops_the_old_on_both_stores(
    make_settings, int8_cache, tmp_path, backend
):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend}, model={"cache_dir": str(int8_cache)})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 60)
    run_ingest(settings)
    before = answers(settings)
    points = state(settings).points
    assert points > 63  # 60 sentences, 3 documents and their chunks

    with pytest.raises(migration.MigrationError, match="already holds"):
        run_step(settings, lambda store: migration.start(store, RemakeFrom.of(settings), SPACE, "minilm@1"))
    assert migrate_here(settings, SPACE, NEW, progress=False) == points
    now = state(settings)
    assert (now.state, now.to_model, now.backfilled, now.searched_model) == ("migrating", NEW, points, "minilm@1")
    assert answers(settings) == before  # searches stay on the old vectors until the switch
    assert migrate_here(settings, SPACE, NEW, progress=False) == 0  # resumed: nothing left to do

    fresh = fresh_ingest(settings, tmp_path)
    run_step(settings, lambda store: migration.switch(store, RemakeFrom.of(settings), SPACE))
    assert state(settings).state == "switched"
    assert_same_vectors(vectors(settings), vectors(fresh))
    assert answers(settings) == answers(fresh)  # a search embeds with the new model and searches its vectors

    run_step(settings, lambda store: migration.rollback(store, SPACE))
    assert answers(settings) == before
    run_step(settings, lambda store: migration.switch(store, RemakeFrom.of(settings), SPACE))
    moved = run_step(settings, lambda store: migration.drop_old(store, SPACE))
    assert (moved.model, moved.engine_name, moved.shadow) == (NEW, f"{SPACE}~2", None)
    assert_same_vectors(vectors(settings), vectors(fresh))

    send_raw(settings, [(None, text_event("late", "the comet was visible low in the western sky"), [])])
    with pytest.raises(StoreSchemaError, match=r"holds vectors of minilm@1-int8"):
        run_ingest(settings)  # the old model's run is fenced off the moved space
    now_new = settings.replace(model={"text_model": NEW})
    run_ingest(now_new)
    run_ingest(fresh)  # the fresh store reads the same topic
    assert_same_vectors(vectors(now_new), vectors(fresh))


def test_a_migration_refuses_what_it_cannot_do_and_cancels(make_settings, int8_cache):
    settings = make_settings(kafka={"partitions": 1}, model={"cache_dir": str(int8_cache)})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 10)
    run_ingest(settings)
    with pytest.raises(migration.MigrationError, match="sparse"):
        run_step(settings, lambda store: migration.start(store, RemakeFrom.of(settings), "bm25", NEW))
    with pytest.raises(migration.MigrationError, match="not migrating"):
        run_step(settings, lambda store: migration.switch(store, RemakeFrom.of(settings), SPACE))
    migrate_here(settings, SPACE, NEW, progress=False)
    with pytest.raises(migration.MigrationError, match="not switched"):
        run_step(settings, lambda store: migration.drop_old(store, SPACE))
    run_step(settings, lambda store: migration.cancel(store, SPACE))
    after = state(settings)
    assert (after.state, after.to_model, after.model) == ("steady", None, "minilm@1")
    assert run_step(settings, lambda store: store.spaces()[SPACE].shadow) is None
    # the next migration takes the next generation's name: the cancelled one's vector is gone
    spec = run_step(settings, lambda store: migration.start(store, RemakeFrom.of(settings), SPACE, NEW))
    assert spec.shadow is not None and spec.shadow.vector == f"{SPACE}~2"


def test_a_backfill_killed_with_minus_9_resumes_and_ends_as_a_fresh_ingest(make_settings, int8_cache, tmp_path):
    settings = make_settings(kafka={"partitions": 1}, model={"cache_dir": str(int8_cache)})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 2000)
    run_ingest(settings)
    total = state(settings).points

    command = [sys.executable, "-m", "embedstream.workers.cli", "spaces", "migrate", SPACE, "--to", NEW]
    process = subprocess.Popen(command, env=settings_env(settings), stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = ""
    while not re.search(r"backfilling.*\| [1-9]\d*/", seen.rsplit("\r", 1)[-1]):  # until the bar has moved
        char = process.stderr.read(1)
        assert char, f"the migration ended before it was killed:\n{seen}"
        seen += char
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = state(settings)
    assert killed.state == "migrating" and 0 < (killed.backfilled or 0) < total, killed

    rerun = subprocess.run([*command, "-q"], env=settings_env(settings), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total - (killed.backfilled or 0)} points filled" in rerun.stdout
    assert state(settings).backfilled == total
    fresh = fresh_ingest(settings, tmp_path)
    run_step(settings, lambda store: migration.switch(store, RemakeFrom.of(settings), SPACE))
    assert_same_vectors(vectors(settings), vectors(fresh))


def test_serve_with_ingest_migrates_while_it_streams_and_answers(make_settings, int8_cache, tmp_path):
    """The issue's test: events stream in the whole time; queries never fail nor come back empty; after the
    switch every point has the new vector, equal to a fresh ingest's; rollback gives the old answers back."""
    settings = make_settings(kafka={"partitions": 1}, model={"cache_dir": str(int8_cache)})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 520)
    server = Server(settings, "--ingest")
    stop, failures, asked, sent = threading.Event(), [], [0], [0]

    def produce() -> None:  # new events and new versions of stored ones, all the way through
        while not stop.wait(0.05):
            i = sent[0]
            text = f"status report {i}: conveyor line {i % 7} ran at {100 + i} units per hour"
            # new versions of music and ocean sentences, which none of the queries is about
            update = text_event(f"s{312 + i % 100}", f"revised note {i} about line {i % 7}")
            send_raw(settings, [(None, text_event(f"live-{i}", text), []), (None, update, [])])
            sent[0] += 1

    def query() -> None:
        while not stop.is_set():
            response = httpx.post(f"{server.url}/search", json={"text": QUERIES[asked[0] % 3], "k": 3}, timeout=30)
            asked[0] += 1
            if response.status_code != 200 or not response.json()["hits"]:
                failures.append((response.status_code, response.text[:200]))

    def get_space() -> dict:
        spaces = httpx.get(f"{server.url}/spaces", timeout=30).json()["spaces"]
        return next(s for s in spaces if s["name"] == SPACE)

    try:
        deadline = time.monotonic() + 120
        while committed_offsets(settings.kafka) != watermarks(settings):  # every sentence and document stored
            assert time.monotonic() < deadline, "the initial events were never all stored"
            time.sleep(0.5)
        # dense: a rollback gives the old vectors back exactly; keyword statistics move with the streamed events
        before = [
            httpx.post(f"{server.url}/search", json={"text": q, "k": 3, "mode": "dense"}).json()["hits"]
            for q in QUERIES
        ]
        threads = [threading.Thread(target=produce), threading.Thread(target=query)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        started = httpx.post(f"{server.url}/spaces/{SPACE}/migrate", json={"to": NEW}, timeout=60)
        assert started.status_code == 202, started.text
        while (space := get_space())["backfill"]["running"]:
            assert time.monotonic() < deadline + 120, space
            time.sleep(0.2)
        assert space["backfill"]["error"] is None and space["state"] == "migrating"
        switched = httpx.post(f"{server.url}/spaces/{SPACE}/switch", timeout=60)
        assert switched.status_code == 200 and switched.json()["searched_model"] == NEW, switched.text
        time.sleep(2)  # streaming and searching on the switched space
        stop.set()
        for thread in threads:
            thread.join()
        produced = 520 + 3 + sent[0]  # distinct ids: the updates rewrite stored sentences
        while get_space()["points"] < produced:
            assert time.monotonic() < deadline + 240, "the streamed events were never all stored"
            time.sleep(0.5)
        assert asked[0] > 20 and not failures, failures[:3]

        back = httpx.post(f"{server.url}/spaces/{SPACE}/rollback", timeout=60)
        assert back.status_code == 200 and back.json()["searched_model"] == "minilm@1"
        after = [
            httpx.post(f"{server.url}/search", json={"text": q, "k": 3, "mode": "dense"}).json()["hits"]
            for q in QUERIES
        ]
        assert [[(h["id"], round(h["score"], 5)) for h in hits] for hits in after] == [
            [(h["id"], round(h["score"], 5)) for h in hits] for hits in before
        ]
        assert httpx.post(f"{server.url}/spaces/{SPACE}/switch", timeout=60).status_code == 200
        assert get_space()["backfilled"] == get_space()["points"]
    finally:
        stop.set()
        output = server.stop()
    assert server.process.returncode == 0, output[-3000:]
    fresh = fresh_ingest(settings, tmp_path)
    assert_same_vectors(vectors(settings), vectors(fresh))


def test_a_picture_written_into_a_migrating_text_space_keeps_its_own_vector(make_settings, int8_cache):
    """A ConSE picture's text-space vector is the run's text model's, as the plan fences it, whatever model its
    payload names: the writer keeps it for the old vectors, and has no text to make the new one from (so the
    switch will refuse until it is dealt with), instead of dropping it."""
    from embedstream.pipelines.spaces.dual_write import MigrationWrites
    from embedstream.pipelines.stores import Shadow, SpaceSpec
    from embedstream.schemas.point import PointRecord, point_id

    settings = make_settings(model={"cache_dir": str(int8_cache)})
    store = open_store(settings.qdrant)
    try:
        store.ensure_spaces([SpaceSpec(SPACE, 384, "minilm@1")])
        store.add_vector(f"{SPACE}~2", 384)
        store.record_spaces([SpaceSpec(SPACE, 384, "minilm@1", shadow=Shadow(f"{SPACE}~2", NEW, 384))])
        picture = [1.0] + [0.0] * 383
        text = "the comet was visible low in the western sky"
        points = [
            PointRecord(
                id=point_id("image", "p"),
                vectors={SPACE: picture},
                payload={"id": "p", "modality": "image", "models": {SPACE: "effnet-conse@1"}},
            ),
            PointRecord(
                id=point_id("text", "t"),
                vectors={SPACE: [0.0, 1.0] + [0.0] * 382},
                payload={"id": "t", "modality": "text", "text": text, "models": {SPACE: "minilm@1"}},
            ),
        ]
        laid = MigrationWrites(store, RemakeFrom.of(settings), {SPACE: "minilm@1"}).prepare(points)
    finally:
        store.close()
    assert laid[0].vectors == {SPACE: picture}  # kept, no new-model vector invented
    assert laid[1].vectors[SPACE] == points[1].vectors[SPACE] and len(laid[1].vectors[f"{SPACE}~2"]) == 384
