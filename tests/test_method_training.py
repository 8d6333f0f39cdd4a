"""SERE end to end on synthetic features: learning, progress, cancel, snapshots, persistence."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sere_core.benchmark.synthetic import make_task, unlabel
from sere_core.errors import ConfigError, ModelMismatchError, NotFittedError, TrainingCancelled, TrainingDataError
from sere_core.method import SERE, SEREConfig, Snapshot, TrainingProgress
from sere_core.method.training import embed_clips, pad

CFG = SEREConfig(ensemble=1, steps=40, pca_dim=16, hidden_dim=32, embed_dim=16, batch_unlabeled=64, refresh_every=10,
                 snapshot_every=20)


@pytest.fixture(scope="module")
def task():
    return make_task(5, 15, seed=7, signal=1.5, speaker_offset=0.3)


@pytest.fixture(scope="module")
def model(task):
    src, tgt = task
    return SERE(CFG).fit(src, unlabel(tgt))


def uar(model, clips):
    pred = [p.emotion for p in model.predict(clips)]
    return np.mean([np.mean([p == c.emotion for p, c in zip(pred, clips) if c.emotion == e])
                    for e in model.classes_])


def test_learns_a_cross_lingual_task(model, task):
    assert uar(model, task[1]) > 0.5


def test_predictions_carry_highlights_inside_the_clip(model, task):
    clip = task[1][0]
    pred = model.predict([clip])[0]
    assert pred.highlights and all(0 <= a < b <= clip.duration_s + 1e-6 for a, b in pred.highlights)
    assert pred.highlights == sorted(pred.highlights)


def test_transform_gives_unit_embeddings(model, task):
    z = model.transform(task[1][:5])
    assert z.shape == (5, CFG.embed_dim) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)


def test_progress_and_snapshots(task):
    src, tgt = task
    seen: list[TrainingProgress] = []
    m = SERE(CFG).fit(src, unlabel(tgt), progress=seen.append)
    assert [p.step for p in seen] == list(range(1, CFG.steps + 1))
    assert all(p.total_steps == CFG.steps and "ll" in p.losses and p.elapsed_s >= 0 for p in seen)
    assert "lu" in seen[-1].losses and "uu" in seen[-1].losses  # the chain has ramped up
    assert "lu" not in seen[0].losses  # ... and was not there at the start
    assert [s.step for s in m.snapshots_] == [0, 20, 40]
    snap: Snapshot = m.snapshots_[-1]
    assert snap.embeddings.shape == (len(src) + len(tgt), CFG.embed_dim)
    assert snap.prototypes.shape == (4, CFG.embed_dim)
    assert snap.clip_ids[0] == src[0].clip_id and snap.clip_ids[-1] == tgt[-1].clip_id


def test_an_ensembles_last_snapshot_is_the_space_it_predicts_in(task):
    src, tgt = task
    m = SERE(replace(CFG, ensemble=2, steps=20)).fit(src, unlabel(tgt))
    snap = m.snapshots_[-1]
    assert snap.step == 20 and snap.embeddings.shape == (len(src) + len(tgt), 2 * CFG.embed_dim)
    assert np.allclose(snap.embeddings[len(src):], m.transform(tgt), atol=1e-5)
    assert np.allclose(snap.prototypes, m.prototypes_, atol=1e-6)


def test_cancel_raises_and_leaves_no_model(task, model):
    src, tgt = task
    m = SERE(CFG).fit(src, unlabel(tgt))
    with pytest.raises(TrainingCancelled):
        m.fit(src, unlabel(tgt), progress=lambda p: p.step < 5)
    with pytest.raises(NotFittedError):
        m.predict(tgt[:1])


def test_no_global_random_state_leaks(task):
    src, tgt = task
    torch.manual_seed(123)
    np.random.seed(123)
    expected_t, expected_n = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    SERE(replace(CFG, steps=5)).fit(src, unlabel(tgt))
    assert torch.equal(torch.rand(1), expected_t) and np.random.rand() == expected_n


def test_works_without_unlabeled_clips(task):
    src, tgt = task
    m = SERE(replace(CFG, steps=10)).fit(src)
    assert m.predict_proba(tgt).shape == (len(tgt), 4)


def test_ten_emotions_and_one_clip_for_some(task):
    emotions = tuple(f"e{i}" for i in range(10))
    src, tgt = make_task(2, 4, emotions=emotions, seed=1)
    src = src[::2] + src[1:4:2]  # one clip each, two for a few
    m = SERE(replace(CFG, steps=5)).fit(src, unlabel(tgt))
    assert m.classes_ == sorted(emotions)
    with pytest.raises(TrainingDataError, match="at most 10"):
        more = make_task(1, 1, emotions=emotions + ("e10",), seed=1)[0]
        SERE(CFG).fit(more)


def test_rejects_mismatched_features(task):
    src, tgt = task
    from sere_core.method import ClipFeatures

    odd = ClipFeatures("odd", np.zeros((5, 7), np.float32), 50.0)
    with pytest.raises(TrainingDataError, match="features per frame"):
        SERE(CFG).fit(src, [odd])
    nan = ClipFeatures("nan", np.full((5, src[0].frames.shape[1]), np.nan, np.float32), 50.0)
    with pytest.raises(TrainingDataError, match="NaN"):
        SERE(CFG).fit(src, [nan])


class Info:
    def __init__(self, name="whisper-base", version="v1", dim=32, layers=(3, 6)):
        self.name, self.version, self.dim, self.layers, self.frame_rate = name, version, dim, layers, 50.0


def test_save_load_round_trip_and_mismatch(tmp_path, task):
    src, tgt = task
    info = {"name": "whisper-base", "version": "v1", "dim": 32, "layers": [3, 6], "frame_rate": 50.0}
    m = SERE(CFG).fit(src, unlabel(tgt), encoder=info)
    m.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    back = SERE.load(tmp_path / "m", expected_encoder=info, expected_classes=["sad", "angry", "happy", "neutral"])
    assert back.classes_ == m.classes_ and back.config == m.config
    assert np.allclose(back.predict_proba(tgt), m.predict_proba(tgt), atol=1e-5)
    assert [p.highlights for p in back.predict(tgt[:3])] == [p.highlights for p in m.predict(tgt[:3])]
    with pytest.raises(ModelMismatchError, match="hf:other"):
        SERE.load(tmp_path / "m", expected_encoder={**info, "name": "hf:other"})
    with pytest.raises(ModelMismatchError, match="dimensional"):
        back.check_compatible({**info, "dim": 768})
    with pytest.raises(ModelMismatchError, match="emotions"):
        back.check_compatible(None, ["angry", "calm"])
    with pytest.raises(ModelMismatchError, match="not a saved SERE model"):
        SERE.load(tmp_path / "nothing")


def _as_version_2(folder):
    """Rewrite a saved model of one view the way format version 2 wrote it: its columns as
    ``feature_range``, the size of its input as ``in_dim``, its PCA as the preprocessor's."""
    from safetensors.torch import load_file, save_file

    meta = json.loads((folder / "model.json").read_text())
    (view,) = meta["config"].pop("views") or [None]
    meta["config"]["feature_range"] = view
    (meta["in_dim"],) = meta.pop("in_dims")
    (folder / "model.json").write_text(json.dumps({**meta, "format_version": 2}))
    renamed = {"pre.view.0.mean": "pre.pca.mean", "pre.view.0.components": "pre.pca.components"}
    save_file({renamed.get(k, k): v for k, v in load_file(folder / "model.safetensors").items()},
              folder / "model.safetensors")
    return folder


