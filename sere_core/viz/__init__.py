"""Pure plot functions (plotly) and the 2-D projection of the resonance space.

Data in, figure out: nothing here touches Gradio, the database or files.
"""

from sere_core.viz.colors import KNOWN_EMOTION_COLORS, UNKNOWN_COLOR, emotion_colors
from sere_core.viz.projection import (
    Projection,
    fit_projection,
    live_projection,
    project_snapshots,
    umap_is_warm,
    warm_up_umap,
)
from sere_core.viz.resonance_plot import (
    COLOR_BY,
    NO_EMOTION,
    empty_figure,
    confusion_figure,
    probabilities_figure,
    results_figure,
    resonance_field_figure,
    training_curve_figure,
    waveform_figure,
)

__all__ = [
    "COLOR_BY", "KNOWN_EMOTION_COLORS", "NO_EMOTION", "Projection", "UNKNOWN_COLOR",
    "emotion_colors", "empty_figure", "fit_projection", "live_projection", "confusion_figure", "probabilities_figure", "results_figure", "project_snapshots",
    "resonance_field_figure", "training_curve_figure", "umap_is_warm",
    "warm_up_umap", "waveform_figure",
]
