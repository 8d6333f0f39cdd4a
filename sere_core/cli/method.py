"""``sere fit``, ``sere predict`` and ``sere benchmark``: thin wrappers over the library.

Each command owns its resources (encoder, cache, model) for its own run and reports progress with
tqdm on stderr; user errors become ``click.ClickException`` with the library's message.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click

from sere_core.cli.embed import echo_failures
from sere_core.encoders import DEFAULT_ENCODER


def _embed(source: Path, encoder, workdir: Path, desc: str):
    """Manifest/folder/zip -> (entries' clips as ClipFeatures, EmbeddedClips)."""
    from tqdm import tqdm

    from sere_core.cache import EmbeddingCache
    from sere_core.features import embed_manifest
    from sere_core.manifests import read_manifest
    from sere_core.method import ClipFeatures

    entries = read_manifest(source, workdir=workdir)
    if not entries:
        raise click.ClickException(f"{source}: no audio files found")
    bar = tqdm(total=len(entries), unit="file", desc=desc, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    result = embed_manifest(entries, encoder, EmbeddingCache(), progress=progress)
    bar.close()
    echo_failures(result.failures, f"{len(result.failures)} of {len(entries)} files in {source.name}")
    rate = float(result.encoder.frame_rate)
    feats = [ClipFeatures(c.clip_id, c.frames, rate, c.language, c.speaker, c.emotion) for c in result.clips]
    return feats, result.clips


def _unique(clips):
    """The same audio listed twice would share an id; keep the first."""
    seen, out = set(), []
    for c in clips:
        if c.clip_id not in seen:
            seen.add(c.clip_id)
            out.append(c)
    return out


@click.command()
@click.argument("labeled", type=click.Path(exists=True, path_type=Path))
@click.argument("unlabeled", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the trained model to.")
@click.option("--encoder", "encoder_name", default=DEFAULT_ENCODER, show_default=True, help="Encoder name.")
@click.option("--seed", default=None, type=int, help="Random seed of the training run (default: the configuration's).")
@click.option("--per-speaker/--no-per-speaker", default=None,
              help="Normalize each speaker on its own (needs a speaker column); default: the configuration's.")
@click.option("--steps", default=None, type=click.IntRange(1, 100000),
              help="Training steps (default: the tuned configuration's).")
@click.option("--ensemble", default=None, type=click.IntRange(1, 10),
              help="Models trained with different seeds and read as one (default: the configuration's, the "
                   "benchmarked model; fewer are faster and less accurate, see benchmarks/results/dev_study.md).")
def fit(labeled: Path, unlabeled: Path, out_dir: Path, encoder_name: str, seed: int | None,
        per_speaker: bool | None, steps: int | None, ensemble: int | None) -> None:
    """Train SERE on LABELED clips (a manifest with an emotion column) and UNLABELED clips.

    An option left out keeps the configuration's value (``recommended_config``): the model trained
    is the one the benchmark measured, with its calibrated confidence temperature."""
    from dataclasses import replace

    from tqdm import tqdm

    from sere_core.encoders import get_encoder
    from sere_core.errors import SereError
    from sere_core.method import SERE, recommended_config

    try:
        encoder = get_encoder(encoder_name)
        with tempfile.TemporaryDirectory(prefix="sere-fit-") as workdir:
            lab, _ = _embed(labeled, encoder, Path(workdir) / "l", "embed labeled")
            unl, _ = _embed(unlabeled, encoder, Path(workdir) / "u", "embed unlabeled")
        lab = _unique(lab)
        ids = {c.clip_id for c in lab}
        unl = [c for c in _unique(unl) if c.clip_id not in ids]
        unl = [replace(c, emotion=None) for c in unl]
        missing = [c for c in lab if not c.emotion]
        if missing:
            raise click.ClickException(f"{labeled}: {len(missing)} clips have no emotion label")
        given = {"seed": seed, "per_speaker_norm": per_speaker, "steps": steps, "ensemble": ensemble}
        config = recommended_config(encoder.info, **{k: v for k, v in given.items() if v is not None})
        bar = tqdm(total=config.steps * config.ensemble, unit="step", desc="train SERE", file=sys.stderr)

        def progress(p) -> None:
            bar.update(p.step - bar.n)
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.losses.items()})

        model = SERE(config).fit(lab, unl, progress=progress, encoder=encoder.info)
        bar.close()
        model.save(out_dir)
    except SereError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"trained on {len(lab)} labeled and {len(unl)} unlabeled clips "
               f"({', '.join(model.classes_)}); model written to {out_dir}")


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV file to write the predictions to.")
def predict(model_dir: Path, input_path: Path, out_path: Path) -> None:
    """Predict the emotion of every clip in INPUT (manifest CSV, folder or zip) with MODEL_DIR."""
    from sere_core.encoders import get_encoder
    from sere_core.errors import SereError
    from sere_core.method import SERE
    from sere_core.storage.export import write_csv

    try:
        model = SERE.load(model_dir)
        saved = model.encoder_ or {}
        if not saved.get("name"):
            raise click.ClickException(f"{model_dir}: the model does not name its encoder")
        # the read-out the model was trained on, which may be an earlier default (layers 2-3 before #47)
        encoder = get_encoder(saved["name"], **({"layers": tuple(saved["layers"])} if saved.get("layers") else {}))
        model.check_compatible(encoder.info)
        with tempfile.TemporaryDirectory(prefix="sere-predict-") as workdir:
            feats, embedded = _embed(input_path, encoder, Path(workdir), "embed")
        preds = model.predict(feats)
    except SereError as err:
        raise click.ClickException(str(err)) from err
    columns = ["path", "emotion", "confidence", *(f"p_{c}" for c in model.classes_), "highlights",
               "start_s", "end_s"]
    rows = [{"path": clip.path, "emotion": pred.emotion, "confidence": f"{pred.confidence:.4f}",
             **{f"p_{c}": f"{pred.probabilities[c]:.4f}" for c in model.classes_},
             "highlights": ";".join(f"{clip.start_s + a:.2f}-{clip.start_s + b:.2f}" for a, b in pred.highlights),
             "start_s": f"{clip.start_s:.2f}", "end_s": f"{clip.end_s:.2f}"}
            for clip, pred in zip(embedded, preds)]
    write_csv(out_path, rows, columns)  # cells a spreadsheet would run as formulas are neutralized
    click.echo(f"{len(preds)} predictions written to {out_path}")


