"""The comparison methods, all on the same utterance features (see ``base.py``)."""

from __future__ import annotations

import numpy as np

from sere_core.baselines.base import UtteranceBaseline, l2n, sinkhorn_np, softmax


def class_means(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.stack([x[y == c].mean(0) for c in range(n_classes)])


class NearestPrototype(UtteranceBaseline):
    """Cosine similarity to each emotion's mean shot; softmax(cos / temperature)."""

    name = "nearest_prototype"

    def __init__(self, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature

    def _fit(self, x_l, y, x_u) -> None:
        self.prototypes_ = l2n(class_means(x_l, y, len(self.classes_)))

    def _proba(self, x):
        return softmax(l2n(x) @ self.prototypes_.T / self.temperature)


class LogisticRegressionBaseline(UtteranceBaseline):
    """Multinomial logistic regression on the shots (L2, class-balanced weights)."""

    name = "logreg"

    def __init__(self, C: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.C = C

    def _fit(self, x_l, y, x_u) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model_ = LogisticRegression(C=self.C, max_iter=1000, class_weight="balanced")
        self.model_.fit(x_l, y)

    def _proba(self, x):
        return self.model_.predict_proba(x)


class LabelSpreadingBaseline(UtteranceBaseline):
    """Label spreading over a k-NN graph of shots and unlabeled clips (unit-norm features)."""

    name = "label_spreading"

    def __init__(self, n_neighbors: int = 10, alpha: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_neighbors = n_neighbors
        self.alpha = alpha

    def _fit(self, x_l, y, x_u) -> None:
        from sklearn.semi_supervised import LabelSpreading

        x = l2n(np.concatenate([x_l, x_u]))
        labels = np.concatenate([y, -np.ones(len(x_u), dtype=int)])
        k = max(1, min(self.n_neighbors, len(x) - 1))
        self.model_ = LabelSpreading(kernel="knn", n_neighbors=k, alpha=self.alpha, max_iter=100)
        self.model_.fit(x, labels)

    def _proba(self, x):
        p = self.model_.predict_proba(l2n(x))
        p = np.nan_to_num(p, nan=0.0) + 1e-9
        return p / p.sum(1, keepdims=True)


class PrototypeRefinement(UtteranceBaseline):
    """Transductive soft k-means from the shots' prototypes; the unlabeled clips' soft assignments
    are balanced across emotions (the class-balance prior) with Sinkhorn-Knopp."""

    name = "proto_refine"

    def __init__(self, n_iter: int = 10, temperature: float = 0.1, balanced: bool = True,
                 shot_weight: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_iter = n_iter
        self.temperature = temperature
        self.balanced = balanced
        self.shot_weight = shot_weight

    def _fit(self, x_l, y, x_u) -> None:
        c = len(self.classes_)
        zl, zu = l2n(x_l), l2n(x_u)
        onehot = np.eye(c)[y] * self.shot_weight
        protos = l2n(class_means(zl, y, c))
        for _ in range(self.n_iter if len(zu) else 0):
            scores = np.exp((zu @ protos.T - 1.0) / self.temperature)
            q = sinkhorn_np(scores) if self.balanced else scores / scores.sum(1, keepdims=True)
            protos = l2n((onehot.T @ zl + q.T @ zu) / (onehot.sum(0) + q.sum(0))[:, None])
        self.prototypes_ = protos

    def _proba(self, x):
        return softmax(l2n(x) @ self.prototypes_.T / self.temperature)


class KMeansHungarian(UtteranceBaseline):
    """k-means (k = number of emotions) on the unlabeled clips; clusters are matched one-to-one to
    the shots' prototypes (Hungarian, max total cosine) and named after them."""

    name = "kmeans_hungarian"

    def __init__(self, n_init: int = 10, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_init = n_init
        self.temperature = temperature

    def _fit(self, x_l, y, x_u) -> None:
        from scipy.optimize import linear_sum_assignment
        from sklearn.cluster import KMeans

        c = len(self.classes_)
        protos = l2n(class_means(l2n(x_l), y, c))
        if len(x_u) < c:
            self.centroids_ = protos
            return
        km = KMeans(n_clusters=c, n_init=self.n_init, random_state=self.seed).fit(l2n(x_u))
        centroids = l2n(km.cluster_centers_)
        rows, cols = linear_sum_assignment(-(protos @ centroids.T))
        ordered = np.zeros_like(centroids)
        ordered[rows] = centroids[cols]
        self.centroids_ = ordered

    def _proba(self, x):
        return softmax(l2n(x) @ self.centroids_.T / self.temperature)
