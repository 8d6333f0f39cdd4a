"""From a manifest to frame features: audio -> segments -> encoder, through the embedding cache.

This is the one place that strings the first stages together, so the CLI, the benchmark and the
app all embed audio the same way and share one cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sere_core.audio import AudioConfig, AudioSegment, Failure, load_audio
from sere_core.cache import EmbeddingCache
from sere_core.encoders import Encoder, EncoderInfo
from sere_core.errors import AudioError, ManifestError, SereError
from sere_core.manifests import ManifestEntry

log = logging.getLogger(__name__)

FEATURES_SCHEMA_VERSION = 1

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbeddedClip:
    """One segment of one manifest entry with its frame features ``[T, D]``."""

    clip_id: str
    path: str
    start_s: float
    end_s: float
    frames: np.ndarray
    emotion: str | None = None
    language: str | None = None
    speaker: str | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class EmbedResult:
    clips: list[EmbeddedClip]
    failures: list[Failure]
    encoder: EncoderInfo
    cache_hits: int = 0


def _clip(entry: ManifestEntry, segment: AudioSegment, frames: np.ndarray) -> EmbeddedClip:
    return EmbeddedClip(
        clip_id=segment.audio_id,
        path=str(entry.path),
        start_s=segment.start_s,
        end_s=segment.end_s,
        frames=frames,
        emotion=entry.emotion,
        language=entry.language,
        speaker=entry.speaker,
    )


def embed_manifest(
    entries: Sequence[ManifestEntry],
    encoder: Encoder,
    cache: EmbeddingCache | None = None,
    audio_config: AudioConfig = AudioConfig(),
    progress: Progress | None = None,
) -> EmbedResult:
    """Embed every entry; a file that fails is reported in ``failures`` and the rest go on.

    Audio is decoded first because the cache key is the hash of the decoded samples: a second run
    pays decoding but not the encoder.
    """
    cache = cache if cache is not None else EmbeddingCache()
    clips: list[EmbeddedClip] = []
    failures: list[Failure] = []
    hits = 0
    loaded = False
    for done, entry in enumerate(entries, start=1):
        try:
            segments = load_audio(entry.path, audio_config)
            for segment in segments:
                frames = cache.get(segment.audio_id, encoder.info)
                if frames is None:
                    if not loaded:
                        encoder.load()
                        loaded = True
                    frames = encoder.encode(segment.samples)
                    cache.put(segment.audio_id, encoder.info, frames)
                else:
                    hits += 1
                clips.append(_clip(entry, segment, frames))
        except AudioError as err:
            failures.append(Failure(str(entry.path), err.reason, str(err)))
        except SereError:
            raise
        except Exception as err:  # an encoder crash on one odd file must not end a batch
            log.exception("unexpected error on %s", entry.path)
            failures.append(Failure(str(entry.path), "error", f"{Path(entry.path).name}: {err}"))
        if progress is not None:
            progress(done, len(entries))
    return EmbedResult(clips=clips, failures=failures, encoder=encoder.info, cache_hits=hits)


# --- the on-disk features folder written by ``sere embed --out`` -------------------------------

def save_features(result: EmbedResult, out_dir: Path) -> None:
    """Write ``clips.jsonl`` (one line per clip, with its frame offset) and ``frames.safetensors``."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    offset = 0
    lines = []
    for clip in result.clips:
        meta = {k: v for k, v in asdict(clip).items() if k != "frames"}
        meta.update(offset=offset, n_frames=int(clip.frames.shape[0]))
        offset += clip.frames.shape[0]
        lines.append(json.dumps(meta, ensure_ascii=False))
    dim = result.encoder.dim
    frames = (
        np.concatenate([c.frames for c in result.clips]).astype(np.float16)
        if result.clips
        else np.zeros((0, dim), np.float16)
    )
    save_file({"frames": frames}, str(out_dir / "frames.safetensors"))
    (out_dir / "clips.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    header = {"schema_version": FEATURES_SCHEMA_VERSION, "encoder": asdict(result.encoder)}
    (out_dir / "features.json").write_text(json.dumps(header, indent=2), encoding="utf-8")


def load_features(out_dir: Path) -> tuple[EncoderInfo, list[EmbeddedClip]]:
    """Read a folder written by :func:`save_features`."""
    from safetensors.numpy import load_file

    try:
        header = json.loads((out_dir / "features.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ManifestError(f"{out_dir} is not a features folder (no features.json)") from err
    if header.get("schema_version") != FEATURES_SCHEMA_VERSION:
        raise ManifestError(f"{out_dir}: features schema {header.get('schema_version')} is not supported")
    enc = header["encoder"]
    info = EncoderInfo(**{**enc, "layers": tuple(enc["layers"])})
    frames = load_file(str(out_dir / "frames.safetensors"))["frames"]
    clips = []
    for line in _lines(out_dir / "clips.jsonl"):
        meta = json.loads(line)
        start, n = meta.pop("offset"), meta.pop("n_frames")
        clips.append(EmbeddedClip(frames=frames[start : start + n].astype(np.float32), **meta))
    return info, clips


def _lines(path: Path) -> Iterable[str]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line
