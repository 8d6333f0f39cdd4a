"""``sere encoders`` and ``sere embed``: what can embed here, and embedding a manifest."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
from tqdm import tqdm

from sere_core.audio import AudioConfig
from sere_core.cache import EmbeddingCache
from sere_core.encoders import get_encoder, list_encoders
from sere_core.errors import SereError
from sere_core.features import embed_manifest, save_features
from sere_core.manifests import read_manifest


@click.command()
def encoders() -> None:
    """List the encoders and whether each can run here."""
    for status in list_encoders():
        mark = "yes" if status.available else "no "
        click.echo(f"{mark}  {status.name:<16} {status.detail}")


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--encoder", "encoder_name", default="whisper-base", show_default=True,
              help="Encoder name (see `sere encoders`), e.g. whisper-base, prosody, hf:<model>.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write the features to this folder (clips.jsonl + frames.safetensors).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder (default: $SERE_CACHE_DIR or the user cache).")
@click.option("--max-segment-s", type=float, default=AudioConfig.max_segment_s, show_default=True,
              help="Recordings longer than this are split into utterances at pauses.")
def embed(input_path: Path, encoder_name: str, out_dir: Path | None, cache_dir: Path | None,
          max_segment_s: float) -> None:
    """Embed INPUT (a manifest CSV, a folder or a zip archive) into frame features."""
    try:
        encoder = get_encoder(encoder_name)
        with tempfile.TemporaryDirectory(prefix="sere-embed-") as workdir:
            entries = read_manifest(input_path, workdir=Path(workdir))
            if not entries:
                raise click.ClickException(f"{input_path}: no audio files found")
            bar = tqdm(total=len(entries), unit="file", desc=f"embed ({encoder_name})", file=sys.stderr)

            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)

            result = embed_manifest(entries, encoder, EmbeddingCache(cache_dir),
                                    AudioConfig(max_segment_s=max_segment_s), progress=progress)
            bar.close()
    except SereError as err:
        raise click.ClickException(str(err)) from err

    click.echo(f"embedded {len(result.clips)} clips from {len(entries) - len(result.failures)} of "
               f"{len(entries)} files ({result.cache_hits} from the cache) with {result.encoder.name}")
    if result.failures:
        click.echo(f"{len(result.failures)} files could not be used:", err=True)
        for failure in result.failures:
            click.echo(f"  {failure.path}: {failure.message}", err=True)
    if not result.clips:
        raise click.ClickException("nothing could be embedded")
    if out_dir is not None:
        save_features(result, out_dir)
        click.echo(f"features written to {out_dir}")
