"""One contract for SERE and every baseline (house style 2)."""

import numpy as np
import pytest

from sere_core.baselines import BASELINES
from sere_core.benchmark.synthetic import make_task, unlabel
from sere_core.errors import NotFittedError, TrainingDataError
from sere_core.method import SERE, SEREConfig

SMALL = SEREConfig(steps=30, pca_dim=16, hidden_dim=32, embed_dim=16, batch_unlabeled=64,
                   refresh_every=10, snapshot_every=10)


def sere(seed=0):
    from dataclasses import replace

    return SERE(replace(SMALL, seed=seed))


def sere_ensemble(seed=0):
    from dataclasses import replace

    return SERE(replace(SMALL, seed=seed, ensemble=2, steps=15))


FACTORIES = {"sere": sere, "sere_ensemble": sere_ensemble, **{name: (lambda seed=0, cls=cls: cls(seed=seed)) for name, cls in BASELINES.items()}}


@pytest.fixture(scope="module")
def task():
    src, tgt = make_task(5, 12, seed=3, signal=1.5, speaker_offset=0.2)
    return src, tgt


@pytest.fixture(params=sorted(FACTORIES), scope="module")
def fitted(request, task):
    src, tgt = task
    return request.param, FACTORIES[request.param]().fit(src, unlabel(tgt))


def test_constructor_only_stores(request):
    for name, make in FACTORIES.items():
        est = make()
        assert not [k for k in vars(est) if k.endswith("_") and not k.startswith("_")], name


def test_not_fitted_raises(task):
    for name, make in FACTORIES.items():
        with pytest.raises(NotFittedError):
            make().predict(task[1][:2])
        with pytest.raises(NotFittedError):
            make().predict_proba(task[1][:2])


def test_fit_predict_shapes_and_classes(fitted, task):
    name, est = fitted
    _, tgt = task
    assert est.classes_ == ["angry", "happy", "neutral", "sad"]
    proba = est.predict_proba(tgt)
    assert proba.shape == (len(tgt), 4)
    assert np.allclose(proba.sum(1), 1, atol=1e-4)
    preds = est.predict(tgt)
    assert [p.emotion for p in preds] == [est.classes_[i] for i in proba.argmax(1)]
    assert all(set(p.probabilities) == set(est.classes_) for p in preds)
    assert all(abs(p.confidence - max(p.probabilities.values())) < 1e-6 for p in preds)
    uar = np.mean([np.mean([p.emotion == e for p, c in zip(preds, tgt) if c.emotion == e]) for e in est.classes_])
    assert uar > 0.4, f"{name}: UAR {uar:.2f} on an easy task"


def test_refit_forgets(task):
    src, tgt = task
    for name, make in FACTORIES.items():
        est = make().fit(src, unlabel(tgt))
        two = [c for c in src if c.emotion in ("angry", "sad")]
        est.fit(two, unlabel(tgt))
        assert est.classes_ == ["angry", "sad"], name
        assert est.predict_proba(tgt[:3]).shape == (3, 2), name


def test_five_clips_in_total_work(task):
    src, tgt = task
    five = [next(c for c in src if c.emotion == e) for e in ("angry", "happy", "neutral", "sad")]
    five.append([c for c in src if c.emotion == "angry"][1])
    for name, make in FACTORIES.items():
        est = make().fit(five, unlabel(tgt))
        assert est.predict_proba(tgt).shape == (len(tgt), 4), name


def test_deterministic_with_a_seed(task):
    src, tgt = task
    for name, make in FACTORIES.items():
        a = make(seed=1).fit(src, unlabel(tgt)).predict_proba(tgt)
        b = make(seed=1).fit(src, unlabel(tgt)).predict_proba(tgt)
        assert np.allclose(a, b, atol=1e-6), name


def test_bad_inputs_raise_clear_errors(task):
    src, tgt = task
    for name, make in FACTORIES.items():
        with pytest.raises(TrainingDataError, match="at least 2"):
            make().fit([c for c in src if c.emotion == "sad"], unlabel(tgt))
        with pytest.raises(TrainingDataError, match="no emotion"):
            make().fit(src + unlabel(tgt[:1]), unlabel(tgt[1:]))
