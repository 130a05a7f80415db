"""Cost-based batching: the one batch loop every modality shares.

A batch costs ``size × max(item cost)`` — for text that is the padded token count, the compute an encoder
really spends. Sorting by cost before packing keeps padding small (unsorted batches of 32 waste 3.5× on
this corpus, docs/measurements.md), and a cost budget, unlike a count, keeps long and short inputs equally cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def plan_batches(costs: Sequence[int], max_batch_cost: int, max_batch_size: int) -> list[list[int]]:
    """Group item indices into batches, cheapest first, each within ``max_batch_cost`` padded cost.

    An item that alone exceeds the budget still gets a batch of its own (it cannot be split).
    """
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for index in order:
        cost = costs[index]
        grown = max(widest, cost)
        if current and ((len(current) + 1) * grown > max_batch_cost or len(current) >= max_batch_size):
            batches.append(current)
            current, grown = [], cost
        current.append(index)
        widest = grown
    if current:
        batches.append(current)
    return batches


def run_batches(
    items: Sequence[T],
    costs: Sequence[int],
    run: Callable[[list[T]], np.ndarray],
    max_batch_cost: int,
    max_batch_size: int,
) -> np.ndarray:
    """Run ``run`` over cost-planned batches and return the rows in the items' original order."""
    if not items:
        raise ValueError("run_batches needs at least one item")
    results = [(batch, run([items[i] for i in batch])) for batch in plan_batches(costs, max_batch_cost, max_batch_size)]
    first = results[0][1]
    out = np.empty((len(items), *first.shape[1:]), dtype=first.dtype)
    for batch, rows in results:
        out[batch] = rows
    return out
