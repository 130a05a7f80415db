"""Both store backends: same contract, fenced schema, clear errors for locked paths and mismatches."""

from __future__ import annotations

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import SearchRequest, SpaceSpec, StoreLockedError, StoreSchemaError, open_store
from embedstream.schemas.point import PointRecord, SourceRef, point_id
from embedstream.schemas.settings import CollectionOptions, QdrantSettings
from tests.helpers import read_topic, send_raw, text_event

pytestmark = pytest.mark.integration

BACKENDS = ["edge", "local"]


def _point(i: int, dim: int = 4) -> PointRecord:
    vector = [float(i + 1), 1.0] + [0.0] * (dim - 2)
    return PointRecord(
        id=point_id("text", f"d{i}"),
        vectors={"minilm": vector},
        payload={"id": f"d{i}", "modality": "text", "metadata": {"topic": "odd" if i % 2 else "even"}},
        source=SourceRef(topic="t", partition=0, offset=i),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_contract(backend, tmp_path):
    store = open_store(QdrantSettings(backend=backend, path=str(tmp_path / "s")))
    try:
        store.ensure_spaces([SpaceSpec("minilm", 4, "minilm@1")])
        store.upsert([_point(i) for i in range(10)])
        store.flush()
        assert store.count() == 10
        assert store.count({"metadata.topic": "odd"}) == 5
        hits = store.search("minilm", [1.0, 1.0, 0.0, 0.0], limit=3, where={"metadata.topic": "even"})
        assert hits[0].payload["id"] == "d0" and all(h.payload["metadata"]["topic"] == "even" for h in hits)
        requests = [
            SearchRequest("minilm", [1.0, 1.0, 0.0, 0.0], 3, {"metadata.topic": "even"}),
            SearchRequest("minilm", [0.0, 1.0, 0.0, 0.0], 2),
        ]
        assert [[h.id for h in hits] for hits in store.search_batch(requests)] == [
            [h.id for h in store.search(r.space, r.vector or [], r.limit, r.where)] for r in requests
        ]
        (got,) = store.retrieve([point_id("text", "d3")], with_vectors=True)
        assert got.payload["id"] == "d3" and len(got.vectors["minilm"]) == 4
        assert sorted(p.payload["id"] for p in store.scroll()) == sorted(f"d{i}" for i in range(10))
        assert store.spaces() == {"minilm": SpaceSpec("minilm", 4, "minilm@1")}
        store.delete([point_id("text", "d0"), point_id("text", "never-stored")], where={"metadata.topic": "odd"})
        store.flush()
        assert sorted(p.payload["id"] for p in store.scroll()) == ["d2", "d4", "d6", "d8"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dimension_and_version_are_fenced(backend, tmp_path):
    settings = QdrantSettings(backend=backend, path=str(tmp_path / "s"))
    store = open_store(settings)
    store.ensure_spaces([SpaceSpec("minilm", 4, "minilm@1")])
    store.close()
    store = open_store(settings)
    try:
        with pytest.raises(StoreSchemaError, match="dimension 4"):
            store.ensure_spaces([SpaceSpec("minilm", 384, "minilm@1")])
        with pytest.raises(StoreSchemaError, match=r"minilm@1.*minilm@2"):
            store.ensure_spaces([SpaceSpec("minilm", 4, "minilm@2")])
        with pytest.raises(StoreSchemaError, match="no named vector 'effnet'"):
            store.ensure_spaces([SpaceSpec("effnet", 1280, "effnet@1")])
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_opener_gets_a_clear_lock_error(backend, tmp_path):
    settings = QdrantSettings(backend=backend, path=str(tmp_path / "s"))
    first = open_store(settings)
    first.ensure_spaces([SpaceSpec("minilm", 4, "minilm@1")])
    try:
        with pytest.raises(StoreLockedError, match="in use by another process"):
            second = open_store(settings)  # qdrant-client local mode refuses here,
            second.count()  # qdrant-edge when the shard is first used
    finally:
        first.close()


def test_mismatched_collection_stops_ingest_before_any_write(make_settings):
    settings = make_settings()
    store = open_store(settings.qdrant)
    store.ensure_spaces([SpaceSpec("minilm", 768, "minilm@1")])
    store.close()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"a", text_event("a", "hello there"), []), (None, b"{broken", [])])

    with pytest.raises(StoreSchemaError, match="dimension 768"):
        run_ingest(settings)

    store = open_store(settings.qdrant)
    try:
        assert store.count() == 0
    finally:
        store.close()
    assert all(v is None for v in committed_offsets(settings.kafka).values())
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalar_quantization_is_set_when_the_collection_is_made_and_search_still_finds_the_nearest(backend, tmp_path):
    """``collection_options.scalar_quantization``: the embedded engine records int8 quantization for the new
    collection (a server gets it in create_collection), and after the index is built a search still returns
    the exact nearest point first (rescored from the originals)."""
    import json

    import numpy as np

    options = CollectionOptions(scalar_quantization=True, quantization_quantile=0.98, quantization_oversampling=3)
    settings = QdrantSettings(backend=backend, path=str(tmp_path / "store"), collection_options=options, hnsw_ef=77)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, 32))
    store = open_store(settings)
    params = store._params  # type: ignore[attr-defined]  # what every dense search of this store passes
    assert params.hnsw_ef == 77 and params.quantization.oversampling == 3 and params.quantization.rescore
    try:
        store.ensure_spaces([SpaceSpec("minilm", 32, "minilm@1")])
        store.upsert(
            [
                PointRecord(id=point_id("text", f"q{i}"), vectors={"minilm": v.tolist()}, payload={"id": f"q{i}"})
                for i, v in enumerate(vectors)
            ]
        )
        store.flush()
        store.optimize()
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(0, 400, 40):
            query = vectors[i] + rng.normal(0, 0.3, 32)
            exact = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:3]
            got = [h.payload["id"] for h in store.search("minilm", query.tolist(), limit=3)]
            assert got[0] == f"q{exact[0]}", (got, exact)
        if backend == "edge":  # (qdrant-client's local mode takes the option and keeps no quantization)
            config = json.loads((tmp_path / "store" / "embeddings" / "edge_config.json").read_text())
            assert config["quantization_config"]["scalar"] == {"type": "int8", "quantile": 0.98, "always_ram": True}
    finally:
        store.close()
