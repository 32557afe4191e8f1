"""Helpers shared by the target implementations (numpy only; no framework imports)."""

from __future__ import annotations

import hashlib
import hmac
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import IntegrityError, TargetError, require


def import_extra(module: str, extra: str) -> Any:
    """Import ``module`` lazily, typed as ``Any`` (for frameworks without type stubs).

    Raises:
        MissingExtraError: the module is not installed; names ``pip install 'bastion-ml[extra]'``.
    """
    require(module, extra)
    return importlib.import_module(module)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected: str, *, where: str | Path) -> str:
    """Check that ``data`` hashes to ``expected`` (case-insensitive hex).

    Args:
        data: the bytes about to be loaded.
        expected: the SHA-256 recorded when the file was scanned (or pinned in ``bastion.yaml``).
        where: the file, for the message.

    Returns:
        The actual hex digest.

    Raises:
        IntegrityError: the digests differ (the file changed after it was scanned).
    """
    actual = sha256_hex(data)
    want = expected.strip().lower()
    if not hmac.compare_digest(actual, want):
        raise IntegrityError(
            f"{where}: SHA-256 {actual[:16]}… does not match the recorded {want[:16]}…; "
            "the file changed after it was scanned, refusing to load it"
        )
    return actual


def read_model_bytes(path: str | Path, model_bytes: bytes | None) -> bytes:
    """The bytes to load: ``model_bytes`` when given (already verified), else the file read once.

    Raises:
        TargetError: the file cannot be read.
    """
    if model_bytes is not None:
        return bytes(model_bytes)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TargetError(f"{path}: model file not found") from None
    except OSError as exc:
        raise TargetError(f"{path}: cannot read model file: {exc.strerror or exc}") from None


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``z`` ``(N, C)``, numerically stable, float64."""
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def as_scores(raw: np.ndarray, *, kind: str, num_classes: int, name: str) -> np.ndarray:
    """Shape a model's raw output into ``(N, num_classes)`` float64 scores.

    A binary model with one output column is widened: one logit ``z`` becomes ``[0, z]``
    (so the softmax is the sigmoid), one probability ``p`` becomes ``[1 - p, p]``.

    Args:
        raw: ``(N,)``, ``(N, 1)`` or ``(N, num_classes)`` numbers.
        kind: ``logits`` or ``probabilities``.
        num_classes: expected number of classes.
        name: target name, for the message.

    Raises:
        TargetError: any other shape, or non-finite values.
    """
    a = np.asarray(raw, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise TargetError(f"{name}: model returned {kind} of shape {a.shape}, expected (N, {num_classes})")
    if a.shape[1] == 1 and num_classes == 2:
        a = (
            np.concatenate([np.zeros_like(a), a], axis=1)
            if kind == "logits"
            else np.concatenate([1.0 - a, a], axis=1)
        )
    if a.shape[1] != num_classes:
        raise TargetError(
            f"{name}: model returned {a.shape[1]} {kind} per row, but num_classes is {num_classes}"
        )
    if not np.all(np.isfinite(a)):
        raise TargetError(f"{name}: model returned non-finite {kind} (NaN or inf)")
    return a


def check_labels(y: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    """Validate integer labels ``y`` ``(n,)`` in ``[0, num_classes)``.

    Raises:
        TargetError: wrong length or a label out of range.
    """
    y = np.asarray(y)
    if y.shape != (n,):
        raise TargetError(f"{name}: labels of shape {y.shape} for {n} inputs, expected ({n},)")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise TargetError(f"{name}: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)
