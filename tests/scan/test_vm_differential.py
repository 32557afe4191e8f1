"""Differential tests: the static pickle emulator against CPython's real unpickler.

CPython's ``pickle.Unpickler`` runs here only on streams this file generates, with ``find_class``
overridden to record ``(module, name)`` and return a harmless stub: nothing is imported or run.
Every global the real unpickler resolves must be one the scanner judged; a global that is not
on the allow-list must never leave the file ``safe``.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import random
import struct
import subprocess
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from bastion.core.scanning import Verdict
from bastion.scan.engine import scan_file
from bastion.scan.pickle_vm import Reader, emulate
from bastion.scan.policy import PicklePolicy, Verdictish

_EXT_CODE = 0xF1  # registered only inside the recording unpickler's run


class _StubMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub


class _Stub(metaclass=_StubMeta):
    """Accepts any call, state, item or attribute, so the real unpickler goes as far as it can."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()


class _Recorder(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, seen: list[tuple[str, str]]) -> None:
        super().__init__(f)
        self.seen = seen

    def find_class(self, module: str, name: str) -> Any:
        self.seen.append((module, name))
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        return _Stub()


def real_globals(data: bytes) -> list[tuple[str, str]]:
    """``(module, name)`` given to ``find_class`` by CPython loading each pickle of ``data`` in turn."""
    seen: list[tuple[str, str]] = []
    registered = _EXT_CODE not in copyreg._inverted_registry  # type: ignore[attr-defined]
    if registered:
        copyreg.add_extension("zz_canary_mod", "ext_evil", _EXT_CODE)
    try:
        f = io.BytesIO(data)
        while f.tell() < len(data):
            start = f.tell()
            try:
                _Recorder(f, seen).load()
            except Exception:
                break
            if f.tell() == start:
                break
    finally:
        copyreg._extension_cache.clear()  # type: ignore[attr-defined]
        if registered:
            copyreg.remove_extension("zz_canary_mod", "ext_evil", _EXT_CODE)
    return seen


def vm_globals(data: bytes) -> set[tuple[str, str]]:
    """``(module, name)`` the emulator records over every pickle of ``data``."""
    f = io.BytesIO(data)
    rd = Reader(f)
    out: set[tuple[str, str]] = set()
    while not rd.at_eof():
        res = emulate(f, reader=rd)
        out.update((g.module, g.name) for g in res.globals)
        if not res.complete:
            break
    return out


def _verdict(tmp_path: Path, data: bytes, name: str = "model.pkl") -> Verdict:
    p = tmp_path / name
    p.write_bytes(data)
    return scan_file(p).verdict


# ----------------------------------------------------------------------------- generators

_MODS = ["os", "subprocess", "zz_canary_mod", "builtins", "collections", "copyreg", "joblib.numpy_pickle"]
_NAMES = ["system", "evil", "OrderedDict", "getattr", "Popen", "NS.inner", "__newobj__", "NumpyArrayWrapper"]


class _Reduce:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _real_object(rng: random.Random, depth: int = 0) -> Any:
    k = rng.randrange(10 if depth < 3 else 5)
    if k == 0:
        return rng.randrange(-(2**70), 2**70)
    if k == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    if k == 2:
        return "s" * rng.randrange(300)
    if k == 3:
        return rng.choice([os.system, subprocess.Popen, OrderedDict, getattr, len, None, 1.5])
    if k == 4:
        return bytearray(b"ab" * rng.randrange(5))
    if k == 5:
        return [_real_object(rng, depth + 1) for _ in range(rng.randrange(4))]
    if k == 6:
        shared = (_real_object(rng, depth + 1),)
        return {"a": shared, "b": [shared, shared]}
    if k == 7:
        return _Reduce(rng.choice([os.system, eval, OrderedDict]), (_real_object(rng, depth + 1),))
    if k == 8:
        return OrderedDict(x=_real_object(rng, depth + 1))
    return frozenset({1, "a"})


def _real_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        proto = rng.randrange(6)
        parts.append(pickle.dumps(_real_object(rng), protocol=proto))
    return b"".join(parts)


