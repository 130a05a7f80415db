"""Concurrent text searches answered together (workers/query_batcher.py, Searcher.search)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from embedstream.onnx_models.corpus import corpus_texts
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.schemas.point import PointRecord, point_id
from embedstream.schemas.settings import Settings
from embedstream.workers.query_batcher import QueryBatcher
from embedstream.workers.search import Query, Searcher


def test_concurrent_requests_share_batches_and_a_lone_one_runs_at_once() -> None:
    sizes: list[int] = []

    def run(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.05)  # a model call
        return [2 * i for i in items]

    observed: list[int] = []
    batcher = QueryBatcher(run, max_batch=8, on_batch=observed.append)
    started = time.monotonic()
    assert batcher.answer(21) == 42 and sizes == [1]
    assert time.monotonic() - started < 0.2  # no wait for company that is not coming

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(batcher.answer, range(96)))
    assert answers == [2 * i for i in range(96)]
    assert max(sizes) > 1 and max(sizes) <= 8, sizes  # batched, within the cap
    assert sum(sizes) == 97
    assert observed == sizes


def test_a_bad_request_fails_alone() -> None:
    def run(items: Sequence[int]) -> list[int]:
        if any(i < 0 for i in items):
            raise ValueError(f"negative in {list(items)}")
        time.sleep(0.02)
        return list(items)

    batcher = QueryBatcher(run)
    barrier = threading.Barrier(12)

    def ask(i: int) -> int | str:
        barrier.wait()
        try:
            return batcher.answer(i)
        except ValueError:
            return "refused"

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, [-1, *range(1, 12)]))
    assert answers == ["refused", *range(1, 12)]
    assert batcher.split >= 1


@pytest.fixture
def corpus_store(model_cache, tmp_path):
    settings = Settings.load(qdrant={"path": str(tmp_path / "store")}, model={"cache_dir": str(model_cache)})
    texts = corpus_texts()
    vectors = TextEncoder.from_settings(settings.model).embed(texts)
    store = open_store(settings.qdrant)
    store.ensure_spaces([SpaceSpec("minilm", vectors.shape[1], "minilm@1")])
    store.upsert(
        [
            PointRecord(
                id=point_id("text", f"c{i}"), vectors={"minilm": v.tolist()}, payload={"id": f"c{i}", "text": t}
            )
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ]
    )
    store.flush()
    yield settings, store
    store.close()


def test_batched_text_searches_answer_what_each_alone_answers(corpus_store) -> None:
    settings, store = corpus_store
    queries = [
        "which planets can I see without a telescope",
        "how do I keep bread dough from sticking",
        "saving money for retirement",
        "why do trains need signals",
    ] * 8
    alone = Searcher(settings.replace(api={"batch_queries": False}), store)
    sizes: list[int] = []
    batched = Searcher(settings, store, on_batch=sizes.append)
    expected = [alone.search(Query.of_text(q), limit=5) for q in queries]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda q: batched.search(Query.of_text(q), limit=5), queries))

    for want, have in zip(expected, got, strict=True):
        assert [h.id for h in have] == [h.id for h in want]
        assert [h.score for h in have] == pytest.approx([h.score for h in want], abs=1e-4)
    batcher = batched._text_batcher("minilm")
    assert max(sizes) > 1 and batcher.split == 0  # they shared encoder and store calls, none failed
