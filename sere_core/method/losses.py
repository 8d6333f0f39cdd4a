"""TRIC: the Triple-Resonance Interaction Chain, as pure tensor functions.

All terms act on highlight-pooled clip embeddings ``z [N, d]`` (unit norm) and their resonance
logits ``cos(z, mu) / tau`` ``[N, C]``:

- labeled-labeled (LL): prototype cross-entropy plus a supervised contrastive term, so the
  emotion-semantic structure built from the few shots stays discriminative;
- labeled-unlabeled (LU): unlabeled clips resonate with that structure: cross-entropy to their
  balanced (Sinkhorn-Knopp) and sharpened soft assignments, gated to the confident ones, plus
  class-conditional alignment of the unlabeled clips' emotion means with the prototypes;
- unlabeled-unlabeled (UU): structure discovery inside the target: two views of a clip must resonate
  with the same emotion (swapped balanced assignments), and nearest neighbours must agree.

``ramp`` chains them as a curriculum: the later terms fade in after the first has shaped the space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sere_core.method.model import l2_normalize


# --- balancing and targets -------------------------------------------------------------------------
@torch.no_grad()
def sinkhorn(logits: torch.Tensor, n_iters: int = 3, eps: float = 1.0,
             class_marginal: torch.Tensor | None = None) -> torch.Tensor:
    """Balanced soft assignments (Sinkhorn-Knopp, as in SwAV): ``logits [N, C]`` -> ``Q [N, C]``.

    Rows sum to 1; with enough iterations each column sums to ``N * class_marginal[c]`` (uniform by
    default), so no emotion can swallow the batch. ``eps`` divides the logits first (lower = harder).
    """
    n, c = logits.shape
    marginal = (torch.full((c,), 1.0 / c, dtype=logits.dtype) if class_marginal is None
                else class_marginal / class_marginal.sum())
    q = torch.softmax(logits.double() / eps - (logits.double() / eps).max(), dim=-1).T  # [C, N]
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-30) * marginal.double()[:, None]
        q = q / q.sum(dim=0, keepdim=True).clamp_min(1e-30) / n
    return (q * n).T.float()


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p ** (1 / T)`` renormalized over the last axis (T < 1 sharpens)."""
    p = p.clamp_min(1e-12) ** (1.0 / temperature)
    return p / p.sum(-1, keepdim=True)


def confident_mask(q: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep, for every emotion, the ``keep`` fraction of the clips assigned to it (by arg-max) with
    the highest assignment. ``q [N, C]`` -> bool ``[N]``. Per-emotion ranking keeps the gate balanced."""
    conf, hard = q.max(-1)
    out = torch.zeros_like(conf, dtype=torch.bool)
    for c in range(q.shape[1]):
        idx = torch.nonzero(hard == c).flatten()
        if len(idx) == 0:
            continue
        k = max(1, int(math.ceil(keep * len(idx))))
        out[idx[torch.argsort(conf[idx], descending=True)[:k]]] = True
    return out


def ramp(step: int, total: int, start: float, length: float) -> float:
    """Curriculum weight in [0, 1]: 0 before ``start * total``, then a sigmoid-shaped rise over
    ``length * total`` steps (1 afterwards)."""
    if total <= 0:
        return 1.0
    x = (step - start * total) / max(length * total, 1.0)
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    return float(math.exp(-5.0 * (1.0 - x) ** 2))


# --- labeled-labeled --------------------------------------------------------------------------------
def prototype_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of labeled clips against the prototypes: ``[N, C]``, ``[N]`` -> scalar."""
    return F.cross_entropy(logits, labels)


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020) over ``z [N, d]``: clips of one emotion attract, others repel.
    Clips without a positive partner are skipped; scalar (0 when none has one)."""
    z = l2_normalize(z)
    n = z.shape[0]
    sim = z @ z.T / tau
    eye = torch.eye(n, dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    has = pos.any(1)
    if not has.any():
        return z.sum() * 0.0
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    per_clip = -(log_prob * pos).sum(1) / pos.sum(1).clamp_min(1)
    return per_clip[has].mean()


# --- labeled-unlabeled ------------------------------------------------------------------------------
def soft_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``-sum_c q[c] log p[c]`` averaged (weighted) over clips: ``[N, C]``, ``[N, C]``, ``[N]``."""
    per = -(targets * F.log_softmax(logits, dim=-1)).sum(-1)
    if weights is None:
        return per.mean()
    return (per * weights).sum() / weights.sum().clamp_min(1e-8)


def prototype_alignment(z: torch.Tensor, q: torch.Tensor, prototypes: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Class-conditional alignment: the ``q``-weighted mean of the unlabeled ``z [N, d]`` for each
    emotion should point at that emotion's prototype ``[C, d]``. Scalar, mean of ``1 - cos`` over
    the emotions that received any mass."""
    w = q if weights is None else q * weights[:, None]
    mass = w.sum(0)  # [C]
    means = w.T @ l2_normalize(z)  # [C, d]
    cos = (l2_normalize(means) * l2_normalize(prototypes)).sum(-1)
    has = mass > 1e-6
    if not has.any():
        return z.sum() * 0.0
    return (1.0 - cos[has]).mean()


# --- unlabeled-unlabeled ----------------------------------------------------------------------------
def view_consistency(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Two views must resonate with the same emotion: each view is pulled toward the other's
    sharpened (detached) prediction. Unlike in-batch balanced clustering this cannot invent its own
    groups (such as speakers): it only makes the existing resonance robust to crops and dropped
    frames. -> scalar."""
    pa, pb = torch.softmax(logits_a.detach(), -1), torch.softmax(logits_b.detach(), -1)
    return 0.5 * (soft_ce(logits_a, sharpen(pb, temperature)) + soft_ce(logits_b, sharpen(pa, temperature)))
