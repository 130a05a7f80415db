"""Parity: the measure, the bar, and install-if-faithful.

A build happens in a staging folder; ``install`` measures parity there with the recipe's own parity function
(the same one ``embedstream models verify`` re-runs later), refuses a build below ``PARITY_MIN_COSINE`` and only
then publishes it into the cache — a bad export never becomes loadable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from embedstream.onnx_models.manifest import ModelManifest, ParityReport
from embedstream.onnx_models.registry import publish
from embedstream.schemas.errors import EmbedstreamError

PARITY_MIN_COSINE = 0.9999


Parity = Callable[[ModelManifest, Path], ParityReport]


def compare(actual: np.ndarray, expected: np.ndarray, reference: str) -> ParityReport:
    """Row-wise cosine (and the largest element difference) between ONNX output and the reference's."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    cos = (actual * expected).sum(axis=1) / (np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1))
    return ParityReport(
        reference=reference,
        inputs=len(actual),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(actual - expected).max()),
        measured_at=datetime.now(UTC),
    )


class ParityError(EmbedstreamError):
    """An export does not reproduce its reference closely enough; it is not installed."""


def install(draft: ModelManifest, staging: Path, cache_dir: Path, parity: Parity) -> ModelManifest:
    """Measure parity on the staged build, refuse it below the bar, else publish it with the figure recorded."""
    report = parity(draft, staging)
    if report.min_cosine < PARITY_MIN_COSINE:
        raise ParityError(
            f"{draft.ref}: ONNX parity min cosine {report.min_cosine:.6f} < {PARITY_MIN_COSINE} against "
            f"{report.reference}; not installed"
        )
    manifest = draft.model_copy(update={"parity": report})
    publish(staging, manifest, cache_dir)
    return manifest
