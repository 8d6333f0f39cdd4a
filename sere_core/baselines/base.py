"""What every baseline shares: utterance features and the estimator contract.

Utterance features are the mean (and, with ``stats="mean_std"``, the standard deviation) over time
of the frames after the same preprocessing as SERE (time pooling, per-language or per-speaker
z-scoring with unlabeled statistics), then standardized column-wise over the clips seen in ``fit``.
Which encoder columns (``feature_range``) and which statistics each baseline reads is chosen per
baseline on the development seeds, so that SERE is compared with each at its best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sere_core.errors import ConfigError, NotFittedError
from sere_core.method.data import ClipFeatures, Prediction
from sere_core.method.normalization import PreprocessConfig, Preprocessor
from sere_core.method.threads import limited_threads
from sere_core.method.validation import check_fit_inputs, check_predict_inputs


def softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def sinkhorn_np(scores: np.ndarray, n_iters: int = 10) -> np.ndarray:
    """Balanced soft assignments from positive ``scores [N, C]`` (rows sum to 1, columns to N/C)."""
    q = scores / scores.sum()
    n, c = q.shape
    for _ in range(n_iters):
        q = q / np.maximum(q.sum(0, keepdims=True), 1e-30) / c
        q = q / np.maximum(q.sum(1, keepdims=True), 1e-30) / n
    return q * n


def balance_log_prior(p: np.ndarray, n_iters: int = 20) -> np.ndarray:
    """Offsets ``[C]`` added to log-probabilities so that their mean over the unlabeled clips
    ``p [N, C]`` becomes uniform (the same class-balance correction SERE applies)."""
    logp = np.log(np.maximum(p, 1e-12))
    b = np.zeros(p.shape[1])
    for _ in range(n_iters):
        b -= np.log(np.maximum(softmax(logp + b).mean(0), 1e-12) * p.shape[1])
    return b - b.mean()


#: Utterance statistics a baseline can read: the frames' mean, or their mean and standard deviation.
STATS = ("mean_std", "mean")


class UtteranceBaseline:
    """Base of the baselines; subclasses implement ``_fit(x_l, y_l, x_u)`` and ``_proba(x)``."""

    name = "baseline"

    def __init__(self, per_language_norm: bool = True, per_speaker_norm: bool = False,
                 feature_range: tuple[int, int] | None = None, target_frame_rate: float = 12.5,
                 stats: str = "mean_std", standardize: bool = True, balance: float = 0.0, seed: int = 0,
                 num_threads: int = 1) -> None:
        if stats not in STATS:
            raise ConfigError(f"{self.name}: stats must be one of {STATS}, got {stats!r}")
        self.per_language_norm = per_language_norm
        self.per_speaker_norm = per_speaker_norm
        self.feature_range = feature_range
        self.target_frame_rate = target_frame_rate
        self.stats = stats
        self.standardize = standardize
        self.balance = balance
        self.seed = seed
        self.num_threads = num_threads

    # --- features ---------------------------------------------------------------------------------
    def _utterances(self, clips: Sequence[ClipFeatures]) -> np.ndarray:
        (frames,) = self.preprocessor_.transform(clips)  # one view: feature_range's columns
        with_std = self.stats == "mean_std"
        x = np.stack([np.concatenate([f.mean(0), f.std(0)]) if with_std else f.mean(0) for f in frames])
        x = x.astype(np.float32)
        return (x - self.mu_) / self.sigma_

    def fit(self, labeled: Sequence[ClipFeatures], unlabeled: Sequence[ClipFeatures] = (),
            progress=None, **_: object) -> UtteranceBaseline:
        for name in [k for k in self.__dict__ if k.endswith("_") and not k.startswith("_")]:
            del self.__dict__[name]
        with limited_threads(self.num_threads):
            return self._fit_all(labeled, unlabeled)

    def _fit_all(self, labeled, unlabeled) -> UtteranceBaseline:
        classes, dim, _rate = check_fit_inputs(labeled, unlabeled)
        labeled, unlabeled = list(labeled), list(unlabeled or [])
        cfg = PreprocessConfig(feature_range=self.feature_range, target_frame_rate=self.target_frame_rate,
                               per_language=self.per_language_norm, per_speaker=self.per_speaker_norm,
                               seed=self.seed)
        self.preprocessor_ = Preprocessor(cfg).fit(labeled + unlabeled)
        self.mu_, self.sigma_ = 0.0, 1.0
        x_all = self._utterances(labeled + unlabeled)
        if self.standardize:
            self.mu_, self.sigma_ = x_all.mean(0), x_all.std(0) + 1e-5
            x_all = (x_all - self.mu_) / self.sigma_
        x_l, x_u = x_all[: len(labeled)], x_all[len(labeled):]
        self.classes_ = list(classes)
        self.n_features_in_ = dim
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c.emotion] for c in labeled])
        self._fit(x_l, y, x_u)
        self.log_prior_ = np.zeros(len(classes))
        if self.balance > 0 and len(x_u):
            self.log_prior_ = self.balance * balance_log_prior(self._proba(x_u))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    def predict_proba(self, clips: Sequence[ClipFeatures]) -> np.ndarray:
        """``[N, C]``; columns follow ``classes_``."""
        self._check_fitted()
        clips = check_predict_inputs(clips, self.n_features_in_)
        if not clips:
            return np.zeros((0, len(self.classes_)), np.float32)
        with limited_threads(self.num_threads):
            p = self._proba(self._utterances(clips))
        if np.any(self.log_prior_):
            p = softmax(np.log(np.maximum(p, 1e-12)) + self.log_prior_)
        return p.astype(np.float32)

    def predict(self, clips: Sequence[ClipFeatures]) -> list[Prediction]:
        proba = self.predict_proba(clips)
        out = []
        for p in proba:
            k = int(np.argmax(p))
            out.append(Prediction(self.classes_[k], float(p[k]),
                                  {c: float(v) for c, v in zip(self.classes_, p)}, []))
        return out

    def transform(self, clips: Sequence[ClipFeatures]) -> np.ndarray:
        """The standardized utterance features ``[N, 2D]``."""
        self._check_fitted()
        return self._utterances(check_predict_inputs(clips, self.n_features_in_))

    # subclasses
    def _fit(self, x_l: np.ndarray, y: np.ndarray, x_u: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _proba(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError
