"""Search quality through the whole pipeline: a paraphrase finds its partner among the 520-sentence corpus."""

from __future__ import annotations

import json

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.workers.demo import sample_corpus
from embedstream.workers.search import Query, Searcher
from tests.helpers import Message, send_raw, text_event

PAIRS = [
    (
        "The train to the airport was cancelled because of a broken signal.",
        "A signalling fault meant the airport rail service did not run.",
    ),
    ("My laptop keeps freezing whenever I open too many browser tabs.", "Opening lots of tabs makes my computer hang."),
    (
        "She adopted a small grey kitten from the animal shelter.",
        "A little gray cat was taken home from the rescue centre by her.",
    ),
    (
        "The recipe calls for two cups of flour and a pinch of salt.",
        "You need a couple of cups of flour plus a little salt for this dish.",
    ),
    (
        "Heavy rain flooded the streets of the old town overnight.",
        "Downpours during the night left the historic centre under water.",
    ),
    ("He finally paid off the last of his student loans.", "His university debt is now completely repaid."),
    ("The museum is closed on Mondays for maintenance.", "Every Monday the gallery shuts so repairs can be done."),
    ("Our team lost the final after a penalty shootout.", "We were beaten on penalties in the championship match."),
    ("I can't sleep when the neighbours play loud music.", "Noisy music from next door keeps me awake at night."),
    ("The telescope revealed the rings around the planet.", "Through the scope we could make out the planet's rings."),
]


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
