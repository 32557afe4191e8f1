"""HttpTarget's cheap request path (issue 5): exact float32 encoding, numpy parse, request split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bastion.core.errors import TargetError
from bastion.targets.http_target import MIN_SPLIT_ROWS, HttpTarget, _fast_scores

pytest.importorskip("httpx")


def make(shape: tuple[int, ...] = (1, 2, 3), **kw: object) -> HttpTarget:
    return HttpTarget(
        "http://127.0.0.1:9/p",
        name="remote",
        input_shape=shape,
        num_classes=3,
        **kw,  # type: ignore[arg-type]
    )


def tricky(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32) * np.float32(1e3)
    flat = x.reshape(-1)
    specials = np.array([0.1, -0.0, 1e-30, 3.4e38, 1.4e-45, 1 / 3, 0.0, 1.0], dtype=np.float32)
    flat[: len(specials)] = specials
    return x


@pytest.mark.parametrize("wire", ["default", "rows", "kserve-v2"])
def test_encoding_round_trips_every_float32_exactly(wire: str) -> None:
    t = make(wire=wire, request_key='in"puts')
    x = tricky(5, (1, 2, 3))
    body = json.loads(t._encode(x))
    if wire == "kserve-v2":
        (inp,) = body["inputs"]
        assert inp["name"] == "input-0" and inp["datatype"] == "FP32" and inp["shape"] == [5, 1, 2, 3]
        back = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
    else:
        rows = body if wire == "rows" else body['in"puts']
        back = np.asarray(rows, dtype=np.float32)
    assert back.shape == x.shape
    np.testing.assert_array_equal(back, x)  # exact, the subnormal included (-0.0 reads back as 0)
    nonzero = x != 0
    assert back[nonzero].tobytes() == x[nonzero].tobytes()  # bit-exact


def test_encoding_is_the_same_json_as_the_plain_payload() -> None:
    t = make()
    x = tricky(3, (1, 2, 3), seed=1)
    fast = np.asarray(json.loads(t._encode(x))["instances"], dtype=np.float32)
    plain = np.asarray(t._payload(x)["instances"], dtype=np.float32)
    np.testing.assert_array_equal(fast, plain)
    assert json.loads(t._encode(x[:0])) == {"instances": []}


def test_non_finite_inputs_fall_back_to_json_dumps() -> None:
    t = make()
    x = np.zeros((1, 1, 2, 3), dtype=np.float32)
    x[0, 0, 0, 0] = np.nan
    assert b"NaN" in t._encode(x)


def test_fast_scores_takes_only_plain_number_matrices() -> None:
    got = _fast_scores([[0.5, 0.25, 0.25], [1, 0, 0]], 3)
    assert got is not None and got.dtype == np.float64
    np.testing.assert_array_equal(got, [[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    assert _fast_scores([[0.5, 0.5, 0.0], [0.5, True, 0.0]], 3) is None  # a boolean, any row
    assert _fast_scores([[0.5, "0.5", 0.0]], 3) is None
    assert _fast_scores([[0.5, 0.5], [1.0, 0.0, 0.0]], 3) is None  # ragged
    assert _fast_scores([[0.5, 0.5]], 3) is None  # wrong width
    assert _fast_scores([[[0.5], [0.5], [0.0]]], 3) is None  # nested too deep


def test_parse_still_refuses_what_the_fast_path_skips() -> None:
    t = make()

    def parse(preds: object) -> np.ndarray:
        return t._parse(json.dumps({"predictions": preds}).encode(), 2)

    np.testing.assert_allclose(parse([[0.2, 0.3, 0.5], [1, 0, 0]]), [[0.2, 0.3, 0.5], [1, 0, 0]])
    with pytest.raises(TargetError, match="prediction 1 is not a list of numbers"):
        parse([[0.2, 0.3, 0.5], [True, 0, 0]])
    with pytest.raises(TargetError, match="not a probability vector"):
        parse([[2.0, 3.0, 5.0], [1, 0, 0]])
    with pytest.raises(TargetError, match="NaN or infinity"):
        t._parse(b'{"predictions": [[NaN, 0, 1], [1, 0, 0]]}', 2)


def test_default_batch_and_concurrent_split() -> None:
    assert make().max_batch == 256
    assert make(output="labels").max_batch == 64
    assert make(max_batch=10).max_batch == 10
    seq = make(concurrency=1)
    assert seq._rows_per_request(1000) == 256
    par = make(concurrency=4)
    assert par._rows_per_request(200) == 50  # an even split over the 4 workers
    assert par._rows_per_request(40) == MIN_SPLIT_ROWS  # never tiny requests
    assert par._rows_per_request(5000) == 256  # never above max_batch