def _as_version_1(folder, drop=("ensemble", "highlight_window", "highlight_edges"), **settings):
    """Rewrite a saved model the way format version 1 wrote it: settings added since missing, the
    deleted settings present (at the values SERE kept unless given), a PCA scale of ones."""
    from safetensors.torch import load_file, save_file

    from sere_core.method.config import REMOVED_SETTINGS

    meta = json.loads(_as_version_2(folder).joinpath("model.json").read_text())
    meta["format_version"] = 1
    meta["config"] = {k: v for k, v in meta["config"].items() if k not in drop}
    meta["config"].update({**REMOVED_SETTINGS, **settings})
    (folder / "model.json").write_text(json.dumps(meta))
    tensors = load_file(folder / "model.safetensors")
    tensors["pre.pca.scale"] = torch.ones(tensors["pre.pca.components"].shape[0])
    save_file(tensors, folder / "model.safetensors")
    return tensors


@pytest.mark.parametrize("saved, drop", [
    # saved before seed ensembles and windowed highlights: one model with frame highlights
    (dict(ensemble=1, highlight_window=1, tau_a=1.0), ("ensemble", "highlight_window", "highlight_edges")),
    # saved with windowed highlights, averaged over the frames a window has at the clip's edges
    (dict(ensemble=2, highlight_window=6, tau_a=0.5, highlight_edges="clip"), ("highlight_edges",)),
])
def test_a_version_1_model_loads_as_the_model_it_was(tmp_path, task, saved, drop):
    src, tgt = task
    old = SERE(replace(CFG, **saved)).fit(src, unlabel(tgt))
    _as_version_1(old.save(tmp_path / "old"), drop=drop)
    back = SERE.load(tmp_path / "old")
    assert {k: getattr(back.config, k) for k in saved} == saved
    assert back.config.highlight_edges == "clip" != SEREConfig().highlight_edges
    assert np.allclose(back.predict_proba(tgt), old.predict_proba(tgt), atol=1e-6)
    assert [p.highlights for p in back.predict(tgt[:5])] == [p.highlights for p in old.predict(tgt[:5])]
    again = SERE.load(back.save(tmp_path / "new"))  # saved again as version 3
    assert json.loads((tmp_path / "new" / "model.json").read_text())["format_version"] == 3
    assert np.allclose(again.predict_proba(tgt), old.predict_proba(tgt), atol=1e-6)


