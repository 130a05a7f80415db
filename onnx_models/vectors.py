"""Vector maths every side shares: pooling, L2 normalization, fusion.

Ingest (the encoders and video views), search (queries into the fused space) and export (parity checks) all
import these, so a vector is made the same way wherever it is made: one definition of "normalized", one
of "mean pooling", one of "the fused vector".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Pooling = Literal["mean", "cls", "last_token", "none"]
EPSILON = 1e-12


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length; a zero row stays zero (the quality gate refuses it later),
    never NaN. float32 in, float32 out."""
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    normalized: np.ndarray = rows / np.maximum(norms, EPSILON)
    return normalized.astype(rows.dtype, copy=False)


def pool_tokens(tokens: np.ndarray, mask: np.ndarray, kind: Pooling) -> np.ndarray:
    """Token vectors ``[batch, seq, dim]`` → ``[batch, dim]``, honouring the attention mask (padding never
    counts)."""
    pooled: np.ndarray
    if kind == "mean":
        weights = mask[:, :, None].astype(tokens.dtype)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    elif kind == "cls":
        pooled = tokens[:, 0]
    elif kind == "last_token":
        last = mask.sum(axis=1) - 1
        pooled = tokens[np.arange(tokens.shape[0]), last]
    elif kind == "none":
        pooled = tokens
    else:
        raise ValueError(f"unknown pooling {kind!r}; expected mean, cls, last_token or none")
    return pooled


def pool_features(features: np.ndarray, kind: Pooling) -> np.ndarray:
    """A vision or audio model's raw output → ``[batch, dim]``: feature maps ``[b, c, h, w]`` (CNNs) by their
    spatial mean, sequences ``[b, tokens, d]`` (ViTs, wav2vec2 frames) by ``mean`` over all of them or ``cls``
    (the first); ``[b, d]`` is already pooled."""
    if features.ndim == 4:
        if kind != "mean":
            raise ValueError(f"feature maps pool by mean only, not {kind!r}")
        spatial: np.ndarray = features.mean(axis=(2, 3))
        return spatial
    if features.ndim == 3:
        return pool_tokens(features, np.ones(features.shape[:2], dtype=np.int64), kind)
    return features


def fuse(
    visual: np.ndarray | None, audio: np.ndarray | None, weights: tuple[float, float], dims: tuple[int, int]
) -> np.ndarray | None:
    """The fused vector: the weighted halves concatenated (a missing half is zeros), L2-normalized. None when
    nothing is left (a zero weight on the only half present) — never a NaN vector. A video's view and a
    search into the ``fused`` space (a picture or sound query placed in its half) both call this."""
    fused = np.concatenate(
        [
            weights[0] * visual if visual is not None else np.zeros(dims[0]),
            weights[1] * audio if audio is not None else np.zeros(dims[1]),
        ]
    )
    norm = float(np.linalg.norm(fused))
    return fused / norm if norm > 0 else None


def mean_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The L2-normalized mean (float64 sums, float32 out) — a document's vector from its chunks'."""
    mean = np.mean(np.asarray(vectors, dtype=np.float64), axis=0)
    return l2_normalize(mean).astype(np.float32)
