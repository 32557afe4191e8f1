"""Control 6 — canary tokens: secret trap inputs and honeytoken records; a hit alerts at once.

A canary is an input only someone holding leaked data (or probing the service with it) would
send — e.g. a fabricated patient record planted in a dataset copy. ``guard.yaml`` stores only
its SHA-256 over the canonical bytes (float32, rounded to 4 decimals, C order, with the shape),
so the config does not reveal the trap. :func:`canary_hash` computes it for ``guard.yaml``.

Honeytoken records (below) are fabricated training rows planted in the data: a query matching
one, within ``step / 2`` per feature, shows the caller holds the training data.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Callable

import numpy as np

from bastion.core.errors import ConfigError
from bastion.guard.config import Canary, HoneytokenEntry, HoneytokenSpec


def canary_hash(row: np.ndarray) -> str:
    """SHA-256 (hex) of one input row's canonical bytes."""
    a = np.ascontiguousarray(np.round(np.asarray(row, dtype=np.float64), 4).astype("<f4"))
    h = hashlib.sha256(repr(tuple(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


class CanaryWatch:
    """Matches each row against the configured canaries."""

    def __init__(self, canaries: list[Canary]) -> None:
        self._by_hash = {c.sha256: c.id for c in canaries}

    def hits(self, x: np.ndarray) -> list[str]:
        """Ids of the canaries among the rows of ``x`` ``(N, *shape)``."""
        if not self._by_hash:
            return []
        return [cid for row in x if (cid := self._by_hash.get(canary_hash(row))) is not None]


# -- honeytoken records -----------------------------------------------------------------------------
#
# A honeytoken is a fabricated training row (a blend of two real rows of one class, snapped to the
# data's value grid) that the data owner plants in the training data. Nobody but a holder of that
# data can send it, so a query that matches one is evidence that the data was stolen (and is
# being replayed, e.g. for membership inference or to extract the model).
#
# The guard stores only keyed hashes: HMAC-SHA-256 under a random salt of the row quantised on a
# grid of ``step`` (``rint(x / step)`` as int64). Tokens are generated ON the grid, so every query
# within ``step / 2`` of a token in every feature (L-inf) lands in the same cell and matches; the
# tolerance is therefore ``step / 2`` and the raw rows never need to be kept by the guard.


def honeytoken_hmac(row: np.ndarray, *, salt: str, step: float | np.ndarray, pepper: bytes = b"") -> str:
    """Keyed hash (hex) of one row quantised on the ``step`` grid.

    Args:
        row: one input row, any shape (flattened).
        salt: hex key of the honeytoken set.
        step: grid step, one for all features or one per flat feature ``(F,)``; rows within
            ``step / 2`` (per feature) of a grid point share its hash.
        pepper: secret bytes appended to the key (from an environment variable; never stored).
    """
    q = np.clip(np.rint(np.asarray(row, dtype=np.float64).ravel() / step), -(2.0**62), 2.0**62)
    h = hmac.new(bytes.fromhex(salt) + pepper, repr(int(q.size)).encode(), hashlib.sha256)
    h.update(q.astype("<i8").tobytes())
    return h.hexdigest()


def _lattice(v: np.ndarray) -> float | None:
    """The step of the lattice the sorted unique values ``v`` sit on, or ``None``."""
    if len(v) < 2 or len(v) > 4096:
        return None
    q = float(np.min(np.diff(v)))
    if q < 1e-6:
        return None
    r = v / q
    return q if bool(np.all(np.abs(r - np.rint(r)) < 1e-4)) else None


def data_step(x: np.ndarray, *, default: float = 1e-4) -> float:
    """The value grid of a dataset: the lattice step all values sit on, else ``default``.

    Digits scaled by 1/16 give 0.0625; continuous data gives ``default`` (tokens then sit on a
    1e-4 grid, which real data written with 4 decimals shares).
    """
    q = _lattice(np.unique(np.asarray(x, dtype=np.float64).ravel()[:2_000_000]))
    return default if q is None else q


def data_steps(x: np.ndarray, *, default: float = 1e-4) -> float | np.ndarray:
    """Per-feature value grids: one step when every value sits on a common lattice, else one per feature.

    A feature on its own lattice (integer ages, prices in cents) keeps that lattice; a
    continuous feature gets about 5 significant digits of its largest magnitude
    (``10 ** (floor(log10(max |x|)) - 4)``, at least ``default``), so a large-valued feature
    (an income of 52,000) is not held to a 1e-4 grid that float32 cannot even represent.

    Returns:
        A float (one grid for all features) or an array ``(F,)``.
    """
    xs = np.asarray(x, dtype=np.float64)
    flat = xs.reshape(len(xs), -1)
    common = _lattice(np.unique(flat.ravel()[:2_000_000]))
    if common is not None:
        return common
    steps = np.empty(flat.shape[1], dtype=np.float64)
    for j in range(flat.shape[1]):
        col = np.unique(flat[:, j])
        q = _lattice(col)
        if q is None:
            top = float(np.max(np.abs(col))) if len(col) else 0.0
            q = max(default, 10.0 ** (math.floor(math.log10(top)) - 4)) if top > 0 else default
        steps[j] = q
    return float(steps[0]) if bool(np.all(steps == steps[0])) else steps


def make_honeytokens(
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    n: int,
    step: float | np.ndarray,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    categorical: list[int] | None = None,
    accept: Callable[[np.ndarray], bool] | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fabricate ``n`` plausible rows to plant in the training data.

    Each token blends two real rows of one class (weight 0.35–0.65), keeps categorical features
    from one of them, is snapped to the ``step`` grid and clipped to ``[lo, hi]``. A candidate is
    dropped when a real row, or another token, lies within ``step`` of it in every feature (so
    real data never matches), or when ``accept`` rejects it (e.g. out of distribution).

    Args:
        x: real rows ``(N, *shape)``.
        y: their labels ``(N,)`` (blends stay within a class; the token takes it), or ``None``.
        n: tokens wanted.
        step: the grid, one for all features or one per flat feature ``(F,)`` (see :func:`data_steps`).
        lo: per flat feature lower bounds ``(F,)``.
        hi: per flat feature upper bounds ``(F,)``.
        categorical: flat feature indices copied rather than blended.
        accept: extra test of a flat candidate ``(F,)``.
        rng: randomness (default: seeded from the OS; tokens must not be reproducible).

    Returns:
        ``(tokens (n, *shape), labels (n,) or None)``.

    Raises:
        ConfigError: fewer than 2 rows, or ``n`` tokens could not be made.
    """
    if rng is None:
        rng = np.random.default_rng(secrets.randbits(128))
    xs = np.asarray(x, dtype=np.float64)
    flat = xs.reshape(len(xs), -1)
    if len(flat) < 2 or n < 1:
        raise ConfigError(f"honeytokens: need at least 2 rows and n >= 1 (got {len(flat)} rows, n={n})")
    groups: list[np.ndarray] = []
    if y is not None:
        yy = np.asarray(y).ravel()
        groups = [np.flatnonzero(yy == c) for c in np.unique(yy)]
        groups = [g for g in groups if len(g) >= 2]
    if not groups:
        groups = [np.arange(len(flat))]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    f = flat.shape[1]
    step = np.asarray(step, dtype=np.float64) if np.ndim(step) else float(step)
    if np.ndim(step) and np.shape(step) != (f,):
        raise ConfigError(f"honeytokens: {np.size(step)} grid steps for {f} features")
    lo_g = np.ceil((lo if lo is not None else np.full(f, -np.inf)) / step - 1e-9) * step
    hi_g = np.floor((hi if hi is not None else np.full(f, np.inf)) / step + 1e-9) * step
    cats = np.asarray(sorted(set(categorical or [])), dtype=np.int64)
    tokens: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(200 * n):
        if len(tokens) == n:
            break
        gi = int(rng.choice(len(groups), p=sizes / sizes.sum()))
        a, b = rng.choice(groups[gi], size=2, replace=False)
        lam = rng.uniform(0.35, 0.65)
        t = np.rint((lam * flat[a] + (1 - lam) * flat[b]) / step) * step
        t = np.minimum(np.maximum(t, lo_g), hi_g)
        if len(cats):
            t[cats] = flat[a, cats]
        if np.any(np.all(np.abs(flat - t) <= step, axis=1)):
            continue
        if tokens and np.any(np.all(np.abs(np.asarray(tokens) - t) <= step, axis=1)):
            continue
        if accept is not None and not accept(t):
            continue
        tokens.append(t)
        if y is not None:
            labels.append(int(np.asarray(y).ravel()[a]))
    if len(tokens) < n:
        raise ConfigError(f"honeytokens: could make only {len(tokens)} of {n} distinct plausible rows")
    out = np.asarray(tokens).reshape((n, *xs.shape[1:]))
    return out, (np.asarray(labels, dtype=np.int64) if y is not None else None)


def honeytoken_pepper(pepper_env: str | None) -> bytes:
    """The secret pepper named by ``pepper_env`` (``b""`` when none is named).

    Raises:
        ConfigError: the variable is named but not set (or empty).
    """
    if pepper_env is None:
        return b""
    value = os.environ.get(pepper_env)
    if not value:
        raise ConfigError(f"honeytokens: environment variable {pepper_env} (the pepper) is not set")
    return value.encode("utf-8")


def honeytoken_spec(
    tokens: np.ndarray,
    *,
    step: float | np.ndarray,
    salt: str | None = None,
    pepper_env: str | None = None,
) -> HoneytokenSpec:
    """The keyed-hash record of ``tokens`` ``(n, *shape)`` (what ``guard.yaml`` / the artefact keep).

    Args:
        tokens: the planted rows.
        step: the grid they sit on (one, or one per flat feature).
        salt: hex HMAC key (fresh random by default).
        pepper_env: environment variable of a secret pepper mixed into the key; only its name
            is recorded.

    Raises:
        ConfigError: ``pepper_env`` is not set.
    """
    salt = salt or secrets.token_hex(16)
    pepper = honeytoken_pepper(pepper_env)
    st: float | list[float] = [float(v) for v in np.ravel(step)] if np.ndim(step) else float(step)
    grid = np.asarray(st, dtype=np.float64) if isinstance(st, list) else st
    entries = [
        HoneytokenEntry(id=f"ht-{i:04d}", hmac=honeytoken_hmac(t, salt=salt, step=grid, pepper=pepper))
        for i, t in enumerate(np.asarray(tokens))
    ]
    return HoneytokenSpec(salt=salt, step=st, tokens=entries, pepper_env=pepper_env)


class HoneytokenWatch:
    """Matches each row against one or more honeytoken sets (keyed hashes only).

    Args:
        sets: the honeytoken sets.
        n_features: flat features of an input; a per-feature ``step`` must have this length.

    Raises:
        ConfigError: a set's pepper variable is not set, or its steps do not fit the input.
    """

    def __init__(self, sets: list[HoneytokenSpec], *, n_features: int | None = None) -> None:
        self._sets: list[tuple[str, float | np.ndarray, bytes, dict[str, str]]] = []
        for s in sets:
            if not s.tokens:
                continue
            grid: float | np.ndarray = (
                np.asarray(s.step, dtype=np.float64) if isinstance(s.step, list) else s.step
            )
            if isinstance(grid, np.ndarray) and n_features is not None and grid.shape != (n_features,):
                raise ConfigError(
                    f"honeytokens: {grid.size} grid steps, but an input has {n_features} features"
                )
            table = {e.hmac: e.id for e in s.tokens}
            self._sets.append((s.salt, grid, honeytoken_pepper(s.pepper_env), table))

    def __bool__(self) -> bool:
        return bool(self._sets)

    def hits(self, x: np.ndarray) -> list[tuple[int, str]]:
        """``(row index, token id)`` of every row of ``x`` ``(N, *shape)`` that matches a token."""
        out: list[tuple[int, str]] = []
        for salt, step, pepper, table in self._sets:
            for i, row in enumerate(x):
                tid = table.get(honeytoken_hmac(row, salt=salt, step=step, pepper=pepper))
                if tid is not None:
                    out.append((i, tid))
        return out
