"""Control 3 — ML input validation learned from the training profile; failures are 422.

Checks, in order: the request key holds a non-empty list of rows (at most ``max_rows``); every
row has the model's shape and only numbers; every value is finite; every flat feature lies
in the learned range and, for categorical features, among the learned values. The first
failure names the field (``instances[3][0][2][5]`` style) and the reason. Payload size is
checked before parsing (413). Raw values are never put in messages beyond the offending one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.guard.profile import Profile

#: ``ndarray.all()`` without its Python layer: the method calls ``numpy``'s ``_all``, which calls this
_all = np.logical_and.reduce


class InputRejected(Exception):
    """An input failed validation.

    Attributes:
        field: where (JSON path).
        reason: why, without the caller's values (what the audit log records).
        status: HTTP status to answer (422, or 400 for malformed JSON, 413 for size).
        detail: the reason told to the caller, which may quote the value it sent (default:
            ``reason``); never logged.
    """

    def __init__(self, field: str, reason: str, status: int = 422, *, detail: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.detail = detail or reason


@dataclass
class InputValidator:
    """Validates request bodies against a shape and, when fitted, a :class:`Profile`.

    Args:
        input_shape: one sample's shape.
        profile: learned ranges and categories (``None``: shape and finiteness only).
        request_key: JSON key holding the rows.
        max_rows: most rows per request.
    """

    input_shape: tuple[int, ...]
    profile: Profile | None = None
    request_key: str = "instances"
    max_rows: int = 256

    def parse(self, body: Any, *, raw: bytes | None = None) -> np.ndarray:
        """Turn a parsed JSON body into a float32 array ``(N, *input_shape)``.

        Args:
            body: the parsed JSON.
            raw: the request bytes ``body`` was parsed from; when given and free of JSON
                ``true``/``false``/``null``, rows of plain numbers take a vectorised fast path
                (same result; anything else falls back to the element-wise walk and its messages).

        Raises:
            InputRejected: the first problem found.
        """
        key = self.request_key
        if not isinstance(body, dict):
            raise InputRejected("(body)", f"expected a JSON object with {key!r}")
        rows = body.get(key)
        if not isinstance(rows, list) or not rows:
            raise InputRejected(key, "expected a non-empty list of rows")
        if len(rows) > self.max_rows:
            raise InputRejected(key, f"{len(rows)} rows; at most {self.max_rows} per request")
        flat_n = math.prod(self.input_shape)
        out = _fast_rows(rows, self.input_shape) if raw is not None and _numbers_only(raw) else None
        if out is None:
            out = np.empty((len(rows), flat_n), dtype=np.float64)
            for i, row in enumerate(rows):
                out[i] = _flatten(row, self.input_shape, f"{key}[{i}]")
        p = self.profile
        # One pass when the trained range is finite: ``lo <= v <= hi`` fails for NaN and ±inf too.
        # Only a request that fails it takes the checks below, which name the first problem.
        if p is None or not self._finite_range or not _all((out >= p.lo) & (out <= p.hi), axis=None):
            bad = ~np.isfinite(out)
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise InputRejected(f"{key}[{i}]{_index(int(j), self.input_shape)}", "not a finite number")
            self._check_range(out, key)
        if p is not None and p.categories:  # (a call less when there are none)
            self._check_categories(out, key)
        return out.reshape((len(rows), *self.input_shape)).astype(np.float32)

    @functools.cached_property
    def abs_bound(self) -> float | None:
        """A bound on every value's magnitude in the rows :meth:`parse` returns (``None``: none).

        The largest magnitude of the trained range when it is finite: a row outside it is rejected.
        """
        p = self.profile
        if p is None or not self._finite_range:
            return None
        return float(max(np.abs(p.lo).max(initial=0.0), np.abs(p.hi).max(initial=0.0)))

    @functools.cached_property
    def _finite_range(self) -> bool:
        p = self.profile
        return p is not None and bool(np.isfinite(p.lo).all() and np.isfinite(p.hi).all())

    def _check_range(self, flat: np.ndarray, key: str) -> None:
        p = self.profile
        if p is None:
            return
        low = flat < p.lo
        high = flat > p.hi
        if low.any() or high.any():
            i, j = np.argwhere(low | high)[0]
            reason = f"outside the trained range [{p.lo[j]:.6g}, {p.hi[j]:.6g}]"
            raise InputRejected(
                f"{key}[{i}]{_index(int(j), self.input_shape)}",
                reason,
                detail=f"value {flat[i, j]:.6g} {reason}",
            )

    def _check_categories(self, flat: np.ndarray, key: str) -> None:
        p = self.profile
        if p is None:
            return
        for j, allowed in p.categories.items():
            ok = np.isin(flat[:, j], np.asarray(allowed))
            if not ok.all():
                i = int(np.argmin(ok))
                reason = "not one of the trained categories"
                raise InputRejected(
                    f"{key}[{i}]{_index(j, self.input_shape)}",
                    reason,
                    detail=f"value {flat[i, j]:.6g} is {reason}",
                )


def _numbers_only(raw: bytes) -> bool:
    """No JSON literal ``true``/``false``/``null`` in the bytes (numpy would take a bool as a number).

    A body without the letters ``u`` and ``f`` holds none of them (``{"instances": [...]}`` of
    numbers has neither): two byte searches instead of three substring searches.
    """
    if b"u" not in raw and b"f" not in raw:
        return True
    return b"true" not in raw and b"false" not in raw and b"null" not in raw


def _fast_rows(rows: list[Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """Rows as ``(N, F)`` float64 when they are exactly ``(N, *shape)`` ints and floats, else ``None``.

    numpy infers an integer or float dtype only when every leaf is a Python int or float (a
    string gives a text dtype, a ragged or mistyped nesting an object dtype or an error, an
    int beyond 64 bits an object dtype); bools are excluded by :func:`_numbers_only`. Every
    ``None`` sends the caller to the element-wise walk, which names the first problem.
    """
    try:
        a = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if a.dtype.kind not in "fi" or a.shape != (len(rows), *shape):
        return None
    return a.reshape(len(rows), -1).astype(np.float64, copy=False)


def _index(j: int, shape: tuple[int, ...]) -> str:
    return "".join(f"[{k}]" for k in np.unravel_index(j, shape))


#: JSON names of the Python types ``json.loads`` produces, for "expected a number, got …".
_JSON_TYPE = {str: "a string", type(None): "null", bool: "a boolean", dict: "an object", list: "a list"}


def _flatten(row: Any, shape: tuple[int, ...], where: str) -> list[float]:
    """Flatten a nested list of numbers of exactly ``shape``."""
    out: list[float] = []

    def walk(node: Any, depth: int, path: str) -> None:
        if depth == len(shape):
            if isinstance(node, bool) or not isinstance(node, (int, float)):
                # the JSON type, never the value (a reason is stored in the audit record)
                got = _JSON_TYPE.get(type(node), type(node).__name__)
                raise InputRejected(path, f"expected a number, got {got}")
            try:
                out.append(float(node))
            except OverflowError:  # an integer beyond the float range: "not a finite number" below
                out.append(math.inf)
            return
        if not isinstance(node, list):
            raise InputRejected(path, f"expected a list of {shape[depth]} at depth {depth}")
        if len(node) != shape[depth]:
            raise InputRejected(path, f"expected {shape[depth]} values at depth {depth}, got {len(node)}")
        for k, child in enumerate(node):
            walk(child, depth + 1, f"{path}[{k}]")

    walk(row, 0, where)
    return out