def test_a_version_1_model_that_used_a_deleted_option_names_the_commit_that_reads_it(tmp_path, model):
    from safetensors.torch import save_file

    _as_version_1(model.save(tmp_path / "edges"), conv_edges="replicate", uu_im=1.0)
    with pytest.raises(ModelMismatchError, match=r"conv_edges='replicate', uu_im=1.0.*research/2026-12"):
        SERE.load(tmp_path / "edges")
    tensors = _as_version_1(model.save(tmp_path / "whitened"))
    tensors["pre.pca.scale"][0] = 2.0
    save_file(tensors, tmp_path / "whitened" / "model.safetensors")
    with pytest.raises(ModelMismatchError, match="whitened.*research/2026-12"):
        SERE.load(tmp_path / "whitened")


@pytest.mark.parametrize("views", [(), ((0, 20),)])
def test_a_version_2_model_loads_as_the_model_it_was(tmp_path, task, views):
    """Version 2 had one column range for every member (None: all) and one PCA."""
    src, tgt = task
    old = SERE(replace(CFG, ensemble=2, views=views)).fit(src, unlabel(tgt))
    back = SERE.load(_as_version_2(old.save(tmp_path / "old")))
    assert back.config == old.config and back.preprocessor_.out_dims == old.preprocessor_.out_dims
    assert np.allclose(back.predict_proba(tgt), old.predict_proba(tgt), atol=1e-6)
    assert [p.highlights for p in back.predict(tgt[:5])] == [p.highlights for p in old.predict(tgt[:5])]
    meta = json.loads((tmp_path / "old" / "model.json").read_text())
    meta["config"]["feature_range"] = [0, 10_000]  # more columns than the normalization holds
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="do not fit the normalization"):
        SERE.load(tmp_path / "old")


def test_a_version_3_model_is_read_strictly(tmp_path, model):
    """Version 3 holds every setting and only the arrays it uses: anything else is refused."""
    from safetensors.torch import load_file, save_file

    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    for config, message in (({k: v for k, v in meta["config"].items() if k != "tau_a"}, "missing: tau_a"),
                            ({**meta["config"], "uu_im": 0.0}, "unknown SERE settings: uu_im")):
        (folder / "model.json").write_text(json.dumps({**meta, "config": config}))
        with pytest.raises(ModelMismatchError, match=message):
            SERE.load(folder)
    (folder / "model.json").write_text(json.dumps(meta))
    tensors = load_file(folder / "model.safetensors")
    save_file({**tensors, "pre.pca.components": tensors["pre.view.0.components"].clone()}, folder / "model.safetensors")
    with pytest.raises(ModelMismatchError, match="normalization"):
        SERE.load(folder)


