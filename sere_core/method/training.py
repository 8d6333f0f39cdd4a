"""The SERE training loop, readable in one sitting.

Order of one run: embed the labeled clips and set each prototype to its emotion's mean; then for
every step: (every ``refresh_every`` steps) assign the whole unlabeled pool to emotions with
Sinkhorn-Knopp balancing, gate the confident clips and pull the prototypes toward them; draw views;
compute the TRIC terms with their curriculum weights; take one AdamW step; report progress; take a
snapshot when due.

Randomness comes from one ``torch.Generator`` seeded by ``config.seed``; dropout draws from torch's
global generator, which :func:`train` forks and seeds so a run neither depends on nor changes the
caller's random state. Cancelling: when ``progress`` returns ``False`` the loop raises
:class:`~sere_core.errors.TrainingCancelled` at once (the estimator then keeps no half-trained model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sere_core.errors import TrainingCancelled
from sere_core.method import losses as L
from sere_core.method.config import SEREConfig
from sere_core.method.data import Snapshot, TrainingProgress
from sere_core.method.model import SEREModel, balance_bias, l2_normalize

ProgressFn = Callable[[TrainingProgress], "bool | None"]


@dataclass
class Padded:
    """Clips padded to one length: ``x [N, T, D]``, ``mask [N, T]``, ``lengths [N]``."""

    x: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


def pad(arrays: Sequence[np.ndarray], dim: int | None = None) -> Padded:
    n = len(arrays)
    t = max((a.shape[0] for a in arrays), default=1)
    d = arrays[0].shape[1] if arrays else (dim or 1)
    x = torch.zeros(n, t, d)
    lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    for i, a in enumerate(arrays):
        x[i, : a.shape[0]] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return Padded(x, mask, lengths)


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    elapsed_s: float = 0.0


# --- small helpers ---------------------------------------------------------------------------------
def make_view(clips: Padded, idx: torch.Tensor, crop: int, frame_drop: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random crop of ``crop`` frames of each clip in ``idx`` with frames dropped at random.
    Returns ``x [B, L, D]`` and ``mask [B, L]``; every view keeps at least one real frame."""
    lengths = clips.lengths[idx]
    span = min(crop, int(lengths.max()))
    room = (lengths - span + 1).clamp_min(1)
    start = (torch.rand(len(idx), generator=gen) * room).long()
    pos = start[:, None] + torch.arange(span)[None, :]
    valid = pos < lengths[:, None]
    pos = torch.minimum(pos, lengths[:, None] - 1)
    x = clips.x[idx].gather(1, pos[..., None].expand(-1, -1, clips.x.shape[2]))
    keep = torch.rand(len(idx), span, generator=gen) >= frame_drop
    keep[:, 0] = True
    return x, valid & keep


