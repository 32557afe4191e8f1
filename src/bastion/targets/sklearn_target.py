"""A scikit-learn estimator as a :class:`Target`, and the hash-verified joblib loader.

scikit-learn and joblib are imported lazily (extra ``data``).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bastion.core.capability import Capability
from bastion.core.errors import ConfigError, TargetError
from bastion.targets._util import check_labels, import_extra, read_model_bytes, verify_sha256
from bastion.targets.base import Target

log = logging.getLogger(__name__)

#: Element-wise affine preprocessing steps a loss gradient can be chained through.
_AFFINE_STEPS = {"StandardScaler", "MinMaxScaler", "MaxAbsScaler"}
#: Linear classifiers whose ``decision_function`` is ``coef_ @ z + intercept_`` (one score per
#: class, or one for a binary model): their scores are offered as logits, and the loss gradient
#: is the cross-entropy of the softmax of those scores (a differentiable surrogate of their loss).
_MARGIN_MODELS = {"LinearSVC", "SGDClassifier", "RidgeClassifier", "Perceptron"}


class SklearnTarget(Target):
    """A fitted scikit-learn classifier (or ``Pipeline``) in this process.

    Inputs ``(N, *input_shape)`` are flattened to ``(N, prod(input_shape))`` float64 before
    the estimator sees them. Labels are column indices ``0 .. num_classes-1``: when the
    estimator's ``classes_`` are the integers ``0 .. num_classes-1`` (possibly a subset)
    column ``k`` is class ``k``, otherwise column ``k`` is ``classes_[k]``.

    Loss gradients are offered for a ``LogisticRegression`` (binary or multinomial),
    alone or at the end of a ``Pipeline`` whose other steps are ``StandardScaler``,
    ``MinMaxScaler`` (without ``clip``) or ``MaxAbsScaler``: the cross-entropy gradient
    w.r.t. the model input is ``(p - onehot(y)) @ W`` times the scalers' diagonal Jacobian.
    The same holds for the linear margin classifiers ``LinearSVC``, ``SGDClassifier``,
    ``RidgeClassifier`` and ``Perceptron`` (one-vs-rest scores), with ``p`` the softmax of the
    ``decision_function`` scores (offered as logits, ``[0, s]`` for a binary model) — a
    differentiable surrogate of the hinge loss, enough for a white-box attack's direction.

    Threat model: white-box for these linear models, grey-box (scores) otherwise.

    Args:
        estimator: a fitted estimator with ``predict`` (and ``predict_proba`` for scores).
        name: asset name.
        input_shape: one sample's shape.
        num_classes: number of classes.
        batch_size: rows per estimator call.

    Capabilities:
        ``PROBABILITIES`` if the estimator has ``predict_proba``; ``LOGITS`` and
        ``LOSS_GRADIENTS`` for a linear margin classifier as above (knowing every class);
        ``LABEL_ONLY`` when neither; ``LOSS_GRADIENTS`` for logistic regression; ``BATCHED``.

    Raises:
        TargetError: the estimator has no ``predict``, is not fitted, or its classes do not
            fit ``num_classes``.
    """

    kind: ClassVar[str] = "sklearn"

    def __init__(
        self,
        estimator: Any,
        *,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int = 4096,
    ) -> None:
        if not callable(getattr(estimator, "predict", None)):
            raise TargetError(f"{name}: {type(estimator).__name__} has no predict(); not an estimator")
        if batch_size < 1:
            raise ConfigError(f"{name}: batch_size must be at least 1, got {batch_size}")
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise TargetError(f"{name}: {type(estimator).__name__} is not a fitted classifier (no classes_)")
        self.estimator = estimator
        self.batch_size = int(batch_size)
        self._columns = _column_map(np.asarray(classes), num_classes, name)
        self._classes = np.asarray(classes)
        caps = {Capability.BATCHED}
        self._linear = _linear_chain(estimator)
        self._margin = self._linear is not None and _final_step(estimator) in _MARGIN_MODELS
        if self._margin and len(self._columns) != num_classes:
            self._linear, self._margin = None, False  # scores for unseen classes are undefined
        if hasattr(estimator, "predict_proba"):
            caps.add(Capability.PROBABILITIES)
        if self._margin:
            caps |= {Capability.LOGITS, Capability.LOSS_GRADIENTS}
        elif Capability.PROBABILITIES not in caps:
            caps.add(Capability.LABEL_ONLY)
        if self._linear is not None and Capability.PROBABILITIES in caps:
            caps.add(Capability.LOSS_GRADIENTS)
        super().__init__(
            name=name, input_shape=tuple(input_shape), num_classes=num_classes, capabilities=frozenset(caps)
        )

    # -- helpers --------------------------------------------------------------------------
    def _flat(self, x: np.ndarray) -> np.ndarray:
        # float64: lossless from float32, and keeps probabilities near 0/1 resolvable (log p).
        return x.reshape(len(x), -1).astype(np.float64)

    def _batched(self, fn: Any, x: np.ndarray) -> np.ndarray:
        xf = self._flat(x)
        parts = [np.asarray(fn(xf[i : i + self.batch_size])) for i in range(0, len(xf), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0,))

    # -- predictions ----------------------------------------------------------------------
    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.num_classes))
        raw = np.asarray(self._batched(self.estimator.predict_proba, x), dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self._columns):
            raise TargetError(f"{self.name}: predict_proba returned shape {raw.shape}")
        out = np.zeros((len(x), self.num_classes), dtype=np.float64)
        out[:, self._columns] = raw
        return out

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        """``decision_function`` scores ``(N, num_classes)`` of a linear margin classifier."""
        if not self._margin:
            raise TargetError(f"{self.name}: {type(self.estimator).__name__} offers no logits")
        if len(x) == 0:
            return np.zeros((0, self.num_classes))
        raw = np.asarray(self._batched(self.estimator.decision_function, x), dtype=np.float64)
        if raw.ndim == 1:
            raw = np.stack([np.zeros_like(raw), raw], axis=1)
        if raw.shape[1] != len(self._columns):
            raise TargetError(f"{self.name}: decision_function returned shape {raw.shape}")
        out = np.zeros((len(x), self.num_classes), dtype=np.float64)
        out[:, self._columns] = raw
        return out

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        if self._margin:
            return np.asarray(self._predict_logits(x).argmax(axis=1), dtype=np.int64)
        if Capability.PROBABILITIES in self.capabilities:
            return np.asarray(self._predict_proba(x).argmax(axis=1), dtype=np.int64)
        if len(x) == 0:
            return np.zeros((0,), dtype=np.int64)
        pred = self._batched(self.estimator.predict, x)
        idx = np.searchsorted(self._classes, pred)
        idx = np.clip(idx, 0, len(self._classes) - 1)
        if not np.all(self._classes[idx] == pred):
            raise TargetError(f"{self.name}: predict returned labels outside classes_")
        return np.asarray(self._columns[idx], dtype=np.int64)

    def _loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(p - onehot(y)) @ W`` through the affine scalers; shape of ``x``."""
        assert self._linear is not None
        y = check_labels(y, len(x), self.num_classes, self.name)
        scale, coef = self._linear
        if self._margin:
            z = self._predict_logits(x)
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
        else:
            p = self._predict_proba(x)
        onehot = np.zeros_like(p)
        onehot[np.arange(len(x)), y] = 1.0
        w_full = np.zeros((self.num_classes, coef.shape[1]), dtype=np.float64)
        w_full[self._columns] = coef
        g = (p - onehot) @ w_full * scale[None, :]
        return g.reshape(x.shape).astype(np.float32)


