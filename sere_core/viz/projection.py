"""2-D projection of the resonance space for every training snapshot.

The replay must show motion, not a picture re-arranging itself, so every snapshot is placed in
**one** map. Two ways to build it (``reference``):

* ``"stacked"`` (the default): fit UMAP on the clips of all snapshots together (the final
  snapshot always, earlier ones sampled when there are many), so each training step's geometry is
  represented in its own right. On the demo this shows what actually happens: at step 0 the
  untrained network puts every clip in one central cloud, then the emotions pull apart and the
  target-language clips travel to them.
* ``"final"``: fit on the final snapshot only and ``transform`` the earlier ones into it. The final
  map is the crispest possible, but ``transform`` places an early, unstructured embedding next to
  its nearest *final* neighbours, so step 0 already looks clustered: it overstates how organized
  the clips were before training (we compared both on the demo and chose ``"stacked"``).

Small sets (fewer than ``min_umap_points`` points, where UMAP's neighbour graph is meaningless and
``n_neighbors`` must stay below the number of points) fall back to PCA fitted on the same rows, so
the replay stays consistent. Large sets fit on a seeded sample of ``max_fit_points`` rows (the
final snapshot gets at most half of it when earlier snapshots compete for it) and place every other
row at the distance-weighted mean of its ``n_neighbors`` nearest fitted rows: that is where UMAP's
own ``transform`` starts before its extra optimisation, and the one way this module extends a fit
(a 100,000-clip project costs seconds, see ``benchmarks/results/scale.md``). Everything uses a
fixed ``random_state``.

Speed: the nearest neighbours are computed here with one matrix product per block of rows and
handed to UMAP (``precomputed_knn``). UMAP's own search for fewer than 4096 rows calls a Python
distance function once per pair through scikit-learn, which took a minute for the app's 532 clips
x 13 snapshots (``benchmarks/results/app_pipeline.md``); with the neighbours given it takes seconds.
:func:`project_snapshots` also keeps at most ``max_replay_points`` clips in the snapshots before
the final one, so the replay of a huge project animates a seeded sample.

``umap-learn`` compiles its numba kernels on first use (4 s, far longer the first time on a new
install or a busy machine): the app calls :func:`warm_up_umap` once, in the background, when it
starts (``sere_core.app.warmup``), never per request.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from sere_core.errors import ConfigError

Method = Literal["auto", "umap", "pca"]
Reference = Literal["final", "stacked"]
Metric = Literal["cosine", "euclidean"]

#: Clips kept per snapshot before the final one (the replay of a larger project animates a sample).
MAX_REPLAY_POINTS = 3000
#: Rows per block of the neighbour search (a block's distances take rows x fitted rows x 4 bytes).
_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class Projection:
    """2-D coordinates per snapshot, all in one shared map.

    ``coords[s]`` is ``[N_s, 2]`` for the ``N_s`` clips of snapshot ``s``; ``prototype_coords[s]`` is
    ``[C, 2]`` or ``None`` when no prototypes were given. ``method`` says which fit was used
    (``"umap"``, ``"pca"`` or ``"identity"`` for data that is already 2-D).
    """

    method: str
    coords: tuple[np.ndarray, ...]
    prototype_coords: tuple[np.ndarray | None, ...]


def _as_matrix(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array [rows, dimensions], got shape {arr.shape}.")
    if dim is not None and arr.shape[0] and arr.shape[1] != dim:
        raise ConfigError(f"{what} has {arr.shape[1]} dimensions, the other snapshots have {dim}.")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what} contains NaN or infinite values.")
    return arr


def _pca_2d(fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a ``[D, 2]`` basis (deterministic signs) fitted on ``fit_rows``."""
    mean = fit_rows.mean(axis=0)
    centred = fit_rows - mean
    basis = np.zeros((fit_rows.shape[1], 2))
    if len(fit_rows) > 1:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        k = min(2, vt.shape[0])
        for i in range(k):
            v = vt[i]
            basis[:, i] = v if v[np.argmax(np.abs(v))] >= 0 else -v
    return mean, basis


