"""The long steps behind the app, as plain functions a worker thread (or a test) calls.

* :func:`embed_clips` - frame features of a project's clips, through the embedding cache;
* :func:`run_training` - one training run from start to stored results: embed, fit SERE, predict,
  project the snapshots to 2-D, save the model, mark the run finished.

They talk to the database through short units of work (``ctx.session()``), so the page can read
progress while they run, and they stop at the next progress update once the run is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sere_core.errors import RunStateError, SereError, TrainingCancelled, TrainingDataError
from sere_core.storage import ClipRecord, clip_records

log = logging.getLogger(__name__)

#: Seconds between progress writes to the database during training (cancel is seen this fast).
PROGRESS_EVERY_S = 0.5

EmbedProgress = Callable[[int, int], Any]
#: ``progress(done, total, what)`` of a long step shown on the page.
Progress = Callable[[int, int, str], Any]


def is_cached(ctx: Any, audio_id: str, info: Any) -> bool:
    """Whether the cache holds a file for this clip (cheap: no read)."""
    return ctx.cache.path(audio_id, info).is_file()


def missing_features(ctx: Any, records: Sequence[ClipRecord], encoder: str) -> list[ClipRecord]:
    info = ctx.encoders.info(encoder)
    return [r for r in records if not is_cached(ctx, r.audio_id, info)]


def embed_clips(
    ctx: Any,
    project_id: int,
    encoder: str,
    records: Sequence[ClipRecord],
    progress: EmbedProgress | None = None,
    keep: bool = True,
) -> dict[int, np.ndarray]:
    """Frames ``[T, D]`` of every record (by clip id), computing and caching the missing ones.

    A missing clip is re-decoded from its uploaded recording with the same audio pipeline, so its
    features are exactly those ``sere embed`` would compute. Two jobs embedding one project (the
    background computation after an upload and a training) share the work: clips another job is
    encoding are left for the end (``EncoderPool.features``). ``progress(done, total)`` may return
    False to stop (raises :class:`TrainingCancelled`). With ``keep=False`` nothing is returned
    (used to warm the cache in the background).
    """
    from sere_core.audio import load_audio

    info = ctx.encoders.info(encoder)
    out: dict[int, np.ndarray] = {}
    total = len(records)
    done = 0

    def tick() -> None:
        if progress is not None and progress(done, total) is False:
            raise TrainingCancelled("stopped while computing features")

    todo: dict[str | None, list[ClipRecord]] = defaultdict(list)
    for rec in records:
        frames = ctx.cache.get(rec.audio_id, info) if keep else None
        if frames is not None:
            out[rec.clip_id] = frames
            done += 1
        elif not keep and is_cached(ctx, rec.audio_id, info):
            done += 1
        else:
            todo[rec.stored_path].append(rec)
    tick()
    deferred: list[tuple[ClipRecord, np.ndarray]] = []  # being encoded by another job
    for stored_path, recs in todo.items():
        by_id: dict[str, np.ndarray] = {}
        if stored_path is not None and not all(is_cached(ctx, r.audio_id, info) for r in recs):
            try:
                for seg in load_audio(ctx.blobs.path_for(stored_path)):
                    by_id[seg.audio_id] = seg.samples
            except SereError as exc:
                log.warning("cannot re-decode %s: %s", stored_path, exc)
        for rec in recs:
            if is_cached(ctx, rec.audio_id, info):  # computed meanwhile (the warm-up, another job)
                frames = ctx.cache.get(rec.audio_id, info) if keep else True
            else:
                samples = _samples(ctx, rec, by_id)
                frames = ctx.encoders.features(encoder, rec.audio_id, samples, ctx.cache, wait=False)
                if frames is None:
                    deferred.append((rec, samples))
                    continue
            if keep:
                out[rec.clip_id] = frames
            done += 1
            tick()
    for rec, samples in deferred:
        frames = ctx.encoders.features(encoder, rec.audio_id, samples, ctx.cache)
        if keep:
            out[rec.clip_id] = frames
        done += 1
        tick()
    return out


def _samples(ctx: Any, rec: ClipRecord, decoded: dict[str, np.ndarray]) -> np.ndarray:
    """The clip's samples as decoded from its recording, else its listening copy."""
    samples = decoded.get(rec.audio_id)
    if samples is None:  # the recording is gone, decodes differently now, or was not needed
        stored = ctx.segments.get(rec.audio_id)
        if stored is None:
            raise TrainingDataError(
                f"{rec.name}: its audio is missing from the data folder; remove the clip and upload the file again.")
        samples = stored[0]
    return samples


