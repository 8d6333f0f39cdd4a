"""From a manifest to frame features: audio -> segments -> encoder, through the embedding cache.

This is the one place that strings the first stages together, so the CLI, the benchmark and the
app all embed audio the same way and share one cache. Embedding is a stream: an engine yields one
:class:`FileResult` per manifest entry and keeps none, and :func:`embed_to_folder` appends them
to a features folder shard by shard, so memory stays flat however many files there are and an
interrupted ``sere embed`` continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sere_core.atomic import atomic_write, atomic_write_bytes
from sere_core.audio import AudioConfig, AudioSegment, Failure, load_audio
from sere_core.cache import EmbeddingCache
from sere_core.encoders import Encoder, EncoderInfo
from sere_core.errors import AudioError, ConfigError, ManifestError, SereError
from sere_core.manifests import ManifestEntry

log = logging.getLogger(__name__)

FEATURES_SCHEMA_VERSION = 2
HEADER = "features.json"
#: Frames are written in shards of about this many megabytes (float16), the most ``sere embed``
#: holds in memory and the most an interruption can lose.
DEFAULT_SHARD_MB = 32.0
_SHARD = "frames-{:05d}.safetensors"
_SHARD_NAME = re.compile(r"^frames-(\d{5,})\.safetensors$")
_LOCK = ".writer.lock"

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
class FileResult:
    """What one manifest entry gave: its clips (one per segment), or why it could not be used."""

    clips: tuple[EmbeddedClip, ...] = ()
    failure: Failure | None = None
    cache_hits: int = 0


#: An engine embeds entries and yields one :class:`FileResult` per entry, in the entries' order,
#: as it goes: :func:`iter_embedded` here, :class:`sere_core.distributed.RayEngine` on a cluster.
Engine = Callable[[Sequence[ManifestEntry]], Iterator[FileResult]]


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


def embed_entry(entry: ManifestEntry, encoder: Encoder, cache: EmbeddingCache,
                audio_config: AudioConfig = AudioConfig()) -> FileResult:
    """Decode one file, split it, and take each segment's frames from the cache or the encoder.

    Audio is decoded first because the cache key is the hash of the decoded samples: a second run
    pays decoding but not the encoder. A file that fails becomes a failure so that a batch goes on;
    errors no other file would escape (an encoder without its weights) still raise.
    """
    clips = []
    hits = 0
    try:
        for segment in load_audio(entry.path, audio_config):
            frames = cache.get(segment.audio_id, encoder.info)
            if frames is None:
                encoder.load()  # idempotent: weights are read at the first clip the cache lacks
                frames = encoder.encode(segment.samples)
                cache.put(segment.audio_id, encoder.info, frames)
            else:
                hits += 1
            clips.append(_clip(entry, segment, frames))
    except AudioError as err:
        return FileResult(failure=Failure(str(entry.path), err.reason, str(err)))
    except SereError:
        raise
    except Exception as err:  # an encoder crash on one odd file must not end a batch
        log.exception("unexpected error on %s", entry.path)
        return FileResult(failure=Failure(str(entry.path), "error", f"{Path(entry.path).name}: {err}"))
    return FileResult(clips=tuple(clips), cache_hits=hits)


def iter_embedded(entries: Iterable[ManifestEntry], encoder: Encoder, cache: EmbeddingCache | None = None,
                  audio_config: AudioConfig = AudioConfig()) -> Iterator[FileResult]:
    """The local engine: one :class:`FileResult` per entry, in order, keeping none of them."""
    cache = cache if cache is not None else EmbeddingCache()
    for entry in entries:
        yield embed_entry(entry, encoder, cache, audio_config)


def embed_manifest(
    entries: Sequence[ManifestEntry],
    encoder: Encoder,
    cache: EmbeddingCache | None = None,
    audio_config: AudioConfig = AudioConfig(),
    progress: Progress | None = None,
) -> EmbedResult:
    """Every entry's clips in memory, for callers that use them all at once (``sere fit``, the benchmark).

    A file that fails is reported in ``failures`` and the rest go on. :func:`embed_to_folder`
    streams instead, for inputs whose frames need not fit in memory.
    """
    clips: list[EmbeddedClip] = []
    failures: list[Failure] = []
    hits = 0
    for done, result in enumerate(iter_embedded(entries, encoder, cache, audio_config), start=1):
        clips.extend(result.clips)
        if result.failure is not None:
            failures.append(result.failure)
        hits += result.cache_hits
        if progress is not None:
            progress(done, len(entries))
    return EmbedResult(clips=clips, failures=failures, encoder=encoder.info, cache_hits=hits)


# --- the features folder written by ``sere embed --out`` ----------------------------------------
#
#   frames-00000.safetensors   float16 frames [n, D] of some files, and in its metadata ("sere")
#   frames-00001.safetensors   those files' clips (offsets into the shard) and failures: the journal
#   ...
#   clips.jsonl                one line per clip: its fields, shard, offset, n_frames
#   failures.jsonl             one line per file that could not be used
#   features.json              the header (schema, encoder, shards, counts), written last
#
# Every file is written atomically. Shards are written as the run goes; the other three only when
# it ends, the header last, so a folder without ``features.json`` is an unfinished run, never
# mistaken for a complete one. Re-running reads the shards to learn which files are done.


@dataclass(frozen=True)
class FeaturesSummary:
    """What a features folder holds after :func:`embed_to_folder`, and what this run did."""

    encoder: EncoderInfo
    files: int
    clips: int
    failures: list[Failure]
    resumed_files: int = 0  # finished by an earlier, interrupted run: not decoded again
    cache_hits: int = 0  # clips of this run the cache already held


def _info_dict(info: EncoderInfo) -> dict:
    return json.loads(json.dumps(asdict(info)))


def _shard_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return json.loads((handle.metadata() or {})["sere"])


def _lock_folder(out_dir: Path) -> BinaryIO | None:
    """An exclusive lock on the folder for one writer: two runs appending shards to one folder would
    each skip, and then count, the other's files. ``None`` where the OS has no ``flock``."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    handle = (out_dir / _LOCK).open("a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(f"{out_dir} is being written by another `sere embed` run: wait for it to finish "
                          "or choose another --out folder.") from None
    return handle


