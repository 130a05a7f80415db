"""Concurrent text searches answered together (workers/query_batcher.py, Searcher.search)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from embedstream.onnx_models.corpus import corpus_texts
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.schemas.errors import NotFoundError
from embedstream.schemas.point import PointRecord, point_id
from embedstream.schemas.settings import Settings
from embedstream.workers.query_batcher import QueryBatcher
from embedstream.workers.search import Query, Searcher


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_an_outcome_that_is_an_exception_fails_its_request_only() -> None:
    def run(items: Sequence[int]) -> list[int | Exception]:
        time.sleep(0.02)
        return [ValueError(f"{i} is odd") if i % 2 else i for i in items]

    batcher = QueryBatcher(run)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.answer, i) for i in range(16)]
    for i, future in enumerate(futures):
        if i % 2:
            with pytest.raises(ValueError, match=f"{i} is odd"):
                future.result()
        else:
            assert future.result() == i
    assert batcher.split == 0  # the batch's call succeeded: nothing was run again


@pytest.mark.unit
def test_coroutines_wait_for_their_batch_without_threads_and_runners_are_capped() -> None:
    running, most = [0], [0]
    lock = threading.Lock()
    sizes: list[int] = []
    callers: set[str] = set()

    def run(items: Sequence[int]) -> list[int]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            callers.add(threading.current_thread().name)
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        return [i * i for i in items]

    batcher = QueryBatcher(run, max_batch=8, runners=2, on_batch=sizes.append)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.answer_async(i) for i in range(64))))

    answers = asyncio.run(main())
    assert answers == [i * i for i in range(64)]
    assert most[0] == 2  # two batches at once, never more
    assert max(sizes) == 8 and sum(sizes) == 64
    assert all(name.startswith("query-batch") for name in callers)  # run on the batcher's threads
    batcher.close()


@pytest.mark.unit
def test_a_cancelled_request_leaves_the_others_answered() -> None:
    def run(items: Sequence[int]) -> list[int]:
        time.sleep(0.05)
        return list(items)

    batcher = QueryBatcher(run, runners=1)

    async def main() -> tuple[list[int], bool]:
        first = asyncio.ensure_future(batcher.answer_async(0))
        await asyncio.sleep(0.01)  # the first batch is running: the next ones wait for it
        gone = asyncio.ensure_future(batcher.answer_async(1))
        kept = [asyncio.ensure_future(batcher.answer_async(i)) for i in range(2, 6)]
        await asyncio.sleep(0)
        gone.cancel()  # its client went away while it waited
        answers = [await first, *[await k for k in kept]]
        return answers, gone.cancelled()

    answers, cancelled = asyncio.run(main())
    assert answers == [0, 2, 3, 4, 5] and cancelled


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


@pytest.mark.integration
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
    assert max(sizes) > 1 and batched._texts.split == 0  # they shared encoder and store calls, none failed


@pytest.mark.integration
def test_awaited_text_searches_are_batched_and_a_wrong_space_fails_alone(corpus_store) -> None:
    settings, store = corpus_store
    queries = ["how do whales communicate", "fixing a memory leak", "best time to plant tomatoes"] * 6
    alone = Searcher(settings.replace(api={"batch_queries": False}), store)
    expected = [alone.search(Query.of_text(q), limit=3) for q in queries]
    sizes: list[int] = []
    batched = Searcher(settings, store, on_batch=sizes.append)

    async def main() -> list[tuple[str, list] | BaseException]:
        asks = [batched.search_text(q, limit=3) for q in queries]
        asks.insert(5, batched.search_text("anything", space="no-such-space", limit=3))
        return list(await asyncio.gather(*asks, return_exceptions=True))

    got = asyncio.run(main())
    wrong = got.pop(5)
    assert isinstance(wrong, NotFoundError) and "no-such-space" in str(wrong)
    for want, have in zip(expected, got, strict=True):
        assert not isinstance(have, BaseException)
        space, hits = have
        assert space == "minilm"
        assert [h.id for h in hits] == [h.id for h in want]
    assert max(sizes) > 1 and batched._texts.split == 0  # the wrong space failed alone: no batch ran again

    # without batching the same call runs alone on a worker thread
    assert asyncio.run(alone.search_text(queries[0], limit=3))[1] == expected[0]