def unweighted_recall(truth: Sequence[str], predicted: Sequence[str]) -> float | None:
    """UAR: the mean over emotions of the share of that emotion's clips predicted as it."""
    classes = sorted(set(truth))
    if not classes:
        return None
    recalls = []
    for c in classes:
        idx = [i for i, t in enumerate(truth) if t == c]
        recalls.append(sum(predicted[i] == c for i in idx) / len(idx))
    return float(np.mean(recalls))


@dataclass(frozen=True)
class LiveField:
    """The newest snapshot of a running training in 2-D (a quick projection, kept in memory by
    the worker that trains): the field shows it while the clips move."""

    step: int
    total_steps: int
    clip_ids: tuple[int, ...]
    coords: np.ndarray
    prototypes: np.ndarray
    classes: tuple[str, ...]


def time_left(elapsed_s: float, step: int, total_steps: int) -> str:
    """Words for the training time still to come, from the pace so far.

    >>> time_left(10.0, 25, 100), time_left(100.0, 10, 100), time_left(1.0, 0, 100)
    ('about 30 s left', 'about 15 min left', '')
    """
    if step <= 0 or total_steps <= step:
        return ""
    seconds = elapsed_s / step * (total_steps - step)
    return f"about {seconds:.0f} s left" if seconds < 90 else f"about {seconds / 60:.0f} min left"