def test_an_ensemble_reads_its_members_as_one_space(tmp_path, task):
    src, tgt = task
    cfg = replace(CFG, steps=20, snapshot_every=10)
    seen: list[TrainingProgress] = []
    ens = SERE(replace(cfg, ensemble=3)).fit(src, unlabel(tgt), progress=seen.append)
    single = SERE(cfg).fit(src, unlabel(tgt))
    # member 0 is the single model of the same seed; the others differ
    first = ens.model_.members[0].state_dict()
    assert all(torch.equal(v, first[k]) for k, v in single.model_.state_dict().items())
    assert not torch.equal(ens.model_.members[1].net.inp.weight, first["net.inp.weight"])
    # one progress scale over the three members
    assert [p.step for p in seen] == list(range(1, 61)) and {p.total_steps for p in seen} == {60}
    assert len(ens.history_) == 60
    # embeddings and prototypes side by side, unit-norm; logits are the members' mean
    z = ens.transform(tgt)
    assert z.shape == (len(tgt), 3 * cfg.embed_dim) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert ens.prototypes_.shape == (len(ens.classes_), 3 * cfg.embed_dim)
    bias = np.mean([m.class_bias.numpy() for m in ens.model_.members], axis=0)
    logits = z @ ens.prototypes_.T / cfg.tau + bias
    assert np.allclose(np.argmax(logits, 1), np.argmax(ens.predict_proba(tgt), 1))
    assert [s.step for s in ens.snapshots_] == [0, 10, 20]
    assert all(s.embeddings.shape == (len(src) + len(tgt), 3 * cfg.embed_dim) for s in ens.snapshots_)
    assert np.allclose(np.linalg.norm(ens.snapshots_[-1].embeddings, axis=1), 1, atol=1e-5)
    assert np.allclose(ens.snapshots_[-1].embeddings[len(src):], z, atol=1e-5)
    assert uar(ens, tgt) > 0.6
    # each prediction says the share of the members that decide as the ensemble does (one model: None)
    batch = pad(ens._inputs(tgt))
    (view,) = ens.preprocessor_.transform(tgt)  # one view: every member reads it
    own = np.stack([embed_clips(m, pad(view))["logits"].argmax(-1).numpy() for m in ens.model_.members])
    share = (own == np.argmax(ens.predict_proba(tgt), 1)).mean(0)
    assert np.allclose([p.agreement for p in ens.predict(tgt)], share, atol=1e-4) and 0 < share.min() <= share.max() == 1
    assert {p.agreement for p in single.predict(tgt)} == {None}
    # clips of different lengths read in several chunks give what one chunk gives (an ensemble, a model)
    assert len(set(batch.lengths.tolist())) > 1
    for model, keys in ((ens, {"z", "logits", "a", "agree"}), (single, {"z", "logits", "a"})):
        inputs = pad(model._inputs(tgt))
        whole, chunked = embed_clips(model.model_, inputs), embed_clips(model.model_, inputs, chunk=3)
        assert whole.keys() == chunked.keys() == keys
        assert all(torch.allclose(whole[k], chunked[k], atol=1e-5) for k in whole)
    # saved and loaded as one model
    again = SERE.load(ens.save(tmp_path / "ens"))
    assert again.config.ensemble == 3
    assert np.allclose(again.predict_proba(tgt), ens.predict_proba(tgt), atol=1e-6)
    assert [p.highlights for p in again.predict(tgt[:3])] == [p.highlights for p in ens.predict(tgt[:3])]


def test_each_member_reads_its_own_view(tmp_path, task):
    """Member i of an ensemble on several views is the single model on view i mod n with seed
    seed + 1000 i: z-scoring is per column, and every view's PCA is fit on the same frames."""
    src, tgt = task
    views = ((0, 20), (8, 32), (4, 24))
    ens = SERE(replace(CFG, ensemble=4, views=views)).fit(src, unlabel(tgt))
    assert ens.preprocessor_.out_dims == [CFG.pca_dim] * 3
    assert [m.net.inp.in_features for m in ens.model_.members] == [CFG.pca_dim] * 4
    for i in (1, 3):
        alone = SERE(replace(CFG, views=(views[i % 3],), seed=CFG.seed + 1000 * i)).fit(src, unlabel(tgt))
        mine = ens.model_.members[i].state_dict()
        assert all(torch.allclose(v, mine[k], atol=1e-5) for k, v in alone.model_.state_dict().items())
    out = embed_clips(ens.model_, pad(ens._inputs(tgt)))
    per_view = ens.preprocessor_.transform(tgt)
    each = [embed_clips(m, pad(v))["logits"] for m, v in zip(ens.model_.members, [*per_view, per_view[0]])]
    assert torch.allclose(out["logits"], torch.stack(each).mean(0), atol=1e-5)
    again = SERE.load(ens.save(tmp_path / "views"))
    assert again.config.views == views
    assert np.allclose(again.predict_proba(tgt), ens.predict_proba(tgt), atol=1e-6)
    with pytest.raises(ConfigError, match="reach past the 32 columns"):
        SERE(replace(CFG, views=((0, 40),))).fit(src, unlabel(tgt))
