"""The validator's vectorised fast path gives the element-wise walk's values and rejections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bastion.guard.validation import InputRejected, InputValidator

SHAPE = (2, 3)


def _both(body: object) -> tuple[object, object]:
    v = InputValidator(input_shape=SHAPE)
    raw = json.dumps(body).encode()
    out = []
    for r in (raw, None):  # fast path (raw given) and the walk
        try:
            out.append(v.parse(json.loads(raw), raw=r).tolist())
        except InputRejected as exc:
            out.append((exc.status, exc.field, exc.reason))
    return out[0], out[1]


@pytest.mark.parametrize(
    "rows",
    [
        [[[1, 2, 3], [4, 5, 6]]],
        [[[0.5, -2.25, 3], [4, 1e30, 6]], [[0, 0, 0], [1, 1, 1]]],
        [[[1, 2, 3], [4, 5, True]]],
        [[[1, 2, 3], [4, 5, None]]],
        [[[1, 2, 3], [4, 5, "6"]]],
        [[[1, 2, 3], [4, 5]]],
        [[[1, 2, 3], [4, 5, [6]]]],
        [[[1, 2, 3], [4, 5, {"a": 1}]]],
        [[[1, 2, 3], [4, 5, 10**30]]],
        [[[1, 2, 3], [4, 5, 2**63]]],
        [[1, 2, 3, 4, 5, 6]],
    ],
)
def test_fast_path_matches_walk(rows: list[object]) -> None:
    fast, walk = _both({"instances": rows})
    assert fast == walk


def test_nan_and_inf_rejected_on_fast_path() -> None:
    v = InputValidator(input_shape=SHAPE)
    for raw in (b'{"instances": [[[1, 2, 3], [4, NaN, 6]]]}', b'{"instances": [[[1, 2, 3], [4, 5, 1e400]]]}'):
        with pytest.raises(InputRejected) as ei:
            v.parse(json.loads(raw), raw=raw)
        assert ei.value.reason == "not a finite number"
    x = v.parse(json.loads(b'{"instances": [[[1, 2, 3], [4, 5, 6]]]}'), raw=b"")
    assert x.dtype == np.float32 and x.shape == (1, *SHAPE)


def test_only_a_fast_in_process_model_runs_on_the_event_loop() -> None:
    """A slow model would stall every request (health checks too): it keeps the thread pool."""
    import time

    from tests.guard.helpers import SoftmaxTarget

    from bastion.guard.app import INLINE_MAX_SECONDS, _runs_inline
    from bastion.targets.http_target import HttpTarget

    rng = np.random.default_rng(0)
    fast = SoftmaxTarget(rng.normal(size=(64, 10)), np.zeros(10))
    assert _runs_inline(fast) and fast.queries == 0  # timing calls are not counted as queries

    class Slow(SoftmaxTarget):
        def _predict_proba(self, x: np.ndarray) -> np.ndarray:
            time.sleep(2 * INLINE_MAX_SECONDS)
            return super()._predict_proba(x)

    assert not _runs_inline(Slow(rng.normal(size=(64, 10)), np.zeros(10)))
    broken = SoftmaxTarget(rng.normal(size=(64, 10)), np.zeros(10))
    broken.fail = True
    assert not _runs_inline(broken)
    remote = HttpTarget("http://127.0.0.1:9/p", name="r", input_shape=(64,), num_classes=10)
    assert not _runs_inline(remote)
