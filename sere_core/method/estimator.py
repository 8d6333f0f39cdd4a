"""``SERE``: the scikit-learn-style estimator around preprocessing, the model and the loop.

>>> model = SERE(SEREConfig(steps=5))          # stores the config, nothing else
>>> hasattr(model, "classes_")
False
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Sequence
from itertools import repeat
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sere_core.atomic import atomic_folder, atomic_write_bytes, recover_folder
from sere_core.errors import ConfigError, ModelMismatchError, NotFittedError
from sere_core.method.config import MAX_VIEWS, RESEARCH_TAG, SEREConfig, without_removed
from sere_core.method.data import ClipFeatures, Prediction, Snapshot, TrainingProgress
from sere_core.method.normalization import GLOBAL, PreprocessConfig, Preprocessor, pool_factor
from sere_core.method.training import ProgressFn, embed_clips, pad, train
from sere_core.method.model import EnsembleModel, SEREModel, assemble, l2_normalize, side_by_side
from sere_core.method.threads import limited_threads
from sere_core.method.validation import check_fit_inputs, check_predict_inputs, spans_from_weights

FORMAT = "sere-model"
#: Version 2 (#15): every setting of SEREConfig is saved and every one is required; no PCA scale.
#: Version 3 (#47): each member reads a view of the columns (``views`` instead of ``feature_range``),
#: with a PCA of its own (``pre.view.<v>.*``); ``in_dims`` holds each view's size.
FORMAT_VERSION = 3
#: Settings added while version 1 was written, with the value that reproduces what a version-1
#: model saved without them did (the defaults differ since).
V1_MISSING_SETTINGS: dict[str, Any] = {"highlight_window": 1, "ensemble": 1, "highlight_edges": "clip"}
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
#: What a model folder holds: its two files (and temporary files that killed saves of older versions left).
_MODEL_FILE = re.compile(r"^(model\.json|model\.safetensors|\.model\.(json|safetensors)\..*\.tmp)$")
LEARNED = ("classes_", "preprocessor_", "model_", "snapshots_", "history_", "n_features_in_",
           "frame_rate_", "encoder_", "fit_time_s_")


def encoder_dict(info: Any) -> dict[str, Any] | None:
    """An ``EncoderInfo`` (or a dict with the same fields) as plain JSON-able values."""
    if info is None:
        return None
    data = asdict(info) if is_dataclass(info) else dict(info)
    if "layers" in data and data["layers"] is not None:
        data["layers"] = list(data["layers"])
    return data


def _not_safetensors(path: Path, head: bytes) -> str:
    """Why ``path`` (starting with ``head``) was refused; pickles are named as such because
    loading one can run code."""
    if head[:1] == b"\x80" or head == b"PK":  # pickle protocol 2+, or torch.save's zipped pickle
        return (f"{path} is a Python pickle, not a safetensors file; SERE never opens pickles "
                "because they can run code. Use a model folder written by `sere fit` or the app")
    return f"{path} is damaged or not a safetensors file; use a model folder written by `sere fit` or the app"


def preprocess_config(cfg: SEREConfig) -> PreprocessConfig:
    """The preprocessing of ``cfg``: the columns every view covers, z-scored together (z-scoring is
    per column, so this is each view's own), then each view's PCA."""
    start = min((a for a, _ in cfg.views), default=0)
    feature_range = (start, max(b for _, b in cfg.views)) if cfg.views else None
    return PreprocessConfig(feature_range=feature_range, views=tuple((a - start, b - start) for a, b in cfg.views),
                            target_frame_rate=cfg.target_frame_rate, per_language=cfg.per_language_norm,
                            per_speaker=cfg.per_speaker_norm, pca_dim=cfg.pca_dim,
                            pca_max_frames=cfg.pca_max_frames, seed=cfg.seed)


class SERE:
    """Semantic-Emotional Resonance Embedding for few-shot cross-lingual emotion recognition.

    ``fit(labeled, unlabeled)`` learns from a few labeled clips (any language, 2-10 emotions, as few
    as one clip for an emotion) and any number of unlabeled clips (typically the target language).
    """

    def __init__(self, config: SEREConfig = SEREConfig()) -> None:
        self.config = config

    # --- fitting -----------------------------------------------------------------------------------
    def fit(self, labeled: Sequence[ClipFeatures], unlabeled: Sequence[ClipFeatures] = (),
            progress: ProgressFn | None = None, *, encoder: Any = None) -> SERE:
        """Learn the emotion structure; forgets any earlier fit. ``encoder`` (an ``EncoderInfo``)
        is stored so that a saved model refuses features of another encoder. Raises
        ``TrainingCancelled`` when ``progress`` returns ``False``."""
        for name in LEARNED:
            self.__dict__.pop(name, None)
        with limited_threads(self.config.num_threads):
            return self._fit(labeled, unlabeled, progress, encoder)

    def _fit(self, labeled, unlabeled, progress, encoder) -> SERE:
        cfg = self.config
        classes, dim, rate = check_fit_inputs(labeled, unlabeled)
        labeled, unlabeled = list(labeled), list(unlabeled or [])
        pre = Preprocessor(preprocess_config(cfg)).fit(labeled + unlabeled)
        ids = tuple(c.clip_id for c in labeled + unlabeled)
        padded = [(pad(xl), pad(xu) if xu else None, (pad(xl + xu), ids) if cfg.snapshot_every else None)
                  for xl, xu in zip(pre.transform(labeled), pre.transform(unlabeled) if unlabeled else repeat([]))]
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[c.emotion] for c in labeled], dtype=torch.long)
        t0 = time.perf_counter()
        members, runs = [], []
        # member i: seed + 1000 i, on its view (member 0 is the single model)
        for i, (xl, xu, snap) in enumerate(self._per_member(padded)):
            member_cfg = replace(cfg, seed=cfg.seed + 1000 * i)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(member_cfg.seed)
                members.append(self._build_member(xl.x.shape[2], len(classes)))
            runs.append(train(members[-1], xl, y, xu, member_cfg,
                              _member_progress(progress, i, cfg.ensemble, t0), snap))
        self.classes_ = list(classes)
        self.preprocessor_ = pre
        self.model_ = assemble(members)
        self.snapshots_: list[Snapshot] = _ensemble_snapshots([r.snapshots for r in runs])
        self.history_: list[dict[str, float]] = [h for r in runs for h in r.history]
        self.n_features_in_ = dim
        self.frame_rate_ = rate
        self.encoder_ = encoder_dict(encoder)
        self.fit_time_s_ = time.perf_counter() - t0
        return self

    def _build_member(self, in_dim: int, n_classes: int) -> SEREModel:
        c = self.config
        return SEREModel(in_dim, n_classes, c.hidden_dim, c.embed_dim, c.context, c.dropout, c.tau,
                         c.tau_a, c.pooling, c.highlight_window, c.highlight_edges)

    def _per_member(self, per_view: Sequence[Any]) -> list[Any]:
        """``per_view`` (one item per view) as one item per member: member i reads view i mod n."""
        return [per_view[i % len(per_view)] for i in range(self.config.ensemble)]

    def _build(self, in_dims: Sequence[int], n_classes: int) -> SEREModel | EnsembleModel:
        """The network for views of sizes ``in_dims``."""
        return assemble([self._build_member(d, n_classes) for d in self._per_member(in_dims)])

    # --- inference -----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this SERE model is not trained yet: call fit() or SERE.load() first")

    def _forward(self, clips: Sequence[ClipFeatures], chunk: int = 256) -> dict[str, list]:
        """Per-clip ``z``, ``p`` and highlight weights, in the order of ``clips``."""
        self._check_fitted()
        clips = check_predict_inputs(clips, self.n_features_in_)
        with limited_threads(self.config.num_threads):
            return self._forward_arrays(self._inputs(clips), chunk)

    def _inputs(self, clips: Sequence[ClipFeatures]) -> list[np.ndarray]:
        """Each clip's network input: its members' views side by side (as ``EnsembleModel`` splits them)."""
        if not clips:
            return []
        mine = self._per_member(self.preprocessor_.transform(clips))
        return [np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0] for parts in zip(*mine)]

    def _forward_arrays(self, arrays: list[np.ndarray], chunk: int) -> dict[str, list]:
        """Also ``agree``: an ensemble's share of models that decide as it does (None for one model)."""
        order = np.argsort([a.shape[0] for a in arrays], kind="stable")
        z = [None] * len(arrays)
        p = [None] * len(arrays)
        a = [None] * len(arrays)
        agree: list[float | None] = [None] * len(arrays)
        for s in range(0, len(order), chunk):
            ids = order[s : s + chunk]
            out = embed_clips(self.model_, pad([arrays[i] for i in ids]), chunk=chunk)
            probs = torch.softmax(out["logits"] / self.config.confidence_temperature, -1).numpy()
            for j, i in enumerate(ids):
                z[i], p[i] = out["z"][j].numpy(), probs[j]
                a[i] = out["a"][j, : arrays[i].shape[0]].numpy()
                if "agree" in out:
                    agree[i] = round(float(out["agree"][j]), 4)
        return {"z": z, "p": p, "a": a, "agree": agree}

    def predict_proba(self, clips: Sequence[ClipFeatures]) -> np.ndarray:
        """``[N, C]`` probabilities; columns follow ``classes_``."""
        out = self._forward(clips)
        return np.stack(out["p"]) if out["p"] else np.zeros((0, len(self.classes_)), np.float32)

    def transform(self, clips: Sequence[ClipFeatures]) -> np.ndarray:
        """``[N, d]`` unit-norm clip embeddings in the resonance space."""
        out = self._forward(clips)
        dim = self.config.embed_dim * self.config.ensemble
        return np.stack(out["z"]) if out["z"] else np.zeros((0, dim), np.float32)

    def predict(self, clips: Sequence[ClipFeatures]) -> list[Prediction]:
        """One :class:`Prediction` per clip; an ensemble's also says how many of its models agree."""
        self._check_fitted()
        clips = check_predict_inputs(list(clips), self.n_features_in_)
        with limited_threads(self.config.num_threads):
            out = self._forward_arrays(self._inputs(clips), 256)
        preds = []
        for clip, p, a, agree in zip(clips, out["p"], out["a"], out["agree"]):
            k = int(np.argmax(p))
            factor = pool_factor(clip.frame_rate, self.config.target_frame_rate)
            spans = spans_from_weights(a, clip.n_frames, factor, clip.frame_rate,
                                       self.config.highlight_fraction)
            preds.append(Prediction(self.classes_[k], float(p[k]),
                                    {c: float(v) for c, v in zip(self.classes_, p)}, spans, agree))
        return preds

    @property
    def prototypes_(self) -> np.ndarray:
        """``[C, d]`` unit prototypes in the space of :meth:`transform` (side by side for an ensemble)."""
        self._check_fitted()
        return l2_normalize(self.model_.prototypes.detach()).numpy()

    # --- persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (weights, normalization, projection) and ``model.json``.

        The two files are written into a new folder that then replaces ``directory`` in one step
        (:func:`~sere_core.atomic.atomic_folder`), so a save that is killed leaves the model that
        was there before, never neither. Since the whole folder is replaced, a folder holding
        anything but a saved model is refused rather than emptied.
        """
        from safetensors.torch import save as tensors_to_bytes

        self._check_fitted()
        directory = Path(directory)
        others = sorted(p.name for p in directory.iterdir() if not _MODEL_FILE.match(p.name)) \
            if directory.is_dir() else []
        if others or (directory.exists() and not directory.is_dir()):
            raise ConfigError(
                f"{directory} is not empty ({', '.join(others[:3]) or 'a file'}...): a model is saved into a "
                "folder of its own, which replaces an earlier model there; choose a new folder")
        arrays, pre_meta = self.preprocessor_.state()
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model_.state_dict().items()}
        tensors.update({f"pre.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
            "classes": self.classes_, "encoder": self.encoder_, "n_features_in": self.n_features_in_,
            "frame_rate": self.frame_rate_, "in_dims": self.preprocessor_.out_dims,
            "preprocessor": pre_meta,
        }

        def fill(folder: Path) -> None:
            atomic_write_bytes(folder / WEIGHTS_FILE, tensors_to_bytes(tensors))
            atomic_write_bytes(folder / META_FILE, json.dumps(meta, indent=2).encode("utf-8"))

        return atomic_folder(directory, fill)

    @classmethod
    def load(cls, directory: str | Path, expected_encoder: Any = None,
             expected_classes: Sequence[str] | None = None) -> SERE:
        """Read a model written by :meth:`save`; with ``expected_encoder`` / ``expected_classes``
        it raises ``ModelMismatchError`` unless they match (see :meth:`check_compatible`)."""
        from safetensors import SafetensorError
        from safetensors.torch import load as tensors_from_bytes

        directory = Path(directory)
        recover_folder(directory)  # a save that died between its two renames (see atomic_folder)
        meta = _read_meta(directory)
        weights_file = directory / WEIGHTS_FILE
        data = _read_regular(weights_file, MAX_WEIGHTS_BYTES)
        try:
            tensors = tensors_from_bytes(data)
        except SafetensorError as err:
            raise ModelMismatchError(_not_safetensors(weights_file, data[:2])) from err
        del data
        if meta["format_version"] == 1:
            meta, tensors = upgrade_v1(meta, tensors, directory)
        if meta["format_version"] == 2:
            meta, tensors = upgrade_v2(meta, tensors)
        _check_finite(tensors, weights_file)
        mismatch = ModelMismatchError(
            f"{directory}: {META_FILE} and {WEIGHTS_FILE} do not belong to the same trained model "
            f"(for example a different set of emotions); copy both files from one model folder")
        try:
            model = cls(SEREConfig.from_dict(meta["config"]))
            arrays = {k[4:]: v.numpy() for k, v in tensors.items() if k.startswith("pre.")}
            _check_preprocessor(arrays, meta, model.config, directory)
            model.preprocessor_ = Preprocessor.from_state(preprocess_config(model.config), arrays,
                                                          meta["preprocessor"])
            weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
            with torch.device("meta"):  # shapes first: a crafted size must not allocate anything
                shapes = {k: tuple(v.shape) for k, v in
                          model._build(meta["in_dims"], len(meta["classes"])).state_dict().items()}
            if shapes != {k: tuple(v.shape) for k, v in weights.items()}:
                raise mismatch
            net = model._build(meta["in_dims"], len(meta["classes"]))
            net.load_state_dict(weights)
            model.classes_ = list(meta["classes"])
            model.n_features_in_ = meta["n_features_in"]
            model.frame_rate_ = float(meta["frame_rate"])
        except ConfigError as err:
            raise ModelMismatchError(f"{directory / META_FILE}: {err}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # RuntimeError: shape mismatch
            raise mismatch from err
        net.eval()
        model.model_ = net
        model.encoder_ = meta.get("encoder")
        model.snapshots_, model.history_, model.fit_time_s_ = [], [], 0.0
        model.check_compatible(expected_encoder, expected_classes)
        return model

    def check_compatible(self, encoder_info: Any = None, classes: Sequence[str] | None = None) -> None:
        """Raise ``ModelMismatchError`` when features of ``encoder_info`` or the emotion set
        ``classes`` cannot be used with this model (``None`` skips a check)."""
        self._check_fitted()
        if encoder_info is not None:
            want = encoder_dict(encoder_info)
            have = self.encoder_
            if int(want.get("dim", self.n_features_in_)) != self.n_features_in_:
                raise ModelMismatchError(
                    f"the model was trained on {self.n_features_in_}-dimensional features but encoder "
                    f"{want.get('name')!r} gives {want.get('dim')}; re-embed with the model's encoder")
            if have is not None:
                for key in ("name", "version", "layers"):
                    if key in want and key in have and want[key] != have[key]:
                        raise ModelMismatchError(
                            f"the model was trained with encoder {have.get('name')!r} "
                            f"(version {have.get('version')}, layers {have.get('layers')}) but the features "
                            f"come from {want.get('name')!r} (version {want.get('version')}, layers "
                            f"{want.get('layers')}); re-embed the audio or train a new model")
        if classes is not None and sorted(classes) != sorted(self.classes_):
            raise ModelMismatchError(
                f"the model knows the emotions {self.classes_} but {sorted(classes)} were expected")


#: A model's ``model.json`` is a few kilobytes and its weights a few megabytes; anything far
#: larger is not a SERE model, and reading it would only cost memory.
MAX_META_BYTES = 1_000_000
MAX_WEIGHTS_BYTES = 512_000_000
_MAX_CLASSES = 100
_MAX_DIM = 1_000_000


def _read_regular(path: Path, most: int) -> bytes:
    """The bytes of ``path``; refuses what is missing, not a regular file (a FIFO would block
    forever) or larger than ``most``. The checks are made on the opened file (non-blocking, so a
    FIFO cannot hold the open), so the file cannot be swapped between checking and reading."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ModelMismatchError(f"{path.parent} is not a saved SERE model ({path.name} is missing)") from None
    except OSError as err:
        raise ModelMismatchError(f"{path}: cannot be read ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelMismatchError(
                f"{path} is not a regular file; use a model folder written by `sere fit` or the app")
        data = handle.read(most + 1) if info.st_size <= most else b""
    if info.st_size > most or len(data) > most:
        raise ModelMismatchError(
            f"{path} is {max(info.st_size, len(data)) / 1e6:.0f} MB, far larger than a SERE model "
            f"({most / 1e6:.0f} MB at most)")
    return data


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every saved number is finite: a NaN would predict NaN without complaint."""
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelMismatchError(
                f"{path}: {name} holds values that are not finite numbers; the saved model is damaged, "
                "use a model folder written by `sere fit` or the app")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _read_meta(directory: Path) -> dict[str, Any]:
    """``model.json``, parsed and checked field by field before anything is built from it."""
    path = directory / META_FILE
    data = _read_regular(path, MAX_META_BYTES)
    try:
        meta = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as err:  # ValueError: JSON, huge ints
        raise ModelMismatchError(f"{path}: the saved model is damaged ({str(err)[:200]})") from None
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT
            and type(meta.get("format_version")) is int and meta["format_version"] in range(1, FORMAT_VERSION + 1)):
        raise ModelMismatchError(f"{path}: not a SERE model of format version 1 to {FORMAT_VERSION}")

    def bad(field: str, what: str) -> ModelMismatchError:
        return ModelMismatchError(f"{path}: {field} {what} (got {meta.get(field)!r:.80})")

    def count(field: str, most: int) -> None:
        value = meta.get(field)
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most):
            raise bad(field, f"must be a whole number from 1 to {most}")

    if meta["format_version"] < 3:
        count("in_dim", _MAX_DIM)
    elif not (isinstance(meta.get("in_dims"), list) and 1 <= len(meta["in_dims"]) <= MAX_VIEWS
              and all(_whole(d, 1, _MAX_DIM) for d in meta["in_dims"])):
        raise bad("in_dims", f"must list 1 to {MAX_VIEWS} sizes, each a whole number from 1 to {_MAX_DIM}")
    count("n_features_in", _MAX_DIM)
    rate = meta.get("frame_rate")
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 1 <= rate <= 100_000):
        raise bad("frame_rate", "must be a number of frames per second from 1 to 100000")
    classes = meta.get("classes")
    if not (isinstance(classes, list) and 2 <= len(classes) <= _MAX_CLASSES
            and all(isinstance(c, str) and 0 < len(c) <= 100 for c in classes) and len(set(classes)) == len(classes)):
        raise bad("classes", f"must list 2 to {_MAX_CLASSES} different emotion names")
    if not isinstance(meta.get("config"), dict):
        raise bad("config", "must be the model's settings")
    if meta["format_version"] >= 2:
        settings = {f.name for f in fields(SEREConfig)}
        if meta["format_version"] == 2:
            settings = settings - {"views"} | {"feature_range"}
        missing = sorted(settings - set(meta["config"]))
        if missing:
            raise bad("config", f"must hold every setting; missing: {', '.join(missing)}")
    encoder = meta.get("encoder")
    if encoder is not None and not (
        isinstance(encoder, dict) and isinstance(encoder.get("name"), str)
        and all(isinstance(encoder.get(k), str) for k in ("version",) if k in encoder)
        and (encoder.get("layers") is None or (isinstance(encoder["layers"], list)
                                               and all(_whole(x, 0, _MAX_DIM) for x in encoder["layers"])))
        and (encoder.get("dim") is None or _whole(encoder["dim"], 1, _MAX_DIM))
    ):
        raise bad("encoder", "must describe the encoder (its name, version, layers and dimension)")
    pre = meta.get("preprocessor")
    groups = pre.get("groups") if isinstance(pre, dict) else None
    if not (isinstance(groups, list) and GLOBAL in groups and len(set(groups)) == len(groups)
            and all(isinstance(g, str) for g in groups)):
        raise bad("preprocessor", "must list the normalization groups, each once, the group of all clips "
                                  f"({GLOBAL!r}) among them")
    if pre.get("frame_rate") != rate:  # fit stores the clips' rate twice
        raise bad("preprocessor", f"must hold the frame rate of the model ({rate})")
    return meta


def upgrade_v1(meta: dict[str, Any], tensors: dict[str, torch.Tensor], directory: Path
               ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A version-1 model as version 2: the settings added since get the values it was trained
    with, the settings deleted since must hold the value whose behaviour SERE kept, and the PCA
    scale (ones unless whitened, which is deleted) goes."""
    try:
        config = {**V1_MISSING_SETTINGS, **without_removed(meta["config"])}
    except ConfigError as err:
        raise ModelMismatchError(f"{directory / META_FILE}: {err}") from None
    scale = tensors.get("pre.pca.scale")
    if scale is not None and not bool((scale == 1).all()):
        raise ModelMismatchError(f"{directory / WEIGHTS_FILE}: a whitened PCA was removed from SERE; "
                                 f"the commit tagged {RESEARCH_TAG} still reads this model")
    tensors = {k: v for k, v in tensors.items() if k != "pre.pca.scale"}
    return {**meta, "format_version": 2, "config": config}, tensors


def upgrade_v2(meta: dict[str, Any], tensors: dict[str, torch.Tensor]
               ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A version-2 model as version 3: its column range is its one view, which every member reads,
    and the preprocessor's PCA is that view's."""
    config = {k: v for k, v in meta["config"].items() if k != "feature_range"}
    columns = meta["config"].get("feature_range")
    config["views"] = [] if columns is None else [columns]
    renamed = {"pre.pca.mean": "pre.view.0.mean", "pre.pca.components": "pre.view.0.components"}
    tensors = {renamed.get(k, k): v for k, v in tensors.items()}
    rest = {k: v for k, v in meta.items() if k != "in_dim"}
    return {**rest, "format_version": 3, "config": config, "in_dims": [meta["in_dim"]]}, tensors


def _whole(value: Any, least: int, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


def _check_preprocessor(arrays: dict[str, np.ndarray], meta: dict, config: SEREConfig, directory: Path) -> None:
    """The normalization and projection arrays fit together, take the encoder's ``n_features_in``
    columns (those the views of ``config`` cover) and give the views' sizes ``in_dims``."""
    broken = ModelMismatchError(
        f"{directory}: the normalization in {WEIGHTS_FILE} does not fit the model in {META_FILE}; "
        "copy both files from one model folder")
    in_dims, n_features = meta["in_dims"], meta["n_features_in"]
    stats = [arrays.get(f"norm.{i}.{kind}") for i in range(len(meta["preprocessor"]["groups"]))
             for kind in ("mean", "std")]
    widths = {a.shape[0] if a is not None and a.ndim == 1 else None for a in stats}
    width = widths.pop() if len(widths) == 1 else None
    if width is None or not all((std >= 0).all() for std in stats[1::2]):
        raise broken
    pre = preprocess_config(config)
    start, stop = pre.feature_range or (0, n_features)
    if stop > n_features or stop - start != width:
        raise ModelMismatchError(
            f"{directory / META_FILE}: n_features_in ({n_features}) and the views ({list(config.views)}) "
            f"do not fit the normalization in {WEIGHTS_FILE} ({width} columns); copy both files from one "
            "model folder")
    views = pre.views or ((0, width),)
    expected = {f"norm.{i}.{kind}" for i in range(len(meta["preprocessor"]["groups"])) for kind in ("mean", "std")}
    ok = len(in_dims) == len(views)
    for v, (a, b) in enumerate(views[:len(in_dims)]):
        if f"view.{v}.components" in arrays:
            expected |= {f"view.{v}.components", f"view.{v}.mean"}
            ok = ok and arrays[f"view.{v}.components"].shape == (in_dims[v], b - a) \
                and arrays.get(f"view.{v}.mean", np.empty(0)).shape == (b - a,)
        else:
            ok = ok and in_dims[v] == b - a
    if not ok or set(arrays) != expected:
        raise broken


def _member_progress(progress: ProgressFn | None, member: int, n_members: int, t0: float) -> ProgressFn | None:
    """One progress scale over all members: member ``i`` reports steps ``i * steps + 1 ...``."""
    if progress is None or n_members == 1:
        return progress

    def report(p: TrainingProgress) -> bool | None:
        return progress(TrainingProgress(member * p.total_steps + p.step, n_members * p.total_steps,
                                         p.losses, time.perf_counter() - t0, p.snapshot))
    return report


def _ensemble_snapshots(runs: list[list[Snapshot]]) -> list[Snapshot]:
    """Members' snapshots of the same step, side by side (as ``EnsembleModel`` reads them)."""
    if len(runs) == 1:
        return runs[0]

    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return side_by_side([torch.from_numpy(p) for p in parts]).numpy()

    return [Snapshot(shots[0].step, shots[0].clip_ids, joined([s.embeddings for s in shots]),
                     joined([s.prototypes for s in shots]))
            for shots in zip(*runs)]
