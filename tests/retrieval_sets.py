"""Query sets for search quality, built from the sample corpus: paraphrases, and exact terms planted in texts.

* ``PAIRS``: a sentence and a paraphrase of it with few words in common — what dense vectors are for.
* ``planted()``: corpus sentences that gain a unique product code or surname; the query is that term in a short
  phrase every planted text shares — what keyword (BM25) search is for: a dense vector blurs ``KX-4471-Q``
  into every other code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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

SURNAMES = ["Okonkwo", "Vasquez-Lindqvist", "Thorvaldsen", "Ebrahimzadeh", "Kowalczyk", "Nakagawa", "Abernethy"]


@dataclass(frozen=True)
class Planted:
    doc_id: str
    text: str  # what is ingested
    query: str  # what is searched


def planted(corpus: list[str], count: int = 30, seed: int = 7) -> list[Planted]:
    """``count`` corpus sentences, each with a unique code or name appended; the queries name only that term."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(corpus)), count)
    out = []
    for n, i in enumerate(chosen):
        if n % 3 == 2:
            term = f"{rng.choice(SURNAMES)}{rng.randrange(10, 99)}"
            text, query = f"{corpus[i]} Reported by {term}.", f"reported by {term}"
        else:
            letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
            term = f"{letters}-{rng.randrange(1000, 9999)}"
            text, query = f"{corpus[i]} Part number {term}.", f"part number {term}"
        out.append(Planted(f"planted-{n}", text, query))
    return out


MODES = ("dense", "sparse", "hybrid")


def score(ranked: list[list[str]], relevant: list[str], k: int = 10) -> dict[str, float]:
    """recall@k and MRR (reciprocal rank of the one relevant id, 0 beyond k) over the queries."""
    ranks = [ids.index(want) + 1 if want in ids[:k] else None for ids, want in zip(ranked, relevant, strict=True)]
    return {
        f"recall@{k}": sum(r is not None for r in ranks) / len(ranks),
        "mrr": sum(1 / r for r in ranks if r is not None) / len(ranks),
    }


def evaluate(searcher, corpus: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{query set: {mode: {recall@10, mrr}}} for the paraphrase set, the planted-term set and their union."""
    from embedstream.workers.search import Query

    sets = {
        "paraphrase": [(query, f"pair-{i}") for i, (query, _) in enumerate(PAIRS)],
        "exact term": [(p.query, p.doc_id) for p in planted(corpus)],
    }
    sets["union"] = sets["paraphrase"] + sets["exact term"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, queries in sets.items():
        out[name] = {}
        for mode in MODES:
            ranked = [
                [str(h.payload["id"]) for h in searcher.search(Query.of_text(q), limit=10, mode=mode)]
                for q, _ in queries
            ]
            out[name][mode] = score(ranked, [want for _, want in queries])
    return out


def documents(corpus: list[str]) -> list[tuple[str, str]]:
    """(id, text) of everything the evaluation ingests: the paraphrase partners, the planted texts, the corpus."""
    docs = [(f"pair-{i}", text) for i, (_, text) in enumerate(PAIRS)]
    docs += [(p.doc_id, p.text) for p in planted(corpus)]
    return docs + [(f"corpus-{i}", text) for i, text in enumerate(corpus)]
