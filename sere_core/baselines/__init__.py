"""Comparison methods behind SERE's estimator contract (``fit/predict/predict_proba/classes_``).

>>> sorted(BASELINES)
['kmeans_hungarian', 'label_spreading', 'logreg', 'nearest_prototype', 'proto_refine']
"""

from sere_core.baselines.base import UtteranceBaseline
from sere_core.baselines.methods import (
    KMeansHungarian,
    LabelSpreadingBaseline,
    LogisticRegressionBaseline,
    NearestPrototype,
    PrototypeRefinement,
)

BASELINES: dict[str, type[UtteranceBaseline]] = {
    cls.name: cls
    for cls in (NearestPrototype, LogisticRegressionBaseline, LabelSpreadingBaseline,
                PrototypeRefinement, KMeansHungarian)
}

__all__ = ["BASELINES", "UtteranceBaseline", "NearestPrototype", "LogisticRegressionBaseline",
           "LabelSpreadingBaseline", "PrototypeRefinement", "KMeansHungarian"]
