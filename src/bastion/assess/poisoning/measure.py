"""How well a detector found the poison, and whether sanitising removed the backdoor.

Pure functions over masks and callables; :func:`detection_metrics` gives precision, recall,
F1 and the share of clean rows flagged, each rate with a 95 % Wilson interval;
:func:`sanitise_and_retrain` drops the flagged rows, retrains with the caller's recipe and
measures clean accuracy and the backdoor's success.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bastion.assess.poisoning.simulate import Trigger, attack_success_rate
from bastion.core.errors import ConfigError


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, min(p, c - h)), min(1.0, max(p, c + h)))


def detection_metrics(flagged: np.ndarray, poisoned: np.ndarray) -> dict[str, Any]:
    """Precision, recall, F1 and clean-flagged rate of a boolean verdict against the truth.

    Args:
        flagged: bool ``(N,)``, rows the detector flagged.
        poisoned: bool ``(N,)``, rows actually poisoned.

    Returns:
        ``{precision, recall, f1, clean_flagged_rate, flagged, poisoned, true_positives,
        intervals: {name: [low, high]}}``; precision is 1.0 when nothing is flagged.

    Raises:
        ConfigError: the masks differ in length.
    """
    f = np.asarray(flagged, dtype=bool)
    t = np.asarray(poisoned, dtype=bool)
    if f.shape != t.shape:
        raise ConfigError(f"verdict of shape {f.shape} against truth of shape {t.shape}")
    tp = int((f & t).sum())
    nf, npois, nclean = int(f.sum()), int(t.sum()), int((~t).sum())
    fp = nf - tp
    precision = tp / nf if nf else 1.0
    recall = tp / npois if npois else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    cfr = fp / nclean if nclean else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "clean_flagged_rate": cfr,
        "flagged": nf,
        "poisoned": npois,
        "true_positives": tp,
        "intervals": {
            "precision": list(wilson(tp, nf)),
            "recall": list(wilson(tp, npois)),
            "clean_flagged_rate": list(wilson(fp, nclean)),
        },
    }


def sanitise_and_retrain(
    train: Callable[[np.ndarray, np.ndarray], Any],
    predict: Callable[[Any, np.ndarray], np.ndarray],
    x_train: np.ndarray,
    y_train: np.ndarray,
    flagged: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    target: int,
    trigger: Trigger,
) -> dict[str, float]:
    """Drop the flagged rows, retrain, and measure clean accuracy and backdoor success.

    Args:
        train: the training recipe, ``(x, y) -> model``.
        predict: ``(model, x) -> labels``.
        x_train: the (poisoned) training rows.
        y_train: their labels.
        flagged: bool ``(N,)``, rows to drop.
        x_test: clean test rows.
        y_test: their labels.
        target: the backdoor's target class.
        trigger: its trigger.

    Returns:
        ``{clean_accuracy, attack_success, rows_kept}``.
    """
    keep = ~np.asarray(flagged, dtype=bool)
    model = train(np.asarray(x_train)[keep], np.asarray(y_train)[keep])
    acc = float(np.mean(predict(model, x_test) == y_test))
    asr = attack_success_rate(lambda a: predict(model, a), x_test, y_test, target=target, trigger=trigger)
    return {"clean_accuracy": acc, "attack_success": asr, "rows_kept": float(keep.sum())}
