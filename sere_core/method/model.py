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


def highlight_weights(r: torch.Tensor, mask: torch.Tensor, tau_a: float, window: int = 1,
                      edges: str = "zero") -> torch.Tensor:
    """Emotional highlights: ``a[b, t] = softmax_t(s[b, t] / tau_a)`` over real frames, where the
    frame score ``s`` is its peak resonance ``max_c r[b, t, c]``. With ``window > 1`` the resonance
    is first averaged over the ``window`` frames around each frame, so a highlight is a segment that
    resonates, not one noisy frame; ``edges`` is :func:`segment_mean`'s.

    ``r [B, T, C]``, ``mask [B, T]`` -> ``a [B, T]`` (rows sum to 1, zero on padding). The score is
    detached so the weights pick frames without being a shortcut to lower the loss.
    """
    s = segment_mean(r.detach(), mask, window, edges).max(dim=-1).values
    return torch.softmax((s / tau_a).masked_fill(~mask, NEG), dim=-1) * mask


def segment_mean(x: torch.Tensor, mask: torch.Tensor, window: int, edges: str = "zero") -> torch.Tensor:
    """Mean of ``x [B, T, C]`` over the ``window`` frames around each frame (centred; an even
    window reaches one frame further back than forward). ``edges="zero"``: frames beyond the clip
    count as zeros, so a window at an edge scores only as high as the speech it covers and a clip's
    (often silent) first and last frames cannot win on a half-empty average; ``"clip"``: the mean of
    the real frames the window covers.

    >>> x = torch.tensor([[[1.0], [2.0], [3.0], [9.0]]])
    >>> mask = torch.tensor([[True, True, True, False]])
    >>> [round(v, 4) for v in segment_mean(x, mask, 3)[0, :, 0].tolist()]
    [1.0, 2.0, 1.6667, 1.0]
    >>> [round(v, 4) for v in segment_mean(x, mask, 3, edges="clip")[0, :, 0].tolist()]
    [1.5, 2.0, 2.5, 3.0]
    """
    if window <= 1:
        return x
    m = mask.unsqueeze(1).to(x.dtype)  # [B, 1, T]
    pool = dict(kernel_size=window, stride=1, padding=window // 2, count_include_pad=edges == "zero")
    sums = F.avg_pool1d(x.transpose(1, 2) * m, **pool)[..., : x.shape[1]]
    if edges == "zero":
        return sums.transpose(1, 2)
    counts = F.avg_pool1d(m, **pool)[..., : x.shape[1]]
    return (sums / counts.clamp_min(1e-8)).transpose(1, 2)


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
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.inp = nn.Linear(in_dim, hidden_dim)
        self.conv = nn.Conv1d(hidden_dim, hidden_dim, context, groups=hidden_dim) if context > 1 else None
        self.context = context
        self.out = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        u = F.gelu(self.inp(x)) * m
        if self.conv is not None:
            t, p = u.shape[1], self.context // 2
            padded = F.pad(u, (0, 0, p, p))
            u = u + F.gelu(self.conv(padded.transpose(1, 2))[..., :t].transpose(1, 2)) * m
        return l2_normalize(self.out(self.drop(u)))


class SEREModel(nn.Module):
    """g plus the emotion prototypes; ``forward`` returns every intermediate the losses need.

    ``class_bias [C]`` is added to the clip logits: zero while training, then set by
    :func:`balance_bias` so the unlabeled pool is not swamped by one emotion.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int, embed_dim: int, context: int,
                 dropout: float, tau: float, tau_a: float, pooling: str = "highlight",
                 highlight_window: int = 1, highlight_edges: str = "zero") -> None:
        super().__init__()
        self.net = ResonanceNet(in_dim, hidden_dim, embed_dim, context, dropout)
        self.in_dim = in_dim  # the width of its input frames (EnsembleModel splits its frames by it)
        self.prototypes = nn.Parameter(torch.zeros(n_classes, embed_dim))
        # log-prior correction estimated on the unlabeled clips at the end of training (not trained)
        self.register_buffer("class_bias", torch.zeros(n_classes))
        self.tau, self.tau_a, self.pooling, self.highlight_window = tau, tau_a, pooling, highlight_window
        self.highlight_edges = highlight_edges

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(x, mask)  # [B, T, d]
        r = resonance_field(h, self.prototypes, self.tau)  # [B, T, C]
        if self.pooling == "highlight":
            a = highlight_weights(r, mask, self.tau_a, self.highlight_window, self.highlight_edges)
        else:
            a = mean_weights(mask)
        z = l2_normalize(weighted_pool(h, a))  # [B, d]
        logits = clip_logits(z, self.prototypes, self.tau) + self.class_bias
        return {"h": h, "r": r, "a": a, "z": z, "logits": logits}


class EnsembleModel(nn.Module):
    """Several :class:`SEREModel` (trained with different seeds, each on its view of the layers) read
    as one resonance space. Its frames ``x [B, T, sum D_i]`` are the members' inputs side by side.

    The clip embedding is the members' unit embeddings side by side, scaled by ``1/sqrt(n)``: it
    stays unit-norm and its cosine to the side-by-side prototypes is the members' mean cosine, so the
    field the app draws is the one that decides. Logits (bias included) and highlight weights are the
    members' means. Averaging seeds and views removes part of the variance of self-training on a few
    shots.
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
        parts = x.split([m.in_dim for m in self.members], dim=-1)
        outs = [m(part, mask) for m, part in zip(self.members, parts)]
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
