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
matches would look like an outlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from embedstream.pipelines.stores import Hit

Fusion = Literal["confidence", "rrf", "dbsf"]
RRF_K = 60
MIN_WEIGHT = 0.05  # a list never counts for nothing: it still breaks ties


def fuse_lists(lists: Sequence[Sequence[Hit]], limit: int, method: Fusion = "confidence", depth: int = 0) -> list[Hit]:
    """The ``limit`` best hits of the fused lists (each hit's score is its fused score); ``depth``: how many hits
    each list was asked for (a shorter one is padded with zeros for the ``confidence`` statistics)."""
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for found in lists:
        if not found:
            continue
        values = np.array([h.score for h in found], dtype=np.float64)
        contribution, floor = _contribution(values, method, max(depth, len(values)))
        for hit, value in zip(found, contribution, strict=True):
            hits.setdefault(hit.id, hit)
            scores[hit.id] = scores.get(hit.id, 0.0) + float(value) - floor
    best = sorted(scores, key=lambda pid: scores[pid], reverse=True)[:limit]
    return [Hit(pid, scores[pid], hits[pid].payload) for pid in best]


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
