"""``benchmarks/dev_study.py``'s candidates run and do what their docstrings say (synthetic
features as wide as whisper-base's seven layers; the studies themselves run on the corpora)."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sere_core.benchmark.synthetic import make_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dev_study.py"


@pytest.fixture(scope="module")
def dev_study():
    spec = importlib.util.spec_from_file_location("dev_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dev_study"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["dev_study"]


@pytest.fixture(scope="module")
def task():
    emotions = ("angry", "happy", "neutral", "sad")
    src = make_corpus("de", 5, emotions=emotions, dim=7 * 512, frames=(20, 30), seed=0)
    tgt = make_corpus("en", 8, emotions=emotions, dim=7 * 512, frames=(20, 30), seed=1)
    return src, [replace(c, emotion=None) for c in tgt]


def test_every_variant_is_paired_with_a_known_reference(dev_study):
    assert all(v.against in dev_study.VARIANTS for v in dev_study.VARIANTS.values())
    assert {"sere", "sere_superb_L1-4", "sere_pseudo_spk8", "sere_edges_clip"} <= set(dev_study.VARIANTS)


@pytest.mark.parametrize("name", ["sere_superb_L1-4", "sere_pseudo_spk8", "sere_edges_clip",
                                  "sere_knn10_a0.5", "sere_fuse_logreg0.5", "sere_pseudo_spk8_null",
                                  "sere_pseudo_spk8_L1_null", "sere_views2"])
def test_candidates_fit_and_predict(dev_study, task, name):
    src, tgt = task
    model = dev_study.VARIANTS[name].make(0).fit(src, tgt)
    predictions = model.predict(tgt)
    assert len(predictions) == len(tgt) and {p.emotion for p in predictions} <= {c.emotion for c in src}


def test_the_superb_weights_are_learned(dev_study, task):
    src, tgt = task
    model = dev_study.VARIANTS["sere_superb_L1-4"].make(0).fit(src, tgt)
    for member in model.model_.members:
        w = torch.softmax(member.net.gain * member.net.p, 0).detach()
        assert w.shape == (4,) and torch.isclose(w.sum(), torch.tensor(1.0))
        assert (w - 0.25).abs().max() > 0.01  # moved from the equal-weight mean


def test_pseudo_speakers_z_score_the_target_and_leave_the_source(dev_study, task):
    src, tgt = task
    apply = dev_study.pseudo_speaker_norm(2)(src, tgt)
    a, b = dev_study.columns(2, 3)
    out = np.concatenate([apply(c).frames for c in tgt])
    assert out.shape[1] == b - a and abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.05
    assert np.array_equal(apply(src[0]).frames, src[0].frames[:, a:b])


def test_graph_smoothing_at_alpha_zero_is_sere(dev_study, task):
    src, tgt = task
    model = dev_study.VARIANTS["sere_knn10_a0.8"].make(0).fit(src, tgt)
    plain = [p.emotion for p in model.inner.predict(tgt)]
    model.alpha = 0.0  # no smoothing: SERE's own decisions
    assert [p.emotion for p in model.predict(tgt)] == plain


def test_fusion_at_weight_one_is_the_other_method(dev_study, task):
    src, tgt = task
    model = dev_study.VARIANTS["sere_fuse_logreg0.5"].make(0).fit(src, tgt)
    model.weight = 1.0
    theirs = [p.emotion for p in model.other.predict(tgt)]
    assert [p.emotion for p in model.predict(tgt)] == theirs


def test_emotion_directions_are_orthonormal_and_projected_out(dev_study, task):
    src, _ = task
    d = dev_study.emotion_directions([c.frames.mean(0) for c in src], [c.emotion for c in src])
    assert d.shape == (3, src[0].frames.shape[1]) and np.allclose(d @ d.T, np.eye(3), atol=1e-6)
    x = np.random.default_rng(0).normal(size=(5, d.shape[1]))
    assert np.allclose(dev_study.project_out(x, d) @ d.T, 0, atol=1e-8)


def test_a_study_runs_each_method_once_after_its_reference(dev_study):
    assert dev_study.study_order(["logreg"]) == ["logreg"]
    assert dev_study.study_order(["sere_L2-4", "sere", "logreg_L3"]) == ["sere", "sere_L2-4", "logreg", "logreg_L3"]
