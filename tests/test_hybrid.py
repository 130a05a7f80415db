"""Keyword (BM25) and hybrid search: sparse vectors made in the pipeline, held by both stores, fused by confidence
(``workers.fusion``); diversity (MMR) on both stores and over a fused list."""

from __future__ import annotations

import pytest

from embedstream.onnx_models.corpus import corpus_texts
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.schemas.errors import NotFoundError, UsageError
from embedstream.workers.search import Query, Searcher
from tests.helpers import send_raw, text_event
from tests.retrieval_sets import documents, evaluate, planted


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["edge", "local"])
def test_keywords_find_planted_terms_meaning_finds_paraphrases_and_hybrid_finds_both(make_settings, backend):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    corpus = corpus_texts()
    send_raw(settings, [(doc_id.encode(), text_event(doc_id, text), []) for doc_id, text in documents(corpus)])
    run_ingest(settings)

    searcher = Searcher(settings)
    try:
        scores = evaluate(searcher, corpus)
        code = planted(corpus)[0]
        (top,) = searcher.search(Query.of_text(code.query), limit=1, mode="sparse")
        assert top.payload["id"] == code.doc_id
        with pytest.raises(UsageError, match="needs a text query"):
            searcher.search(Query.of_image(b"\x89PNG"), mode="sparse")
    finally:
        searcher.close()
    print(
        {
            name: {mode: {k: round(v, 3) for k, v in m.items()} for mode, m in modes.items()}
            for name, modes in scores.items()
        }
    )
    para, term, union = scores["paraphrase"], scores["exact term"], scores["union"]
    assert para["dense"]["mrr"] > para["sparse"]["mrr"] and term["sparse"]["mrr"] > term["dense"]["mrr"]
    for one in (para, term):  # hybrid keeps the better of the two on each set, within 0.02...
        best = max(one["dense"]["mrr"], one["sparse"]["mrr"])
        assert one["hybrid"]["mrr"] >= best - 0.02 and one["hybrid"]["recall@10"] == 1.0, one
    assert union["hybrid"]["mrr"] > max(union["dense"]["mrr"], union["sparse"]["mrr"]), union  # ...and beats both


@pytest.mark.integration
def test_a_collection_without_keywords_says_so(make_settings):
    settings = make_settings(kafka={"partitions": 1}, model={"bm25": False}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"a", text_event("a", "a sentence with no sparse vector"), [])])
    run_ingest(settings)
    searcher = Searcher(settings)
    try:
        (found,) = searcher.search(Query.of_text("sentence"), limit=1)
        # the default (auto) falls back to dense here: the same hit and cosine score as an explicit dense search
        assert found.payload["id"] == "a" and searcher.mode_for("text", None) == "dense"
        assert found == searcher.search(Query.of_text("sentence"), limit=1, mode="dense")[0]
        with pytest.raises(NotFoundError, match="no sparse vector 'bm25'"):
            searcher.search(Query.of_text("sentence"), mode="hybrid")
    finally:
        searcher.close()


