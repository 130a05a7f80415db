"""Search quality through the whole pipeline: a paraphrase finds its partner among the 520-sentence corpus."""

from __future__ import annotations

import json

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.workers.demo import sample_corpus
from embedstream.workers.search import Query, Searcher
from tests.helpers import Message, send_raw, text_event
from tests.retrieval_sets import PAIRS

pytestmark = pytest.mark.integration


def test_paraphrase_finds_its_partner_first(make_settings):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic])
    distractors = sample_corpus().read_text().splitlines()
    messages: list[Message] = [(f"pair-{i}".encode(), text_event(f"pair-{i}", b), []) for i, (_, b) in enumerate(PAIRS)]
    messages += [(None, text_event(f"corpus-{i}", json.loads(line)["text"]), []) for i, line in enumerate(distractors)]
    send_raw(settings, messages)
    run_ingest(settings)

    searcher = Searcher(settings)
    try:
        found = [
            searcher.search(Query.of_text(query), limit=1)[0].payload["id"] == f"pair-{i}"
            for i, (query, _) in enumerate(PAIRS)
        ]
    finally:
        searcher.close()
    assert sum(found) >= 9, found