def live_projection(embeddings: Any, prototypes: Any) -> tuple[np.ndarray, np.ndarray]:
    """A quick 2-D view of one snapshot while training runs: PCA with deterministic signs,
    milliseconds even for thousands of clips (a finished run's field uses
    :func:`project_snapshots`). Returns the clips' ``[N, 2]`` and the prototypes' ``[C, 2]``."""
    x = _as_matrix(embeddings, "embeddings")
    protos = _as_matrix(prototypes, "prototypes", x.shape[1])
    mean, basis = _pca_2d(np.vstack([x, protos]))
    return (x - mean) @ basis, (protos - mean) @ basis


def nearest_neighbors(query: np.ndarray, base: np.ndarray, k: int, metric: Metric = "cosine",
                      *, self_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``[n, k]`` (int64) and distances ``[n, k]`` (float32) of the ``k`` nearest ``base`` rows.

    Exact, in blocks of rows (one matrix product each), sorted nearest first. ``self_first`` (when
    ``query`` is ``base``) puts each row itself first at distance 0, as UMAP expects.

    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> nearest_neighbors(x, x, 2, self_first=True)[0].tolist()
    [[0, 1], [1, 0], [2, 1]]
    """
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"metric must be 'cosine' or 'euclidean', not {metric!r}.")
    q = np.asarray(query, dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    k = min(k, len(b))
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    b_sq = (b * b).sum(axis=1)
    index = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.float32)
    for start in range(0, len(q), _BLOCK_ROWS):
        block = q[start : start + _BLOCK_ROWS]
        if metric == "cosine":
            d = 1.0 - block @ b.T
        else:
            d = np.sqrt(np.maximum((block * block).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * block @ b.T, 0.0))
        if self_first:
            d[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(d, part, axis=1)
        order = np.lexsort((part, part_d), axis=1)  # by distance, ties by index: deterministic
        index[start : start + len(block)] = np.take_along_axis(part, order, axis=1)
        dist[start : start + len(block)] = np.maximum(np.take_along_axis(part_d, order, axis=1), 0.0)
    return index, dist


def extend_embedding(query: np.ndarray, base: np.ndarray, base_xy: np.ndarray, k: int = 15,
                     metric: Metric = "cosine") -> np.ndarray:
    """Place ``query`` rows at the distance-weighted mean 2-D position of their ``k`` nearest ``base`` rows.

    Deterministic and linear in the number of rows; a row equal to a base row lands on it.
    """
    index, dist = nearest_neighbors(query, base, k, metric)
    weights = 1.0 / (dist.astype(np.float64) + 1e-6)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkc->nc", weights, np.asarray(base_xy, dtype=np.float64)[index])


def _umap_fit(fit_rows: np.ndarray, n_neighbors: int, min_dist: float, metric: Metric, random_state: int,
              n_epochs: int | None) -> np.ndarray:
    """UMAP of ``fit_rows`` with exact neighbours computed here (see the module docstring)."""
    import umap  # optional heavy import, only where it is needed

    k = max(2, min(n_neighbors, len(fit_rows) - 1))
    knn = nearest_neighbors(fit_rows, fit_rows, k, metric, self_first=True)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric=metric,
        init="pca",  # deterministic and robust when the graph has several components
        random_state=random_state,
        n_jobs=1,
        n_epochs=n_epochs,
        precomputed_knn=knn,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return np.asarray(reducer.fit_transform(fit_rows.astype(np.float32)), dtype=np.float64)


def fit_projection(
    embeddings_per_snapshot: Sequence[np.ndarray],
    prototypes_per_snapshot: Sequence[np.ndarray | None] | None = None,
    *,
    method: Method = "auto",
    reference: Reference = "stacked",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: Metric = "cosine",
    random_state: int = 0,
    max_fit_points: int = 5000,
    min_umap_points: int = 15,
    n_epochs: int | None = 200,
) -> Projection:
    """Project every snapshot's clip embeddings (and prototypes) into one shared 2-D map.

    ``embeddings_per_snapshot[s]`` is ``[N_s, d]`` (clips may differ between snapshots);
    ``prototypes_per_snapshot[s]`` is ``[C, d]`` or ``None``. See the module docstring for the
    choice of ``reference``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = fit_projection([rng.normal(size=(6, 8)), rng.normal(size=(6, 8))])
    >>> p.method, p.coords[0].shape, p.coords[1].shape
    ('pca', (6, 2), (6, 2))
    """
    if method not in ("auto", "umap", "pca"):
        raise ConfigError(f"method must be 'auto', 'umap' or 'pca', not {method!r}.")
    if reference not in ("final", "stacked"):
        raise ConfigError(f"reference must be 'final' or 'stacked', not {reference!r}.")
    if max_fit_points < 3:
        raise ConfigError(f"max_fit_points must be at least 3, got {max_fit_points}.")
    snaps = list(embeddings_per_snapshot)
    if not snaps:
        raise ConfigError("fit_projection needs at least one snapshot of embeddings.")
    first = _as_matrix(snaps[-1], "the final snapshot's embeddings")
    dim = first.shape[1]
    xs = [_as_matrix(x, f"snapshot {i}'s embeddings", dim).reshape(-1, dim) for i, x in enumerate(snaps)]
    if prototypes_per_snapshot is None:
        protos: list[np.ndarray | None] = [None] * len(xs)
    else:
        protos = list(prototypes_per_snapshot)
        if len(protos) != len(xs):
            raise ConfigError(
                f"{len(protos)} prototype sets were given for {len(xs)} snapshots; give one per snapshot."
            )
        protos = [None if p is None else _as_matrix(p, f"snapshot {i}'s prototypes", dim)
                  for i, p in enumerate(protos)]

    # All rows in one matrix: the clip blocks of every snapshot, then the prototype blocks.
    blocks = xs + [p for p in protos if p is not None]
    offsets = np.cumsum([0] + [len(b) for b in blocks])
    all_rows = np.concatenate(blocks) if offsets[-1] else np.zeros((0, dim))
    last = len(xs) - 1
    final = np.arange(offsets[last], offsets[last + 1])
    earlier = np.arange(0, offsets[last])
    proto_ids = [s for s, p in enumerate(protos) if p is not None]
    proto_block = {s: len(xs) + j for j, s in enumerate(proto_ids)}
    rng = np.random.default_rng(random_state)

    def sample(rows: np.ndarray, n: int) -> np.ndarray:
        return rows if len(rows) <= n else np.sort(rng.choice(rows, size=n, replace=False))

    if reference == "final":
        fit_clips = sample(final, max_fit_points)
    else:  # every snapshot, the final one with at most half of the budget when earlier ones compete
        n_final = min(len(final), max(max_fit_points // 2, max_fit_points - len(earlier)))
        fit_clips = np.concatenate([sample(earlier, max_fit_points - n_final), sample(final, n_final)])
    # Prototypes are not fitted: the prototypes of successive snapshots are each other's nearest
    # neighbours, so UMAP gave them islands of their own away from the clips. Placed like any other
    # extra row, among the clips nearest to them, a star shows where its emotion's clips are.
    fit_index = np.asarray(fit_clips, dtype=np.int64)
    fit_matrix = all_rows[fit_index]
    n_fit = len(fit_matrix)

    # The size that matters for UMAP's neighbour graph is one snapshot's, not the stacked total.
    n_points = len(xs[-1]) + (0 if protos[-1] is None else len(protos[-1]))
    if dim <= 2:
        chosen = "identity"
    elif method == "pca" or (method == "auto" and n_points < min_umap_points):
        chosen = "pca"
    elif n_fit < 4:  # UMAP cannot work at all below this, even when asked for explicitly
        chosen = "pca"
    else:
        chosen = "umap"

    placed = np.zeros((len(all_rows), 2))
    if chosen == "identity":
        placed[:, :dim] = all_rows
    elif chosen == "pca":
        mean, basis = _pca_2d(fit_matrix if n_fit else np.zeros((1, dim)))
        placed = (all_rows - mean) @ basis
    else:
        fitted_xy = _umap_fit(fit_matrix, n_neighbors, min_dist, metric, random_state, n_epochs)
        placed[fit_index] = fitted_xy
        rest = np.setdiff1d(np.arange(len(all_rows)), fit_index, assume_unique=True)
        if len(rest):
            placed[rest] = extend_embedding(all_rows[rest], fit_matrix, fitted_xy, n_neighbors, metric)

    coords = tuple(placed[offsets[s] : offsets[s + 1]] for s in range(len(xs)))
    pcoords = tuple(
        None if s not in proto_block else placed[offsets[proto_block[s]] : offsets[proto_block[s] + 1]]
        for s in range(len(xs))
    )
    return Projection(method=chosen, coords=coords, prototype_coords=pcoords)


def project_snapshots(
    snapshots: Sequence[Any], emotions: Sequence[str], *, max_replay_points: int | None = MAX_REPLAY_POINTS,
    **options: Any,
) -> tuple[pd.DataFrame, pd.DataFrame, Projection]:
    """Project the method's training snapshots and return long tables ready for plotting.

    ``snapshots`` are objects with ``.step``, ``.clip_ids``, ``.embeddings [N, d]`` and
    ``.prototypes [C, d]`` (``sere_core.method.Snapshot``); ``emotions`` names the prototype rows.
    Returns ``(snapshot_frames, prototype_frames, projection)`` where ``snapshot_frames`` has columns
    ``step, clip_id, x, y`` and ``prototype_frames`` has ``step, emotion, x, y``. The final snapshot
    keeps every clip; when an earlier one holds more than ``max_replay_points`` clips, the earlier
    ones keep the same seeded sample of the final snapshot's clips (``None`` keeps everything), so
    a 100,000-clip replay stays affordable to compute, store and draw. ``options`` go to
    :func:`fit_projection`.
    """
    snaps = list(snapshots)
    if not snaps:
        raise ConfigError("There are no training snapshots to project yet.")
    protos = [getattr(s, "prototypes", None) for s in snaps]
    for s, p in zip(snaps, protos):
        if p is not None and len(p) != len(emotions):
            raise ConfigError(
                f"Snapshot at step {s.step} has {len(p)} prototypes for {len(emotions)} emotions."
            )
    ids = [[str(c) for c in s.clip_ids] for s in snaps]
    embeddings = [np.asarray(s.embeddings) for s in snaps]
    for s, i, x in zip(snaps, ids, embeddings):
        if len(i) != len(x):
            raise ConfigError(f"Snapshot at step {s.step} has {len(i)} clip ids for {len(x)} embeddings.")
    if max_replay_points is not None and any(len(i) > max_replay_points for i in ids[:-1]):
        rng = np.random.default_rng(options.get("random_state", 0))
        pick = rng.choice(len(ids[-1]), size=min(max_replay_points, len(ids[-1])), replace=False)
        keep = {ids[-1][j] for j in pick}
        for n in range(len(snaps) - 1):
            rows = [j for j, c in enumerate(ids[n]) if c in keep]
            ids[n], embeddings[n] = [ids[n][j] for j in rows], embeddings[n][rows]
    projection = fit_projection(embeddings, protos, **options)
    rows = [pd.DataFrame({"step": int(s.step), "clip_id": i, "x": xy[:, 0], "y": xy[:, 1]})
            for s, i, xy in zip(snaps, ids, projection.coords)]
    prow = []
    for s, pxy in zip(snaps, projection.prototype_coords):
        if pxy is not None:
            prow.append(pd.DataFrame({"step": int(s.step), "emotion": list(emotions),
                                      "x": pxy[:, 0], "y": pxy[:, 1]}))
    snapshot_frames = pd.concat(rows, ignore_index=True)
    prototype_frames = (pd.concat(prow, ignore_index=True) if prow
                        else pd.DataFrame(columns=["step", "emotion", "x", "y"]))
    return snapshot_frames, prototype_frames, projection


_WARMED = threading.Event()


def warm_up_umap() -> float:
    """Run a tiny UMAP fit so numba compiles its kernels; returns the seconds it took.

    Uses the same settings as :func:`fit_projection`, so the compiled kernels are the ones it needs.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    fit_projection([x[:20], x[20:]], method="umap", n_neighbors=5, n_epochs=10)
    _WARMED.set()
    return time.perf_counter() - t0


def umap_is_warm() -> bool:
    """True once the warm-up has finished in this process."""
    return _WARMED.is_set()