@pytest.mark.integration
def test_the_cli_searches_by_keywords(make_settings):
    import json

    from tests.helpers import embedstream, one_line_error, settings_env

    settings = make_settings(kafka={"partitions": 1}, media={"modalities": ["text"]})
    env = settings_env(settings)
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    texts = {"a": "The pump needs part number XK-4471.", "b": "The pump needs a new part.", "c": "Bread needs salt."}
    send_raw(settings, [(k.encode(), text_event(k, t), []) for k, t in texts.items()])
    assert embedstream("ingest", env=env).returncode == 0
    found = embedstream("search", "XK-4471", "--mode", "sparse", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert [hit["payload"]["id"] for hit in json.loads(found.stdout)] == ["a"]  # only it has the code
    wrong = embedstream("search", "--audio", __file__, "--mode", "hybrid", env=env)
    assert "needs a text query" in one_line_error(wrong)


NEAR_DUPLICATES = {
    "dup-0": "The ferry to the island leaves every hour from the north pier.",
    "dup-1": "The ferry to the island departs every hour from the north pier.",
    "dup-2": "Every hour the ferry to the island leaves from the north pier.",
    "dup-3": "The island ferry leaves every hour from the north pier.",
    "other-0": "Boats to the island are cancelled when the wind is too strong.",
    "other-1": "Island residents pay half price on the ferry.",
    "far": "Bread dough needs time to rise in a warm kitchen.",
}


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["edge", "local"])
def test_diversity_lets_near_duplicates_give_way_on_both_stores(make_settings, backend):
    """MMR (Qdrant's, on both backends): at 0 the four rewordings of one sentence fill the top four; with
    diversity the best stays first and the rewordings give way to the other texts about the island ferry."""
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(k.encode(), text_event(k, t), []) for k, t in NEAR_DUPLICATES.items()])
    run_ingest(settings)
    searcher = Searcher(settings)
    try:
        question = Query.of_text("when does the ferry to the island leave")

        def top(k: int, **kwargs) -> list[str]:
            return [str(h.payload["id"]) for h in searcher.search(question, limit=k, **kwargs)]

        assert sorted(top(4)) == ["dup-0", "dup-1", "dup-2", "dup-3"]
        assert top(4, diversity=0.0) == top(4)
        diverse = top(3, diversity=0.8)
        assert diverse[0] == top(1)[0] and {"other-0", "other-1"} & set(diverse[1:]), diverse  # relevance first
        hybrid = top(3, mode="hybrid", diversity=0.8)
        assert {"other-0", "other-1"} & set(hybrid), hybrid
        keywords = top(4, mode="sparse")
        diverse_keywords = top(3, mode="sparse", diversity=0.8)  # keywords find, the dense vectors diversify
        assert diverse_keywords[0] == keywords[0] and len(set(diverse_keywords) - set(keywords[:3])) >= 1, (
            keywords,
            diverse_keywords,
        )
        with pytest.raises(UsageError, match="between 0 and 1"):
            searcher.search(question, diversity=1.5)
    finally:
        searcher.close()


@pytest.mark.unit
def test_the_fusion_rules_each_setting_offers():
    """``api.hybrid_fusion``: RRF (Qdrant's rule, 1/(60+rank) summed) ranks what both lists hold first; the
    keyword weight is the squared share of the query's terms the best keyword hit holds; MMR over a fused list
    keeps the best first and then prefers what is unlike it."""
    from embedstream.pipelines.stores import Hit
    from embedstream.workers.fusion import diversify, fuse_lists, keyword_weight

    dense = [Hit("a", 0.9, {}), Hit("b", 0.8, {}), Hit("c", 0.7, {})]
    sparse = [Hit("c", 12.0, {}), Hit("d", 5.0, {})]
    fused = fuse_lists([dense, sparse], 4, "rrf")
    assert fused[0].id == "c" and {h.id for h in fused} == {"a", "b", "c", "d"}
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert [h.id for h in fuse_lists([dense, sparse], 4, "dbsf")] == ["c", "a", "b", "d"]  # Qdrant's DBSF
    for method in ("confidence", "rrf", "dbsf"):  # one list with hits (no keyword matched): it, as it is
        assert fuse_lists([dense, []], 2, method, 40, [1.0, 0.3]) == dense[:2]
    assert keyword_weight([1, 2, 3, 4], [1, 2, 9]) == pytest.approx(0.25)
    assert keyword_weight([1, 2], [1, 2, 5]) == 1.0 and keyword_weight([], [1]) == 1.0
    vectors = {"a": [1.0, 0.0], "b": [0.99, 0.01], "c": [0.0, 1.0]}
    assert [h.id for h in diversify(dense, vectors, 2, 0.0)] == ["a", "b"]
    assert [h.id for h in diversify(dense, vectors, 2, 0.7)] == ["a", "c"]
