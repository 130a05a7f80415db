"""``embedstream classify``: label a space's points by what labels mean, or by labelled examples.

Three ways, chosen by what is given:

* **zero-shot** (label descriptions only): each label's description is embedded by the model the space is
  searched with; a point gets the label whose description is nearest.
* **knn** (labelled examples only): points whose payload field ``examples`` holds a label are the examples; every
  other point gets the label of most similarity among its ``k`` nearest examples (a vote weighted by cosine).
* **spread** (labelled examples, ``spread=True``): the examples' labels spread along the space's neighbourhood
  graph over every point being labelled (``workers.label_spreading``): 0.94–0.96 with 5 examples a topic where
  the kNN vote gave 0.86–0.92. It labels a set of points together; a new text alone (``POST /classify``) is
  labelled by the kNN vote.
* **prototypes** (both): each label is the normalized sum of its description's vector and its examples' mean —
  measured on the sample corpus with 5 examples a topic: 0.93–0.96, where kNN alone gave 0.86–0.92 and the
  descriptions alone 0.91 (``tests/test_classify.py`` prints them).

``margin``: a point whose best label is not ahead of the second by at least this much (cosine; kNN: share of the
vote) gets ``none`` — fewer labels, more of them right. Labels go into the payload under ``class_<space>`` =
``{label, method, score}`` (idempotent, filterable like ``cluster_<space>``); examples keep their own label.
``classify_text`` answers the same for a new text (``POST /classify``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tqdm import tqdm

from embedstream.onnx_models.encoders import load_encoder
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import l2_normalize
from embedstream.pipelines.stores import SearchRequest, VectorStore, open_store
from embedstream.schemas.errors import NotFoundError, UsageError
from embedstream.schemas.settings import Settings
from embedstream.workers import label_spreading
from embedstream.workers.cluster import read_vectors
from embedstream.workers.search import Searcher

NONE = "none"
NEAR = 100  # POST /classify's examples: the labelled points among the text's nearest NEAR
TextMethod = Literal["zero-shot", "knn", "prototypes"]  # what labels one new text
Method = TextMethod | Literal["spread"]


@dataclass(frozen=True)
class Prediction:
    label: str  # NONE when the best label was not ahead by the margin
    score: float  # cosine to the label (zero-shot, prototypes) or its share of the vote (knn)
    margin: float  # how far ahead of the second label


@dataclass
class ClassifyReport:
    space: str
    method: Method
    points: int
    examples: int
    counts: Counter[str] = field(default_factory=Counter)
    labels: dict[str, Prediction] = field(default_factory=dict)


class Classifier:
    """Labels for vectors of one space (module docstring)."""

    def __init__(
        self,
        descriptions: Mapping[str, np.ndarray] | None,
        examples: tuple[np.ndarray, list[str]] | None,
        k: int = 5,
        margin: float = 0.0,
        spread: bool = False,
    ) -> None:
        if not descriptions and not examples:
            raise UsageError("classify needs label descriptions (--labels), labelled examples (--examples), or both")
        if k < 1 or not 0.0 <= margin < 1.0:
            raise UsageError(f"k must be at least 1 and the margin in [0, 1): got k={k}, margin={margin}")
        if spread and (descriptions or not examples):
            raise UsageError("spreading carries the examples' labels: give --examples, without --labels")
        self.k, self.margin = k, margin
        self.method: Method = "prototypes" if descriptions and examples else "zero-shot" if descriptions else "knn"
        if spread:
            self.method = "spread"
        self._examples = examples
        if self.method in ("knn", "spread"):
            return
        names = sorted(descriptions or {})
        rows = [np.asarray((descriptions or {})[name], dtype=np.float64) for name in names]
        if self.method == "prototypes" and examples is not None:
            vectors, labels = examples
            unknown = sorted(set(labels) - set(names))
            if unknown:
                raise UsageError(f"examples are labelled {unknown}, which have no description; describe every label")
            for row, name in zip(rows, names, strict=True):
                mine = vectors[[i for i, label in enumerate(labels) if label == name]]
                if len(mine):
                    row += l2_normalize(mine.mean(axis=0))
        self._names, self._prototypes = names, l2_normalize(np.asarray(rows))

    def predict(self, vectors: np.ndarray) -> list[Prediction]:
        unit = l2_normalize(np.asarray(vectors, dtype=np.float64))
        if self.method == "knn":
            return self._vote(unit)
        if self.method == "spread":
            return self._spread(unit)
        return self._ranked(unit @ self._prototypes.T, self._names)

    def _ranked(self, scores: np.ndarray, names: list[str], reached_only: bool = False) -> list[Prediction]:
        """Each row's best label (``scores``: one column a label), ``none`` when not ahead of the second by the
        margin — or, with ``reached_only``, when no label scored at all (spreading that never reached the point)."""
        out = []
        for row in scores:
            ranked = np.argsort(-row)
            best = float(row[ranked[0]])
            ahead = best - float(row[ranked[1]]) if len(ranked) > 1 else best
            reached = best > 0.0 or not reached_only
            out.append(Prediction(names[ranked[0]] if reached and ahead >= self.margin else NONE, best, ahead))
        return out

    def _vote(self, unit: np.ndarray) -> list[Prediction]:
        assert self._examples is not None
        examples, labels = self._examples
        similarity = unit @ l2_normalize(examples).T
        k = min(self.k, len(labels))
        out = []
        for row in similarity:
            votes: dict[str, float] = {}
            for i in np.argsort(-row)[:k]:
                votes[labels[i]] = votes.get(labels[i], 0.0) + max(float(row[i]), 0.0)
            total = sum(votes.values()) or 1.0
            ranked = [*sorted(votes.items(), key=lambda item: -item[1]), ("", 0.0)]
            (label, first), (_, second) = ranked[0], ranked[1]
            ahead = (first - second) / total
            out.append(Prediction(label if ahead >= self.margin else NONE, first / total, ahead))
        return out

    def _spread(self, unit: np.ndarray) -> list[Prediction]:
        assert self._examples is not None
        examples, labels = self._examples
        names = sorted(set(labels))
        seeds = np.asarray([names.index(label) for label in labels] + [-1] * len(unit))
        shares = label_spreading.spread(np.vstack([examples, unit]), seeds, len(names), self.k)[len(labels) :]
        return self._ranked(shares, names, reached_only=True)


def embed_descriptions(
    settings: Settings, store: VectorStore, space: str, labels: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Each label's description embedded by the model the space is searched with (after a migration's switch,
    the new one)."""
    spaces = store.spaces()
    if space not in spaces:
        raise NotFoundError(f"the collection has no space {space!r}; it has {sorted(spaces)}")
    model = spaces[space].searched[1] or settings.model.text_model
    encoder = load_encoder(settings.model.cache_dir, model, settings.model)
    if not isinstance(encoder, TextEncoder):
        raise UsageError(f"space {space!r} is searched with {model}, not a text model: label descriptions need one")
    names = sorted(labels)
    return dict(zip(names, encoder.embed([labels[name] for name in names]), strict=True))


