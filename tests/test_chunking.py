"""Long texts: cut into chunks by the encoder's tokenizer, stored as chunk points plus a document point, kept
without orphans as documents change, and searched grouped by document."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from embedstream.onnx_models.chunking import Chunker, sentence_starts
from embedstream.onnx_models.corpus import corpus_records
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.point import CHUNK_MODALITY, point_id
from embedstream.workers.search import Query, Searcher, SearchMode
from tests.helpers import Message, read_topic, reset_group, send_raw, settings_env, text_event, watermarks
from tests.long_documents import document, long_documents

pytestmark = pytest.mark.integration

COMPARED: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")
CORPUS = [(str(r["metadata"]["topic"]), str(r["text"])) for r in corpus_records()]


@pytest.fixture(scope="module")
def encoder(model_cache) -> TextEncoder:
    return TextEncoder.load(model_cache, "minilm")


@pytest.mark.parametrize("max_tokens,overlap", [(256, 32), (64, 8), (40, 0)])
def test_chunks_fit_the_model_cover_the_text_and_cut_at_sentence_ends(encoder, max_tokens, overlap) -> None:
    long_sentence = " ".join(f"word{i}" for i in range(300))  # no sentence end for 300 words
    text = f"{document(700)}\n\nA heading line\n{long_sentence}. {document(200, seed=2)}"
    chunker = Chunker.from_file(encoder.tokenizer_file, max_tokens, overlap)
    chunks = chunker.chunks(text)
    assert len(chunks) > 3 and [c.index for c in chunks] == list(range(len(chunks)))
    covered = np.zeros(len(text), dtype=bool)
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        # the model reads every chunk whole: its tokens, special ones included, fit
        assert len(encoder.prepare([chunk.text])[0]) <= max_tokens
        covered[chunk.start : chunk.end] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace()), "every character is in some chunk"
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # a chunk starts where a sentence starts, unless it is a piece of the 300-word sentence
    inside = text.index(long_sentence), text.index(long_sentence) + len(long_sentence)
    for chunk in chunks:
        before = text[: chunk.start]
        if chunk.start and not inside[0] < chunk.start < inside[1]:
            assert before.rstrip()[-1] in ".!?" or "\n" in before[len(before.rstrip()) :], chunk
    # neighbours share at most `overlap` tokens
    for a, b in itertools.pairwise(chunks):
        if b.start < a.end:
            assert len(encoder.prepare([text[b.start : a.end]])[0]) - 2 <= overlap + 1
    (short,) = chunker.chunks("Short.")
    assert (short.start, short.end, short.text) == (0, 6, "Short.") and chunker.chunks("   ") == []


def test_sentence_chunks_follow_the_passages_one_per_sentence_and_only_for_a_cut_text(encoder) -> None:
    text = f"{document(700)} Yes. {document(300, seed=2)}"
    plain = Chunker.from_file(encoder.tokenizer_file, 256, 32).chunks(text)
    both = Chunker.from_file(encoder.tokenizer_file, 256, 32, sentences=True).chunks(text)
    assert both[: len(plain)] == plain and all(c.level == "passage" for c in plain)
    sentences = both[len(plain) :]
    assert [c.index for c in both] == list(range(len(both))) and all(c.level == "sentence" for c in sentences)
    for chunk in sentences:
        assert chunk.text == text[chunk.start : chunk.end] and len(encoder.prepare([chunk.text])[0]) - 2 >= 4
    starts = [c.start for c in sentences]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # every sentence of the text is one, except a sentence of fewer than 4 tokens ("Yes.")
    bounds = [*sentence_starts(text), len(text)]
    expected = [text[a:b].strip() for a, b in itertools.pairwise(bounds)]
    assert "Yes." in expected and len(expected) > 20
    assert [c.text for c in sentences] == [t for t in expected if len(encoder.prepare([t])[0]) - 2 >= 4]
    # a text that fits one passage gets no sentence points: it is one point already
    (alone,) = Chunker.from_file(encoder.tokenizer_file, 256, 32, sentences=True).chunks(document(60))
    assert alone.level == "passage"


def test_a_document_stored_with_or_without_sentence_points_is_reembedded_whatever_the_setting_says_now(
    encoder, model_cache
) -> None:
    """A migration re-makes a document's vector from its passages: it must accept the ``chunks`` count a
    document was stored with (passages alone, before sentence points or with them off; passages and
    sentences), whatever ``model.sentence_points`` says when the migration runs."""
    from embedstream.onnx_models.chunking import chunker_for
    from embedstream.onnx_models.vectors import mean_vector
    from embedstream.pipelines.spaces.reembed import TextReembedder
    from embedstream.schemas.settings import Settings

    text = document(900)
    model = Settings.load(model={"cache_dir": str(model_cache)}).model
    chunker = chunker_for(encoder, model)
    assert chunker is not None
    chunks = chunker.chunks(text)
    passages = [c.text for c in chunks if c.level == "passage"]
    assert 1 < len(passages) < len(chunks)
    expected = mean_vector(list(encoder.embed(passages)))
    for setting in (True, False):
        remake = TextReembedder(model.model_copy(update={"sentence_points": setting}), encoder)
        for stored_count in (len(chunks), len(passages)):
            (vector,) = remake.vectors([{"modality": "text", "text": text, "chunks": stored_count}])
            assert vector is not None and np.allclose(vector, expected, atol=1e-5), (setting, stored_count)
        assert remake.vectors([{"modality": "text", "text": text, "chunks": len(chunks) + 1}]) == [None]


def stored(settings) -> list:
    store = open_store(settings.qdrant)
    try:
        return list(store.scroll(with_vectors=True))
    finally:
        store.close()


def doc_state(settings, doc: str) -> tuple[list[int], dict | None]:
    """The chunk indexes stored for ``doc`` and its own point's payload."""
    points = [p for p in stored(settings) if p.payload.get("id") == doc]
    chunks = sorted(int(p.payload["chunk"]) for p in points if p.payload["modality"] == CHUNK_MODALITY)
    own = [p.payload for p in points if p.payload["modality"] == "text"]
    return chunks, (own[0] if own else None)