def _column_map(classes: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """Output column of each of the estimator's classes (see :class:`SklearnTarget`)."""
    if classes.dtype.kind in "iub" or (
        classes.dtype.kind == "f" and np.all(np.isfinite(classes)) and np.all(classes == np.round(classes))
    ):
        ints = classes.astype(np.int64)
        if len(ints) and ints.min() >= 0 and ints.max() < num_classes:
            return ints
    if len(classes) == num_classes:
        return np.arange(num_classes, dtype=np.int64)
    raise TargetError(
        f"{name}: the estimator knows {len(classes)} classes ({list(classes)[:10]}), "
        f"which do not map onto num_classes={num_classes}"
    )


def _final_step(estimator: Any) -> str:
    """Class name of the estimator, or of a pipeline's last step."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps:
        return type(steps[-1][1]).__name__
    return type(estimator).__name__


def _linear_chain(estimator: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, coef)`` when ``estimator`` is a (scaled) linear model as above, else ``None``.

    ``scale`` is the diagonal Jacobian of the preprocessing ``d z / d x`` ``(d,)``; ``coef``
    is the logistic regression's ``(K, d)`` weights, widened to two rows for a binary model
    (``[0, w]``) so both cases read as a softmax over ``coef @ z``.
    """
    steps: list[Any]
    if hasattr(estimator, "steps") and isinstance(estimator.steps, list):
        steps = [s for _, s in estimator.steps if s is not None and s != "passthrough"]
    else:
        steps = [estimator]
    if not steps:
        return None
    final = steps[-1]
    kind = type(final).__name__
    if kind not in {"LogisticRegression", *_MARGIN_MODELS} or not type(final).__module__.startswith(
        "sklearn."
    ):
        return None
    coef = getattr(final, "coef_", None)
    if coef is None:
        return None
    coef = np.asarray(coef, dtype=np.float64)
    n_classes = len(getattr(final, "classes_", []))
    if kind == "LogisticRegression" and n_classes > 2 and getattr(final, "multi_class", "auto") == "ovr":
        return None  # one-vs-rest probabilities are not a softmax of coef @ z
    if coef.ndim != 2 or coef.shape[0] not in (1, n_classes):
        return None
    if coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef), coef])
    scale = np.ones(coef.shape[1], dtype=np.float64)
    for step in steps[:-1]:
        kind = type(step).__name__
        if kind not in _AFFINE_STEPS or not type(step).__module__.startswith("sklearn."):
            return None
        if kind == "StandardScaler":
            s = getattr(step, "scale_", None)
            factor = np.ones_like(scale) if s is None else 1.0 / np.asarray(s, dtype=np.float64)
        elif kind == "MinMaxScaler":
            if getattr(step, "clip", False):
                return None
            factor = np.asarray(step.scale_, dtype=np.float64)
        else:  # MaxAbsScaler
            factor = 1.0 / np.asarray(step.scale_, dtype=np.float64)
        if factor.shape != scale.shape:
            return None
        scale = scale * factor
    return scale, coef


