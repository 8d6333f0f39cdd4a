"""Exports: predictions and labels as CSV (safe to open in a spreadsheet), the model as a zip.

Each export is written into a folder of its own with an unguessable name under the data folder's
``exports``, from which the page downloads it; nothing in that path says whose it is, and folders
older than :data:`KEEP_EXPORTS_S` are deleted at the next export.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.atomic import atomic_write
from sere_core.errors import InvalidDataError, NotFoundError

#: Seconds an export stays downloadable.
KEEP_EXPORTS_S = 3600.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "project"


def _export_path(ctx: AppContext, project_name: str, name: str, suffix: str) -> Path:
    root = ctx.export_dir()
    cutoff = time.time() - KEEP_EXPORTS_S
    for old in root.iterdir():
        try:
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # deleted meanwhile by another export
            continue
    folder = root / secrets.token_hex(16)
    folder.mkdir()
    return folder / f"{_slug(project_name)}-{name}{suffix}"


PREDICTION_COLUMNS_HEAD = ("clip_id", "original_name", "role", "language", "speaker", "start_s", "end_s",
                           "predicted_emotion", "confidence")


def export_predictions(ctx: AppContext, caller: Caller, project_id: int, run_id: int | None = None,
                       clip_ids: Collection[int] | None = None) -> Path:
    """A CSV of every clip's prediction, or of the clips ``clip_ids`` (a selection on the field);
    cells safe to open in a spreadsheet."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        run_id = run_id if run_id is not None else st.latest_result(s, project.id)
        if run_id is None:
            raise InvalidDataError("There are no predictions yet: train the model first (step 4).")
        st.owned_run(s, caller.workspace, run_id, project.id)
        preds = st.predictions_for_run(s, run_id)
        labels = st.labels_for_project(s, project.id)
        records = st.clip_records(s, project.id, sorted(set(clip_ids)) if clip_ids is not None else None)
        emotions, name = list(project.emotions), project.name
    columns = [*PREDICTION_COLUMNS_HEAD, *[f"p_{e}" for e in emotions], "highlights", "your_label", "audio_id"]
    rows = []
    for rec in records:
        p = preds.get(rec.clip_id)
        if p is None:
            continue
        row = {"clip_id": rec.clip_id, "original_name": rec.name, "role": rec.role, "language": rec.language,
               "speaker": rec.speaker, "start_s": round(rec.start_s, 3), "end_s": round(rec.end_s, 3),
               "predicted_emotion": p.emotion, "confidence": round(float(p.confidence), 4),
               "highlights": ";".join(f"{a:.2f}-{b:.2f}" for a, b in p.highlights),
               "your_label": labels.get(rec.clip_id), "audio_id": rec.audio_id}
        row.update({f"p_{e}": round(float(p.probabilities.get(e, 0.0)), 4) for e in emotions})
        rows.append(row)
    if clip_ids is not None and not rows:
        raise InvalidDataError("None of the selected clips has a prediction yet.")
    what = "selection-predictions" if clip_ids is not None else "predictions"
    path = _export_path(ctx, name, f"run{run_id}-{what}", ".csv")
    st.write_csv(path, rows, columns)
    return path


def export_labels(ctx: AppContext, caller: Caller, project_id: int) -> Path:
    """A CSV of every label, which ``imports.import_labels_file`` reads back."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        rows, name = st.labels_to_rows(s, project.id), project.name
    if not rows:
        raise InvalidDataError("No clip is labeled yet; there is nothing to export.")
    path = _export_path(ctx, name, "labels", ".csv")
    st.write_csv(path, rows, st.LABEL_COLUMNS)
    return path


def export_model(ctx: AppContext, caller: Caller, project_id: int, run_id: int | None = None) -> Path:
    """A zip of the trained model (safetensors + JSON) with a small project description."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        run_id = run_id if run_id is not None else st.latest_result(s, project.id)
        if run_id is None:
            raise InvalidDataError("There is no trained model yet: train first (step 4).")
        run = st.owned_run(s, caller.workspace, run_id, project.id)
        if not run.model_path:
            raise NotFoundError(f"Training run {run_id} saved no model.")
        model_dir = ctx.blobs.path_for(run.model_path)
        about = {"project": project.name, "emotions": project.emotions, "encoder": project.encoder,
                 "run_id": run.id, "metrics": run.metrics, "config": run.config,
                 "load_with": "sere_core.method.SERE.load(<unzipped folder>)"}
    if not model_dir.is_dir():
        raise NotFoundError(f"The model files of run {run_id} are missing from the data folder.")
    path = _export_path(ctx, project.name, f"run{run_id}-model", ".zip")

    def write(handle: Any) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(model_dir.iterdir()):
                if f.is_file():
                    zf.write(f, arcname=f"model/{f.name}")
            zf.writestr("model/sere-project.json", json.dumps(about, indent=2, default=str))

    return atomic_write(path, write)


def export_field(ctx: AppContext, caller: Caller, project_id: int, color_by: str = "emotion") -> Path:
    """The resonance field of the latest run as one interactive HTML file (plotly.js inside, so it
    opens offline: zoom, hover and the training replay)."""
    from sere_core.app.figures import field_figure
    from sere_core.app.review import field_data

    data = field_data(ctx, caller, project_id)
    if data is None:
        raise InvalidDataError("There is no resonance field yet: train the model first (step 4).")
    with ctx.session() as s:
        name = st.owned_project(s, caller.workspace, project_id).name
    path = _export_path(ctx, name, f"run{data.run_id}-field", ".html")
    page = field_figure(data, color_by).to_html(include_plotlyjs=True, full_html=True, auto_play=False,
                                                config={"displaylogo": False})
    return atomic_write(path, lambda handle: handle.write(page.encode("utf-8")))
