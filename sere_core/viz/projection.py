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
the replay stays consistent. Large sets fit on a seeded sample of ``max_fit_points`` rows and place
the rest with ``transform``. Everything uses a fixed ``random_state``.

``umap-learn`` compiles its numba kernels on first use (10-20 s, longer on a busy machine): call
``start_umap_warm_up()`` once when the app starts, never per request.
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


def _make_umap(n_fit: int, n_neighbors: int, min_dist: float, metric: str, random_state: int,
               n_epochs: int | None) -> Any:
    import umap  # optional heavy import, only where it is needed

    return umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, n_fit - 1)),
        min_dist=min_dist,
        metric=metric,
        init="pca",  # deterministic and robust when the graph has several components
        random_state=random_state,
        transform_seed=random_state,
        n_jobs=1,
        n_epochs=n_epochs,
        low_memory=True,
    )


def fit_projection(
    embeddings_per_snapshot: Sequence[np.ndarray],
    prototypes_per_snapshot: Sequence[np.ndarray | None] | None = None,
    *,
    method: Method = "auto",
    reference: Reference = "stacked",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    random_state: int = 0,
    max_fit_points: int = 3000,
    min_umap_points: int = 15,
    n_epochs: int | None = None,
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
    xs = [_as_matrix(x, f"snapshot {i}'s embeddings", dim) for i, x in enumerate(snaps)]
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

    # Every row of every block, as (block index, kind, row index): kind 0 = clips, 1 = prototypes.
    rng = np.random.default_rng(random_state)
    last = len(xs) - 1
    final_rows = [(last, 0, i) for i in range(len(xs[last]))]
    if len(final_rows) > max_fit_points:
        keep = np.sort(rng.choice(len(final_rows), size=max_fit_points, replace=False))
        final_rows = [final_rows[k] for k in keep]
    if reference == "final":
        candidates = final_rows
        proto_rows = [(last, 1, i) for i in range(0 if protos[last] is None else len(protos[last]))]
    else:  # the final snapshot always, earlier snapshots sampled into the remaining budget
        earlier = [(s, 0, i) for s, x in enumerate(xs[:-1]) for i in range(len(x))]
        budget = max_fit_points - len(final_rows)
        if len(earlier) > budget:
            keep = np.sort(rng.choice(len(earlier), size=max(budget, 0), replace=False))
            earlier = [earlier[k] for k in keep]
        candidates = earlier + final_rows
        proto_rows = [(s, 1, i) for s, p in enumerate(protos) if p is not None for i in range(len(p))]
    fit_keys = candidates + proto_rows

    def row(key: tuple[int, int, int]) -> np.ndarray:
        s, kind, i = key
        block = xs[s] if kind == 0 else protos[s]
        assert block is not None  # internal invariant: keys only name existing rows
        return block[i]

    fit_matrix = np.stack([row(k) for k in fit_keys]) if fit_keys else np.zeros((0, dim))
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

    fitted: dict[tuple[int, int, int], np.ndarray] = {}
    if chosen == "identity":
        def transform(m: np.ndarray) -> np.ndarray:
            out = np.zeros((len(m), 2))
            out[:, :dim] = m
            return out
    elif chosen == "pca":
        mean, basis = _pca_2d(fit_matrix if n_fit else np.zeros((1, dim)))

        def transform(m: np.ndarray) -> np.ndarray:
            return (m - mean) @ basis
    else:
        reducer = _make_umap(n_fit, n_neighbors, min_dist, metric, random_state, n_epochs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            emb = reducer.fit_transform(fit_matrix.astype(np.float32))
        fitted = {k: emb[j] for j, k in enumerate(fit_keys)}

        def transform(m: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module="umap")
                return np.asarray(reducer.transform(m.astype(np.float32)), dtype=np.float64)

    # Place every row: fitted rows keep their fitted position, all others go through one transform.
    all_keys = [(s, 0, i) for s, x in enumerate(xs) for i in range(len(x))]
    all_keys += [(s, 1, i) for s, p in enumerate(protos) if p is not None for i in range(len(p))]
    rest = [k for k in all_keys if k not in fitted]
    if rest:
        placed = transform(np.stack([row(k) for k in rest]))
        fitted.update({k: placed[j] for j, k in enumerate(rest)})

    coords = tuple(
        np.array([fitted[(s, 0, i)] for i in range(len(x))]).reshape(len(x), 2) for s, x in enumerate(xs)
    )
    pcoords = tuple(
        None if p is None else np.array([fitted[(s, 1, i)] for i in range(len(p))]).reshape(len(p), 2)
        for s, p in enumerate(protos)
    )
    return Projection(method=chosen, coords=coords, prototype_coords=pcoords)


def project_snapshots(
    snapshots: Sequence[Any], emotions: Sequence[str], **options: Any
) -> tuple[pd.DataFrame, pd.DataFrame, Projection]:
    """Project the method's training snapshots and return long tables ready for plotting.

    ``snapshots`` are objects with ``.step``, ``.clip_ids``, ``.embeddings [N, d]`` and
    ``.prototypes [C, d]`` (``sere_core.method.Snapshot``); ``emotions`` names the prototype rows.
    Returns ``(snapshot_frames, prototype_frames, projection)`` where ``snapshot_frames`` has columns
    ``step, clip_id, x, y`` and ``prototype_frames`` has ``step, emotion, x, y``.
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
    projection = fit_projection([s.embeddings for s in snaps], protos, **options)
    rows = []
    for s, xy in zip(snaps, projection.coords):
        ids = [str(c) for c in s.clip_ids]
        if len(ids) != len(xy):
            raise ConfigError(f"Snapshot at step {s.step} has {len(ids)} clip ids for {len(xy)} embeddings.")
        rows.append(pd.DataFrame({"step": int(s.step), "clip_id": ids, "x": xy[:, 0], "y": xy[:, 1]}))
    prow = []
    for s, pxy in zip(snaps, projection.prototype_coords):
        if pxy is not None:
            prow.append(pd.DataFrame({"step": int(s.step), "emotion": list(emotions),
                                      "x": pxy[:, 0], "y": pxy[:, 1]}))
    snapshot_frames = pd.concat(rows, ignore_index=True)
    prototype_frames = (pd.concat(prow, ignore_index=True) if prow
                        else pd.DataFrame(columns=["step", "emotion", "x", "y"]))
    return snapshot_frames, prototype_frames, projection


_WARM_LOCK = threading.Lock()
_WARM_THREAD: threading.Thread | None = None
_WARMED = threading.Event()


def warm_up_umap() -> float:
    """Run a tiny UMAP fit and transform so numba compiles its kernels; returns the seconds it took.

    Uses the same settings as :func:`fit_projection`, so the compiled kernels are the ones it needs.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    fit_projection([x[:20], x[20:]], method="umap", n_neighbors=5, n_epochs=10)
    _WARMED.set()
    return time.perf_counter() - t0


def start_umap_warm_up() -> threading.Thread:
    """Start :func:`warm_up_umap` once per process in a daemon thread (later calls return the same thread)."""
    global _WARM_THREAD
    with _WARM_LOCK:
        if _WARM_THREAD is None:
            def run() -> None:
                try:
                    warm_up_umap()
                except Exception:  # warming is an optimisation: a failure shows up later, at the real fit
                    pass

            _WARM_THREAD = threading.Thread(target=run, name="sere-umap-warm-up", daemon=True)
            _WARM_THREAD.start()
        return _WARM_THREAD


def umap_is_warm() -> bool:
    """True once the warm-up has finished in this process."""
    return _WARMED.is_set()