def load_joblib_verified(path: str | Path, *, expected_sha256: str, model_bytes: bytes | None = None) -> Any:
    """Load a joblib/pickle file **only** if its bytes still hash to what the scanner saw.

    .. warning::
        Unpickling runs code. PRECONDITION: the caller (``bastion.api``) has already run
        the static scanner on this file, got a ``safe`` verdict (every global allow-listed
        plain data), and passes the SHA-256 it recorded then. Never call this on a file
        that was not scanned, or with a hash computed here and now.

    The file is read once; the hash is computed over those bytes and the estimator is
    unpickled from the same bytes (``io.BytesIO``), so the file cannot be swapped between
    the check and the load (no TOCTOU window).

    Args:
        path: the file (for messages; read only when ``model_bytes`` is ``None``).
        expected_sha256: hex SHA-256 recorded when the scanner judged the file safe.
        model_bytes: the bytes the scanner read, if the caller kept them; still re-hashed.

    Returns:
        The unpickled object (an estimator).

    Raises:
        IntegrityError: the bytes' SHA-256 differs from ``expected_sha256``.
        TargetError: the file is missing or not a loadable joblib/pickle stream.
        MissingExtraError: joblib is not installed.
    """
    joblib = import_extra("joblib", "data")
    if not isinstance(expected_sha256, str) or not expected_sha256.strip():
        raise TargetError(f"{path}: refusing to load a joblib file without the scanner's recorded SHA-256")
    data = read_model_bytes(path, model_bytes)
    verify_sha256(data, expected_sha256, where=path)
    try:
        obj = joblib.load(io.BytesIO(data))
    except Exception as exc:  # corrupt stream, missing module, version skew
        raise TargetError(
            f"{path}: cannot load joblib file ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    log.debug("loaded verified joblib file %s", path)
    return obj


def load_skops_verified(
    path: str | Path, *, expected_sha256: str | None, model_bytes: bytes | None = None
) -> Any:
    """Load a skops file, refusing any type outside skops' trusted defaults (never unpickles).

    skops stores an estimator as a JSON schema plus numpy arrays and rebuilds only the types
    it is told to trust. :func:`skops.io.get_untrusted_types` lists every type the file would
    construct beyond skops' built-in trusted set (scikit-learn estimators, numpy, scipy); any
    such type is refused here — nothing is ever passed to ``trusted=``.

    Args:
        path: the file (for messages; read only when ``model_bytes`` is ``None``).
        expected_sha256: hex SHA-256 recorded when the scanner saw the file, if any.
        model_bytes: the bytes the scanner read, if the caller kept them; re-hashed.

    Returns:
        The estimator.

    Raises:
        IntegrityError: the bytes' SHA-256 differs from ``expected_sha256``.
        TargetError: untrusted types in the file, or not a loadable skops file.
        MissingExtraError: skops is not installed.
    """
    sio = import_extra("skops.io", "data")
    data = read_model_bytes(path, model_bytes)
    if expected_sha256:
        verify_sha256(data, expected_sha256, where=path)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # not a zip, no schema, bad JSON
        raise TargetError(
            f"{path}: not a readable skops file ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if untrusted:
        raise TargetError(
            f"{path}: refusing to load a skops file with untrusted types: {', '.join(sorted(untrusted)[:5])}"
        )
    try:
        obj = sio.loads(data)
    except Exception as exc:
        raise TargetError(
            f"{path}: cannot load skops file ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    log.debug("loaded skops file %s (trusted types only)", path)
    return obj
