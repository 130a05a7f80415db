"""``embedstream cluster``: group a space's vectors, write the labels back, summarize and draw them.

* k-means (scikit-learn, ``n_init=10``, seeded) with ``k`` given or chosen by the best silhouette (cosine)
  over ``2..k_max``; or HDBSCAN (density-based: finds its own number of clusters, label -1 = noise) on the
  first 10 principal components.
* Vectors are L2-normalized first, so Euclidean k-means groups by cosine, like search does.
* Labels go into each point's payload under ``cluster_<space>`` = ``{label, method, k}``: re-running with the
  same data and options writes the same values (idempotent), and ``--where cluster_minilm.label=2`` filters.
* The summary gives each cluster's size and the points nearest its centroid (their text, or their id).
* The picture is a 2-D PCA projection coloured by cluster, centroids marked with their label and size.

Progress: a bar while vectors are read, one line per k tried, a bar while labels are written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from embedstream.onnx_models.vectors import l2_normalize
from embedstream.pipelines.stores import open_store
from embedstream.schemas.errors import UsageError
from embedstream.schemas.settings import Settings

log = logging.getLogger(__name__)
NEAREST = 3


@dataclass
class Cluster:
    label: int
    size: int
    nearest: list[str]  # text snippets (or ids) of the members nearest the centroid


@dataclass
class ClusterReport:
    space: str
    method: str
    k: int
    points: int
    silhouette: float | None
    tried: dict[int, float] = field(default_factory=dict)  # k → silhouette, when k was chosen
    clusters: list[Cluster] = field(default_factory=list)
    plot: Path | None = None
    labels: dict[str, int] = field(default_factory=dict)


def cluster_space(
    settings: Settings,
    space: str,
    k: int | Literal["auto"] = "auto",
    method: Literal["kmeans", "hdbscan"] = "kmeans",
    where: Mapping[str, str | int | bool] | None = None,
    k_max: int = 12,
    plot: Path | None = None,
    progress: bool = True,
) -> ClusterReport:
    store = open_store(settings.qdrant)
    try:
        ids, vectors, payloads = read_vectors(store, space, where, progress)
        if len(ids) < 3:
            raise UsageError(f"space {space!r} has {len(ids)} point(s) to cluster; need at least 3")
        unit = l2_normalize(vectors)
        report = ClusterReport(space, method, 0, len(ids), None)
        labels = _hdbscan(unit) if method == "hdbscan" else _kmeans(unit, k, k_max, report, progress)
        report.k = len({int(label) for label in labels if label >= 0})
        report.silhouette = _silhouette(unit, labels)
        report.labels = {pid: int(label) for pid, label in zip(ids, labels, strict=True)}
        _write_labels(store, space, report, progress)
        report.clusters = _summaries(unit, labels, payloads)
    finally:
        store.close()
    report.plot = _plot(unit, labels, report, plot or Path(".embedstream") / f"clusters-{space}.png")
    return report


def read_vectors(
    store: Any, space: str, where: Mapping[str, str | int | bool] | None, progress: bool
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Ids, vectors (rows) and payloads of the points with a vector in ``space`` (matching ``where``)."""
    ids, rows, payloads = [], [], []
    total = store.count_vectors(space)
    for point in tqdm(
        store.scroll(with_vectors=True, where=where), total=total, desc="reading vectors", disable=not progress
    ):
        if space in point.vectors:
            ids.append(point.id)
            rows.append(point.vectors[space])
            payloads.append(point.payload)
    return ids, np.asarray(rows, dtype=np.float64).reshape(len(rows), -1), payloads


def _kmeans(unit: np.ndarray, k: int | str, k_max: int, report: ClusterReport, progress: bool) -> np.ndarray:
    from sklearn.cluster import KMeans

    def fit(n: int) -> np.ndarray:
        return np.asarray(KMeans(n_clusters=n, n_init=10, random_state=0).fit_predict(unit))

    if k != "auto":
        if not 1 <= int(k) <= len(unit):
            raise UsageError(f"k = {k} does not fit {len(unit)} points")
        return fit(int(k))
    best: tuple[float, np.ndarray] | None = None
    for n in range(2, min(k_max, len(unit) - 1) + 1):
        labels = fit(n)
        score = _silhouette(unit, labels) or -1.0
        report.tried[n] = score
        if progress:
            print(f"  k={n:<3} silhouette {score:.3f}", flush=True)
        if best is None or score > best[0]:
            best = (score, labels)
    assert best is not None
    return best[1]


HDBSCAN_DIMS = 10


def principal_components(rows: np.ndarray, count: int) -> np.ndarray:
    """``rows`` projected on their first ``count`` principal axes (PCA by SVD of the centred rows)."""
    centred = rows - rows.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return np.asarray(centred @ axes[: min(count, len(axes))].T)


def _hdbscan(unit: np.ndarray) -> np.ndarray:
    """HDBSCAN on the vectors' first 10 principal components, re-normalized: density estimates fall apart in
    384 dimensions (measured on the sample corpus: ARI 0.41 on raw vectors, 0.99 on 10 components, 10 topics)."""
    from sklearn.cluster import HDBSCAN

    reduced = principal_components(unit, HDBSCAN_DIMS)
    reduced = l2_normalize(reduced)
    return np.asarray(HDBSCAN(min_cluster_size=max(5, len(unit) // 50), copy=True).fit_predict(reduced))


def _silhouette(unit: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    kept = labels >= 0
    if len(set(labels[kept].tolist())) < 2:
        return None
    sample = min(int(kept.sum()), 5_000)
    return float(silhouette_score(unit[kept], labels[kept], metric="cosine", sample_size=sample, random_state=0))


def _write_labels(store: Any, space: str, report: ClusterReport, progress: bool) -> None:
    by_label: dict[int, list[str]] = {}
    for pid, label in report.labels.items():
        by_label.setdefault(label, []).append(pid)
    for label, members in tqdm(sorted(by_label.items()), desc="writing labels", disable=not progress):
        store.set_payload(members, {f"cluster_{space}": {"label": label, "method": report.method, "k": report.k}})
    store.flush()


def _summaries(unit: np.ndarray, labels: np.ndarray, payloads: list[dict[str, Any]]) -> list[Cluster]:
    clusters = []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        centroid = unit[members].mean(axis=0)
        order = members[np.argsort(-(unit[members] @ centroid))][:NEAREST]
        nearest = [str(payloads[i].get("text") or payloads[i].get("id")) for i in order]
        clusters.append(Cluster(int(label), len(members), nearest))
    return clusters


def _plot(unit: np.ndarray, labels: np.ndarray, report: ClusterReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = principal_components(unit, 2)
    fig, ax = plt.subplots(figsize=(8, 6))
    colours = plt.get_cmap("tab20")
    for label in sorted(set(labels.tolist())):
        members = labels == label
        colour = "#bbbbbb" if label < 0 else colours(label % 20)
        ax.scatter(xy[members, 0], xy[members, 1], s=12, color=colour, label=f"{label} ({members.sum()})", alpha=0.8)
        if label >= 0:
            cx, cy = xy[members].mean(axis=0)
            ax.annotate(str(label), (cx, cy), fontsize=12, weight="bold", ha="center", va="center")
    silhouette = f", silhouette {report.silhouette:.2f}" if report.silhouette is not None else ""
    ax.set_title(f"{report.space}: {report.k} clusters by {report.method} ({report.points} points{silhouette})")
    ax.set_xlabel("PCA 1")
    ax.set_ylabel("PCA 2")
    ax.legend(loc="best", fontsize=8, markerscale=1.5, title="cluster (size)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
