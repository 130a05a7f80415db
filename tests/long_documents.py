"""Long documents for chunking tests, assembled from the sample corpus, each hiding one fact deep inside.

A document is 1,000–5,000 words of corpus sentences of one of the ten topics (in random order, as often as
the length needs), with one ``FACTS`` sentence planted after its first quarter — past what one
256-token vector sees. Only the fact's own chunk can answer the question about it: chunked search should find
the document, a truncated vector cannot.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

# (fact, question): the facts stay off the corpus's ten topics, so no filler sentence answers a question; a
# question names what it asks about, as people ask.
FACTS = [
    (
        "The old lighthouse keeper kept a diary of every storm for forty years.",
        "What did the old lighthouse keeper keep a diary of?",
    ),
    (
        "Our landlord finally agreed to fix the leaking roof after three months of complaints.",
        "When did the landlord agree to fix the leaking roof?",
    ),
    (
        "The children built a snowman taller than their father in the back yard.",
        "How tall was the snowman the children built?",
    ),
    (
        "She renewed her passport just two days before the flight to Lisbon.",
        "When did she renew her passport for the Lisbon flight?",
    ),
    ("The village library lends out sewing machines as well as books.", "Which library lends out sewing machines?"),
    (
        "A stray dog followed the postman on his round every morning for a week.",
        "Which dog followed the postman on his round?",
    ),
    ("The judge postponed the trial because a key witness fell ill.", "Why did the judge postpone the trial?"),
    ("Grandmother knitted a scarf for each of her eleven grandchildren.", "Who knitted a scarf for each grandchild?"),
    (
        "The ferry across the river stopped running when the new bridge opened.",
        "Why did the ferry across the river stop running?",
    ),
    (
        "Tourists queued for hours to climb the cathedral bell tower.",
        "Why did tourists queue at the cathedral bell tower?",
    ),
    (
        "The painter mixed crushed beetles into the red pigment for her portraits.",
        "What did the painter mix into her red pigment?",
    ),
    (
        "Our neighbour's parrot can imitate the ringtone of an old telephone.",
        "What ringtone can the neighbour's parrot imitate?",
    ),
    (
        "The school bus broke down on the mountain road during the blizzard.",
        "Where did the school bus break down in the blizzard?",
    ),
    ("He learned to juggle five balls while recovering from a broken leg.", "When did he learn to juggle five balls?"),
    ("The castle's moat was drained and turned into a lawn for picnics.", "What happened to the castle's moat?"),
    (
        "A thunderstorm knocked out electricity to the whole valley for two nights.",
        "How long did the thunderstorm knock out electricity in the valley?",
    ),
    ("The wedding guests danced barefoot on the beach until dawn.", "Where did the wedding guests dance barefoot?"),
    ("The mayor cut the ribbon to open the new public swimming baths.", "Who opened the new public swimming baths?"),
    ("My cousin sold his motorbike to pay for a course in pottery.", "Why did my cousin sell his motorbike?"),
    (
        "The antique clock in the hallway chimes thirteen times at midnight.",
        "How many times does the antique clock in the hallway chime at midnight?",
    ),
    (
        "Firefighters rescued a kitten stuck on the roof of the town hall.",
        "Who rescued the kitten from the town hall roof?",
    ),
    (
        "The archaeologists uncovered a Roman mosaic beneath the car park.",
        "What did the archaeologists find beneath the car park?",
    ),
    ("She wrote her entire first novel by hand in cheap notebooks.", "How did she write her first novel?"),
    ("The air conditioning at the office failed during the heatwave.", "When did the office air conditioning fail?"),
    (
        "The twins were born on different sides of midnight and have separate birthdays.",
        "Why do the twins have separate birthdays?",
    ),
    (
        "A hot air balloon landed unexpectedly in the middle of the cricket pitch.",
        "Where did the hot air balloon land?",
    ),
    ("The hotel lost our reservation, so we slept in the lobby.", "Why did we sleep in the hotel lobby?"),
    ("His grandfather repaired watches in a tiny shop near the harbour.", "Where did his grandfather repair watches?"),
    (
        "The art gallery reopened after a burglar stole two small sketches.",
        "What did the burglar steal from the art gallery?",
    ),
    ("Every spring the swallows return to nest under the barn roof.", "Where do the swallows nest every spring?"),
    (
        "The translator spoke seven languages but could not drive a car.",
        "What could the translator who spoke seven languages not do?",
    ),
    ("Our flight was diverted to another city because of thick fog.", "Why was our flight diverted to another city?"),
    ("The bakery on the corner closed after the owner retired at eighty.", "Why did the bakery on the corner close?"),
    ("A burst water main flooded the basement of the town museum.", "What flooded the basement of the town museum?"),
    ("The orchestra's conductor dropped his baton during the final bow.", "What did the orchestra's conductor drop?"),
    ("The puppy chewed through the cable of the new vacuum cleaner.", "What did the puppy chew through?"),
    (
        "The students painted a mural of local heroes on the school wall.",
        "What did the students paint on the school wall?",
    ),
    ("An earthquake cracked the walls of the old stone church.", "What cracked the walls of the old stone church?"),
    ("She keeps bees on the roof of her apartment block in the city.", "Where does she keep bees in the city?"),
    (
        "The taxi driver returned a wallet full of cash to the police station.",
        "What did the taxi driver return to the police station?",
    ),
    (
        "The power station's chimney was demolished with controlled explosions.",
        "How was the power station's chimney demolished?",
    ),
    ("Our street holds a party every summer with a long shared table.", "What does our street hold every summer?"),
    ("The diver found a wedding ring at the bottom of the lake.", "What did the diver find at the bottom of the lake?"),
    (
        "The toddler learned to climb out of her cot at ten months.",
        "When did the toddler learn to climb out of her cot?",
    ),
    ("The council banned fireworks after complaints about frightened horses.", "Why did the council ban fireworks?"),
    ("He proposed to his girlfriend at the top of a frozen waterfall.", "Where did he propose to his girlfriend?"),
    ("The kite festival was cancelled because there was no wind at all.", "Why was the kite festival cancelled?"),
    (
        "A family of foxes lives under the shed at the end of our garden path.",
        "What lives under the shed at the end of the garden path?",
    ),
    ("The embassy closed for a day after a suspicious parcel arrived.", "Why did the embassy close for a day?"),
    (
        "The sculptor carved a bear out of a single fallen oak trunk.",
        "What did the sculptor carve from a fallen oak trunk?",
    ),
]


@dataclass(frozen=True)
class LongDocument:
    doc_id: str
    text: str
    question: str | None  # None for documents without a planted fact
    fact_start: int | None  # where the fact starts (characters)


def long_documents(
    corpus: list[tuple[str, str]],
    count: int = 200,
    seed: int = 11,
    min_words: int = 1000,
    max_words: int = 5000,
    topics_per_doc: int = 1,
) -> list[LongDocument]:
    """``count`` documents from (topic, sentence) pairs; the first ``len(FACTS)`` each hide one fact."""
    rng = random.Random(seed)
    by_topic: dict[str, list[str]] = defaultdict(list)
    for topic, sentence in corpus:
        by_topic[topic].append(sentence)
    topics = sorted(by_topic)
    docs = []
    for n in range(count):
        pool = [s for t in rng.sample(topics, topics_per_doc) for s in by_topic[t]]
        target = rng.randint(min_words, max_words)
        sentences: list[str] = []
        words = 0
        while words < target:
            sentence = rng.choice(pool)
            sentences.append(sentence)
            words += len(sentence.split())
        question = fact_start = None
        if n < len(FACTS):
            fact, question = FACTS[n]
            at = rng.randint(len(sentences) // 4, len(sentences) - 1)
            sentences.insert(at, fact)
            fact_start = len(" ".join(sentences[:at])) + (1 if at else 0)
        text = " ".join(sentences)
        docs.append(LongDocument(f"doc-{n:03d}", text, question, fact_start))
    return docs


def corpus_pairs() -> list[tuple[str, str]]:
    """The sample corpus as (topic, sentence) pairs: what ``long_documents`` builds documents from."""
    from embedstream.onnx_models.corpus import corpus_records

    return [(str(r["metadata"]["topic"]), str(r["text"])) for r in corpus_records()]


def document(words: int, seed: int = 1) -> str:
    """A text of about ``words`` words from the corpus (no fact planted)."""
    (doc,) = long_documents(corpus_pairs(), count=1, seed=seed, min_words=words, max_words=words)
    return doc.text.replace("\n", " ")