def _str_op(rng: random.Random, s: str) -> bytes:
    b = s.encode()
    k = rng.randrange(5)
    if k == 0:
        return b"\x8c" + bytes([len(b)]) + b
    if k == 1:
        return b"X" + struct.pack("<I", len(b)) + b
    if k == 2:
        return b"V" + b + b"\n"
    if k == 3:
        return b"S'" + b + b"'\n"
    return b"U" + bytes([len(b)]) + b


def _hand_stream(rng: random.Random) -> bytes:
    """A valid-ish opcode stream: globals via every route, calls, memo, marks, STOPs, garbage."""
    out = bytearray(b"\x80" + bytes([rng.randrange(6)])) if rng.random() < 0.7 else bytearray()
    nmemo = 0

    def glob() -> bytes:
        return rng.choice(_MODS).encode() + b"\n" + rng.choice(_NAMES).encode() + b"\n"

    for _ in range(rng.randrange(1, 25)):
        k = rng.randrange(24)
        if k == 0:
            out += b"c" + glob()
        elif k == 1:
            out += _str_op(rng, rng.choice(_MODS)) + _str_op(rng, rng.choice(_NAMES)) + b"\x93"
        elif k == 2:  # STACK_GLOBAL over memo references
            out += _str_op(rng, rng.choice(_MODS)) + b"\x94" + _str_op(rng, rng.choice(_NAMES)) + b"\x94"
            out += b"00h" + bytes([nmemo]) + b"j" + struct.pack("<I", nmemo + 1) + b"\x93"
            nmemo += 2
        elif k == 3:
            out += b"(" + _str_op(rng, "x") + b"i" + glob()
        elif k == 4:
            out += b"(c" + glob() + _str_op(rng, "a") + b"o"
        elif k == 5:
            out += b"c" + glob() + _str_op(rng, "x") + b"\x85R"
        elif k == 6:
            out += rng.choice(
                [b"R", b"b", b"o", b"\x81", b"\x92", b"\x85", b"t", b"l", b"a", b"s", b"u", b"\x90"]
            )
        elif k == 7:
            out += b"\x94"
            nmemo += 1
        elif k == 8:
            out += b"h" + bytes([rng.randrange(max(nmemo, 1))])
        elif k == 9:
            out += b"g" + str(rng.randrange(max(nmemo, 1))).encode() + b"\n"
        elif k == 10:
            out += b"q" + bytes([rng.randrange(8)])
            nmemo = max(nmemo, 8)
        elif k == 11:
            out += rng.choice([b"(", b")", b"2", b"0", b"1", b"N", b"}", b"]", b"\x8f"])
        elif k == 12:
            out += b"\x82" + bytes([_EXT_CODE])
        elif k == 13:
            out += b"Ppid\n" if rng.random() < 0.5 else _str_op(rng, "pid") + b"Q"
        elif k == 14:
            out += b"."
        elif k == 15:
            out += b"\x95" + struct.pack("<Q", rng.randrange(40))
        elif k == 16:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif k == 17:
            out += b"\x80" + bytes([rng.randrange(6)])
        else:
            out += b"K" + bytes([rng.randrange(256)])
    if rng.random() < 0.6:
        out += b"."
    return bytes(out)


def _mismatch(data: bytes, tmp_path: Path, policy: PicklePolicy) -> str | None:
    seen = real_globals(data)
    missing = [g for g in seen if g not in vm_globals(data)]
    unsafe = [g for g in seen if policy.judge(*g).kind is not Verdictish.ALLOWED]
    if not missing and not unsafe:
        return None
    verdict = _verdict(tmp_path, data)
    if verdict is Verdict.SAFE:
        return f"{data!r}: CPython resolved {seen}, missing {missing}, not allowed {unsafe}, verdict safe"
    return None


# ----------------------------------------------------------------------------- regressions


