"""Clustering from the CLI on a really ingested corpus of three clearly separated topics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from embedstream.onnx_models.corpus import corpus_path
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.pipelines.stores import open_store
from tests.helpers import embedstream, send_raw, settings_env, text_event

pytestmark = pytest.mark.integration

CORPUS = corpus_path()
TOPICS = ("astronomy", "cooking", "software")


def labelled_store(make_settings):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    chosen = [r for r in rows if r["metadata"]["topic"] in TOPICS]
    send_raw(settings, [(None, text_event(r["id"], r["text"], metadata=r["metadata"]), []) for r in chosen])
    run_ingest(settings)
    return settings, len(chosen)


def stored_labels(settings, key: str) -> tuple[list[str], list[int], list[str]]:
    store = open_store(settings.qdrant)
    try:
        points = sorted(store.scroll(), key=lambda p: p.id)
    finally:
        store.close()
    return (
        [p.id for p in points],
        [p.payload[key]["label"] for p in points],
        [p.payload["metadata"]["topic"] for p in points],
    )


def test_three_topics_come_back_as_three_clusters(make_settings, tmp_path):
    settings, count = labelled_store(make_settings)
    env = settings_env(settings)
    plot = tmp_path / "clusters.png"
    done = embedstream("cluster", "--space", "minilm", "--k", "auto", "--k-max", "6", "--plot", str(plot), env=env)
    assert done.returncode == 0, done.stderr
    assert f"{count} points of minilm in 3 clusters" in done.stdout
    assert "k=2" in done.stdout and "k=6" in done.stdout and "reading vectors" in done.stderr  # progress shown
    assert plot.stat().st_size > 20_000

    ids, labels, topics = stored_labels(settings, "cluster_minilm")
    assert adjusted_rand_score(topics, labels) >= 0.8
    again = embedstream("cluster", "--space", "minilm", "--k", "3", "-q", "--plot", str(tmp_path / "b.png"), env=env)
    assert again.returncode == 0, again.stderr
    ids_again, labels_again, _ = stored_labels(settings, "cluster_minilm")
    assert (ids_again, labels_again) == (ids, labels)  # same data, same options: the same labels (idempotent)

    by_label = embedstream(
        "search", "planets", "--where", f"cluster_minilm.label={labels[0]}", "-k", "50", "--json", env=env
    )
    assert {h["payload"]["cluster_minilm"]["label"] for h in json.loads(by_label.stdout)} == {labels[0]}


def test_hdbscan_finds_the_topics_without_being_told_k(make_settings, tmp_path):
    settings, _ = labelled_store(make_settings)
    done = embedstream(
        "cluster",
        "--space",
        "minilm",
        "--method",
        "hdbscan",
        "-q",
        "--plot",
        str(tmp_path / "h.png"),
        env=settings_env(settings),
    )
    assert done.returncode == 0, done.stderr
    _, labels, topics = stored_labels(settings, "cluster_minilm")
    clustered = np.asarray(labels) >= 0
    assert len(set(labels) - {-1}) >= 2
    assert adjusted_rand_score(np.asarray(topics)[clustered], np.asarray(labels)[clustered]) >= 0.8
