"""Which clips to label first: representative *and* diverse ones.

Five labels per emotion go furthest when they cover the variety of the recordings (speakers,
sentences, recording conditions) and are typical rather than odd. :func:`diverse_order` clusters
the clips (k-means with k-means++ seeding), takes the clip nearest each cluster centre (typical),
orders those by farthest-point traversal (diverse; clips already labeled count as covered), and
appends the remaining clips in farthest-point order too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sere_core.errors import ConfigError


def pooled_embedding(frames: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of ``[T, D]`` frames: one ``[2D]`` vector per clip."""
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        raise ConfigError(f"frames must be a non-empty [T, D] array, got shape {f.shape}.")
    return np.concatenate([f.mean(0), f.std(0)])


def _standardize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    scale = x.std(0)
    x = x / np.where(scale > 1e-9, scale, 1.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 1e-12, norms, 1.0)


def _farthest_first(x: np.ndarray, candidates: list[int], covered: list[int]) -> list[int]:
    order: list[int] = []
    remaining = list(candidates)
    if not remaining:
        return order
    if covered:
        dist = np.min(np.linalg.norm(x[remaining][:, None] - x[covered][None], axis=2), axis=1)
    else:  # start from the most central clip
        centre = x[remaining].mean(0)
        first = remaining[int(np.argmin(np.linalg.norm(x[remaining] - centre, axis=1)))]
        order.append(first)
        remaining.remove(first)
        if not remaining:
            return order
        dist = np.linalg.norm(x[remaining] - x[first], axis=1)
    while remaining:
        k = int(np.argmax(dist))
        chosen = remaining.pop(k)
        order.append(chosen)
        dist = np.delete(dist, k)
        if remaining:
            dist = np.minimum(dist, np.linalg.norm(x[remaining] - x[chosen], axis=1))
    return order


def diverse_order(
    embeddings: np.ndarray,
    n_clusters: int,
    labeled: Sequence[int] = (),
    random_state: int = 0,
) -> list[int]:
    """Order the unlabeled rows of ``embeddings [N, D]`` for labeling (row indices).

    ``labeled`` rows are left out of the result and count as already covered.

    >>> x = np.array([[0, 0], [0, 0.1], [5, 5], [5, 5.1], [10, 0]], dtype=float)
    >>> order = diverse_order(x, n_clusters=3)
    >>> sorted(order) == [0, 1, 2, 3, 4] and len({order[0], order[1], order[2]} & {2, 3}) == 1
    True
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"embeddings must be [N, D], got shape {x.shape}.")
    n = len(x)
    labeled_set = {int(i) for i in labeled}
    unlabeled = [i for i in range(n) if i not in labeled_set]
    if len(unlabeled) <= 1:
        return unlabeled
    x = _standardize(x)
    k = max(1, min(int(n_clusters), len(unlabeled)))
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=4, random_state=random_state).fit(x[unlabeled])
    typical = []
    for c in range(k):
        members = [u for u, lab in zip(unlabeled, km.labels_) if lab == c]
        if members:
            d = np.linalg.norm(x[members] - km.cluster_centers_[c], axis=1)
            typical.append(members[int(np.argmin(d))])
    first = _farthest_first(x, typical, sorted(labeled_set))
    rest = [u for u in unlabeled if u not in set(first)]
    return first + _farthest_first(x, rest, sorted(labeled_set) + first)
