"""Poisoning attacks simulated on a labelled data set, with the poisoned rows known (ground truth).

Used to measure detectors (precision, recall) and the backdoor's success after sanitising and
retraining. Every function is deterministic under ``seed``, returns a new array (the input is
never changed) and a mask of the rows it poisoned.

* :func:`flip_labels_random` -- a fraction of rows get a random other label (label flipping).
* :func:`flip_labels_targeted` -- rows of a source class get the target label.
* :func:`badnets` -- a small pixel trigger stamped on rows of other classes, relabelled to the
  target (Gu, Dolan-Gavitt, Garg, "BadNets", arXiv:1708.06733).
* :func:`clean_label` -- the trigger stamped on target-class rows, labels unchanged, the rows
  first blended towards other classes' images so the model leans on the trigger
  (Turner, Tsipras, Madry, "Label-Consistent Backdoor Attacks", arXiv:1912.02771).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError


@dataclass
class PoisonedData:
    """A poisoned copy of a data set.

    Attributes:
        x: rows ``(N, *shape)`` (a copy).
        y: labels ``(N,)`` after the attack.
        poisoned: bool ``(N,)``, the rows the attack touched (ground truth).
        y_original: labels before the attack.
        attack: the attack's name.
        details: its settings (rate, target, trigger ...).
    """

    x: np.ndarray
    y: np.ndarray
    poisoned: np.ndarray
    y_original: np.ndarray
    attack: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trigger:
    """A square pixel patch stamped in a corner of an image.

    Attributes:
        size: side of the square in pixels.
        value: pixel value written (in the data's units, e.g. 1.0 on [0, 1] images).
        corner: ``bottom-right``, ``bottom-left``, ``top-right`` or ``top-left``.
        image_shape: ``(H, W)`` or ``(C, H, W)`` when rows are flat; ``None``: rows are images.
    """

    size: int = 2
    value: float = 1.0
    corner: str = "bottom-right"
    image_shape: tuple[int, ...] | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A copy of ``x`` ``(N, ..., H, W)`` (or flat rows with ``image_shape``) with the patch.

        Raises:
            ConfigError: rows are not images, or the patch does not fit.
        """
        arr = np.array(x, copy=True)
        shape = arr.shape
        img = arr.reshape((shape[0], *self.image_shape)) if self.image_shape is not None else arr
        if img.ndim < 3:
            raise ConfigError(f"trigger needs image rows (N, H, W) or (N, C, H, W); got {shape}")
        h, w = img.shape[-2], img.shape[-1]
        if not 0 < self.size <= min(h, w):
            raise ConfigError(f"trigger of size {self.size} does not fit {h}x{w} images")
        rows = slice(h - self.size, h) if self.corner.startswith("bottom") else slice(0, self.size)
        cols = slice(w - self.size, w) if self.corner.endswith("right") else slice(0, self.size)
        img[..., rows, cols] = self.value
        return img.reshape(shape)


def _check(x: np.ndarray, y: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    yv = np.asarray(y).astype(np.int64)
    if yv.ndim != 1 or yv.shape[0] != np.asarray(x).shape[0]:
        raise ConfigError(f"labels of shape {yv.shape} for {np.asarray(x).shape[0]} rows")
    if not 0 < rate < 1:
        raise ConfigError(f"poison rate must be in (0, 1), got {rate}")
    return np.array(x, copy=True), yv


def flip_labels_random(x: np.ndarray, y: np.ndarray, *, rate: float, seed: int = 0) -> PoisonedData:
    """Give ``round(rate * N)`` random rows a different label, drawn uniformly from the others."""
    xc, yv = _check(x, y, rate)
    rng = np.random.default_rng(seed)
    classes = np.unique(yv)
    if classes.size < 2:
        raise ConfigError("label flipping needs at least two classes")
    rows = rng.choice(yv.size, size=round(rate * yv.size), replace=False)
    ynew = yv.copy()
    for i in rows:
        others = classes[classes != yv[i]]
        ynew[i] = others[rng.integers(others.size)]
    mask = np.zeros(yv.size, dtype=bool)
    mask[rows] = True
    return PoisonedData(xc, ynew, mask, yv, "flip-random", {"rate": rate, "seed": seed})


def flip_labels_targeted(
    x: np.ndarray, y: np.ndarray, *, rate: float, source: int, target: int, seed: int = 0
) -> PoisonedData:
    """Relabel ``round(rate * N)`` rows of class ``source`` as ``target`` (all of them if fewer).

    Raises:
        ConfigError: ``source == target`` or ``source`` has no rows.
    """
    xc, yv = _check(x, y, rate)
    if source == target:
        raise ConfigError("targeted flipping needs source != target")
    pool = np.flatnonzero(yv == source)
    if pool.size == 0:
        raise ConfigError(f"class {source} has no rows to flip")
    rng = np.random.default_rng(seed)
    rows = rng.choice(pool, size=min(pool.size, round(rate * yv.size)), replace=False)
    ynew = yv.copy()
    ynew[rows] = target
    mask = np.zeros(yv.size, dtype=bool)
    mask[rows] = True
    details = {"rate": rate, "source": source, "target": target, "seed": seed}
    return PoisonedData(xc, ynew, mask, yv, "flip-targeted", details)


def badnets(
    x: np.ndarray, y: np.ndarray, *, rate: float, target: int, trigger: Trigger | None = None, seed: int = 0
) -> PoisonedData:
    """Stamp ``trigger`` on ``round(rate * N)`` rows of other classes and relabel them ``target``."""
    xc, yv = _check(x, y, rate)
    trig = trigger or Trigger()
    pool = np.flatnonzero(yv != target)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(pool, size=min(pool.size, round(rate * yv.size)), replace=False))
    xc[rows] = trig.apply(xc[rows])
    ynew = yv.copy()
    ynew[rows] = target
    mask = np.zeros(yv.size, dtype=bool)
    mask[rows] = True
    details = {"rate": rate, "target": target, "trigger": trig.__dict__, "seed": seed}
    return PoisonedData(xc, ynew, mask, yv, "badnets", details)


def clean_label(
    x: np.ndarray,
    y: np.ndarray,
    *,
    rate: float,
    target: int,
    trigger: Trigger | None = None,
    blend: float = 0.3,
    seed: int = 0,
) -> PoisonedData:
    """Stamp ``trigger`` on target-class rows (labels unchanged), blended towards other classes.

    Each chosen row becomes ``(1 - blend) * row + blend * other`` (``other`` a random row of
    another class), then gets the trigger: harder to learn from content, easy from the trigger.
    """
    xc, yv = _check(x, y, rate)
    if not 0 <= blend < 1:
        raise ConfigError(f"blend must be in [0, 1), got {blend}")
    trig = trigger or Trigger()
    pool = np.flatnonzero(yv == target)
    others = np.flatnonzero(yv != target)
    if pool.size == 0 or others.size == 0:
        raise ConfigError(f"clean-label poisoning needs rows of class {target} and of other classes")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(pool, size=min(pool.size, round(rate * yv.size)), replace=False))
    partner = rng.choice(others, size=rows.size)
    xc[rows] = (1 - blend) * xc[rows] + blend * xc[partner]
    xc[rows] = trig.apply(xc[rows])
    mask = np.zeros(yv.size, dtype=bool)
    mask[rows] = True
    details = {"rate": rate, "target": target, "blend": blend, "trigger": trig.__dict__, "seed": seed}
    return PoisonedData(xc, yv.copy(), mask, yv, "clean-label", details)


def attack_success_rate(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    target: int,
    trigger: Trigger,
) -> float:
    """Share of rows not of class ``target`` that ``predict`` labels ``target`` once triggered.

    Args:
        predict: maps rows ``(n, *shape)`` to labels ``(n,)``.
        x: clean test rows.
        y: their labels.
        target: the backdoor's target class.
        trigger: its trigger.
    """
    keep = np.asarray(y) != target
    if not keep.any():
        raise ConfigError(f"no test rows outside class {target}")
    pred = np.asarray(predict(trigger.apply(np.asarray(x)[keep])))
    return float(np.mean(pred == target))