def test_joblib_array_bytes_are_also_read_as_opcodes(tmp_path: Path) -> None:
    """joblib.load skips the bytes after a NumpyArrayWrapper's BUILD; pickle.load runs them."""
    payload = b"cos\nsystem\n(S'id'\ntR0"  # 24 "array" bytes that pickle.load reads as opcodes
    state = (
        b"}(\x8c\x05shapeK" + bytes([len(payload)]) + b"\x85\x8c\x05dtypecnumpy\ndtype\n\x8c\x02u1\x85R"
        b"\x8c\x05order\x8c\x01Cu"
    )
    data = b"\x80\x04cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81" + state + b"b" + payload + b"."
    assert ("os", "system") in real_globals(data)
    assert _verdict(tmp_path, data) is Verdict.MALICIOUS
    canary = data.replace(b"cos\nsystem\n", b"czz_canary\nev\n")
    assert _verdict(tmp_path, canary) is not Verdict.SAFE


def test_genuine_joblib_arrays_stay_safe(tmp_path: Path) -> None:
    state = b"}(\x8c\x05shapeK\x04\x85\x8c\x05dtypecnumpy\ndtype\n\x8c\x02f8\x85R\x8c\x05order\x8c\x01Cu"
    body = b"\x80\x04cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81" + state + b"b"
    data = body + struct.pack("<4d", 1.0, 2.0, 3.0, 4.0) + b"."
    assert vm_globals(data) == {("joblib.numpy_pickle", "NumpyArrayWrapper"), ("numpy", "dtype")}
    assert _verdict(tmp_path, data, "model.joblib") is Verdict.SAFE


def test_unknown_global_called_in_a_broken_trailing_pickle_is_reported(tmp_path: Path) -> None:
    """A loader calling pickle.load until EOF runs the second stream up to its garbage byte."""
    data = b"\x80\x02N." + b"czz_canary_mod\nevil\n)R\xa4"
    assert real_globals(data) == [("zz_canary_mod", "evil")]
    assert _verdict(tmp_path, data) is not Verdict.SAFE


def test_extension_code_in_a_broken_trailing_pickle_is_reported(tmp_path: Path) -> None:
    data = b"\x80\x02N." + b"\x82" + bytes([_EXT_CODE]) + b")R\xa4"
    assert real_globals(data) == [("zz_canary_mod", "ext_evil")]
    assert _verdict(tmp_path, data) is not Verdict.SAFE


def test_non_identifier_global_is_recorded_before_the_parse_stops(tmp_path: Path) -> None:
    """``__import__('zz-canary')`` imports ``zz-canary.py`` when one is on the path."""
    data = b"czz-canary\nevil\n)R."
    assert real_globals(data) == [("zz-canary", "evil")]
    assert ("zz-canary", "evil") in vm_globals(data)
    assert _verdict(tmp_path, data) is not Verdict.SAFE


# ----------------------------------------------------------------------------- the harness


@pytest.mark.parametrize("kind", ["real", "hand"])
def test_differential_against_cpython(kind: str, tmp_path: Path) -> None:
    """150 seeded streams of each kind: no global CPython resolves is missed on a safe file."""
    policy = PicklePolicy()
    make = _real_stream if kind == "real" else _hand_stream
    failures = []
    resolved = 0
    for seed in range(150):
        data = make(random.Random(seed))
        resolved += bool(real_globals(data))
        problem = _mismatch(data, tmp_path, policy)
        if problem:
            failures.append(problem)
    assert resolved > 50  # the generator does reach globals
    assert not failures, "\n".join(failures[:5])


def test_a_last_global_line_without_its_newline_is_what_the_pure_python_unpickler_resolves(
    tmp_path: Path,
) -> None:
    """``pickle._Unpickler`` reads ``cos\\nsystemX`` at the end of a file as ``os.system`` (it drops
    the last byte of a line that has no newline) and imports it before the stream breaks."""
    from bastion.core.scanning import Verdict
    from bastion.scan import scan_file

    p = tmp_path / "x.pkl"
    p.write_bytes(b"\x80\x02N.cos\nsystemX")
    fr = scan_file(p)
    assert fr.verdict is Verdict.MALICIOUS
    assert "os.system" in {f.evidence.get("global") for f in fr.findings}
