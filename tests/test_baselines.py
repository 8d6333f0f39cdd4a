"""Baselines: each does what its name says, on features where that is checkable."""

import numpy as np
import pytest

from sere_core.baselines import (
    BASELINES,
    KMeansHungarian,
    LabelSpreadingBaseline,
    LogisticRegressionBaseline,
    NearestPrototype,
    PrototypeRefinement,
)
from sere_core.baselines.base import balance_log_prior, sinkhorn_np, softmax
from sere_core.benchmark.synthetic import make_task, unlabel


@pytest.fixture(scope="module")
def easy():
    return make_task(5, 20, seed=11, signal=2.0, speaker_offset=0.1)


def uar(model, clips):
    pred = [p.emotion for p in model.predict(clips)]
    return np.mean([np.mean([p == c.emotion for p, c in zip(pred, clips) if c.emotion == e])
                    for e in model.classes_])


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_beats_chance_on_easy_features(name, easy):
    src, tgt = easy
    assert uar(BASELINES[name]().fit(src, unlabel(tgt)), tgt) > 0.5


def test_per_language_normalization_matters_for_nearest_prototype(easy):
    src, tgt = easy
    with_norm = uar(NearestPrototype().fit(src, unlabel(tgt)), tgt)
    without = uar(NearestPrototype(per_language_norm=False).fit(src, unlabel(tgt)), tgt)
    assert with_norm >= without


def test_utterance_features_are_mean_and_std_or_the_mean_alone(easy):
    from sere_core.errors import ConfigError
    from sere_core.method.normalization import pool_frames

    src, tgt = easy
    dim = src[0].frames.shape[1]
    both = NearestPrototype(standardize=False, per_language_norm=False).fit(src, unlabel(tgt))
    mean = NearestPrototype(standardize=False, per_language_norm=False, stats="mean").fit(src, unlabel(tgt))
    assert both.transform(tgt[:2]).shape == (2, 2 * dim) and mean.transform(tgt[:2]).shape == (2, dim)
    assert np.allclose(mean.transform(tgt[:2]), both.transform(tgt[:2])[:, :dim])
    (mu, sigma), = both.preprocessor_.stats.values()
    expected = ((pool_frames(tgt[0].frames, 1) - mu) / (sigma + 1e-8)).mean(0)
    assert np.allclose(mean.transform(tgt[:1])[0], expected, atol=1e-3)
    with pytest.raises(ConfigError, match="stats must be one of"):
        NearestPrototype(stats="median")


def test_kmeans_clusters_are_named_by_the_closest_prototypes(easy):
    src, tgt = easy
    m = KMeansHungarian().fit(src, unlabel(tgt))
    # the matching is a permutation: every emotion names exactly one cluster
    assert sorted(np.argmax(m.centroids_ @ m.centroids_.T, axis=1)) == list(range(4))


def test_prototype_refinement_moves_prototypes_toward_the_target(easy):
    src, tgt = easy
    refined = PrototypeRefinement(n_iter=10).fit(src, unlabel(tgt))
    fixed = PrototypeRefinement(n_iter=0).fit(src, unlabel(tgt))
    assert not np.allclose(refined.prototypes_, fixed.prototypes_)


def test_sinkhorn_np_balances():
    scores = np.exp(np.c_[np.full(30, 3.0), np.zeros(30)])
    scores[:, 1] += np.linspace(0, 1, 30)
    q = sinkhorn_np(scores, 50)
    assert np.allclose(q.sum(1), 1) and np.allclose(q.sum(0), 15, atol=0.5)


def test_balance_prior_evens_out_predictions():
    p = softmax(np.c_[np.linspace(0, 4, 50), np.zeros(50)])
    b = balance_log_prior(p)
    assert abs(softmax(np.log(p) + b).mean(0)[0] - 0.5) < 1e-3


def test_logreg_and_label_spreading_keep_class_order(easy):
    src, tgt = easy
    for cls in (LogisticRegressionBaseline, LabelSpreadingBaseline):
        m = cls().fit(src, unlabel(tgt))
        proba = m.predict_proba(tgt)
        assert m.classes_ == ["angry", "happy", "neutral", "sad"]
        assert np.allclose(proba.sum(1), 1, atol=1e-5)