def classify_space(
    settings: Settings,
    space: str,
    labels: Mapping[str, str] | None = None,
    examples: str | None = None,
    k: int = 5,
    margin: float = 0.0,
    where: Mapping[str, str | int | bool] | None = None,
    progress: bool = True,
    spread: bool = False,
) -> ClassifyReport:
    """Label every point of ``space`` (matching ``where``) that is not an example, and write the labels."""
    store = open_store(settings.qdrant)
    try:
        ids, vectors, payloads = read_vectors(store, space, where, progress)
        is_example = [bool(examples) and isinstance(p.get(examples or ""), str) for p in payloads]
        if examples and not any(is_example):
            raise UsageError(f"no point of space {space!r} has a label in its payload field {examples!r}")
        chosen = np.asarray(is_example, dtype=bool)
        example_labels = [str(p[examples or ""]) for p, e in zip(payloads, is_example, strict=True) if e]
        known = (vectors[chosen], example_labels) if examples else None
        described = embed_descriptions(settings, store, space, labels) if labels else None
        classifier = Classifier(described, known, k, margin, spread)
        targets = [i for i, e in enumerate(is_example) if not e]
        predictions = classifier.predict(vectors[targets]) if targets else []
        report = ClassifyReport(space, classifier.method, len(targets), len(example_labels))
        field_name = f"class_{space}"
        for i, prediction in tqdm(
            list(zip(targets, predictions, strict=True)), desc="writing labels", disable=not progress
        ):
            value = {"label": prediction.label, "method": classifier.method, "score": round(prediction.score, 4)}
            store.set_payload([ids[i]], {field_name: value})
            report.counts[prediction.label] += 1
            report.labels[ids[i]] = prediction
        store.flush()
        return report
    finally:
        store.close()


def classify_text(
    searcher: Searcher,
    text: str,
    space: str | None = None,
    labels: Mapping[str, str] | None = None,
    examples: str | None = None,
    k: int = 5,
    margin: float = 0.0,
) -> tuple[str, TextMethod, Prediction]:
    """A new text's label in ``space`` (default: the text model's): by ``labels``' descriptions, by the labelled
    points (payload field ``examples``) among its ``NEAR`` nearest, or both; → (space, method, prediction)."""
    space, configured = searcher.resolve("text", space)
    vector_name, model = searcher.searched(space, configured)
    vector = searcher.encoder(model).embed([text])[0]
    described = None
    if labels:
        names = sorted(labels)
        rows = searcher.encoder(model).embed([labels[name] for name in names])
        described = dict(zip(names, rows, strict=True))
    known = None
    if examples:
        request = SearchRequest(space, vector.tolist(), NEAR, vector_name=vector_name)
        near = [h.id for h in searcher.store.search_batch([request])[0] if isinstance(h.payload.get(examples), str)]
        found = searcher.store.retrieve(near, with_vectors=True)
        labelled = [p for p in found if space in p.vectors]
        if not labelled:
            raise NotFoundError(f"no point near the text has a label in its payload field {examples!r}")
        known = (np.asarray([p.vectors[space] for p in labelled]), [str(p.payload[examples]) for p in labelled])
    classifier = Classifier(described, known, k, margin)
    method = classifier.method
    assert method != "spread"  # spreading is asked for by name, and only for a set of points
    return space, method, classifier.predict(vector[None, :])[0]
