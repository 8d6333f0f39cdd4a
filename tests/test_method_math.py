"""The method's pure functions, on hand-made tensors (house style 8)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from sere_core.method import losses as L
from sere_core.method.data import ClipFeatures
from sere_core.method.model import (
    SEREModel,
    clip_logits,
    highlight_weights,
    l2_normalize,
    mean_weights,
    resonance_field,
    weighted_pool,
)
from sere_core.method.normalization import PreprocessConfig, Preprocessor, pool_frames
from sere_core.method.validation import spans_from_weights

E = torch.eye(3)  # three orthogonal unit prototypes


def test_resonance_field_is_cosine_over_tau():
    h = torch.tensor([[[2.0, 0, 0], [0, 0, 5.0]]])  # [1, 2, 3], unnormalized
    r = resonance_field(h, E, tau=0.5)
    assert r.shape == (1, 2, 3)
    assert torch.allclose(r[0, 0], torch.tensor([2.0, 0, 0]))
    assert torch.allclose(r[0, 1], torch.tensor([0, 0, 2.0]))


def test_highlight_pooling_weights_the_peaked_frames():
    flat = l2_normalize(torch.ones(3))
    h = torch.stack([flat, flat, E[1], flat])[None]  # frame 2 resonates fully with emotion 1
    r = resonance_field(h, E, tau=0.1)
    a = highlight_weights(r, torch.ones(1, 4, dtype=torch.bool), tau_a=1.0)
    assert torch.allclose(a.sum(-1), torch.ones(1))
    assert a[0].argmax() == 2 and a[0, 2] > 0.9
    z = weighted_pool(h, a)
    assert clip_logits(z, E, 0.1).argmax() == 1


def test_highlights_follow_the_peak_resonance():
    # hand-made resonance [1, 2 frames, 3 emotions]: frame 0 peaks at 5, frame 1 at 4
    r = torch.tensor([[[5.0, 5.0, 5.0], [4.0, 1.0, 1.0]]])
    a = highlight_weights(r, torch.ones(1, 2, dtype=torch.bool), tau_a=1.0)
    assert torch.allclose(a[0], torch.softmax(torch.tensor([5.0, 4.0]), -1))


def test_windowed_highlights_prefer_a_resonating_segment_to_one_spike():
    # resonance [1, 9 frames, 2 emotions]: frame 2 is an isolated spike (6), frames 5-7 resonate
    # steadily (4 each) and frame 8 is padding that would otherwise raise the segment's end
    peak = torch.tensor([1.0, 1.0, 6.0, 1.0, 1.0, 4.0, 4.0, 4.0, 9.0])
    r = torch.stack([peak, torch.zeros(9)], -1)[None]
    mask = torch.ones(1, 9, dtype=torch.bool)
    mask[0, 8] = False
    frame = highlight_weights(r, mask, tau_a=1.0)
    segment = highlight_weights(r, mask, tau_a=1.0, window=3)
    assert frame[0].argmax() == 2 and segment[0].argmax() in (6, 7)  # 3-frame means: 8/3 vs 4
    assert segment[0, 5:8].sum() > 0.5 > frame[0, 5:8].sum()
    assert segment[0, 8] == 0 and torch.isclose(segment.sum(), torch.tensor(1.0))
    assert torch.allclose(highlight_weights(r, mask, 1.0, window=1), frame)


def test_a_window_at_the_clip_edge_scores_only_the_frames_it_covers():
    # resonance [1, 8 frames, 2 emotions], the same everywhere but a little higher on frame 0 (a
    # clip's silent start often resonates so): averaged over the frames it has, the half-empty edge
    # window wins; counting the frames beyond the clip as zero, a window on the speech does
    peak = torch.tensor([4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0])
    r = torch.stack([peak, torch.zeros(8)], -1)[None]
    mask = torch.ones(1, 8, dtype=torch.bool)
    clip = highlight_weights(r, mask, tau_a=1.0, window=3, edges="clip")
    zero = highlight_weights(r, mask, tau_a=1.0, window=3)
    assert clip[0].argmax() == 0
    assert zero[0].argmax() == 1 and zero[0, 0] < zero[0, 2:7].min() and zero[0, 7] < zero[0, 2:7].min()
    assert torch.isclose(zero.sum(), torch.tensor(1.0))


def test_masks_ignore_padding():
    h = torch.stack([E[0], E[0], E[2], E[2]])[None]  # frames 2-3 are padding
    mask = torch.tensor([[True, True, False, False]])
    r = resonance_field(h, E, 0.1)
    a = highlight_weights(r, mask, 1.0)
    assert torch.all(a[0, 2:] == 0) and torch.isclose(a.sum(), torch.tensor(1.0))
    m = mean_weights(mask)
    assert torch.allclose(m, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    model = SEREModel(3, 2, 8, 4, context=3, dropout=0.0, tau=0.1, tau_a=1.0).eval()
    x = torch.randn(1, 4, 3)
    full = model(x, mask)["z"]
    x2 = x.clone()
    x2[0, 2:] = 100.0  # changing padded frames must not change the clip embedding
    assert torch.allclose(full, model(x2, mask)["z"], atol=1e-6)


def test_sinkhorn_balances_a_collapsed_assignment():
    logits = torch.zeros(60, 3)
    logits[:, 0] = 5.0  # everything prefers emotion 0
    logits += 0.1 * torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    q = L.sinkhorn(logits, n_iters=20, eps=1.0)
    assert torch.allclose(q.sum(1), torch.ones(60), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((3,), 20.0), atol=0.5)
    assert torch.softmax(logits, -1).sum(0)[0] > 55  # the raw one was collapsed


def test_sinkhorn_follows_a_given_marginal():
    q = L.sinkhorn(torch.randn(100, 2), n_iters=50, eps=1.0, class_marginal=torch.tensor([3.0, 1.0]))
    assert torch.allclose(q.sum(0), torch.tensor([75.0, 25.0]), atol=1.0)


def test_labeled_loss_is_lower_for_correct_prototypes():
    z = l2_normalize(torch.eye(3) + 0.1)
    labels = torch.tensor([0, 1, 2])
    right = L.prototype_ce(clip_logits(z, E, 0.1), labels)
    wrong = L.prototype_ce(clip_logits(z, E[[1, 2, 0]], 0.1), labels)
    assert right < wrong
    zz = torch.cat([z, z + 0.05])
    yy = torch.cat([labels, labels])
    assert L.supervised_contrastive(zz, yy, 0.1) < L.supervised_contrastive(zz, yy[torch.tensor([0, 1, 2, 1, 2, 0])], 0.1)
    assert L.supervised_contrastive(z, labels, 0.1) == 0  # no positive pairs at all


def test_soft_ce_weights_and_alignment():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert L.soft_ce(logits, t, torch.tensor([1.0, 0.0])) < L.soft_ce(logits, t, torch.tensor([0.0, 1.0]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.eye(2)
    assert L.prototype_alignment(z, q, torch.eye(2)) < 1e-6
    assert L.prototype_alignment(z, q, torch.eye(2)[[1, 0]]) > 0.9


def test_view_consistency_wants_the_two_views_to_agree():
    a = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    assert L.view_consistency(a, a, 0.5) < L.view_consistency(a, a.flip(0), 0.5)


def test_confident_mask_is_per_emotion():
    q = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    keep = L.confident_mask(q, 0.5)
    assert keep.tolist() == [True, True, False, True]


def test_ramp_is_a_curriculum():
    assert L.ramp(0, 100, 0.2, 0.2) == 0.0
    assert 0 < L.ramp(30, 100, 0.2, 0.2) < 1
    assert L.ramp(50, 100, 0.2, 0.2) == 1.0


def test_pool_frames_and_spans():
    f = np.arange(14, dtype=np.float32).reshape(7, 2)
    p = pool_frames(f, 3)
    assert p.shape == (3, 2) and np.allclose(p[-1], f[-1])
    w = np.array([0.0, 0.3, 0.3, 0.0, 0.0, 0.4])
    assert spans_from_weights(w, 12, 2, 50.0, 0.5) == [(0.04, 0.12), (0.2, 0.24)]


def _clip(i, lang, speaker, frames):
    return ClipFeatures(f"c{i}", frames.astype(np.float32), 50.0, lang, speaker)


def test_per_language_normalization_removes_the_offset():
    rng = np.random.default_rng(0)
    clips = [_clip(i, "de", "a", rng.normal(5, 2, (10, 4))) for i in range(5)]
    clips += [_clip(10 + i, "it", "b", rng.normal(-3, 0.5, (10, 4))) for i in range(5)]
    pre = Preprocessor(PreprocessConfig(target_frame_rate=50.0)).fit(clips)
    (out,) = pre.transform(clips)
    de, it = np.concatenate(out[:5]), np.concatenate(out[5:])
    assert np.allclose(de.mean(0), 0, atol=1e-4) and np.allclose(it.std(0), 1, atol=0.05)
    glob = Preprocessor(PreprocessConfig(target_frame_rate=50.0, per_language=False)).fit(clips).transform(clips)[0]
    assert np.abs(np.concatenate(glob[:5]).mean(0)).min() > 0.5


def test_per_speaker_normalization_and_unseen_groups():
    rng = np.random.default_rng(1)
    clips = [_clip(i, "de", f"s{i % 2}", rng.normal(3 * (i % 2), 1, (30, 3))) for i in range(8)]
    pre = Preprocessor(PreprocessConfig(target_frame_rate=50.0, per_speaker=True, min_speaker_frames=10)).fit(clips)
    (out,) = pre.transform(clips)
    s1 = np.concatenate([o for o, c in zip(out, clips) if c.speaker == "s1"])
    assert np.allclose(s1.mean(0), 0, atol=1e-4)
    # an unseen language, alone: falls back to the global statistics (finite, not its own z-score)
    (new,) = pre.transform([_clip(99, "xx", None, rng.normal(0, 1, (5, 3)))])
    assert np.isfinite(new[0]).all()


def test_pca_projects_to_the_requested_size():
    rng = np.random.default_rng(2)
    clips = [_clip(i, "de", None, rng.normal(size=(12, 10))) for i in range(6)]
    pre = Preprocessor(PreprocessConfig(target_frame_rate=50.0, pca_dim=4)).fit(clips)
    (out,) = pre.transform(clips)
    assert out[0].shape == (12, 4) and pre.out_dims == [4]


def test_each_view_is_its_columns_projected_by_a_pca_of_its_own():
    """A view's output is what a preprocessor of its columns alone gives (z-scores are per column,
    and every view's PCA is fit on the same frames)."""
    rng = np.random.default_rng(3)
    clips = [_clip(i, "de" if i % 2 else "it", None, rng.normal(i % 3, 1 + i % 2, size=(12, 10))) for i in range(6)]
    cfg = PreprocessConfig(target_frame_rate=50.0, pca_dim=3, feature_range=(2, 10), views=((0, 4), (2, 8)))
    pre = Preprocessor(cfg).fit(clips)
    both = pre.transform(clips)
    assert pre.out_dims == [3, 3] and len(both) == 2
    for (start, stop), got in zip(cfg.views, both):
        alone = Preprocessor(replace(cfg, feature_range=(2 + start, 2 + stop), views=())).fit(clips).transform(clips)[0]
        assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(alone, got))


@pytest.mark.parametrize("bad", [{"pooling": "max"}, {"tau": 0}, {"dropout": 1.0}, {"views": ((5, 2),)}, {"views": ((0, 4), 5)},
                                 {"w_uu": -1.0}, {"highlight_edges": "pad"}])
def test_config_rejects_bad_values(bad):
    from sere_core.errors import ConfigError
    from sere_core.method import SEREConfig

    with pytest.raises(ConfigError):
        SEREConfig(**bad)