LONG, MEDIUM, SHORT = document(2400, seed=3), document(900, seed=4), "Now it is a single sentence."


@pytest.mark.parametrize("bundle", [1000, 2], ids=["one-bundle", "many-bundles"])
@pytest.mark.parametrize("backend", ["edge", "local"])
def test_a_document_is_chunks_plus_its_point_and_shrinking_it_leaves_no_orphan_chunk(make_settings, backend, bundle):
    settings = make_settings(
        kafka={"partitions": 1},
        qdrant={"backend": backend},
        pipeline={"max_records_per_bundle": bundle, "upsert_batch_size": 5},  # a document's points span batches
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"d", text_event("d", LONG, metadata={"topic": "mixed"}), [])])
    run_ingest(settings)

    points = {p.id: p for p in stored(settings)}
    own = points[point_id("text", "d")]
    chunk_points = sorted(
        (p for p in points.values() if p.payload["modality"] == CHUNK_MODALITY), key=lambda p: p.payload["chunk"]
    )
    n = len(chunk_points)
    assert n >= 8 and own.payload["chunks"] == n and own.payload["text"] == LONG and own.payload["doc_id"] == "d"
    for i, chunk in enumerate(chunk_points):
        payload = chunk.payload
        assert chunk.id == point_id(CHUNK_MODALITY, "d", index=i)
        assert (payload["doc_id"], payload["chunk"], payload["chunks"]) == ("d", i, n)
        assert payload["text"] == LONG[payload["start"] : payload["end"]]
        assert payload["metadata"] == {"topic": "mixed"}
    levels = [c.payload["level"] for c in chunk_points]
    passages = levels.count("passage")
    # the passages first, then a point per sentence (model.sentence_points, on by default)
    assert 2 <= passages < n and levels == ["passage"] * passages + ["sentence"] * (n - passages)
    assert n - passages > 5 * passages
    # the document's vector is its passages' mean: sentences find single facts, they do not move the document
    mean = np.mean([c.vectors["minilm"] for c in chunk_points[:passages]], axis=0)
    assert np.allclose(own.vectors["minilm"], mean / np.linalg.norm(mean), atol=1e-6)

    # shorter, then short, then long again and deleted — in one bundle or one event a bundle
    send_raw(
        settings,
        [
            (b"d", text_event("d", MEDIUM), []),
            (b"e", text_event("e", LONG), []),
            (b"e", text_event("e", MEDIUM), []),
            (b"f", text_event("f", LONG), []),
            (b"f", text_event("f", SHORT), []),
            (b"g", text_event("g", MEDIUM), []),
            (b"g", None, []),
        ],
    )
    run_ingest(settings)

    tokenizer = TextEncoder.load(settings.model.cache_dir, "minilm").tokenizer_file
    medium_chunks = len(Chunker.from_file(tokenizer, 256, 32, sentences=True).chunks(MEDIUM))
    for doc in ("d", "e"):
        chunks, own_payload = doc_state(settings, doc)
        assert chunks == list(range(medium_chunks)) and own_payload is not None and own_payload["text"] == MEDIUM
    chunks, own_payload = doc_state(settings, "f")
    assert chunks == [] and own_payload is not None and own_payload["text"] == SHORT and "chunks" not in own_payload
    assert doc_state(settings, "g") == ([], None)
    before = sorted(p.id for p in stored(settings))
    reset_group(settings)  # a replay of the whole topic leaves the same points
    run_ingest(settings)
    assert sorted(p.id for p in stored(settings)) == before
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []
    assert committed_offsets(settings.kafka) == watermarks(settings)


