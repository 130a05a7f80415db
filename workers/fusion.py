"""Fusing a dense and a sparse result list into one (hybrid search).

Measured on the retrieval sets (``bench/reports/retrieval.md``): reciprocal rank fusion (Qdrant's ``Fusion.Rrf``)
and distribution-based score fusion (``Fusion.Dbsf``) both lose much of the better list's quality whenever the two
lists disagree — a paraphrase query's sparse list is word-overlap noise with a confident-looking top, and a
product code's dense list ranks every similar code alike — because they weigh the two lists equally.
``confidence`` weighs each list by how far its best hit stands out from the rest of it (the gap between its top
two scores, in standard deviations of the list): a list whose top is an outlier knows something for this query;
a flat one does not. Scores are then standardized per list and summed with those weights. A list shorter than
the depth asked for is padded with zero scores for these statistics: a keyword list is short when few texts share
a word with the query, and the texts it leaves out do score 0 — without the padding, the best of three weak
matches would look like an outlier. The keyword list is weighed once more by how much of the query its best hit
holds (``keyword_weight``): an outlier that shares two words of a long question is still word overlap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from embedstream.onnx_models.vectors import l2_normalize
from embedstream.pipelines.stores import Hit

Fusion = Literal["confidence", "rrf", "dbsf"]
RRF_K = 60
MIN_WEIGHT = 0.05  # a list never counts for nothing: it still breaks ties


def fuse_lists(
    lists: Sequence[Sequence[Hit]],
    limit: int,
    method: Fusion = "confidence",
    depth: int = 0,
    weights: Sequence[float] | None = None,
) -> list[Hit]:
    """The ``limit`` best hits of the fused lists (each hit's score is its fused score); ``depth``: how many hits
    each list was asked for (a shorter one is padded with zeros for the ``confidence`` statistics);
    ``weights``: each list's weight on top of its confidence (``confidence`` only; ``keyword_weight``). When only
    one list has hits (no text shares a keyword with the query) there is nothing to fuse: that list comes back as
    it is, its own scores (cosine, BM25) included."""
    found_any = [found for found in lists if found]
    if len(found_any) == 1:
        return list(found_any[0][:limit])
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for n, found in enumerate(lists):
        if not found:
            continue
        values = np.array([h.score for h in found], dtype=np.float64)
        contribution, floor = _contribution(values, method, max(depth, len(values)))
        if weights is not None and method == "confidence":
            contribution, floor = contribution * weights[n], floor * weights[n]
        for hit, value in zip(found, contribution, strict=True):
            hits.setdefault(hit.id, hit)
            scores[hit.id] = scores.get(hit.id, 0.0) + float(value) - floor
    best = sorted(scores, key=lambda pid: scores[pid], reverse=True)[:limit]
    return [Hit(pid, scores[pid], hits[pid].payload) for pid in best]


def keyword_weight(query_terms: Sequence[int], best_terms: Sequence[int]) -> float:
    """How much a keyword list's best hit should count: the square of the share of the query's terms it holds.
    A code or a name query is matched whole (1); a question whose best keyword hit shares two of its eight
    words says little about what the question means (1/16), however far that hit stands out — measured on
    the paraphrase set, such a hit was the one case where fusion ranked a wrong text first."""
    terms = set(query_terms)
    if not terms:
        return 1.0
    return (len(terms & set(best_terms)) / len(terms)) ** 2


def _contribution(values: np.ndarray, method: Fusion, depth: int) -> tuple[np.ndarray, float]:
    """Each hit's share of the fused score, and what a hit absent from this list gets (subtracted from all)."""
    if method == "rrf":
        return 1.0 / (RRF_K + np.arange(1, len(values) + 1)), 0.0
    padded = np.concatenate([values, np.zeros(depth - len(values))]) if method == "confidence" else values
    mean, std = float(padded.mean()), float(padded.std()) or 1.0
    if method == "dbsf":  # Qdrant's: (score − (μ − 3σ)) / 6σ, within [0, 1]
        return np.clip((values - (mean - 3 * std)) / (6 * std), 0.0, 1.0), 0.0
    z = (padded - mean) / std
    weight = max(float(z[0] - z[1]), MIN_WEIGHT) if len(z) > 1 else 1.0
    return weight * z[: len(values)], weight * float(z[-1])  # absent = as good as the list's last (or padding)


def diversify(hits: Sequence[Hit], vectors: Mapping[str, Sequence[float]], limit: int, diversity: float) -> list[Hit]:
    """Maximal marginal relevance over a fused list (the stores do it for a dense one): each next hit maximizes
    ``(1 − diversity) · relevance − diversity · (its highest cosine to a hit already chosen)``, relevance being
    the fused score scaled to [0, 1]. Hits without a vector keep their place in line but count as unlike all."""
    if not hits:
        return []
    scores = np.array([h.score for h in hits], dtype=np.float64)
    span = float(scores.max() - scores.min()) or 1.0
    relevance = (scores - scores.min()) / span
    unit = [l2_normalize(np.asarray(vectors[h.id], dtype=np.float64)) if h.id in vectors else None for h in hits]
    chosen: list[int] = []
    left = list(range(len(hits)))
    while left and len(chosen) < limit:

        def value(i: int) -> float:
            row = unit[i]
            alike = max((float(row @ unit[j]) for j in chosen if row is not None and unit[j] is not None), default=0.0)
            return (1 - diversity) * float(relevance[i]) - diversity * alike

        best = max(left, key=value)
        chosen.append(best)
        left.remove(best)
    return [hits[i] for i in chosen]
