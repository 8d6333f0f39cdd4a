"""``sere fit`` / ``sere predict`` / ``sere benchmark`` through click, on synthetic audio."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("sere_core.features")
sf = pytest.importorskip("soundfile")

from sere_core.cli.method import benchmark, fit, predict  # noqa: E402


def _tone(freq: float, loud: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.5 * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * (2 + seed % 3) * t)
    return (loud * env * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SERE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "audio").mkdir()
    styles = {"angry": (300, 0.8), "happy": (260, 0.6), "neutral": (140, 0.2), "sad": (110, 0.1)}
    rows = {"labeled.csv": [], "unlabeled.csv": []}
    for e, (freq, loud) in styles.items():
        for i in range(4):
            name = f"audio/{e}{i}.wav"
            sf.write(tmp_path / name, _tone(freq * (1 + 0.05 * i), loud, i), 16000)
            rows["labeled.csv" if i < 2 else "unlabeled.csv"].append([name, e, "xx", f"s{i % 2}"])
    for file, rs in rows.items():
        with (tmp_path / file).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "emotion", "language", "speaker"])
            w.writerows(rs)
    return tmp_path


@pytest.mark.slow
def test_fit_then_predict(folder):
    runner = CliRunner()
    res = runner.invoke(fit, [str(folder / "labeled.csv"), str(folder / "unlabeled.csv"), "--out",
                              str(folder / "model"), "--encoder", "prosody", "--steps", "10"])
    assert res.exit_code == 0, res.output
    from sere_core.method import SERE, SEREConfig

    model = SERE.load(folder / "model")  # what was left out is the configuration's: the benchmarked model
    assert model.config.ensemble == SEREConfig().ensemble > 1 and len(model.model_.members) == model.config.ensemble
    assert model.config.seed == SEREConfig().seed and model.config.steps == 10
    res = runner.invoke(predict, [str(folder / "model"), str(folder / "unlabeled.csv"), "--out",
                                  str(folder / "pred.csv")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((folder / "pred.csv").open()))
    assert len(rows) == 8
    assert {"path", "emotion", "confidence", "p_angry", "p_sad", "highlights"} <= set(rows[0])
    assert all(r["emotion"] in {"angry", "happy", "neutral", "sad"} for r in rows)


@pytest.mark.slow
def test_fit_an_ensemble(folder):
    from sere_core.method import SERE

    res = CliRunner().invoke(fit, [str(folder / "labeled.csv"), str(folder / "unlabeled.csv"), "--out",
                                   str(folder / "ens"), "--encoder", "prosody", "--steps", "4", "--ensemble", "2"])
    assert res.exit_code == 0, res.output
    model = SERE.load(folder / "ens")
    assert model.config.ensemble == 2 and len(model.model_.members) == 2 and len(model.history_) == 0
    res = CliRunner().invoke(fit, [str(folder / "labeled.csv"), str(folder / "unlabeled.csv"), "--out",
                                   str(folder / "bad"), "--encoder", "prosody", "--ensemble", "0"])
    assert res.exit_code != 0 and "--ensemble" in res.output


@pytest.mark.slow
def test_fit_refuses_unlabeled_training_clips(folder):
    (folder / "nolabel.csv").write_text("path\naudio/angry0.wav\naudio/sad0.wav\n")
    res = CliRunner().invoke(fit, [str(folder / "nolabel.csv"), str(folder / "labeled.csv"), "--out",
                                   str(folder / "m2"), "--encoder", "prosody", "--steps", "2"])
    assert res.exit_code != 0 and "emotion" in res.output


def test_benchmark_reports_missing_corpora(tmp_path):
    res = CliRunner().invoke(benchmark, ["--corpora", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "missing corpora" in res.output


@pytest.mark.slow
def test_predict_reads_the_audio_as_the_model_was_trained_on_it(folder):
    """A model trained on another whisper-base read-out than today's default (layers 2-3 before #47)
    predicts as it did: `sere predict` embeds with the layers the model names."""
    from sere_core.cli.method import _embed
    from sere_core.encoders import get_encoder
    from sere_core.method import SERE, SEREConfig

    encoder = get_encoder("whisper-base", layers=(2, 3))
    assert encoder.info.layers != get_encoder("whisper-base").info.layers
    labeled, _ = _embed(folder / "labeled.csv", encoder, folder, "embed")
    unlabeled, _ = _embed(folder / "unlabeled.csv", encoder, folder, "embed")
    model = SERE(SEREConfig(steps=5, ensemble=1, pca_dim=16)).fit(labeled, unlabeled, encoder=encoder.info)
    model.save(folder / "older")
    res = CliRunner().invoke(predict, [str(folder / "older"), str(folder / "unlabeled.csv"), "--out",
                                       str(folder / "older.csv")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((folder / "older.csv").open()))
    assert [r["emotion"] for r in rows] == [p.emotion for p in model.predict(unlabeled)]