class FeaturesWriter:
    """Appends embedded files to a features folder in atomic shards (layout above).

    Opening a folder an interrupted run left behind reads its shards: ``done`` counts the file
    keys they hold, so the caller can skip those files. The folder is marked unfinished (header
    removed) until :meth:`close` writes the header again. One writer at a time: a second one on the
    same folder fails at once with a clear message (a lock the OS drops if the writer dies).
    """

    def __init__(self, out_dir: Path, encoder: EncoderInfo, shard_mb: float = DEFAULT_SHARD_MB,
                 flush_s: float = 60.0) -> None:
        if not shard_mb > 0:
            raise ConfigError(f"the shard size must be more than 0 MB, got {shard_mb}.")
        self.out_dir = Path(out_dir)
        self.encoder = encoder
        self._shard_bytes = shard_mb * 2**20
        self._flush_s = flush_s
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.out_dir)
        try:
            self._open()
        except BaseException:
            self.release()
            raise

    def _open(self) -> None:
        (self.out_dir / HEADER).unlink(missing_ok=True)
        for stale in self.out_dir.glob(".*.tmp"):  # left by a write that was killed
            stale.unlink(missing_ok=True)
        self.shards = sorted(p for p in self.out_dir.iterdir() if _SHARD_NAME.match(p.name))
        self.done: Counter[str] = Counter()
        self.prior_clips = 0
        self.prior_failures: list[Failure] = []
        for shard in self.shards:
            meta = _shard_meta(shard)
            if meta["encoder"] != _info_dict(self.encoder):
                raise ConfigError(
                    f"{self.out_dir} holds features made with {meta['encoder']['name']} "
                    f"({meta['encoder']['version']}), not {self.encoder.name} ({self.encoder.version}): "
                    "choose another --out folder or delete this one."
                )
            for file in meta["files"]:
                self.done[file["key"]] += 1
                self.prior_clips += len(file["clips"])
                if file["failure"] is not None:
                    self.prior_failures.append(Failure(**file["failure"]))
        last = _SHARD_NAME.match(self.shards[-1].name) if self.shards else None
        self._next = int(last.group(1)) + 1 if last else 0
        self._files: list[dict] = []
        self._frames: list[np.ndarray] = []
        self._rows = 0
        self._bytes = 0
        self._since = time.monotonic()

    def add(self, key: str, result: FileResult) -> None:
        """Buffer one file's result; a shard is written once the buffer is full or old enough."""
        clips = []
        for clip in result.clips:
            frames = np.asarray(clip.frames, dtype=np.float16)
            meta = {f.name: getattr(clip, f.name) for f in fields(clip) if f.name != "frames"}
            meta.update(offset=self._rows, n_frames=int(frames.shape[0]))
            clips.append(meta)
            self._frames.append(frames)
            self._rows += frames.shape[0]
            self._bytes += frames.nbytes
        failure = asdict(result.failure) if result.failure is not None else None
        self._files.append({"key": key, "clips": clips, "failure": failure, "cache_hits": result.cache_hits})
        if self._bytes >= self._shard_bytes or time.monotonic() - self._since >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered files as the next shard; they count as done from then on."""
        from safetensors.numpy import save

        if self._files:
            frames = np.concatenate(self._frames) if self._frames else np.zeros((0, self.encoder.dim), np.float16)
            meta = json.dumps({"encoder": _info_dict(self.encoder), "files": self._files}, ensure_ascii=False)
            path = self.out_dir / _SHARD.format(self._next)
            atomic_write_bytes(path, save({"frames": frames}, metadata={"sere": meta}))
            self.shards.append(path)
            self._next += 1
        self._files, self._frames, self._rows, self._bytes = [], [], 0, 0
        self._since = time.monotonic()

    def close(self) -> None:
        """Flush, write ``clips.jsonl`` and ``failures.jsonl`` from the shards, then the header."""
        self.flush()
        counts = {"files": 0, "clips": 0}
        failures: list[dict] = []

        def write_clips(handle: BinaryIO) -> None:
            for shard in self.shards:
                for file in _shard_meta(shard)["files"]:
                    counts["files"] += 1
                    if file["failure"] is not None:
                        failures.append(file["failure"])
                    for clip in file["clips"]:
                        handle.write((json.dumps({**clip, "shard": shard.name}, ensure_ascii=False) + "\n").encode())
                        counts["clips"] += 1

        atomic_write(self.out_dir / "clips.jsonl", write_clips)
        lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures)
        atomic_write_bytes(self.out_dir / "failures.jsonl", lines.encode())
        header = {"schema_version": FEATURES_SCHEMA_VERSION, "encoder": _info_dict(self.encoder),
                  "shards": [s.name for s in self.shards], **counts, "failures": len(failures)}
        atomic_write_bytes(self.out_dir / HEADER, json.dumps(header, indent=2).encode())
        self.release()

    def release(self) -> None:
        """Let another run write this folder (the OS also releases the lock if the process dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def embed_to_folder(
    entries: Sequence[ManifestEntry],
    engine: Engine,
    encoder: EncoderInfo,
    out_dir: Path | None,
    *,
    keys: Sequence[str] | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    progress: Progress | None = None,
) -> FeaturesSummary:
    """Stream ``engine``'s results for ``entries`` into the features folder ``out_dir``.

    Memory holds one shard of frames at most, whatever the number of files. If ``out_dir`` holds
    an unfinished run, the files it finished are skipped without decoding (matched by ``keys``,
    which default to the file paths; give keys that survive a re-run when paths do not, as for a
    zip extracted to a new temporary folder). With ``out_dir=None`` the run only fills the cache.
    Ctrl-C writes what is buffered before it stops.
    """
    keys = [str(e.path) for e in entries] if keys is None else list(keys)
    writer = FeaturesWriter(out_dir, encoder, shard_mb) if out_dir is not None else None
    done = Counter(writer.done) if writer is not None else Counter()
    todo: list[tuple[str, ManifestEntry]] = []
    for key, entry in zip(keys, entries, strict=True):
        if done[key] > 0:
            done[key] -= 1
        else:
            todo.append((key, entry))
    resumed = len(entries) - len(todo)
    clips, hits = 0, 0
    failures = list(writer.prior_failures) if writer is not None else []
    if progress is not None:
        progress(resumed, len(entries))
    results = engine([entry for _, entry in todo])
    try:
        for n, ((key, _), result) in enumerate(zip(todo, results, strict=True), start=resumed + 1):
            clips += len(result.clips)
            hits += result.cache_hits
            if result.failure is not None:
                failures.append(result.failure)
            if writer is not None:
                writer.add(key, result)
            if progress is not None:
                progress(n, len(entries))
    except BaseException:
        if writer is not None:
            writer.flush()  # keep what is finished for the next run
            writer.release()
        raise
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # stop the engine's workers now, not when garbage is collected
            close()
    if writer is not None:
        writer.close()
        clips += writer.prior_clips
    return FeaturesSummary(encoder=encoder, files=len(entries), clips=clips, failures=failures,
                           resumed_files=resumed, cache_hits=hits)


def _read_header(out_dir: Path) -> dict:
    try:
        header = json.loads((out_dir / HEADER).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        if any(_SHARD_NAME.match(p.name) for p in out_dir.glob("frames-*")):
            raise ManifestError(
                f"{out_dir} is an unfinished `sere embed` output: run the same command again to finish it."
            ) from err
        raise ManifestError(f"{out_dir} is not a features folder (no {HEADER})") from err
    if header.get("schema_version") != FEATURES_SCHEMA_VERSION:
        raise ManifestError(
            f"{out_dir}: features schema {header.get('schema_version')} is not supported; "
            "run `sere embed` again to rewrite it."
        )
    return header


def iter_features(out_dir: Path) -> Iterator[EmbeddedClip]:
    """The clips of a complete features folder, in order, reading one shard at a time."""
    from safetensors.numpy import load_file

    out_dir = Path(out_dir)
    _read_header(out_dir)
    shard, frames = None, np.zeros((0, 0), np.float16)
    for line in _lines(out_dir / "clips.jsonl"):
        meta = json.loads(line)
        name, start, n = meta.pop("shard"), meta.pop("offset"), meta.pop("n_frames")
        if name != shard:
            if not isinstance(name, str) or not _SHARD_NAME.match(name):
                raise ManifestError(f"{out_dir}/clips.jsonl names {name!r}, which is not a shard of this folder")
            shard, frames = name, load_file(str(out_dir / name))["frames"]
        yield EmbeddedClip(frames=frames[start : start + n].astype(np.float32), **meta)


def load_features(out_dir: Path) -> tuple[EncoderInfo, list[EmbeddedClip]]:
    """Every clip of a folder written by ``sere embed --out``, in memory."""
    enc = _read_header(Path(out_dir))["encoder"]
    info = EncoderInfo(**{**enc, "layers": tuple(enc["layers"])})
    return info, list(iter_features(out_dir))


def _lines(path: Path) -> Iterable[str]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line
