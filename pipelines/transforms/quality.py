"""The quality gate: a vector that is the wrong size, not finite, or zero never reaches the store."""

from __future__ import annotations

import numpy as np

from embedstream.schemas.dead_letter import Reason

MIN_NORM = 1e-6


def vector_problem(vector: np.ndarray, dim: int) -> tuple[Reason, str] | None:
    """Why ``vector`` must not be stored, or None when it is fine."""
    if vector.ndim != 1 or vector.shape[0] != dim:
        return Reason.VECTOR_WRONG_DIM, f"vector has shape {tuple(vector.shape)}, expected ({dim},)"
    if not np.isfinite(vector).all():
        bad = int((~np.isfinite(vector)).sum())
        return Reason.VECTOR_NON_FINITE, f"vector has {bad} NaN or infinite component(s)"
    norm = float(np.linalg.norm(vector))
    if norm < MIN_NORM:
        return Reason.VECTOR_ZERO_NORM, f"vector norm {norm:.3g} is below {MIN_NORM}"
    return None
