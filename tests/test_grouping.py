"""What a plain search shows of a long text's hits: nested ones once, and where each chunk lies."""

from __future__ import annotations

import pytest

from embedstream.pipelines.stores import Hit
from embedstream.schemas.point import CHUNK_MODALITY, point_id
from embedstream.workers.grouping import describe_hits, distinct_passages, group_hits, passage_of

pytestmark = pytest.mark.unit


def chunk(doc: str, index: int, start: int, end: int, score: float, level: str = "passage") -> Hit:
    payload = {"id": doc, "doc_id": doc, "modality": CHUNK_MODALITY, "chunk": index, "level": level}
    return Hit(point_id(CHUNK_MODALITY, doc, index=index), score, payload | {"start": start, "end": end, "text": "…"})


def document(doc: str, score: float) -> Hit:
    return Hit(point_id("text", doc), score, {"id": doc, "doc_id": doc, "modality": "text", "chunks": 9, "text": "…"})


def frame(video: str, index: int, score: float) -> Hit:
    return Hit(
        f"frame-{video}-{index}", score, {"id": f"{video}#{index}", "video_id": video, "modality": "video_frame"}
    )


def test_nested_hits_of_one_document_count_once_by_the_best_and_disjoint_ones_stay() -> None:
    sentence = chunk("a", 12, 1000, 1080, 0.9, "sentence")
    elsewhere = chunk("a", 14, 3000, 3050, 0.6, "sentence")
    hits = [
        sentence,
        chunk("a", 3, 900, 2100, 0.8),  # the passage around the sentence: the same answer
        document("a", 0.7),  # the whole document, after a chunk of it: answered already
        elsewhere,  # elsewhere in the document: another answer
        frame("v", 0, 0.55),
        frame("v", 1, 0.5),  # a video's frames are moments, not nested passages
        Hit("short", 0.4, {"id": "s", "modality": "text", "text": "a short text"}),
        chunk("b", 0, 0, 1200, 0.3),
        document("c", 0.2),  # a document with none of its chunks among the hits: itself
    ]
    kept = distinct_passages(hits, 10)
    assert [h.id for h in kept] == [h.id for h in (hits[0], hits[3], hits[4], hits[5], hits[6], hits[7], hits[8])]
    assert [h.id for h in distinct_passages(hits, 2)] == [hits[0].id, hits[3].id]


def test_a_document_point_ranked_first_gives_its_place_to_its_best_chunk_and_hides_no_other() -> None:
    sentence = chunk("a", 12, 1000, 1080, 0.6, "sentence")
    passages = [chunk("a", i, 1300 * i, 1300 * i + 1200, 0.5 - i / 100) for i in range(1, 6)]
    hits = [document("a", 0.9), sentence, chunk("a", 0, 900, 2100, 0.55), *passages, document("x", 0.1)]
    kept = distinct_passages(hits, 5)
    # the document's place and score, and where in it: its best chunk; the sentence's own passage nests with it
    assert kept[0].id == sentence.id and kept[0].score == 0.9 and kept[0].payload["level"] == "sentence"
    assert [h.id for h in kept[1:]] == [p.id for p in passages[:4]]  # the other passages still fill the page


def test_a_chunk_hit_says_its_document_and_characters_and_other_hits_do_not() -> None:
    sentence = chunk("doc-7", 40, 8120, 8188, 0.71, "sentence")
    assert passage_of(sentence.payload) == {
        "id": "doc-7",
        "point_id": point_id("text", "doc-7"),
        "start": 8120,
        "end": 8188,
        "level": "sentence",
    }
    assert passage_of(document("doc-7", 0.5).payload) is None and passage_of(frame("v", 0, 0.5).payload) is None
    lines = describe_hits([sentence, document("doc-7", 0.5)]).splitlines()
    assert lines[0].startswith(" 1. 0.710  [sentence of document] doc-7 chars 8120–8188:")
    assert lines[1].startswith(" 2. 0.500  [text] doc-7") and describe_hits([]) == "no results"


def test_grouped_search_shows_passages_that_do_not_nest() -> None:
    hits = [chunk("a", 12, 1000, 1080, 0.9, "sentence"), chunk("a", 3, 900, 2100, 0.8), chunk("a", 5, 2500, 3000, 0.7)]
    (group,) = group_hits(hits, 1, 3, lambda ids: [])
    assert [p.id for p in group.passages] == [hits[0].id, hits[2].id]
