"""Label spreading: a few labelled examples' labels carried along the space's own neighbourhoods.

kNN looks only at the examples near a point; with five examples a topic, a point whose topic's examples happen
to lie on the far side of the topic is outvoted by another topic's. Spreading (Zhou et al., 2004, "Learning with
local and global consistency") lets every point pass what it has to its neighbours, so a label reaches a point
through the unlabelled points between them: on the sample corpus with 5 examples a topic, 0.94–0.96 over ten
draws where the kNN vote gave 0.86–0.92 (``tests/test_classify.py`` prints both).

The graph: each point's ``k`` nearest (cosine, ``sklearn.neighbors.NearestNeighbors``), edges weighted by the
cosine (negative ones dropped) and made symmetric, then normalized ``D^-1/2 W D^-1/2``. The labels:
``F ← α·S·F + (1-α)·Y`` until it settles (the closed form needs an N×N inverse; this needs N·k per step), and
each label's column divided by its total (class mass normalization: a label seeded in a dense region does not
swallow the others). A point's score is its best label's share of its row, its margin the lead over the second.
scikit-learn's own ``LabelSpreading`` was measured first: its unweighted, one-sided graph gave 0.91–0.92 here.
"""

from __future__ import annotations

import numpy as np

from embedstream.onnx_models.vectors import l2_normalize

ALPHA = 0.9  # how much a point takes from its neighbours against its own seed (measured best of 0.5–0.99)
TOLERANCE = 1e-7
MAX_STEPS = 1000


def spread(vectors: np.ndarray, seeds: np.ndarray, classes: int, k: int = 5, alpha: float = ALPHA) -> np.ndarray:
    """Shares ``[n, classes]`` (rows sum to 1; 0 where no label reaches a point) for ``vectors``, given
    ``seeds[i]``: the class index of an example, -1 for a point to label."""
    from scipy.sparse import csr_matrix, diags
    from sklearn.neighbors import NearestNeighbors

    unit = l2_normalize(np.asarray(vectors, dtype=np.float64))
    n = len(unit)
    near = min(k + 1, n)
    distance, index = NearestNeighbors(n_neighbors=near).fit(unit).kneighbors(unit)
    similarity = np.maximum(1.0 - distance**2 / 2.0, 0.0)  # unit vectors: |a-b|² = 2 - 2·cos
    rows = np.repeat(np.arange(n), near)
    graph = csr_matrix((similarity.ravel(), (rows, index.ravel())), shape=(n, n))
    graph.setdiag(0.0)
    graph = graph.maximum(graph.T).tocsr()
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = diags(1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)))
    normalized = (scale @ graph @ scale).tocsr()

    given = np.zeros((n, classes))
    labelled = seeds >= 0
    given[np.flatnonzero(labelled), seeds[labelled]] = 1.0
    spread_ = given.copy()
    for _ in range(MAX_STEPS):
        step = alpha * (normalized @ spread_) + (1.0 - alpha) * given
        done = float(np.abs(step - spread_).max()) < TOLERANCE
        spread_ = step
        if done:
            break
    mass = spread_.sum(axis=0)
    spread_ = spread_ / np.where(mass > 0, mass, 1.0)
    total = spread_.sum(axis=1, keepdims=True)
    shares: np.ndarray = spread_ / np.where(total > 0, total, 1.0)
    return shares
