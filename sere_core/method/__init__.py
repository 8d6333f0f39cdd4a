"""SERE: Semantic-Emotional Resonance Embedding (normalization, model, TRIC losses, training,
estimator). See ``docs/architecture.md`` for the contract and ``sere-method.md`` for the design."""

from sere_core.method.config import SEREConfig, recommended_config
from sere_core.method.data import ClipFeatures, Prediction, Snapshot, TrainingProgress
from sere_core.method.estimator import SERE

__all__ = ["SERE", "SEREConfig", "recommended_config", "ClipFeatures", "Prediction", "Snapshot", "TrainingProgress"]
