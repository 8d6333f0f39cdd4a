"""The resonance embedding, the Instantaneous Resonance Field and emotional-highlight pooling.

Pure tensor functions first (shapes in their docstrings, tested directly), then the thin modules.
Notation: B clips, T frames, D input features, d embedding size, C emotions. ``mask [B, T]`` is
True on real frames and False on padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NEG = -1e9


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return F.normalize(x, dim=dim, eps=1e-8)


def resonance_field(h: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """IRF: ``r[b, t, c] = cos(h[b, t], mu[c]) / tau``. ``h [B, T, d]``, ``prototypes [C, d]`` ->
    ``[B, T, C]``."""
    return l2_normalize(h) @ l2_normalize(prototypes).T / tau


def highlight_weights(r: torch.Tensor, mask: torch.Tensor, tau_a: float, score: str = "peak",
                      window: int = 1, margin: int = 0) -> torch.Tensor:
    """Emotional highlights: ``a[b, t] = softmax_t(s[b, t] / tau_a)`` over real frames, where the
    frame score ``s`` is its peak resonance ``max_c r[b, t, c]`` (``"peak"``) or how far that peak
    stands above the frame's mean resonance, ``max_c r - mean_c r`` (``"contrast"``: a frame close to
    every prototype alike carries no emotion). With ``window > 1`` the resonance is first averaged
    over the ``window`` frames around each frame, so a highlight is a segment that resonates, not one
    noisy frame. The first and last ``margin`` frames of a clip get no weight (see :func:`inner_mask`).

    ``r [B, T, C]``, ``mask [B, T]`` -> ``a [B, T]`` (rows sum to 1, zero on padding). The score is
    detached so the weights pick frames without being a shortcut to lower the loss.
    """
    r = segment_mean(r.detach(), mask, window)
    s = r.max(dim=-1).values
    if score == "contrast":
        s = s - r.mean(dim=-1)
    inner = inner_mask(mask, margin)
    return torch.softmax((s / tau_a).masked_fill(~inner, NEG), dim=-1) * inner


def inner_mask(mask: torch.Tensor, margin: int) -> torch.Tensor:
    """``mask [B, T]`` without the first and last ``margin`` real frames of each clip (fewer where a
    clip is short, so at least one frame stays).

    >>> mask = torch.tensor([[True, True, True, True, False], [True, True, False, False, False]])
    >>> inner_mask(mask, 1).int().tolist()
    [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    """
    if margin <= 0:
        return mask
    first, last = real_span(mask)
    m = torch.clamp((last - first) // 2, max=margin)
    idx = torch.arange(mask.shape[1])[None, :]
    return mask & (idx >= (first + m)[:, None]) & (idx <= (last - m)[:, None])


def real_span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of each clip's first and last real frame: ``mask [B, T]`` -> ``[B]``, ``[B]``."""
    t = mask.shape[1]
    idx = torch.arange(t)
    return torch.where(mask, idx, t).min(dim=1).values, torch.where(mask, idx, -1).max(dim=1).values


def segment_mean(x: torch.Tensor, mask: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of ``x [B, T, C]`` over the real frames of the ``window`` around each frame (centred;
    an even window reaches one frame further back than forward).

    >>> x = torch.tensor([[[1.0], [2.0], [3.0], [9.0]]])
    >>> [round(v, 4) for v in segment_mean(x, torch.tensor([[True, True, True, False]]), 3)[0, :, 0].tolist()]
    [1.5, 2.0, 2.5, 3.0]
    """
    if window <= 1:
        return x
    m = mask.unsqueeze(1).to(x.dtype)  # [B, 1, T]
    pool = dict(kernel_size=window, stride=1, padding=window // 2, count_include_pad=False)
    sums = F.avg_pool1d(x.transpose(1, 2) * m, **pool)[..., : x.shape[1]]
    counts = F.avg_pool1d(m, **pool)[..., : x.shape[1]]
    return (sums / counts.clamp_min(1e-8)).transpose(1, 2)


def replicate_edges(u: torch.Tensor, mask: torch.Tensor, p: int) -> torch.Tensor:
    """``u [B, T, H]`` widened to ``[B, T + 2p, H]`` by repeating each clip's first frame before it
    and its last real frame after it (into its padding too), so a convolution sees a clip's edges
    as they sound, not as silence that was never there.

    >>> u = torch.tensor([[[1.0], [2.0], [0.0]]])
    >>> replicate_edges(u, torch.tensor([[True, True, False]]), 1)[0, :, 0].tolist()
    [1.0, 1.0, 2.0, 2.0, 2.0]
    """
    t = u.shape[1]
    last = real_span(mask)[1].clamp_min(0)  # [B]
    pos = torch.minimum(torch.arange(-p, t + p).clamp_min(0)[None, :], last[:, None])
    return u.gather(1, pos[..., None].expand(-1, -1, u.shape[2]))


def mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """Uniform weights over the real frames: ``mask [B, T]`` -> ``[B, T]`` (the ablation)."""
    m = mask.float()
    return m / m.sum(-1, keepdim=True).clamp_min(1.0)


def weighted_pool(h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Clip embedding ``z[b] = sum_t a[b, t] h[b, t]``: ``[B, T, d]``, ``[B, T]`` -> ``[B, d]``."""
    return torch.einsum("bt,btd->bd", a, h)


def clip_logits(z: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """``cos(z, mu_c) / tau``: ``[B, d]``, ``[C, d]`` -> ``[B, C]``; softmax gives p(c | x)."""
    return l2_normalize(z) @ l2_normalize(prototypes).T / tau


def balance_bias(logits: torch.Tensor, n_iters: int = 20) -> torch.Tensor:
    """A per-emotion logit offset ``[C]`` that makes the mean of ``softmax(logits + b)`` over the
    clips ``[N, C]`` uniform (prior correction, as in EM label-shift adjustment), centred to mean 0.

    >>> b = balance_bias(torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))
    >>> bool(torch.softmax(torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]]) + b, -1).mean(0).sub(0.5).abs().max() < 1e-3)
    True
    """
    c = logits.shape[1]
    b = torch.zeros(c, dtype=logits.dtype)
    for _ in range(n_iters):
        mean = torch.softmax(logits + b, dim=-1).mean(0)
        b = b - torch.log(mean.clamp_min(1e-12) * c)
    return b - b.mean()


class ResonanceNet(nn.Module):
    """g: frames ``[B, T, D]`` -> unit-norm frame embeddings ``[B, T, d]``.

    A frame-wise MLP with one depth-wise temporal convolution (residual) so that each embedded frame
    sees its neighbours' dynamics (pitch and loudness contours) without mixing in padding.
    """

    def __init__(self, in_dim: int, hidden_dim: int, embed_dim: int, context: int = 3,
                 dropout: float = 0.1, conv_edges: str = "zeros") -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.inp = nn.Linear(in_dim, hidden_dim)
        self.conv = nn.Conv1d(hidden_dim, hidden_dim, context, groups=hidden_dim) if context > 1 else None
        self.context, self.conv_edges = context, conv_edges
        self.out = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        u = F.gelu(self.inp(x)) * m
        if self.conv is not None:
            t, p = u.shape[1], self.context // 2
            edged = (replicate_edges(u, mask, p) if self.conv_edges == "replicate"
                     else F.pad(u, (0, 0, p, p)))
            u = u + F.gelu(self.conv(edged.transpose(1, 2))[..., :t].transpose(1, 2)) * m
        return l2_normalize(self.out(self.drop(u)))


class SEREModel(nn.Module):
    """g plus the emotion prototypes; ``forward`` returns every intermediate the losses need.

    ``class_bias [C]`` is added to the clip logits: zero while training, then set by
    :func:`balance_bias` so the unlabeled pool is not swamped by one emotion.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int, embed_dim: int, context: int,
                 dropout: float, tau: float, tau_a: float, pooling: str = "highlight",
                 highlight_score: str = "peak", highlight_window: int = 1, conv_edges: str = "zeros",
                 highlight_margin: int = 0) -> None:
        super().__init__()
        self.net = ResonanceNet(in_dim, hidden_dim, embed_dim, context, dropout, conv_edges)
        self.prototypes = nn.Parameter(torch.zeros(n_classes, embed_dim))
        # log-prior correction estimated on the unlabeled clips at the end of training (not trained)
        self.register_buffer("class_bias", torch.zeros(n_classes))
        self.tau, self.tau_a, self.pooling, self.highlight_score = tau, tau_a, pooling, highlight_score
        self.highlight_window, self.highlight_margin = highlight_window, highlight_margin

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(x, mask)  # [B, T, d]
        r = resonance_field(h, self.prototypes, self.tau)  # [B, T, C]
        if self.pooling == "highlight":
            a = highlight_weights(r, mask, self.tau_a, self.highlight_score, self.highlight_window,
                                  self.highlight_margin)
        else:
            a = mean_weights(mask)
        z = l2_normalize(weighted_pool(h, a))  # [B, d]
        logits = clip_logits(z, self.prototypes, self.tau) + self.class_bias
        return {"h": h, "r": r, "a": a, "z": z, "logits": logits}


class EnsembleModel(nn.Module):
    """Several :class:`SEREModel` (trained with different seeds) read as one resonance space.

    The clip embedding is the members' unit embeddings side by side, scaled by ``1/sqrt(n)``: it
    stays unit-norm and its cosine to the side-by-side prototypes is the members' mean cosine, so the
    field the app draws is the one that decides. Logits (bias included) and highlight weights are the
    members' means. Averaging seeds removes part of the variance of self-training on a few shots.
    """

    def __init__(self, members: list[SEREModel]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def prototypes(self) -> torch.Tensor:
        return side_by_side([l2_normalize(m.prototypes) for m in self.members])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Also ``agree [B]``: the share of the members whose own decision is the ensemble's (the app
        colours the clips they disagree on), from the same pass."""
        outs = [m(x, mask) for m in self.members]
        each = torch.stack([o["logits"] for o in outs])
        logits = each.mean(0)
        return {"z": side_by_side([o["z"] for o in outs]), "logits": logits,
                "a": torch.stack([o["a"] for o in outs]).mean(0),
                "agree": (each.argmax(-1) == logits.argmax(-1)).float().mean(0)}


def assemble(members: list[SEREModel]) -> SEREModel | EnsembleModel:
    """One member is the model itself; several are read as one :class:`EnsembleModel`."""
    return members[0] if len(members) == 1 else EnsembleModel(members)


def side_by_side(parts: list[torch.Tensor]) -> torch.Tensor:
    """Unit vectors ``[..., d]`` of each part, concatenated and scaled to unit norm:
    ``cos(side_by_side(u), side_by_side(v))`` is the mean of the parts' cosines.

    >>> u = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    >>> v = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])]
    >>> round(float(side_by_side(u) @ side_by_side(v)), 6)
    0.5
    """
    return torch.cat(parts, dim=-1) / math.sqrt(len(parts))