def run_training(ctx: Any, project_id: int, run_id: int, stop: threading.Event | None = None,
                 on_phase: Callable[[str], None] | None = None,
                 on_live: Callable[[LiveField], None] | None = None) -> None:
    """Carry out training run ``run_id`` of ``project_id`` (already created, queued) to its end.

    Every outcome is written to the run: succeeded with predictions, snapshots and a model; failed
    with a message a user can act on; or left cancelled when the user cancelled it. ``on_phase``
    hears what it is doing, in words; ``on_live`` each snapshot in 2-D while it trains.
    """
    from sere_core import storage as st
    from sere_core.app.demo import demo_reference
    from sere_core.method import SERE, ClipFeatures, SEREConfig
    from sere_core.method.config import without_removed
    from sere_core.viz import live_projection, project_snapshots

    stop = stop or threading.Event()
    phase = on_phase or (lambda text: None)
    try:
        with ctx.session() as s:
            run = st.get_run(s, run_id)
            project = st.get_project(s, project_id)
            encoder, template = project.encoder, project.template
            config = SEREConfig.from_dict(without_removed(dict(run.config.get("sere", {}))))
            st.start_run(s, run_id, total_steps=config.steps * config.ensemble)
            phase("Reading the clips")
            records = clip_records(s, project_id)
            labels = st.labels_for_project(s, project_id)

        last_beat = [0.0]

        def embed_progress(done: int, total: int) -> bool:
            phase(f"Computing speech features: {done} of {total} clips")
            if stop.is_set():
                return False
            now = time.monotonic()
            if now - last_beat[0] > 2.0:
                last_beat[0] = now
                with ctx.session() as s:
                    return st.heartbeat(s, run_id)
            return True

        frames = embed_clips(ctx, project_id, encoder, records, embed_progress)
        info = ctx.encoders.info(encoder)
        rate = float(info.frame_rate)
        labeled, unlabeled = [], []
        for r in records:
            clip = ClipFeatures(str(r.clip_id), frames[r.clip_id], rate, language=r.language,
                                speaker=r.speaker, emotion=labels.get(r.clip_id))
            (labeled if clip.emotion else unlabeled).append(clip)

        phase("Training SERE")
        last_write = [0.0]
        classes = tuple(sorted({c.emotion for c in labeled if c.emotion}))

        def fit_progress(p: Any) -> bool:
            if stop.is_set():
                return False
            if p.snapshot is not None and on_live is not None:
                xy, pxy = live_projection(p.snapshot.embeddings, p.snapshot.prototypes)
                on_live(LiveField(p.step, p.total_steps, tuple(int(c) for c in p.snapshot.clip_ids), xy, pxy,
                                  classes))
            now = time.monotonic()
            if p.step != p.total_steps and now - last_write[0] < PROGRESS_EVERY_S:
                return True
            last_write[0] = now
            left = time_left(p.elapsed_s, p.step, p.total_steps)
            phase(f"Training SERE: step {p.step} of {p.total_steps}" + (f" · {left}" if left else ""))
            with ctx.session() as s:
                return st.update_progress(s, run_id, step=p.step, total_steps=p.total_steps, losses=p.losses)

        model = SERE(config).fit(labeled, unlabeled, progress=fit_progress, encoder=info)

        phase("Predicting every clip")
        everything = labeled + unlabeled
        predictions = model.predict(everything)
        phase("Drawing the resonance field")
        snaps = list(model.snapshots_)
        frames_2d = None
        if snaps:
            frames_2d, protos_2d, projection = project_snapshots(snaps, model.classes_)
        model_dir = ctx.blobs.model_dir(run_id)
        model.save(model_dir)

        reference = demo_reference(ctx, template)
        metrics: dict[str, Any] = {
            "classes": list(model.classes_),
            "n_labeled": len(labeled),
            "n_unlabeled": len(unlabeled),
            "fit_time_s": round(float(model.fit_time_s_), 2),
            "encoder": encoder,
        }
        if frames_2d is not None:
            metrics["projection"] = projection.method
        by_audio = {str(r.clip_id): r for r in records}
        pairs = [(reference[by_audio[c.clip_id].audio_id], p.emotion)
                 for c, p in zip(unlabeled, predictions[len(labeled):])
                 if by_audio[c.clip_id].role == "target" and by_audio[c.clip_id].audio_id in reference]
        if pairs:
            truth, pred = zip(*pairs)
            metrics["reference_clips"] = len(pairs)
            metrics["reference_accuracy"] = round(float(np.mean([t == q for t, q in pairs])), 4)
            metrics["reference_uar"] = round(unweighted_recall(truth, pred) or 0.0, 4)

        with ctx.session() as s:
            st.save_predictions(s, run_id, {int(c.clip_id): p for c, p in zip(everything, predictions)})
            if frames_2d is not None:
                for index, snap in enumerate(snaps):
                    rows = frames_2d[frames_2d["step"] == snap.step]
                    prow = protos_2d[protos_2d["step"] == snap.step]
                    st.save_snapshot(s, run_id, index, int(snap.step), [int(c) for c in rows["clip_id"]],
                                     rows[["x", "y"]].to_numpy(), prow[["x", "y"]].to_numpy() if len(prow) else None)
            st.finish_run(s, run_id, metrics=metrics, model_path=ctx.blobs.relative(model_dir))
        phase("Done")
    except TrainingCancelled:
        phase("Cancelled")
        if stop.is_set():  # the app is shutting down, not the user: say so on the run
            _fail(ctx, run_id, "The app was stopped during training; start the training again.")
    except RunStateError:  # cancelled between the last progress update and the end
        phase("Cancelled")
    except SereError as exc:
        phase("Failed")
        _fail(ctx, run_id, str(exc))
    except Exception as exc:  # a bug: keep the details in the log, give the user a clear line
        log.exception("training run %s failed", run_id)
        phase("Failed")
        _fail(ctx, run_id, f"Training failed unexpectedly ({type(exc).__name__}: {exc}).")


def _fail(ctx: Any, run_id: int, message: str) -> None:
    from sere_core import storage as st

    try:
        with ctx.session() as s:
            st.fail_run(s, run_id, message)
    except Exception:  # the database itself is gone; nothing more to record
        log.exception("could not record the failure of run %s", run_id)
