"""The protocol, the runner and the report, on synthetic data (and the real manifests when present)."""

import csv
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sere_core.benchmark import parse_seeds
from sere_core.benchmark import protocol as P
from sere_core.benchmark.protocol import BenchClip
from sere_core.benchmark.synthetic import make_corpus
from sere_core.method import SERE, SEREConfig
from sere_core.method.data import ClipFeatures

CORPORA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def fake_corpora(n=8, emotions=P.COMMON4 + ("fear",)):
    out = {}
    for i, name in enumerate(P.CORPORA):
        ems = emotions if name != "emodb" else emotions[:4] + ("boredom",)
        clips = make_corpus(name, n, emotions=ems, dim=8, frames=(8, 12), seed=i, n_speakers=4)
        out[name] = [BenchClip(name, c.clip_id, c) for c in clips]
    return out


def test_twelve_ordered_tasks():
    tasks = P.tasks()
    assert len(tasks) == 12 and len({(t.source, t.target) for t in tasks}) == 12
    assert P.Task("emodb", "casia").code == "B->C"


def test_episodes_follow_the_protocol():
    by = fake_corpora()
    task = P.Task("emodb", "casia")
    assert P.task_classes(by, task, "pairwise") == ("angry", "happy", "neutral", "sad")
    ep = P.make_episode(by, task, "common4", "5-per-class", seed=0)
    assert Counter(c.emotion for c in ep.labeled) == {e: 5 for e in P.COMMON4}
    assert all(c.language == "emodb" for c in ep.labeled)
    assert all(c.emotion is None for c in ep.unlabeled)  # labels never seen
    assert [c.clip_id for c in ep.unlabeled] == [c.clip_id for c in ep.test]
    assert len(ep.test) == 4 * 8
    again = P.make_episode(by, task, "common4", "5-per-class", seed=0)
    assert [c.clip_id for c in again.labeled] == [c.clip_id for c in ep.labeled]
    other = P.make_episode(by, task, "common4", "5-per-class", seed=1)
    assert [c.clip_id for c in other.labeled] != [c.clip_id for c in ep.labeled]


def test_five_in_total_covers_every_emotion_when_it_can():
    by = fake_corpora()
    for seed in range(5):
        ep = P.make_episode(by, P.Task("casia", "emovo"), "common4", "5-total", seed)
        counts = Counter(c.emotion for c in ep.labeled)
        assert sum(counts.values()) == 5 and set(counts) == set(P.COMMON4)
    emotions = tuple(f"e{i}" for i in range(7))
    pool = [BenchClip("x", c.clip_id, c) for c in make_corpus("x", 3, emotions=emotions, dim=4)]
    shots = P.sample_shots(pool, emotions, "5-total", np.random.default_rng(0))
    assert len(shots) == 5 and len({b.clip.emotion for b in shots}) == 5


def test_inductive_split_is_by_speaker():
    by = fake_corpora()
    ep = P.make_episode(by, P.Task("emodb", "ravdess"), "common4", "5-per-class", 0, inductive=True)
    seen = {c.speaker for c in ep.unlabeled}
    scored = {c.speaker for c in ep.test}
    assert seen and scored and not seen & scored


def test_metrics():
    cm = P.confusion(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert cm.tolist() == [[1, 1], [0, 2]]
    assert P.uar(cm) == 0.75 and P.accuracy(cm) == 0.75


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("100-101,7") == [100, 101, 7]


def test_runner_and_reports(tmp_path):
    from sere_core.benchmark import report as R
    from sere_core.benchmark.runner import BASELINE_PARAMS, Plan, make_method, run_plan

    by = fake_corpora()
    tasks = P.tasks(["emodb", "casia"])
    plan = Plan(tasks, ["common4"], ["5-per-class"], [0], ["nearest_prototype", "logreg_spk"])
    params = {name: {**p, "feature_range": None} for name, p in BASELINE_PARAMS.items()}  # 8 fake columns
    results = run_plan(plan, by, make=lambda name, seed: make_method(name, seed, baseline_params=params))
    assert len(results) == 4 and all(0 <= r.uar <= 1 for r in results)
    assert {r.early_highlights for r in results} == {None}  # baselines report no highlights
    # SERE's results say how many of the scored clips have a highlight starting in their first 0.1 s
    tiny = SEREConfig(ensemble=1, steps=3, pca_dim=4, hidden_dim=8, embed_dim=4, snapshot_every=0)
    sere = run_plan(Plan(tasks[:1], ["common4"], ["5-per-class"], [0], ["sere"]), by,
                    make=lambda name, seed: SERE(replace(tiny, seed=seed)))[0]
    assert 0 <= sere.early_highlights <= 1
    R.write_csv(results + [sere], "fake", tmp_path / "x.csv")
    rows = list(csv.DictReader((tmp_path / "x.csv").open()))
    assert list(rows[0])[:9] == ["method", "encoder", "class_set", "shots", "source", "target", "seed", "uar", "accuracy"]
    assert rows[0]["early_highlights"] == "" and float(rows[-1]["early_highlights"]) == round(100 * sere.early_highlights, 2)
    R.write_markdown(tmp_path / "x.md", results=results, inductive=[], ceilings={}, methods=["nearest_prototype", "logreg_spk"],
                     tasks=tasks, class_sets=["common4"], shots=["5-per-class"], seeds=[0], encoder="fake",
                     wall_s=1.0, command="test", chance={"common4": "25%"})
    text = (tmp_path / "x.md").read_text()
    assert "47.75" in text and "B->C" in text and "mean of 12" in text
    with pytest.raises(KeyError):
        make_method("nope", 0)
    assert make_method("sere_no_uu", 3).config.w_uu == 0 and make_method("sere_spk", 3).config.per_speaker_norm


@pytest.mark.corpus
@pytest.mark.skipif(not CORPORA_DIR.is_dir(), reason="../shared/corpora is absent (corpus-backed test)")
def test_protocol_on_the_real_manifests():
    """Class sets and shot draws on the real label distributions (dummy features, no audio)."""
    by = {}
    for name in P.CORPORA:
        with (CORPORA_DIR / name / "manifest.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        by[name] = [BenchClip(name, r["path"], ClipFeatures(f"{name}/{r['path']}", np.zeros((2, 2), np.float32),
                                                             12.5, r["language"], r["speaker"], r["emotion"]))
                    for r in rows]
    assert len(by["emodb"]) == 535 and len(by["ravdess"]) == 1439
    sizes = {t.code: len(P.task_classes(by, t, "pairwise")) for t in P.tasks()}
    assert sizes["B->C"] == 5 and sizes["E->O"] == 7 and sizes["C->E"] == 6
    assert "calm" not in P.task_classes(by, P.Task("ravdess", "emodb"), "pairwise")
    ep = P.make_episode(by, P.Task("ravdess", "emodb"), "common4", "5-per-class", 0)
    assert len(ep.unlabeled) == 127 + 71 + 79 + 62
    ep = P.make_episode(by, P.Task("emodb", "ravdess"), "common4", "5-per-class", 0, inductive=True)
    assert len({c.speaker for c in ep.unlabeled}) == 12


