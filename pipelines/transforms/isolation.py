"""One bad event costs that event, not its batch: run a step on a batch, and item by item if the batch fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def batch_or_each(
    run: Callable[[list[T]], Sequence[R]], items: list[T], what: str
) -> tuple[list[R | None], dict[int, str]]:
    """``run`` (one result per item, in order) on all ``items``; if it raises, on each item alone. Returns a
    result per item (None where it failed) and, by index, why each failed item failed."""
    try:
        return list(run(items)), {}
    except Exception as exc:
        log.warning("%s failed on a batch of %d (%s); retrying one by one", what, len(items), exc)
    results: list[R | None] = []
    errors: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            results.append(run([item])[0])
        except Exception as exc:
            results.append(None)
            errors[i] = f"{what}: {type(exc).__name__}: {exc}"
    return results, errors
