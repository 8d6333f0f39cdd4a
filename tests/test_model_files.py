"""Saved model folders: a save killed at any moment keeps a loadable model, and a crafted
``model.json`` is refused with a clear message before anything is allocated (issue 14)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sere_core.benchmark.synthetic import make_task, unlabel
from sere_core.errors import ConfigError, SereError
from sere_core.method import SERE, SEREConfig

REPO = Path(__file__).resolve().parents[1]
TINY = SEREConfig(steps=3, pca_dim=8, hidden_dim=16, embed_dim=8, snapshot_every=3, ensemble=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two small models that differ (seeds 1 and 2), saved once for the module."""
    root = tmp_path_factory.mktemp("models")
    src, tgt = make_task(2, 3, seed=3)
    out = {}
    for seed in (1, 2):
        model = SERE(SEREConfig(**{**TINY.to_dict(), "seed": seed})).fit(src, unlabel(tgt))
        out[seed] = model.save(root / f"seed{seed}")
    return out


def _seed(folder: Path) -> int:
    return SERE.load(folder).config.seed


_SAVE_FOREVER = """
import sys
from sere_core.method import SERE
model = SERE.load(sys.argv[1])
print("ready", flush=True)
while True:
    model.save(sys.argv[2])
"""


@pytest.mark.slow
def test_a_save_killed_at_any_moment_leaves_the_old_model_or_the_new_one(tmp_path, models):
    """`sere fit --out DIR` over an existing model, killed while saving: DIR holds one of the
    two models, whole, every time; the next save leaves no temporary folder behind."""
    folder = tmp_path / "model"
    SERE.load(models[1]).save(folder)
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(models[2]), str(folder)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        seen.add(_seed(folder))  # loads: never neither, never a mix
    assert seen <= {1, 2} and 2 in seen
    SERE.load(models[1]).save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert _seed(folder) == 1


def test_a_model_is_not_saved_over_a_folder_of_other_files(tmp_path, models):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty .*notes.txt"):
        SERE.load(models[1]).save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _edit(meta: dict, path: str, value) -> dict:
    keys = path.split(".")
    target = meta
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return meta


CRAFTED = [  # (field, value written into model.json)
    ("in_dims", [30_000_000]),
    ("in_dims", [8] * 17),
    ("config.context", 1e7),
    ("config.hidden_dim", 10**7),
    ("config.ensemble", 100_000),
    ("config.num_threads", 1e6),
    ("config.highlight_window", 1e12),
    ("config.target_frame_rate", 1e-300),
    ("config.tau", 1e-300),  # these three would predict NaN
    ("config.tau_a", 1e-300),
    ("config.confidence_temperature", 1e-300),
    ("config.steps", True),
    ("config.views", [[0, 5]]),  # the normalization holds 32 columns
    ("encoder", "whisper-base"),
    ("encoder", {"name": "prosody", "dim": -5}),
    ("classes", ["happy"] * 3),
    ("n_features_in", "512"),
    ("n_features_in", 1000),
    ("frame_rate", "50"),
    ("format_version", True),
    ("preprocessor.groups", [["lang:de"]]),
    ("preprocessor.groups", ["lang:xx", "lang:yy", "lang:zz"]),  # no "*": all clips' statistics
    ("preprocessor.frame_rate", 100_000.0),
]
RAW = {  # what model.json holds, as text
    "nan frame_rate": lambda text: text.replace('"frame_rate": 50.0', '"frame_rate": NaN', 1),
    "infinite frame_rate": lambda text: text.replace('"frame_rate": 50.0', '"frame_rate": Infinity', 1),
    "5000-digit number": lambda text: text.replace('"in_dims": [', '"in_dims": [' + "9" * 5000 + ", ", 1),
    "deeply nested": lambda text: "[" * 100_000 + "]" * 100_000,
    "2 MB": lambda text: text + " " * 2_000_000,
}


def _load_within(folder: Path, seconds: float = 20.0) -> BaseException | None:
    """Load in a thread: a hang (a FIFO, a huge loop) fails the test instead of blocking it."""
    import threading

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            SERE.load(folder)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"loading {folder} did not finish within {seconds:.0f} s"
    return outcome[0]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(("field", "value"), CRAFTED, ids=[f"{f}={v!r:.24}" for f, v in CRAFTED])
def test_a_crafted_setting_is_refused_before_anything_is_built(tmp_path, models, field, value):
    folder = _copy(models[1], tmp_path / "model")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["frame_rate"] == 50.0  # RAW's replacements below rely on it
    (folder / "model.json").write_text(json.dumps(_edit(meta, field, value)))
    err = _load_within(folder)
    assert isinstance(err, SereError), repr(err)
    name = field.split(".")[-1]
    assert "model.json" in str(err) and (name in str(err) or name.replace("_", " ") in str(err)), str(err)


WEIGHTS = {  # what is changed in model.safetensors
    "nan prototype": lambda w: w["model.prototypes"].__setitem__((0, 0), np.nan),
    "infinite std": lambda w: w["pre.norm.0.std"].__setitem__(0, np.inf),
    "negative std": lambda w: w["pre.norm.1.std"].__setitem__(0, -1.0),
    "nan pca component": lambda w: w["pre.view.0.components"].__setitem__((0, 0), np.nan),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_weights_that_would_predict_nan_are_refused(tmp_path, models, case):
    from safetensors.numpy import load_file, save_file

    folder = _copy(models[1], tmp_path / "model")
    weights = load_file(folder / "model.safetensors")
    WEIGHTS[case](weights)
    save_file(weights, folder / "model.safetensors")
    err = _load_within(folder)
    assert isinstance(err, SereError) and "model.safetensors" in str(err), repr(err)


def test_a_swap_that_died_between_its_two_renames_is_undone_by_the_next_load(tmp_path, models, monkeypatch):
    """Where the file system cannot exchange two folders in one step, a save renames the old folder
    aside and the new one in; dying between the two leaves no DIR, and the next load puts the old back."""
    import sere_core.atomic as atomic

    folder = tmp_path / "model"
    SERE.load(models[1]).save(folder)
    new = SERE.load(models[2])
    real_rename, renames = os.rename, []

    def dies_second(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise OSError("killed between the renames")
        real_rename(src, dst)

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    monkeypatch.setattr(atomic.os, "rename", dies_second)
    with pytest.raises(OSError, match="killed"):
        new.save(folder)
    monkeypatch.undo()
    assert not folder.exists()
    assert _seed(folder) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("case", sorted(RAW))
def test_a_damaged_model_json_is_refused_with_a_message(tmp_path, models, case):
    folder = _copy(models[1], tmp_path / "model")
    path = folder / "model.json"
    path.write_text(RAW[case](path.read_text()))
    err = _load_within(folder)
    assert isinstance(err, SereError), repr(err)
    assert "model.json" in str(err) and len(str(err)) < 400, str(err)


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_a_fifo_in_a_model_folder_is_refused_at_once(tmp_path, models, name):
    folder = _copy(models[1], tmp_path / "model")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    err = _load_within(folder, seconds=10)
    assert isinstance(err, SereError) and "not a regular file" in str(err), repr(err)
