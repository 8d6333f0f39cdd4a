"""``sere encoders`` and ``sere embed``: what can embed here, and embedding a manifest."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import click
from tqdm import tqdm

from sere_core.audio import AudioConfig, Failure
from sere_core.cache import EmbeddingCache
from sere_core.encoders import DEFAULT_ENCODER, get_encoder, list_encoders
from sere_core.errors import SereError
from sere_core.features import DEFAULT_SHARD_MB, Engine, embed_to_folder, iter_embedded
from sere_core.manifests import read_manifest


def echo_failures(failures: Sequence[Failure], what: str) -> None:
    """Name every file a command skipped, with its reason, on stderr (the others went on)."""
    if failures:
        click.echo(f"{what} could not be used:", err=True)
        for failure in failures:
            click.echo(f"  {failure.path}: {failure.message}", err=True)


@click.command()
def encoders() -> None:
    """List the encoders and whether each can run here."""
    for status in list_encoders():
        mark = "yes" if status.available else "no "
        click.echo(f"{mark}  {status.name:<16} {status.detail}")


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--encoder", "encoder_name", default=DEFAULT_ENCODER, show_default=True,
              help="Encoder name (see `sere encoders`), e.g. whisper-base, prosody, hf:<model>.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write the features to this folder; running the same command again after an "
                   "interruption continues where it stopped.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder (default: $SERE_CACHE_DIR or the user cache).")
@click.option("--max-segment-s", type=float, default=AudioConfig.max_segment_s, show_default=True,
              help="Recordings longer than this are split into utterances at pauses.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Embed in this process, or on a Ray cluster (pip install sere-studio[ray]).")
@click.option("--address", default=None,
              help="Ray cluster address (host:port, or 'auto' for the one `ray start` began here); "
                   "default: start Ray on this machine.")
@click.option("--num-workers", type=int, default=None,
              help="Ray workers, one CPU each (default: one per CPU of the cluster).")
@click.option("--shard-mb", type=float, default=DEFAULT_SHARD_MB, show_default=True,
              help="--out is written in shards of this many MB of frames: the most held in memory "
                   "and the most an interruption loses.")
def embed(input_path: Path, encoder_name: str, out_dir: Path | None, cache_dir: Path | None,
          max_segment_s: float, engine: str, address: str | None, num_workers: int | None,
          shard_mb: float) -> None:
    """Embed INPUT (a manifest CSV, a folder or a zip archive) into frame features."""
    if engine == "local" and (address is not None or num_workers is not None):
        raise click.UsageError("--address and --num-workers need --engine ray")
    try:
        encoder = get_encoder(encoder_name)
        cache = EmbeddingCache(cache_dir)
        audio_config = AudioConfig(max_segment_s=max_segment_s)
        ray_engine = None
        if engine == "ray":
            from sere_core.distributed import RayConfig, RayEngine

            ray_engine = RayEngine(encoder_name, cache.root, audio_config, RayConfig(address, num_workers))
        run: Engine = (ray_engine if ray_engine is not None
                       else partial(iter_embedded, encoder=encoder, cache=cache, audio_config=audio_config))
        with tempfile.TemporaryDirectory(prefix="sere-embed-") as workdir:
            entries = read_manifest(input_path, workdir=Path(workdir))
            if not entries:
                raise click.ClickException(f"{input_path}: no audio files found")
            keys = [_key(entry.path, Path(workdir)) for entry in entries]
            bar = tqdm(total=len(entries), unit="file", desc=f"embed ({encoder_name})", file=sys.stderr)

            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)

            try:
                summary = embed_to_folder(entries, run, encoder.info, out_dir, keys=keys, shard_mb=shard_mb,
                                          progress=progress)
            except KeyboardInterrupt:
                bar.close()
                again = " (the same command continues where this stopped)" if out_dir is not None else ""
                raise click.ClickException(f"interrupted{again}") from None
            bar.close()
    except SereError as err:
        raise click.ClickException(str(err)) from err

    used = summary.files - len(summary.failures)
    click.echo(f"embedded {summary.clips} clips from {used} of {summary.files} files "
               f"({summary.cache_hits} from the cache) with {summary.encoder.name}")
    if summary.resumed_files:
        click.echo(f"{summary.resumed_files} files were already done in {out_dir} and were skipped")
    if ray_engine is not None:
        nodes = ray_engine.files_per_node
        click.echo(f"ray: {sum(nodes.values())} files embedded on {len(nodes)} nodes")
    echo_failures(summary.failures, f"{len(summary.failures)} files")
    if out_dir is not None:
        click.echo(f"features written to {out_dir}")
    if not summary.clips:
        raise click.ClickException("nothing could be embedded")


def _key(path: Path, workdir: Path) -> str:
    """The journal's name for a file: stable across runs, also for a zip extracted anew each time."""
    try:
        return f"zip:{Path(path).relative_to(workdir).as_posix()}"
    except ValueError:
        return str(path)
