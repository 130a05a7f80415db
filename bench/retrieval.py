"""Which search should be the default: every candidate measured on three held-out question sets.

    python -m bench.retrieval

The sets (``bench/heldout_sets.py``, text the defaults were not tuned on): (a) a fact planted at 80 % of a
~2,000-word Wikipedia article, asked about in a plain question; (b) paraphrases among ≥ 2,000 distractor
sentences; (c) names, codes and rare words. Each index is built as the pipeline builds it (``minilm``, BM25,
256-token passages with a document point, with and without a point per sentence beside them:
``bench.chunking.points_of``) into a fresh embedded store; every candidate — a search mode, with each fusion
hybrid search offers — answers every question with a plain search; a hit counts for its document (a chunk for
the document it belongs to). Reported: hit@1 and recall@10 by document per set, the median query latency per
candidate, and each index's points, encoder time and size with and without the keyword vectors hybrid search
needs. Writes ``bench/reports/retrieval.{md,json,png}``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.chunking import points_of
from bench.common import pyplot, save_figure, write_json
from bench.heldout_sets import Question, iter_questions, planted_facts, short_texts
from embedstream.onnx_models.bm25 import BM25_REF, BM25_SPACE, Bm25
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.stores import Hit, SpaceSpec, VectorStore, open_store
from embedstream.schemas.point import PointRecord, point_id
from embedstream.schemas.settings import Settings
from embedstream.workers.grouping import owner_of
from embedstream.workers.search import Query, Searcher, SearchMode

REPORTS = Path(__file__).parent / "reports"
CHUNK_TOKENS = 256
# (label, mode, fusion): what a search box could do by default.
CANDIDATES: tuple[tuple[str, SearchMode, str], ...] = (
    ("dense", "dense", "confidence"),
    ("sparse (BM25)", "sparse", "confidence"),
    ("hybrid, confidence fusion", "hybrid", "confidence"),
    ("hybrid, rrf", "hybrid", "rrf"),
    ("hybrid, dbsf", "hybrid", "dbsf"),
)
SETS = ("planted fact", "paraphrase", "code or name", "rare word")
LONG_INDEXES = (("passages", False), ("passages + sentences", True))
DEFAULT = "passages + sentences · hybrid, confidence fusion"  # model.sentence_points on, api.search_mode auto


def document_of(hit: Hit) -> str:
    """The document a hit answers with: a chunk's document, else the point's own id (``grouping.owner_of``)."""
    return owner_of(hit.payload)[0][1]


def stored_bytes(points: Sequence[PointRecord], sparse: bool) -> int:
    """What the points hold, in bytes: float32 dense vectors, keyword vectors (a 4-byte index and a 4-byte
    weight per term) when ``sparse``, and the payload as JSON — the index's size without the engine's own
    overhead (the embedded store preallocates its segments, so its folder's size says nothing at this scale)."""
    total = 0
    for point in points:
        total += sum(4 * len(v) for v in point.vectors.values()) + len(json.dumps(point.payload))
        if sparse:
            total += sum(8 * len(v.indices) for v in point.sparse.values())
    return total


def build(folder: Path, points: Sequence[PointRecord], encoder: TextEncoder) -> VectorStore:
    """A fresh embedded store under ``folder`` holding ``points``."""
    store = open_store(Settings.load(qdrant={"path": str(folder)}).qdrant)
    store.ensure_spaces(
        [SpaceSpec(encoder.space, encoder.dim, encoder.manifest.ref), SpaceSpec(BM25_SPACE, 0, BM25_REF, True)]
    )
    for at in range(0, len(points), 256):
        store.upsert(list(points[at : at + 256]))
    store.flush()
    store.optimize()  # the HNSW graph an ingest builds when it ends: searched as users search
    return store


def short_points(texts: list[tuple[str, str]], encoder: TextEncoder, bm25: Bm25) -> list[PointRecord]:
    """One point per short text, as the pipeline writes a text within the model's limit."""
    vectors = encoder.embed([text for _, text in texts])
    return [
        PointRecord(
            id=point_id("text", doc_id),
            vectors={encoder.space: vector.tolist()},
            sparse={BM25_SPACE: bm25.document(text)},
            payload={"id": doc_id, "modality": "text", "text": text},
        )
        for (doc_id, text), vector in zip(texts, vectors, strict=True)
    ]


def answer(store: VectorStore, folder: Path, questions: list[Question]) -> dict[str, Any]:
    """Every candidate's hit@1 and recall@10 by document on each kind of question, and its median latency."""
    results: dict[str, Any] = {}
    for label, mode, fusion in CANDIDATES:
        settings = Settings.load(qdrant={"path": str(folder)}, api={"hybrid_fusion": fusion, "batch_queries": False})
        searcher = Searcher(settings, store)
        ranks: dict[str, list[int | None]] = {}
        took = []
        for question in questions:
            started = time.perf_counter()
            hits = searcher.search(Query.of_text(question.query), limit=10, mode=mode)
            took.append(time.perf_counter() - started)
            order = list(dict.fromkeys(document_of(h) for h in hits))
            found = order.index(question.target) if question.target in order else None
            ranks.setdefault(question.kind, []).append(found)
        results[label] = {
            kind: {
                "questions": len(got),
                "hit@1": sum(r == 0 for r in got) / len(got),
                "recall@10": sum(r is not None for r in got) / len(got),
            }
            for kind, got in ranks.items()
        } | {"median_ms": round(1000 * statistics.median(took), 2)}
    return results


def index(points: list[PointRecord], encoder: TextEncoder, questions: list[Question]) -> tuple[dict, dict]:
    """(what the index costs: points, store bytes with and without the keyword vectors; every candidate's
    answers on ``questions``)."""
    sizes = {"bytes dense only": stored_bytes(points, False), "bytes with keywords": stored_bytes(points, True)}
    with tempfile.TemporaryDirectory(prefix="retrieval-") as tmp:
        store = build(Path(tmp), points, encoder)
        try:
            return {"points": len(points), **sizes}, answer(store, Path(tmp), questions)
        finally:
            store.close()


def measure() -> dict[str, Any]:
    settings = Settings.load()
    encoder, bm25 = TextEncoder.from_settings(settings.model), Bm25()
    docs = planted_facts()
    texts, short_questions = short_texts()
    questions = [*iter_questions(docs), *short_questions]
    measured: dict[str, Any] = {"documents": len(docs), "short_texts": len(texts), "indexes": {}, "results": {}}
    started = time.perf_counter()
    shorts = short_points(texts, encoder, bm25)
    short_seconds = time.perf_counter() - started
    for name, sentences in tqdm(LONG_INDEXES, desc="indexes"):
        started = time.perf_counter()
        longs = points_of(docs, CHUNK_TOKENS, encoder, bm25, sentences)  # type: ignore[arg-type]
        seconds = round(time.perf_counter() - started, 1)
        cost, answers = index(longs + shorts, encoder, questions)  # one collection, as users have one
        long_cost = {"bytes dense only": stored_bytes(longs, False), "bytes with keywords": stored_bytes(longs, True)}
        measured["indexes"][name] = cost | {
            "long points": len(longs),
            "long encode seconds": seconds,
            "encode seconds": round(seconds + short_seconds, 1),
            **{f"long {k}": v for k, v in long_cost.items()},
        }
        for label, got in answers.items():
            measured["results"][f"{name} · {label}"] = got
    return measured


def write_report(measured: dict[str, Any]) -> str:
    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "retrieval.json", measured, 1)
    results, indexes = measured["results"], measured["indexes"]
    lines = [
        "# Retrieval: the default search, chosen on held-out questions",
        "",
        "`python -m bench.retrieval` — sets from `bench/heldout_sets.py`, text the defaults were never tuned on:",
        "",
        f"- **planted fact**: {measured['documents']} Wikipedia articles of about 2,000 words (gensim's test dump);",
        "  36 hold an unrelated everyday fact at 80 % of their length, asked about in a plain question;",
        f"- **paraphrase**: 40 rewordings, each searched for among {measured['short_texts']:,} short texts;",
        "- **code or name**: 20 codes and surnames planted in sentences; **rare word**: 20 words found in one",
        "  text only, searched alone.",
        "",
        "All of them are in one collection, as a user's texts would be, and every question is a plain search",
        "(`Searcher.search`, 10 hits, nested passages collapsed); hit@1 by document, recall@10 in brackets — a",
        "chunk counts for the document it is part of. Long documents are indexed as the pipeline does: 256-token",
        "passages and the document's point (`passages`), and with `model.sentence_points` a point per sentence",
        "beside them (`passages + sentences`).",
        "",
        "| index · candidate | " + " | ".join(SETS) + " | median ms |",
        "|---|" + "---|" * (len(SETS) + 1),
    ]
    for label, got in results.items():
        cells = " | ".join(f"{got[s]['hit@1']:.2f} ({got[s]['recall@10']:.2f})" for s in SETS)
        name = f"**{label}** (default)" if label == DEFAULT else label
        lines.append(f"| {name} | {cells} | {got['median_ms']} |")
    lines += [
        "",
        "What each index costs — the whole collection, and (in brackets) its long documents alone:",
        "",
        "| index | points | encoder s | MB, dense only | MB, with keywords |",
        "|---|---|---|---|---|",
    ]
    for name, cost in indexes.items():
        mb = [cost[k] / 1e6 for k in ("bytes dense only", "long bytes dense only")]
        mb += [cost[k] / 1e6 for k in ("bytes with keywords", "long bytes with keywords")]
        lines.append(
            f"| {name} | {cost['points']:,} ({cost['long points']:,}) | {cost['encode seconds']} "
            f"({cost['long encode seconds']}) | {mb[0]:.1f} ({mb[1]:.1f}) | {mb[2]:.1f} ({mb[3]:.1f}) |"
        )
    default, dense = results[DEFAULT], results["passages · dense"]
    sentences_dense = results["passages + sentences · dense"]
    long, short = indexes["passages + sentences"], indexes["passages"]

    def worst(got: dict[str, Any]) -> float:
        return min(got[s]["hit@1"] for s in SETS)

    second = max((label for label in results if label != DEFAULT), key=lambda label: worst(results[label]))
    runner_up = f"{second}, {worst(results[second]):.2f}"
    lines += [
        "",
        "## The default, and why",
        "",
        "`api.search_mode = auto` (hybrid for a text query where the collection holds keyword vectors) with",
        f"`model.sentence_points = true`: the candidate whose worst set is best ({worst(default):.2f}; next best:",
        f"{runner_up}). Dense search alone cannot find names, codes and rare words (a vector blurs `G865/Y29`",
        "into every other code) and, over passages alone, not a fact deep in a long document either: a passage's",
        "vector is the mean of a dozen sentences, so one sentence unlike the rest barely moves it. Keywords alone",
        "miss nearly every paraphrase. Sentence points let the dense list find the fact by meaning; the confidence",
        "fusion keeps the keyword list's codes and names. Reciprocal rank and distribution-based fusion weigh a",
        "flat, wrong keyword list like a sure one and lose most paraphrases.",
        "",
        f"Paraphrases stay below the 0.95 goal ({default['paraphrase']['hit@1']:.2f}). Dense search alone gets "
        f"{dense['paraphrase']['hit@1']:.2f} over passages",
        f"and {sentences_dense['paraphrase']['hit@1']:.2f} with sentence points (a long document's sentences "
        "now compete with the short texts for",
        "the same meaning): the text model itself ranks the rewording second there, and no search mode can rank",
        "above what its vectors say. Fusion loses a few more where a keyword hit shares the paraphrase's words",
        '("mowed the lawn" → "Lawn grass should be mowed high"). No larger text model ships offline here.',
        "",
        f"Cost, against dense search over passages (the old default): a median {default['median_ms']} ms a query",
        f"against {dense['median_ms']} ms (one run on 2 shared cores: the ratio moved between 1.2× and 1.7× across",
        "runs); long documents take "
        f"{long['long encode seconds'] / short['long encode seconds']:.1f}× the encoder time and "
        f"{long['long bytes with keywords'] / short['long bytes dense only']:.1f}× the index of dense alone",
        f"(vectors, keywords and payload; {long['long bytes with keywords'] / short['long bytes with keywords']:.1f}× "
        "the old default's, which held keywords too); short texts cost the same as before.",
        "`model.sentence_points = false` and `api.search_mode = dense` give the old ranking back.",
        "",
    ]
    text = "\n".join(lines) + "\n"
    (REPORTS / "retrieval.md").write_text(text)
    plot(results, REPORTS / "retrieval.png")
    return text


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    import numpy as np

    fig, axis = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(results)
    for n, (label, got) in enumerate(results.items()):
        axis.bar(np.arange(len(SETS)) + n * width, [got[s]["hit@1"] for s in SETS], width, label=label)
    axis.axhline(0.95, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xticks(np.arange(len(SETS)) + width * (len(results) - 1) / 2, SETS)
    axis.set(ylabel="hit@1 by document", ylim=(0, 1.05), title="Held-out questions, per candidate default search")
    axis.legend(fontsize=7, ncols=2)
    save_figure(fig, path, dpi=110)


def main() -> None:
    print(write_report(measure()))


if __name__ == "__main__":
    main()