@torch.no_grad()
def embed_clips(model: SEREModel, clips: Padded, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Eval-mode pass over whole clips: ``z [N, d]``, ``logits [N, C]``, ``a [N, T]`` (and an
    ensemble's ``agree [N]``)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for s in range(0, len(clips), chunk):
        t = int(clips.lengths[s : s + chunk].max())
        out = model(clips.x[s : s + chunk, :t], clips.mask[s : s + chunk, :t])
        out["a"] = torch.nn.functional.pad(out["a"], (0, clips.x.shape[1] - t))
        for key in ("z", "logits", "a", "agree"):  # not the frames (h, r): their length is the chunk's
            if key in out:
                parts.setdefault(key, []).append(out[key])
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def init_prototypes(model: SEREModel, labeled: Padded, labels: torch.Tensor) -> None:
    """Each prototype starts as the mean embedding of its emotion's labeled clips (mean-pooled,
    because no prototype exists yet to find highlights with)."""
    model.eval()
    h = model.net(labeled.x, labeled.mask)
    m = labeled.mask.float()
    z = l2_normalize((h * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    protos = torch.stack([z[labels == c].mean(0) for c in range(model.prototypes.shape[0])])
    model.prototypes.copy_(l2_normalize(protos))
    model.train()


@torch.no_grad()
def balanced_targets(model: SEREModel, unlabeled: Padded, cfg: SEREConfig, keep: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sinkhorn-balanced, sharpened assignments ``[N, C]`` of the whole pool, the confidence gate
    ``[N]`` (float 0/1) and the pool's embeddings ``[N, d]``."""
    out = embed_clips(model, unlabeled)
    q = L.sinkhorn(out["logits"] * model.tau, cfg.sinkhorn_iters, cfg.sinkhorn_eps)
    gate = L.confident_mask(q, keep).float()
    return L.sharpen(q, cfg.sharpen), gate, out["z"]


@torch.no_grad()
def refine_prototypes(model: SEREModel, z: torch.Tensor, q: torch.Tensor, gate: torch.Tensor,
                      momentum: float) -> None:
    """Move each prototype toward the mean of its confident unlabeled clips."""
    w = q * gate[:, None]
    has = w.sum(0) > 1e-6
    target = l2_normalize(w.T @ z)
    mixed = l2_normalize((1 - momentum) * model.prototypes + momentum * target)
    model.prototypes.copy_(torch.where(has[:, None], mixed, model.prototypes))


@torch.no_grad()
def keep_fraction(step: int, total: int, cfg: SEREConfig) -> float:
    start = cfg.lu_start * total
    frac = 0.0 if total <= start else min(1.0, max(0.0, (step - start) / (total - start)))
    return cfg.keep_start + (cfg.keep_end - cfg.keep_start) * frac


def take_snapshot(model: SEREModel, step: int, everything: Padded, clip_ids: tuple[str, ...]) -> Snapshot:
    z = embed_clips(model, everything)["z"]
    return Snapshot(step, clip_ids, z.numpy().copy(), l2_normalize(model.prototypes.detach()).numpy().copy())


# --- the loop ----------------------------------------------------------------------------------------
def train(model: SEREModel, labeled: Padded, labels: torch.Tensor, unlabeled: Padded | None,
          cfg: SEREConfig, progress: ProgressFn | None = None,
          snapshot_clips: tuple[Padded, tuple[str, ...]] | None = None) -> TrainResult:
    """Train ``model`` in place with the TRIC loss; see the module docstring for the order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _train(model, labeled, labels, unlabeled, cfg, progress, snapshot_clips)


def _train(model, labeled, labels, unlabeled, cfg, progress, snapshot_clips) -> TrainResult:
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult()
    init_prototypes(model, labeled, labels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    has_u = unlabeled is not None and len(unlabeled) > 1
    targets = gate = None
    if snapshot_clips is not None and cfg.snapshot_every:
        result.snapshots.append(take_snapshot(model, 0, *snapshot_clips))
    all_l = torch.arange(len(labeled))
    for step in range(1, cfg.steps + 1):
        w_lu = cfg.w_lu * L.ramp(step, cfg.steps, cfg.lu_start, cfg.ramp) if has_u else 0.0
        w_uu = cfg.w_uu * L.ramp(step, cfg.steps, cfg.uu_start, cfg.ramp) if has_u else 0.0
        if w_lu > 0 and (targets is None or step % cfg.refresh_every == 0):
            targets, gate, z_pool = balanced_targets(model, unlabeled, cfg, keep_fraction(step, cfg.steps, cfg))
            if cfg.proto_momentum > 0:
                refine_prototypes(model, z_pool, targets, gate, cfg.proto_momentum)

        # labeled-labeled: the structure from the shots
        x, m = make_view(labeled, all_l, cfg.crop_frames, cfg.frame_drop, gen)
        out_l = model(x, m)
        parts = {"ll": L.prototype_ce(out_l["logits"], labels)
                 + cfg.ll_supcon * L.supervised_contrastive(out_l["z"], labels, model.tau)}
        total = cfg.w_ll * parts["ll"]

        if w_lu > 0 or w_uu > 0:
            idx = torch.randperm(len(unlabeled), generator=gen)[: cfg.batch_unlabeled]
            o1 = model(*make_view(unlabeled, idx, cfg.crop_frames, cfg.frame_drop, gen))
            o2 = model(*make_view(unlabeled, idx, cfg.crop_frames, cfg.frame_drop, gen))
            if w_lu > 0:  # labeled-unlabeled: resonate with the labeled structure
                q, g = targets[idx], gate[idx]
                parts["lu"] = (0.5 * (L.soft_ce(o1["logits"], q, g) + L.soft_ce(o2["logits"], q, g))
                               + cfg.lu_align * L.prototype_alignment(o1["z"], q, model.prototypes, g))
                total = total + w_lu * parts["lu"]
            if w_uu > 0:  # unlabeled-unlabeled: two views agree
                parts["uu"] = L.view_consistency(o1["logits"], o2["logits"], cfg.sharpen)
                total = total + w_uu * parts["uu"]

        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

        losses = {k: float(v.detach()) for k, v in parts.items()}
        losses["total"] = float(total.detach())
        result.history.append(losses)
        snap = None
        if snapshot_clips is not None and cfg.snapshot_every and (
                step == cfg.steps or step % cfg.snapshot_every == 0):
            snap = take_snapshot(model, step, *snapshot_clips)
            result.snapshots.append(snap)
        if progress is not None:  # after the snapshot: the app draws it while training goes on
            verdict = progress(TrainingProgress(step, cfg.steps, losses, time.perf_counter() - t0, snap))
            if verdict is False:
                raise TrainingCancelled(f"training stopped at step {step} of {cfg.steps} on request")
    model.eval()
    if has_u and cfg.balance > 0:
        model.class_bias.copy_(cfg.balance * balance_bias(embed_clips(model, unlabeled)["logits"]))
    result.elapsed_s = time.perf_counter() - t0
    return result