def test_chunking_off_truncates_and_says_so(make_settings):
    settings = make_settings(kafka={"partitions": 1}, model={"chunking": "off"})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"d", text_event("d", LONG), []), (b"s", text_event("s", SHORT), [])])
    run_ingest(settings)
    payloads = {p.payload["id"]: p.payload for p in stored(settings)}
    assert set(payloads) == {"d", "s"} and payloads["d"]["truncated"] is True and "truncated" not in payloads["s"]
    assert payloads["d"]["text"] == LONG


@pytest.fixture(scope="module")
def deep_questions(tansu_broker, model_cache, tmp_path_factory):
    """80 documents of 1,000–3,000 words ingested twice through Kafka and Beam — chunked as by default (passages
    and sentences), and truncated (chunking off) — and the 50 questions about a sentence deep inside one of
    them."""
    from embedstream.schemas.settings import Settings

    docs = long_documents(CORPUS, count=80, max_words=3000)
    folder = tmp_path_factory.mktemp("deep")
    kafka = {
        "bootstrap_servers": tansu_broker.bootstrap,
        "topic": "deep.events",
        "dead_letter_topic": "deep.dlq",
        "partitions": 2,
    }
    runs = {}
    for name, chunking in (("chunked", "sentences"), ("truncated", "off")):
        settings = Settings.load(
            kafka={**kafka, "group_id": f"deep.{name}"},
            qdrant={"backend": "edge", "path": str(folder / name)},
            model={"cache_dir": str(model_cache), "chunking": chunking},
        )
        runs[name] = settings
    ensure_topics(runs["chunked"].kafka, ["deep.events", "deep.dlq"])
    send_raw(runs["chunked"], [(d.doc_id.encode(), text_event(d.doc_id, d.text), []) for d in docs])
    for settings in runs.values():
        result = run_ingest(settings)
        assert result.dead_letters == 0
    return docs, runs


def found_first(settings, docs, mode: SearchMode) -> float:
    searcher = Searcher(settings)
    try:
        asked = [d for d in docs if d.question]
        first = [
            searcher.search_documents(Query.of_text(d.question or ""), limit=1, mode=mode)[0].key[1] for d in asked
        ]
        return sum(got == d.doc_id for got, d in zip(first, asked, strict=True)) / len(asked)
    finally:
        searcher.close()


