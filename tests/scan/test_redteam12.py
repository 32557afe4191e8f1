"""Regressions of red-team round 12 (the pickle emulator): each file got ``safe`` or ``skipped`` before.

L1 arguments given as a list (Python's unpicklers unpack any iterable); L2 a ``FLOAT`` line only
Python's unpickler (joblib's) reads; L3 a numpy dtype whose flags contradict its fields (memory
corruption); L4 ``bytes(text, 'punycode')``; L5 a sparse memo index (the C unpickler's memo
array grows to twice it); L6 names re-exported by a package's test modules. The files are built
here and never loaded.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from tests.scan._pickles import CALL, G, I, P, S, T

from bastion.scan import scan_file
from bastion.scan.engine import load_rule_files
from bastion.scan.policy import Verdictish


def LIST(*items: bytes) -> bytes:
    return b"]" + b"".join(x + b"a" for x in items)


def _scan(tmp_path: Path, name: str, data: bytes) -> tuple[str, list[str]]:
    path = tmp_path / name
    path.write_bytes(data)
    res = scan_file(path)
    return res.verdict.value, [f.rule_id for f in res.findings]


def test_l1_a_list_of_arguments_is_unpacked_as_python_unpicklers_do(tmp_path: Path) -> None:
    memmap = G("numpy", "memmap")
    args = T(S("/tmp/victim"), S("uint8"), S("w+"), I(0), T(I(4)))
    body = G("torch._tensor", "_rebuild_from_type_v2") + LIST(memmap, memmap, args, b"N") + b"R"
    # the pure-Python unpickler (joblib's) calls func(*list); the emulator now sees the memmap call
    verdict, rules = _scan(tmp_path, "model.pkl", P(body))
    assert verdict == "malicious"
    assert {"scan.pickle.reference-only-called", "scan.pickle.argument-list"} <= set(rules)


def test_l1_a_list_sized_allocation_is_a_bomb(tmp_path: Path) -> None:
    verdict, rules = _scan(tmp_path, "model.pt", P(G("builtins", "bytearray") + LIST(I(3 << 30)) + b"R"))
    assert verdict != "safe" and "scan.pickle.allocation-bomb" in rules


@pytest.mark.parametrize("line", [b"F1_5\n", b"F 1.5\n", b"F1e999\n"])
def test_l2_a_float_only_python_reads_does_not_stop_the_scan(tmp_path: Path, line: bytes) -> None:
    body = b"(S'touch /tmp/x'\ntp0\n0" + line + b"0cos\nsystem\ng0\nR."
    with pytest.raises((ValueError, OverflowError)):
        pickle.loads(body)  # the C unpickler refuses it; pickle._Unpickler (joblib) does not
    assert pickle._Unpickler(io.BytesIO(b"\x80\x02" + line + b".")).load() is not None  # type: ignore[attr-defined]
    verdict, rules = _scan(tmp_path, "clf.dat", body)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def _dtype(typestr: str, state: bytes) -> bytes:
    return CALL(G("numpy", "dtype"), S(typestr), b"\x89", b"\x88") + state + b"b"


def _object_field_dtype(flags: int) -> bytes:
    d_o = _dtype("O", T(I(3), S("|"), b"N", b"N", b"N", I(-1), I(-1), I(63)))
    fields = b"}" + S("a") + T(d_o, I(0)) + b"s"
    return _dtype("V8", T(I(3), S("|"), b"N", T(S("a")), fields, I(8), I(1), I(flags)))


def test_l3_an_object_field_without_the_object_flag_is_memory_corruption(tmp_path: Path) -> None:
    scalar = CALL(G("numpy.core.multiarray", "scalar"), _object_field_dtype(0), b"C\x08" + b"A" * 8)
    verdict, rules = _scan(tmp_path, "model.pkl", P(scalar))
    assert verdict == "malicious" and "scan.pickle.dtype-flags" in rules
    # the flags numpy writes (27) are fine
    assert _scan(tmp_path, "ok.pkl", P(_object_field_dtype(27))) == ("safe", [])


def test_l3_the_object_flag_on_plain_bytes_is_memory_corruption(tmp_path: Path) -> None:
    plain = _dtype("V8", T(I(3), S("|"), b"N", b"N", b"N", I(8), I(1), I(27)))
    assert "scan.pickle.dtype-flags" in _scan(tmp_path, "model.pkl", P(plain))[1]


@pytest.mark.parametrize(
    "value",
    [
        np.array([(1, 2.0)], dtype=[("x", "<i4"), ("y", "<f8")]),
        np.array([(1, "a")], dtype=[("x", "<i4"), ("o", "O")]),
        np.rec.array([(1, 2.0)], dtype=[("x", "<i4"), ("y", "<f8")]),
        np.zeros(2, dtype=("O", (2,))),
        np.array(["x"], dtype="U3"),
    ],
    ids=["struct", "object-field", "recarray", "object-subarray", "text"],
)
@pytest.mark.parametrize("protocol", [2, 4])
def test_l3_numpy_written_dtypes_pass(tmp_path: Path, value: np.ndarray, protocol: int) -> None:
    verdict, rules = _scan(tmp_path, "model.pkl", pickle.dumps(value, protocol=protocol))
    assert "scan.pickle.dtype-flags" not in rules, verdict


@pytest.mark.parametrize("func", [("builtins", "bytearray"), ("builtins", "bytes"), ("builtins", "str")])
def test_l4_a_quadratic_codec_in_a_constructor(tmp_path: Path, func: tuple[str, str]) -> None:
    verdict, rules = _scan(tmp_path, "model.pt", P(CALL(G(*func), S("\u4e00" * 10), S("punycode"))))
    assert verdict != "safe" and "scan.pickle.codec-call" in rules
    # latin1, as protocol 0-2 write bytes, is fine
    assert _scan(tmp_path, "ok.pt", P(CALL(G("builtins", "bytearray"), S("abc"), S("latin-1"))))[0] == "safe"


def test_l5_a_sparse_memo_index_is_an_allocation_bomb(tmp_path: Path) -> None:
    verdict, rules = _scan(tmp_path, "model.pkl", b"\x80\x02Nr\xff\xff\xff\x7f.")
    assert verdict != "safe" and "scan.pickle.allocation-bomb" in rules
    assert _scan(tmp_path, "ok.pkl", pickle.dumps([[1.0]] * 3, protocol=2)) == ("safe", [])


def test_l6_test_modules_are_never_allowed() -> None:
    policy = load_rule_files((), ())
    assert policy.judge("sklearn.utils._repr_html.tests.test_js", "HTTPServer").kind is not Verdictish.ALLOWED
    assert policy.judge("sklearn.conftest", "Pipeline").kind is not Verdictish.ALLOWED
    assert policy.judge("sklearn.linear_model._logistic", "LogisticRegression").kind is Verdictish.ALLOWED
    # a user's explicit allow still counts
    mine = load_rule_files((), ("sklearn.tests.MyThing",))
    assert mine.judge("sklearn.tests", "MyThing").kind is Verdictish.ALLOWED