def test_benchmarked_sere_is_the_recommended_whisper_base_config():
    from sere_core.benchmark.runner import BENCH_SERE_CONFIG
    from sere_core.method import recommended_config

    info = {"name": "whisper-base", "version": "x", "dim": 3584, "layers": list(range(7)), "frame_rate": 50.0}
    assert recommended_config(info) == BENCH_SERE_CONFIG
    assert BENCH_SERE_CONFIG.views == ((1024, 2048), (1024, 2560), (512, 2048))
    assert recommended_config({"name": "hf:x", "dim": 768, "layers": [9]}).views == ()


def _result(method: str, code: str, seed: int, uar_: float, shots: str = "5-per-class"):
    from sere_core.benchmark.runner import Result

    task = next(t for t in P.tasks() if t.code == code)
    episode = P.Episode(task, "common4", shots, seed, P.COMMON4, [], [], [])
    return Result(method, "transductive", episode, uar_, uar_, np.zeros((4, 4), np.int64), 0.0)


def test_paired_difference_pairs_episodes_and_reads_the_noise(tmp_path):
    from sere_core.benchmark import report as R

    # the shots' draw moves both methods together (0.3 .. 0.7): paired, a steady +2 points stands out
    rs = []
    for seed, level in enumerate([0.3, 0.7, 0.4, 0.6, 0.5]):
        rs += [_result("sere", "B->C", seed, level + 0.02), _result("logreg", "B->C", seed, level),
               _result("sere_no_uu", "B->C", seed, level + 0.02 + (0.01 if seed % 2 else -0.01))]
    rs.append(_result("logreg", "B->C", 9, 0.9))  # no partner: not paired
    diff, se, n = R.paired_difference(rs, "sere", "logreg")
    assert n == 5 and diff == pytest.approx(2.0) and se == pytest.approx(0.0, abs=1e-9)
    assert R.reading(-3.0, 1.0) == "below" and R.reading(3.0, 1.0) == "above"
    assert R.reading(-1.0, 1.0).startswith("within noise") and R.reading(1.0, float("nan")) == "–"
    diff, _, n = R.paired_difference(rs, "sere", "nope")
    assert n == 0 and np.isnan(diff)

    R.write_ablation(tmp_path / "a.md", rs, ["sere", "sere_no_uu", "logreg"], P.tasks(), [0, 1, 2, 3, 4],
                     "fake", "test", 1.0)
    rows = {line.split(" | ")[0].strip("| "): line for line in (tmp_path / "a.md").read_text().splitlines()
            if line.startswith("| sere") or line.startswith("| logreg")}
    assert "within noise" in rows["sere_no_uu"] and "-0.2 ± 0.5" in rows["sere_no_uu"]
    assert "-2.0 ± 0.0 | below" in rows["logreg"]

    R.write_markdown(tmp_path / "m.md", results=rs, inductive=[], ceilings={}, methods=["sere", "logreg"],
                     tasks=P.tasks(), class_sets=["common4"], shots=["5-per-class"], seeds=list(range(5)),
                     encoder="fake", wall_s=1.0, command="test", chance={"common4": "25%"})
    assert "| common4 | 5-per-class | logreg | +2.0 ± 0.0 | above | 5 |" in (tmp_path / "m.md").read_text()