def test_a_question_about_a_sentence_deep_in_a_long_document_finds_the_document_when_chunked(deep_questions, capsys):
    docs, runs = deep_questions
    assert all(1000 <= len(d.text.split()) <= 3100 for d in docs) and sum(bool(d.question) for d in docs) == 50
    rates = {(name, mode): found_first(settings, docs, mode) for name, settings in runs.items() for mode in COMPARED}
    with capsys.disabled():
        print("\ndocument found first (50 questions about a sentence deep inside one of 80 documents):")
        for (name, mode), rate in rates.items():
            print(f"  {name:>9} {mode:>6}: {rate:.0%}")
    assert rates[("chunked", "hybrid")] >= 0.9
    # a point per sentence: found by meaning too (passages alone: 0 %). Not higher here: these documents are
    # drawn from 520 sentences, so each sentence point has ~30 exact duplicates, which cost the HNSW graph
    # recall (measured on this set: 70 % at the engine's default ef, 96 % at qdrant.hnsw_ef = 2000)
    assert rates[("chunked", "dense")] >= 0.5
    assert rates[("truncated", "dense")] < 0.5
    # BM25 of a truncated text still sees all of it, so truncated hybrid finds some; chunks locate the passage
    assert rates[("chunked", "hybrid")] >= rates[("truncated", "hybrid")] + 0.2


def test_grouped_search_from_the_cli_and_the_api_gives_documents_with_located_passages(deep_questions):
    docs, runs = deep_questions
    settings = runs["chunked"]
    searcher = Searcher(settings)
    try:  # a question grouped hybrid search answers right (nearly all: the test above), to check what it shows
        target = next(
            d
            for d in docs
            if d.question
            and searcher.search_documents(Query.of_text(d.question), limit=1, mode="hybrid")[0].key[1] == d.doc_id
        )
    finally:
        searcher.close()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedstream.workers.cli",
            "search",
            target.question,
            "--documents",
            "--mode",
            "hybrid",
            "-k",
            "3",
            "--json",
        ],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    groups = json.loads(out.stdout)
    assert groups[0]["id"] == target.doc_id and groups[0]["payload"]["text"] == target.text
    best = groups[0]["passages"][0]["payload"]
    assert (
        best["start"] <= (target.fact_start or 0) < best["end"]
        and target.text[best["start"] : best["end"]] == best["text"]
    )
    assert len({g["id"] for g in groups}) == len(groups) == 3

    from fastapi.testclient import TestClient

    from embedstream.workers.api.app import create_app

    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/search/documents", json={"text": target.question, "mode": "hybrid", "k": 2, "per_document": 2}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    first = body["documents"][0]
    assert first["id"] == target.doc_id and first["point_id"] == point_id("text", target.doc_id)
    assert 1 <= len(first["passages"]) <= 2 and first["payload"]["chunks"] >= 2
    text_out = subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "search", target.question, "--documents", "--mode", "hybrid"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"[document] {target.doc_id}" in text_out.splitlines()[0] and "chars " in text_out