@click.command()
@click.option("--corpora", "corpora_dir", default=lambda: os.environ.get("SERE_CORPORA", "../shared/corpora"),
              show_default="$SERE_CORPORA or ../shared/corpora", type=click.Path(path_type=Path),
              help="Folder with emodb/, casia/, ravdess/, emovo/.")
@click.option("--out", "out_dir", default="benchmarks/results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the results files go.")
@click.option("--seeds", default="0-9", show_default=True, help="Seeds, e.g. 0-9 or 0,3,5.")
@click.option("--methods", default=None, help="Comma-separated methods (default: SERE and every baseline).")
@click.option("--encoder", "encoder_name", default=DEFAULT_ENCODER, show_default=True)
@click.option("--quick", is_flag=True, help="Two seeds, common4 only, no ablation: a smoke run.")
@click.option("--no-ablation", is_flag=True, help="Skip the ablation table.")
@click.option("--ablation-only", is_flag=True, help="Only the ablation table (common4, 5-per-class, 5 seeds).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 2),
              help="Episodes run in this many single-threaded processes (2 at most: two threads in all).")
def benchmark(corpora_dir: Path, out_dir: Path, seeds: str, methods: str | None, encoder_name: str,
              quick: bool, no_ablation: bool, ablation_only: bool, workers: int) -> None:
    """Run the cross-lingual protocol and write cross_lingual.{md,csv} and ablation.{md,csv}."""
    import torch

    from sere_core.benchmark import parse_seeds, run_benchmark
    from sere_core.benchmark.protocol import CORPORA
    from sere_core.errors import SereError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [c for c in CORPORA if not (corpora_dir / c / "manifest.csv").is_file()]
    if missing:
        raise click.ClickException(f"{corpora_dir}: missing corpora {', '.join(missing)} (set --corpora)")
    torch.set_num_threads(1)  # the models are small; see sere_core/method/threads.py
    seed_list = parse_seeds(seeds)
    if quick:
        seed_list = seed_list[:2]
    args = sys.argv[1:]
    if args[:1] == ["benchmark"]:  # `sere benchmark ...` (not `python -m sere_core.benchmark ...`)
        args = args[1:]
    command = " ".join(["sere benchmark", *map(shlex.quote, args)])
    try:
        summary = run_benchmark(corpora_dir, out_dir, seeds=seed_list,
                                methods=methods.split(",") if methods else None,
                                class_sets=["common4"] if quick else None, encoder=encoder_name,
                                ablation=not (quick or no_ablation), command=command, workers=workers,
                                ablation_only=ablation_only)
    except SereError as err:
        raise click.ClickException(str(err)) from err
    for (cs, sh), row in summary.items():
        click.echo(f"{cs:8s} {sh:12s} " + "  ".join(f"{m} {v:.1f}" for m, v in row.items()))
    click.echo(f"results written to {out_dir}")
