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
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError
from bastion.guard.config import Canary, HoneytokenEntry, HoneytokenSpec


def canary_hash(row: np.ndarray) -> str:
    """SHA-256 (hex) of one input row's canonical bytes.

    The row as the guard's model receives it (float32), rounded to 4 decimals, ``-0.0`` as
    ``0.0``, as little-endian float32 in C order, after the repr of its shape. Rounding the
    float64 values instead missed trap rows near a 4-decimal tie (``0.12345``) and zeros sent
    as ``-0.0`` (red-team round 27).
    """
    a = _canonical(row)
    h = hashlib.sha256(repr(tuple(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _canonical(x: np.ndarray) -> np.ndarray:
    """The canonical values of rows (or of one row), as a new C-ordered little-endian float32 array.

    Float32 as the model receives them, rounded to 4 decimals, ``-0.0`` as ``0.0``.

    ``np.round(v, 4)`` is ``rint(v * 1e4) / 1e4`` in numpy, written out as three ufunc calls
    (``np.round``'s Python wrapper costs more than the arithmetic for a request's few rows).
    """
    r = np.asarray(x, dtype=np.float32).astype(np.float64)
    r *= 1e4
    np.rint(r, out=r)
    r /= 1e4
    r += 0.0  # -0.0 + 0.0 is 0.0
    return np.ascontiguousarray(r.astype("<f4"))


#: dtypes of the canonical bytes (built once: a dtype given as a string is parsed at each use)
_F4 = np.dtype("<f4")
_I8 = np.dtype("<i8")
#: ``np.float32`` as a dtype: comparing a dtype with it converts the type to a dtype at each use
_F32 = np.dtype(np.float32)


def _canonical64(x64: np.ndarray) -> np.ndarray:
    """:func:`_canonical` of float32 rows given as float64 (``x.astype(np.float64)``): the same array."""
    r = x64 * 1e4  # a new array: the caller's is not changed
    np.rint(r, out=r)
    r /= 1e4
    r += 0.0
    a = r.astype(_F4)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


class CanaryWatch:
    """Matches each row against the configured canaries."""

    def __init__(self, canaries: list[Canary]) -> None:
        self._by_hash = {c.sha256: c.id for c in canaries}
        self._by_digest = {bytes.fromhex(h): cid for h, cid in self._by_hash.items()}
        self._prefix: dict[tuple[int, ...], Any] = {}  # row shape → hash of its repr (copied per row)

    def hits(self, x: np.ndarray) -> list[str]:
        """Ids of the canaries among the rows of ``x`` ``(N, *shape)``."""
        return [cid for _, cid in self.hit_rows(x)]

    def hit_rows(self, x: np.ndarray, *, x64: np.ndarray | None = None) -> list[tuple[int, str]]:
        """``(row index, canary id)`` of every row of ``x`` ``(N, *shape)`` that is a canary.

        ``x64``: ``x`` already converted to float64 (``x.astype(np.float64)``; saves the conversion).
        """
        if not self._by_hash:
            return []
        # :func:`canary_hash`'s bytes of each row, all rows at once
        fast = x64 is not None and getattr(x, "dtype", None) == _F32 and x64.shape == x.shape
        a = _canonical64(x64) if fast and x64 is not None else _canonical(x)
        if a.ndim < 2 or len(a) == 0:  # scalar rows: ``canary_hash`` hashes them with shape (1,)
            return [
                (i, cid)
                for i, row in enumerate(x)
                if (cid := self._by_hash.get(canary_hash(row))) is not None
            ]
        shape = a.shape[1:]
        prefix = self._prefix.get(shape)
        if prefix is None:
            prefix = self._prefix[shape] = hashlib.sha256(repr(tuple(shape)).encode())
        out: list[tuple[int, str]] = []
        data = a.tobytes()
        step = len(data) // len(a)  # one row's bytes (C order: the rows one after another)
        for i in range(len(a)):
            h = prefix.copy()
            h.update(data[i * step : (i + 1) * step])
            cid = self._by_digest.get(h.digest())
            if cid is not None:
                out.append((i, cid))
        return out


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


#: Most honeytokens one call makes (``guard honeytokens -n`` / ``guard fit --honeytokens``).
MAX_HONEYTOKENS = 10_000

#: Most decimals a value grid is derived from (a finer one is treated as continuous).
MAX_DECIMALS = 6

#: A common grid is kept for all features while every feature's own grid is at most this many steps of it.
_COMMON_FACTOR = 16


def decimals_of(values: np.ndarray, *, max_decimals: int = MAX_DECIMALS) -> int | None:
    """The fewest decimals every value round-trips at, in its own dtype; ``None`` past ``max_decimals``.

    A CSV value ``14.23`` loaded as float32 (``14.229999542…``) needs 2: rounding its float64
    value to 2 decimals and storing it back as float32 gives the same bits. Computed in
    float64 from the stored values, so float32 noise never adds decimals.
    """
    v = np.asarray(values)
    dtype = v.dtype if np.issubdtype(v.dtype, np.floating) else np.dtype(np.float64)
    v = v.astype(dtype, copy=False).ravel()
    if v.size == 0:
        return 0
    v64 = v.astype(np.float64)
    for d in range(max_decimals + 1):
        if bool(np.all(np.round(v64, d).astype(dtype) == v)):
            return d
    return None


def step_decimals(step: float, *, max_decimals: int = 12) -> int:
    """Decimals needed to write multiples of ``step`` exactly (``0.0625`` → 4, ``0.01`` → 2, ``5`` → 0)."""
    for d in range(max_decimals + 1):
        if abs(round(step, d) - step) <= 1e-9 * max(abs(step), 1e-12):
            return d
    return max_decimals


def _grid(v: np.ndarray, d: int) -> tuple[float, bool]:
    """``(step, constant)``: the lattice of values ``v`` written with ``d`` decimals (gcd, exact)."""
    k = np.rint(np.asarray(v, dtype=np.float64) * 10.0**d).astype(np.int64)
    g = int(np.gcd.reduce(np.abs(k - k.min()))) if k.size else 0
    return (round(g * 10.0**-d, d) if g else 10.0**-d), g == 0


def _lattice(v: np.ndarray) -> float | None:
    """The step of the decimal lattice the values ``v`` sit on, or ``None`` (continuous)."""
    d = decimals_of(v)
    if d is None or np.size(v) < 2:
        return None
    q, constant = _grid(v, d)
    return None if constant else q


def data_step(x: np.ndarray, *, default: float = 1e-4) -> float:
    """The value grid of a dataset: the lattice step all values sit on, else ``default``.

    Digits scaled by 1/16 give 0.0625; continuous data gives ``default`` (tokens then sit on a
    1e-4 grid, which real data written with 4 decimals shares).
    """
    q = _lattice(np.asarray(x).ravel()[:2_000_000])
    return default if q is None else q


def data_steps(x: np.ndarray, *, default: float = 1e-4) -> float | np.ndarray:
    """Per-feature value grids, derived from the data's own decimal representation.

    Each feature's grid is the lattice its values sit on when written with the fewest decimals
    they round-trip at (at most :data:`MAX_DECIMALS`; see :func:`decimals_of`): integer ages
    give 1, prices in cents 0.01, wine's alcohol (``14.23``) 0.01, digits scaled by 1/16 0.0625.
    A feature needing more decimals is continuous and gets about 5 significant digits of its
    largest magnitude (``10 ** (floor(log10(max |x|)) - 4)``, at least ``default``). One step
    is returned when all features share a grid (every feature's own grid is at most 16 steps
    of the common one, as for images).

    Returns:
        A float (one grid for all features) or an array ``(F,)``.
    """
    xs = np.asarray(x)
    flat = xs.reshape(len(xs), -1)
    steps = np.empty(flat.shape[1], dtype=np.float64)
    own: list[float | None] = []
    for j in range(flat.shape[1]):
        col = flat[:, j]
        d = decimals_of(col)
        if d is None:
            top = float(np.max(np.abs(col.astype(np.float64)))) if len(col) else 0.0
            steps[j] = max(default, 10.0 ** (math.floor(math.log10(top)) - 4)) if top > 0 else default
            own.append(None)
            continue
        q, constant = _grid(col, d)
        steps[j] = q
        own.append(None if constant else q)
    common = _lattice(flat.ravel()[:2_000_000])
    if (
        common is not None
        and all(q is not None and q / common <= _COMMON_FACTOR + 1e-9 for q in own if q is not None)
        and any(q is not None for q in own)
    ):
        return common
    return float(steps[0]) if bool(np.all(steps == steps[0])) else steps


def _normalise(t: np.ndarray) -> np.ndarray:
    """``t`` with every negative zero made ``+0.0`` (``-0.0 + 0.0 == +0.0``): real data has none."""
    return np.asarray(t, dtype=np.float64) + 0.0


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
    from one of them, is snapped to the ``step`` grid, clipped to ``[lo, hi]`` and has any
    negative zero made ``+0.0`` (real data holds none, so it would give the token away). A
    candidate is dropped when a real row lies within ``step`` of it in every feature (so real
    data never matches), when another token sits in the same grid cell, or when ``accept``
    rejects it (e.g. out of distribution). Candidates are made and checked in vectorised
    batches: the cost is ``O(candidates · N · F)``, linear in ``n``.

    Args:
        x: real rows ``(N, *shape)``.
        y: their labels ``(N,)`` (blends stay within a class; the token takes it), or ``None``.
        n: tokens wanted, ``1 ≤ n ≤`` :data:`MAX_HONEYTOKENS`.
        step: the grid, one for all features or one per flat feature ``(F,)`` (see :func:`data_steps`).
        lo: per flat feature lower bounds ``(F,)``.
        hi: per flat feature upper bounds ``(F,)``.
        categorical: flat feature indices copied rather than blended.
        accept: extra test of a flat candidate ``(F,)``.
        rng: randomness (default: seeded from the OS; tokens must not be reproducible).

    Returns:
        ``(tokens (n, *shape) float64, labels (n,) or None)``.

    Raises:
        ConfigError: fewer than 2 rows, ``n`` out of range, or ``n`` tokens could not be made.
    """
    if rng is None:
        rng = np.random.default_rng(secrets.randbits(128))
    xs = np.asarray(x, dtype=np.float64)
    flat = xs.reshape(len(xs), -1)
    if len(flat) < 2 or n < 1:
        raise ConfigError(f"honeytokens: need at least 2 rows and n >= 1 (got {len(flat)} rows, n={n})")
    if n > MAX_HONEYTOKENS:
        raise ConfigError(f"honeytokens: n={n} is more than the limit of {MAX_HONEYTOKENS:,} per call")
    groups: list[np.ndarray] = []
    yy = np.asarray(y).ravel() if y is not None else None
    if yy is not None:
        groups = [np.flatnonzero(yy == c) for c in np.unique(yy)]
        groups = [g for g in groups if len(g) >= 2]
    if not groups:
        groups = [np.arange(len(flat))]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    f = flat.shape[1]
    step = np.asarray(step, dtype=np.float64) if np.ndim(step) else float(step)
    if np.ndim(step) and np.shape(step) != (f,):
        raise ConfigError(f"honeytokens: {np.size(step)} grid steps for {f} features")
    stepv = np.broadcast_to(np.asarray(step, dtype=np.float64), (f,))
    lo_g = np.ceil((lo if lo is not None else np.full(f, -np.inf)) / stepv - 1e-9) * stepv
    hi_g = np.floor((hi if hi is not None else np.full(f, np.inf)) / stepv + 1e-9) * stepv
    cats = np.asarray(sorted(set(categorical or [])), dtype=np.int64)
    tokens: list[np.ndarray] = []
    labels: list[int] = []
    seen: set[bytes] = set()
    budget = 200 * n
    # rows per chunk of the real-row check, so a (chunk, N, F) comparison stays ~16M cells
    chunk = max(1, 16_000_000 // max(1, len(flat) * f))
    while len(tokens) < n and budget > 0:
        b = min(budget, max(64, 2 * (n - len(tokens))))
        budget -= b
        gi = rng.choice(len(groups), size=b, p=sizes / sizes.sum())
        pairs = np.empty((b, 2), dtype=np.int64)
        for g in np.unique(gi):
            sel = np.flatnonzero(gi == g)
            members = groups[int(g)]
            first = rng.integers(0, len(members), size=len(sel))
            second = (first + rng.integers(1, len(members), size=len(sel))) % len(members)
            pairs[sel, 0], pairs[sel, 1] = members[first], members[second]
        lam = rng.uniform(0.35, 0.65, size=(b, 1))
        cand = np.rint((lam * flat[pairs[:, 0]] + (1 - lam) * flat[pairs[:, 1]]) / stepv) * stepv
        cand = np.minimum(np.maximum(cand, lo_g), hi_g)
        if len(cats):
            cand[:, cats] = flat[pairs[:, 0]][:, cats]
        cand = _normalise(cand)
        near = np.zeros(b, dtype=bool)
        for s in range(0, b, chunk):
            block = cand[s : s + chunk]
            near[s : s + chunk] = np.any(
                np.all(np.abs(flat[None, :, :] - block[:, None, :]) <= stepv, axis=2), axis=1
            )
        cells = np.rint(cand / stepv).astype(np.int64)
        for i in np.flatnonzero(~near):
            key = cells[i].tobytes()
            if key in seen or (accept is not None and not accept(cand[i])):
                continue
            seen.add(key)
            tokens.append(cand[i])
            if yy is not None:
                labels.append(int(yy[pairs[i, 0]]))
            if len(tokens) == n:
                break
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


def _hmac_state(h: hmac.HMAC) -> Any:
    """The object that holds ``h``'s keyed state: its OpenSSL HMAC when ``hmac`` made one, else ``h``.

    ``hmac.HMAC``'s ``copy``, ``update`` and ``digest`` are Python methods around the OpenSSL
    object's own (``copy`` also builds a new wrapper); a honeytoken check calls all three for
    every row. Both give the same digests; an ``hmac`` without that object (or another Python
    build) keeps the public methods.
    """
    inner = getattr(h, "_hmac", None)
    if inner is not None and all(callable(getattr(inner, m, None)) for m in ("copy", "update", "digest")):
        return inner
    return h


class HoneytokenWatch:
    """Matches each row against one or more honeytoken sets (keyed hashes only).

    Args:
        sets: the honeytoken sets.
        n_features: flat features of an input; a per-feature ``step`` must have this length.

    Raises:
        ConfigError: a set's pepper variable is not set, or its steps do not fit the input.
    """

    def __init__(self, sets: list[HoneytokenSpec], *, n_features: int | None = None) -> None:
        # (HMAC key = salt ‖ pepper, grid, token table, its smallest step); the key is decoded once
        self._sets: list[tuple[bytes, float | np.ndarray, dict[bytes, str], float]] = []
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
            table = {bytes.fromhex(e.hmac): e.id for e in s.tokens}
            smallest = float(np.min(grid)) if isinstance(grid, np.ndarray) and grid.size else float(grid)
            key = bytes.fromhex(s.salt) + honeytoken_pepper(s.pepper_env)
            self._sets.append((key, grid, table, smallest))
        self._base: dict[tuple[int, int], Any] = {}  # (set, features) → keyed HMAC of the prefix

    def __bool__(self) -> bool:
        return bool(self._sets)

    def hits(self, x: np.ndarray, *, bound: float | None = None) -> list[tuple[int, str]]:
        """``(row index, token id)`` of every row of ``x`` ``(N, *shape)`` that matches a token.

        ``bound``: a bound the caller has checked on every value's magnitude (``|v| <= bound``,
        no NaN, before the rows were made float32), or ``None``. Where it keeps every grid index
        far inside ``±2**62`` (and the float32 rows finite), the clip to that range is skipped:
        it could change nothing.
        """
        out: list[tuple[int, str]] = []
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        features = int(flat.shape[1])
        for s, (key, step, table, smallest) in enumerate(self._sets):
            # the rows quantised at once; each row's HMAC as :func:`honeytoken_hmac` computes it
            g = np.rint(flat / step)
            if bound is None or not (smallest > 0 and bound < 3e38 and bound * 1.001 < 2.0**61 * smallest):
                np.maximum(g, -(2.0**62), out=g)  # clipped (as ``np.clip``, whose wrapper costs more)
                np.minimum(g, 2.0**62, out=g)
            q = g.astype(_I8).tobytes()
            base = self._base.get((s, features))
            if base is None:
                base = self._base[(s, features)] = _hmac_state(
                    hmac.new(key, repr(features).encode(), hashlib.sha256)
                )
            row = 8 * features
            for i in range(len(flat)):
                h = base.copy()
                h.update(q[i * row : (i + 1) * row])
                tid = table.get(h.digest())
                if tid is not None:
                    out.append((i, tid))
        return out