def test_a_plain_search_by_default_finds_the_fact_and_says_which_document_and_where(deep_questions):
    """The default search (no mode named: hybrid over passages and sentences) puts the document holding the
    fact first, and answers with the sentence, its characters and its document — from the CLI and the API."""
    docs, runs = deep_questions
    settings = runs["chunked"]
    asked = [d for d in docs if d.question]
    searcher = Searcher(settings)
    try:
        first = [searcher.search(Query.of_text(d.question or ""), limit=1)[0] for d in asked]  # k=1: the hardest
    finally:
        searcher.close()
    found_first = [d for h, d in zip(first, asked, strict=True) if h.payload.get("doc_id") == d.doc_id]
    # 0.86-0.96 across builds here: every sentence has ~30 exact duplicates, which cost the HNSW graph recall
    # (bench/reports/retrieval.md measures the default on text without them: 0.97)
    assert len(found_first) / len(asked) >= 0.8, f"{len(found_first)} of {len(asked)} found first by default"

    # what the CLI and the API answer with, for a question the default answers right (which questions those are
    # varies a little from one build of the HNSW graph to the next: every sentence here has ~30 duplicates)
    target = found_first[1]
    lines = subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "search", target.question or "", "-k", "3"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(lines) == 3 and f"] {target.doc_id} chars " in lines[0], lines
    found = json.loads(
        subprocess.run(
            [sys.executable, "-m", "embedstream.workers.cli", "search", target.question or "", "--json"],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    where = found[0]["document"]
    assert where["id"] == target.doc_id and where["point_id"] == point_id("text", target.doc_id)
    assert where["start"] <= (target.fact_start or 0) < where["end"]
    assert target.text[where["start"] : where["end"]] == found[0]["payload"]["text"]
    # nested passages collapse: the fact's sentence, its passage and its document are one answer
    spans = [(h["document"] or {}).get("id") or h["payload"]["id"] for h in found]
    assert spans.count(target.doc_id) == 1

    from fastapi.testclient import TestClient

    from embedstream.workers.api.app import create_app

    with TestClient(create_app(settings)) as client:
        answer = client.post("/search", json={"text": target.question, "k": 2})
        hybrid = client.post("/search", json={"text": target.question, "k": 2, "mode": "hybrid"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == hybrid.json()  # the API's default is the CLI's: hybrid where keywords are held
    top = answer.json()["hits"][0]
    assert top["document"] == where and top["document"]["level"] == "sentence"


def test_documents_that_grow_shrink_and_go_survive_kill_9_mid_stream_without_orphans(make_settings, tmp_path):
    """120 versions of 12 documents (short, medium and long texts, and tombstones) streamed; the ingest is
    killed with SIGKILL mid-topic and restarted: each id holds exactly its last version's chunks and point."""
    import random
    import signal

    from tests.helpers import start_stream_ingest, wait_for

    settings = make_settings(kafka={"partitions": 2}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    rng = random.Random(5)
    texts = [SHORT, document(300, seed=7), MEDIUM, document(1500, seed=8)]
    messages: list[Message] = []
    final: dict[str, str | None] = {}
    for _ in range(120):
        key = f"doc{rng.randrange(12)}"
        if rng.random() < 0.15:
            messages.append((key.encode(), None, []))
            final[key] = None
        else:
            text = rng.choice(texts)
            messages.append((key.encode(), text_event(key, text), []))
            final[key] = text
    send_raw(settings, messages)
    bundles = {"EMBEDSTREAM_PIPELINE__MAX_RECORDS_PER_BUNDLE": "8", "EMBEDSTREAM_PIPELINE__UPSERT_BATCH_SIZE": "7"}

    def committed() -> int:
        return sum(v or 0 for v in committed_offsets(settings.kafka).values())

    first = start_stream_ingest(settings, tmp_path / "first.log", bundles)
    assert wait_for(lambda: committed() >= 30, 180), (tmp_path / "first.log").read_text()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert committed() < 120, "the kill must land mid-topic"
    second = start_stream_ingest(settings, tmp_path / "second.log", bundles)
    marks = watermarks(settings)
    assert wait_for(lambda: committed_offsets(settings.kafka) == marks, 300), (tmp_path / "second.log").read_text()[
        -2000:
    ]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=90) == 0

    tokenizer = TextEncoder.load(settings.model.cache_dir, "minilm").tokenizer_file
    chunker = Chunker.from_file(tokenizer, 256, 32, sentences=True)
    for key, last in final.items():
        chunks, own = doc_state(settings, key)
        if last is None:
            assert (chunks, own) == ([], None), key
            continue
        expected = len(chunker.chunks(last))
        assert own is not None and own["text"] == last, key
        assert chunks == (list(range(expected)) if expected > 1 else []), (key, chunks, expected)
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []
