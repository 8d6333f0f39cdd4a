"""The SERE Studio app's logic, without the page: services over the database and worker threads.

``app.py`` builds the Gradio page and calls these; tests call them directly.

>>> from sere_core.app import parse_emotions
>>> parse_emotions("neutral, happy, sad, angry")
['neutral', 'happy', 'sad', 'angry']
"""

from sere_core.app.context import AppContext, AppSettings, EncoderPool, SegmentStore
from sere_core.app.services import (
    DEFAULT_EMOTIONS,
    DEMO_PROJECT_NAME,
    PAGE_SIZE,
    SHOTS,
    SORTS,
    ClipView,
    FieldData,
    FileFailure,
    ImportReport,
    PredictionView,
    ProjectSummary,
    TablePage,
    TrainingStatus,
    apply_reference_labels,
    cancel_training,
    clip_view,
    confirm_prediction,
    create_project,
    export_labels,
    export_model,
    export_predictions,
    field_data,
    get_summary,
    import_audio,
    import_labels_file,
    label_clip,
    label_counts,
    latest_result,
    list_projects,
    load_demo,
    next_clip_to_label,
    next_to_review,
    parse_emotions,
    predictions_page,
    predictions_table,
    set_emotions,
    start_training,
    suggest_clips,
    training_config,
    training_readiness,
    training_status,
    undo_label,
    unlabeled_clip_ids,
    user_message,
)

__all__ = [name for name in dir() if not name.startswith("_")]
