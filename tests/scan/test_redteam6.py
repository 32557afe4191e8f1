"""Regressions of the sixth and seventh red-team trials: each file got a wrong verdict before.

F1 an allowed-only-as-reference class called through two allowed helpers; F2 a protocol-0 ``INT``
the emulator read unlike CPython; F3 a joblib array dtype sized by its first letter; F4 CPU bombs
from allowed callables; F5 memory bombs the allocation check missed. The files are built here and
never loaded.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.scan._pickles import CALL, G, I, P, S, T

from bastion.scan import scan_file, scan_paths
from bastion.scan.pickle_vm import _text_int, dtype_info, typestr_itemsize


def _scan(tmp_path: Path, name: str, data: bytes) -> tuple[str, list[str]]:
    path = tmp_path / name
    path.write_bytes(data)
    res = scan_file(path)
    return res.verdict.value, [f.rule_id for f in res.findings]


def test_f1_reference_only_class_called_through_parallel_and_the_generator_helper(tmp_path: Path) -> None:
    task = T(G("numpy", "memmap"), T(S("/tmp/x"), S("uint8"), S("w+"), I(0), T(I(16))), b"}")
    body = CALL(
        G("numpy.random._pickle", "__generator_ctor"),
        b"(l" + task + b"a",
        CALL(G("sklearn.utils.parallel", "Parallel")),
    )
    verdict, rules = _scan(tmp_path, "f1.pkl", P(body))
    assert verdict == "malicious"
    # memmap two containers deep is handed over; Parallel is denied; the helper calls an object
    assert {
        "scan.pickle.reference-only-called",
        "scan.pickle.denied-global",
        "scan.pickle.dynamic-callable",
    } <= set(rules)


def test_f1_globals_in_a_build_state_are_handed_to_the_object(tmp_path: Path) -> None:
    body = (
        CALL(G("collections", "OrderedDict")) + b"}" + S("hook") + b"(" + G("numpy", "memmap") + b"l" + b"sb"
    )
    verdict, rules = _scan(tmp_path, "state.pkl", P(body))
    assert "scan.pickle.reference-only-called" in rules and verdict == "malicious"


@pytest.mark.parametrize("helper", ["__generator_ctor", "__randomstate_ctor"])
def test_f1_a_generator_helper_calling_an_object_is_dynamic(tmp_path: Path, helper: str) -> None:
    body = CALL(G("numpy.random._pickle", helper), S("MT19937"), CALL(G("collections", "OrderedDict")))
    verdict, rules = _scan(tmp_path, "gen.pkl", P(body))
    assert "scan.pickle.dynamic-callable" in rules and verdict == "malicious"


def test_f1_real_generators_and_tensor_subclasses_stay_safe(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    for i, obj in enumerate([np.random.default_rng(0), np.random.RandomState(1), np.random.PCG64(2)]):
        for proto in (2, 4, 5):
            assert _scan(tmp_path, f"g{i}{proto}.pkl", pickle.dumps(obj, protocol=proto)) == ("safe", [])


def test_f2_an_octal_int_cpython_reads_does_not_hide_a_denied_global(tmp_path: Path) -> None:
    data = b"I010\n" + G("os", "system") + b"(S'touch /tmp/x'\ntR."
    (tmp_path / "cache_index").write_bytes(data)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    res = scan_paths([tmp_path])
    verdicts = {Path(f.path).name: f.verdict.value for f in res.files}
    assert verdicts == {"cache_index": "malicious", "model.pkl": "safe"}
    assert res.exit_code() == 1


def test_f2_a_stream_that_breaks_early_is_still_searched_for_denied_globals(tmp_path: Path) -> None:
    # no parse differential left to use: an opcode the emulator rejects before the global
    data = b"\xff" + G("posix", "system") + b"(S'id'\ntR."
    verdict, rules = _scan(tmp_path, "notes", data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules
    assert _scan(tmp_path, "text", b"\xffpickle\nfoo\nnothing denied here\n")[0] == "skipped"


_INT_LINES = st.one_of(
    st.from_regex(rb"\A[ \t]?[+-]?(0[xXoObB]?)?[0-9a-fA-F_]{0,24}[ ]?\Z", fullmatch=True),
    st.binary(max_size=12).filter(lambda b: b"\n" not in b),
)


@settings(max_examples=400, deadline=None)
@given(_INT_LINES)
@example(b"\x00")  # strtol stops at the NUL: the C reader gives 0 (found by this test, once)
@example(b"\x00\x00")
@example(b"\x001")
def test_f2_int_and_long_lines_read_as_cpython_reads_them(line: bytes) -> None:
    for opcode, c_long in ((b"I", True), (b"L", False)):
        try:
            expected: object = pickle.loads(opcode + line + b"\n.")  # our own bytes: ints only
        except Exception:
            expected = "error"
        text = line[:-1] if not c_long and line.endswith(b"L") else line
        try:
            got: object = _text_int(text, c_long=c_long)
        except ValueError:
            got = "error"
        assert (type(got), got) == (type(expected), expected), (opcode, line)


def test_f3_only_exact_type_strings_are_sized() -> None:
    assert typestr_itemsize("f8") == (8, False) and typestr_itemsize("<M8[ns]") == (8, False)
    for odd in ("float64", "int64", "f8 ", "f8[ns]", "Float64"):
        assert typestr_itemsize(odd) is None, odd


def test_f3_a_joblib_array_of_a_dtype_named_float64_is_not_sized_by_its_first_letter(tmp_path: Path) -> None:
    count = 16
    dtype = CALL(G("numpy", "dtype"), S("float64"), b"\x89", b"\x88") + b"(" + I(3) + S("<") + b"NNN"
    dtype += b"J\xff\xff\xff\xff" + b"J\xff\xff\xff\xff" + I(0) + b"tb"
    state = b"}(" + S("subclass") + G("numpy", "ndarray") + S("shape") + T(I(count)) + S("order") + S("C")
    state += S("dtype") + dtype + S("allow_mmap") + b"\x89" + b"u"
    head = b"\x80\x02" + G("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"
    data = bytearray(8 * count)
    data[0], data[4 * count], data[4 * count + 1] = 0xFF, ord("."), 0xFF
    payload = G("posix", "system") + b"(S'touch /tmp/x'\ntR0."
    verdict, _ = _scan(tmp_path, "f3.joblib", head + bytes(data) + payload)
    assert verdict != "safe"


def test_f3_the_state_sizes_only_flexible_dtypes() -> None:
    from bastion.scan.pickle_vm import Global, GlobalRef, Obj

    def dtype(typestr: str, elsize: int) -> Obj:
        d = Obj(Global(GlobalRef("numpy", "dtype", 0, "GLOBAL")), (typestr, False, True), "REDUCE", 0)
        d.state = (3, "<", None, None, None, elsize, 1, 0)
        return d

    assert dtype_info(dtype("f8", 1)) == (8, False)  # numpy ignores the size of a fixed kind
    assert dtype_info(dtype("V8", 4)) == (4, False)


CPU_BOMBS = {
    "punycode": CALL(G("_codecs", "encode"), S("\u00e9" * 50), S("punycode")),
    "decimal": CALL(G("builtins", "int"), CALL(G("decimal", "Decimal"), S("1e1000000"))),
    "decimal-tuple": CALL(G("decimal", "Decimal"), T(I(0), T(I(1)), I(10**7))),
    "fraction": CALL(G("fractions", "Fraction"), S("1e999999999")),
    "deque": CALL(G("collections", "deque"), CALL(G("builtins", "range"), I(10**18)), I(0)),
}


@pytest.mark.parametrize("name", sorted(CPU_BOMBS))
def test_f4_cpu_bombs_are_reported(tmp_path: Path, name: str) -> None:
    verdict, rules = _scan(tmp_path, f"{name}.pkl", P(CPU_BOMBS[name]))
    assert verdict == "suspicious", rules
    assert rules and all(
        r in ("scan.pickle.codec-call", "scan.pickle.compute-bomb", "scan.pickle.allocation-bomb")
        for r in rules
    )


def test_f4_latin1_bytes_and_small_numbers_stay_safe(tmp_path: Path) -> None:
    from decimal import Decimal
    from fractions import Fraction

    for proto in (0, 2):
        obj = {"b": b"\x00\xffdata", "d": Decimal("1.25e-7"), "f": Fraction(3, 7), "ba": bytearray(b"xy")}
        assert _scan(tmp_path, f"ok{proto}.pkl", pickle.dumps(obj, protocol=proto)) == ("safe", [])


RNG = G("builtins", "range")
MEMORY_BOMBS = {
    "list-range-computed": CALL(
        G("builtins", "list"), CALL(RNG, CALL(G("builtins", "int"), S("10000000000")))
    ),
    "list-of-bytes": CALL(G("builtins", "list"), CALL(G("builtins", "bytes"), I(1_000_000_000))),
    "deque-range": CALL(G("collections", "deque"), CALL(RNG, I(10**10))),
    "counter-range": CALL(G("collections", "Counter"), CALL(RNG, I(10**10))),
    "array-range": CALL(G("array", "array"), S("q"), CALL(RNG, I(10**10))),
    "numpy-void": CALL(G("numpy", "void"), I(2**31 - 1)),
    "numpy-object": CALL(
        G("numpy.core.multiarray", "_reconstruct"), G("numpy", "ndarray"), T(I(10**9)), S("O")
    ),
    "torch-complex-double": CALL(G("torch", "ComplexDoubleStorage"), I(2**30 - 1)),
    "numpy-shape-list": CALL(G("numpy", "ndarray"), b"](" + I(10**6) + I(10**6) + b"e"),
    "torch-size": CALL(G("torch", "FloatTensor"), CALL(G("torch", "Size"), T(I(10**6), I(10**6)))),
}


@pytest.mark.parametrize("name", sorted(MEMORY_BOMBS))
def test_f5_memory_bombs_are_reported(tmp_path: Path, name: str) -> None:
    verdict, rules = _scan(tmp_path, f"{name}.pkl", P(MEMORY_BOMBS[name]))
    assert (verdict, rules) == ("suspicious", ["scan.pickle.allocation-bomb"])


def test_a_value_shared_many_times_stops_the_walk_with_a_finding_not_a_hang(tmp_path: Path) -> None:
    """40 levels of a list holding the previous level twice: 2**40 paths, walked within a budget."""
    body = b"]p0\n0"  # [] in memo 0 (PUT 0, POP)
    for _ in range(40):
        body += b"](g0\ng0\nep0\n0"  # [prev, prev] (EMPTY_LIST MARK GET GET APPENDS), memo 0 = it
    data = P(body + CALL(G("collections", "OrderedDict"), b"g0\n"))
    path = tmp_path / "dag.pkl"
    path.write_bytes(data)
    res = scan_file(path)
    assert res.verdict.value in ("suspicious", "malicious")
    assert "scan.pickle.argument-walk-limit" in [f.rule_id for f in res.findings]


# -- round 7 ---------------------------------------------------------------------------------------
def SB(text: str) -> bytes:  # SHORT_BINUNICODE
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


STACK_PAYLOAD = SB("os") + SB("system") + b"\x93" + SB("touch /tmp/x") + b"\x85R0"


def test_g1_items_added_to_a_built_value_are_handed_over(tmp_path: Path) -> None:
    rft = G("torch._tensor", "_rebuild_from_type_v2")
    memmap = G("numpy", "memmap")
    filled = (
        CALL(G("builtins", "list"))
        + b"("
        + memmap
        + memmap
        + T(S("/tmp/x"), S("uint8"), S("w+"), I(0), T(I(16)))
    )
    filled += b"Ne"
    body = CALL(rft, rft, G("builtins", "object"), CALL(G("builtins", "tuple"), filled), b"N")
    verdict, rules = _scan(tmp_path, "g1.pkl", P(body))
    assert verdict == "malicious"
    assert {"scan.pickle.reference-only-called", "scan.pickle.dynamic-callable"} <= set(rules)


def test_g1_a_dict_filled_by_setitem_into_a_build_state(tmp_path: Path) -> None:
    state = CALL(G("builtins", "dict")) + S("_build_f") + G("numpy", "memmap") + b"s"
    body = CALL(G("collections", "OrderedDict")) + state + b"b"
    verdict, rules = _scan(tmp_path, "g1b.pkl", P(body))
    assert "scan.pickle.reference-only-called" in rules and verdict == "malicious"


def test_g1_rebuild_from_type_needs_a_literal_argument_tuple(tmp_path: Path) -> None:
    args = CALL(G("builtins", "tuple"), b"](" + I(1) + b"e")
    body = CALL(
        G("torch._tensor", "_rebuild_from_type_v2"), G("builtins", "int"), G("builtins", "object"), args, b"N"
    )
    verdict, rules = _scan(tmp_path, "rft.pkl", P(body))
    assert "scan.pickle.dynamic-callable" in rules and verdict == "malicious"


@pytest.mark.parametrize(
    "prefix",
    [b"F1.5\x00junk\n0", b"(" * 100_001 + b"1" * 100_001],
    ids=["float-nul", "deep-marks"],
)
def test_g2_header_less_streams_the_emulator_stops_on_are_not_skipped(tmp_path: Path, prefix: bytes) -> None:
    verdict, rules = _scan(tmp_path, "cache_index", prefix + STACK_PAYLOAD + b".")
    assert verdict in ("malicious", "error") and verdict != "skipped", rules


def test_g2_the_byte_search_finds_stack_global_strings(tmp_path: Path) -> None:
    verdict, rules = _scan(tmp_path, "blob", b"\xff" + STACK_PAYLOAD + b".")
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules
    # strings that name nothing denied (or are not framed as string opcodes) keep a blob skipped
    assert _scan(tmp_path, "blob2", b"\xff" + SB("numpy") + SB("ndarray") + b"os system\n")[0] == "skipped"


_FLOAT_LINES = st.one_of(
    st.from_regex(rb"\A[ ]?[+-]?[0-9._eE]{0,12}(inf|nan|Infinity)?[ ]?(\x00[a-z]{0,3})?\Z", fullmatch=True),
    st.binary(max_size=10).filter(lambda b: b"\n" not in b),
)


@settings(max_examples=300, deadline=None)
@given(_FLOAT_LINES, st.sampled_from([b"\x00x", b"", b" "]))
def test_g2_float_and_memo_lines_read_as_cpython_reads_them(line: bytes, tail: bytes) -> None:
    import io

    from bastion.scan.pickle_vm import _memo_index, _text_float

    # what the C unpickler reads, else what the Python one (joblib's) reads (round 12, L2)
    stream = b"F" + line + b"\n."  # our own bytes: a float
    try:
        expected: object = repr(pickle.loads(stream))
    except Exception:
        try:
            expected = repr(pickle._Unpickler(io.BytesIO(stream)).load())  # type: ignore[attr-defined]
        except Exception:
            expected = "error"
    try:
        got: object = repr(_text_float(line))
    except ValueError:
        got = "error"
    assert got == expected, line
    index = b"1" + tail
    try:
        expected = pickle.loads(b"Np" + index + b"\n0g1\n.")  # PUT then GET of None
        expected = 1
    except Exception:
        expected = "error"
    try:
        got = _memo_index(index)
    except ValueError:
        got = "error"
    assert got == expected


def test_g3_a_huge_integer_handed_to_a_constructor_is_a_compute_bomb(tmp_path: Path) -> None:
    data = (1 << 40000).to_bytes(5001, "little")  # a 5 KB integer
    big = b"\x8b" + struct.pack("<i", len(data)) + data  # LONG4
    ss = G("numpy.random.bit_generator", "SeedSequence") + b"q\x01"
    calls = b"".join(b"h\x01" + b"h\x00\x85R" for _ in range(50))
    body = b"]" + ss + b"0" + big + b"q\x00" + b"0" + b"(" + calls + b"e"
    verdict, rules = _scan(tmp_path, "g3.pkl", P(body))
    assert verdict == "suspicious" and rules == ["scan.pickle.compute-bomb"]  # reported once


@pytest.mark.parametrize(
    "body",
    [
        CALL(G("builtins", "bytearray"), CALL(G("numpy", "int64"), I(2**34))),
        CALL(
            G("collections", "deque"),
            CALL(G("builtins", "range"), CALL(G("numpy", "uint64"), I(10**18))),
            I(0),
        ),
        CALL(G("numpy", "ndarray"), T(I(4)), CALL(G("numpy", "dtype"), T(S("O"), T(I(10000), I(10000))))),
    ],
    ids=["numpy-scalar-size", "numpy-scalar-range", "unsized-dtype"],
)
def test_g4_sizes_the_emulator_cannot_see_are_allocation_bombs(tmp_path: Path, body: bytes) -> None:
    assert _scan(tmp_path, "g4.pkl", P(body)) == ("suspicious", ["scan.pickle.allocation-bomb"])


def test_g5_only_the_dtype_states_numpy_writes_are_sized() -> None:
    from bastion.scan.pickle_vm import Global, GlobalRef, Obj

    def dtype(typestr: str, state: tuple[object, ...]) -> Obj:
        d = Obj(Global(GlobalRef("numpy", "dtype", 0, "GLOBAL")), (typestr, False, True), "REDUCE", 0)
        d.state = state
        return d

    assert dtype_info(dtype("V8", (3, "|", None, None, None, 8, 1, 0))) == (8, False)
    assert dtype_info(dtype("V8", (3, "|", None, None, None, 100, 1))) is None  # 7 items: numpy's old form
    assert dtype_info(dtype("S5", (3, "|", None, None, None, -1, 1, 0))) is None  # a flexible size <= 0
    assert dtype_info(dtype("O8", (3, "|", None, None, None, -1, -1, 0))) is None  # 'O' without the flag
    assert dtype_info(dtype("f8", (3, "<", None, None, None, -1, -1, 1))) is None  # the flag on a float


def test_g5_a_joblib_void_dtype_with_a_seven_item_state_is_not_safe(tmp_path: Path) -> None:
    dt = (
        G("numpy", "dtype")
        + T(S("V8"), b"\x89", b"\x88")
        + b"R"
        + T(I(3), S("|"), b"N", b"N", b"N", I(100), I(1))
    )
    dt += b"b"
    wrapper = (
        G("joblib.numpy_pickle", "NumpyArrayWrapper")
        + b")\x81"
        + b"}("
        + S("subclass")
        + G("numpy", "ndarray")
    )
    wrapper += (
        S("shape") + T(I(1)) + S("order") + S("C") + S("dtype") + dt + S("allow_mmap") + b"\x89" + b"ub"
    )
    end = 100 + len(STACK_PAYLOAD)
    raw = b"B" + struct.pack("<I", end - 5) + b"NNN" + b"B" + struct.pack("<I", end - 13)
    raw += b"N" * (100 - len(raw))
    verdict, _ = _scan(tmp_path, "g5.joblib", b"\x80\x02" + wrapper + raw + STACK_PAYLOAD + b".")
    assert verdict != "safe"


# -- round 8 and the false-alarm trial -----------------------------------------------------------
def _tar_block(name: bytes, data: bytes, *, ustar: bool) -> bytes:
    import tarfile

    info = tarfile.TarInfo(name.decode())
    info.size = len(data)
    header = info.tobuf(format=tarfile.USTAR_FORMAT if ustar else tarfile.GNU_FORMAT)
    if not ustar:  # a pre-POSIX header: no magic, the checksum recomputed
        header = header[:257] + b"\0" * 8 + header[265:]
        header = header[:148] + b" " * 8 + header[156:]
        header = header[:148] + b"%06o\0 " % sum(header) + header[156:]
    return header + data + b"\0" * (-len(data) % 512)


def test_h1_a_pickle_after_raw_bytes_in_a_stream_is_scanned(tmp_path: Path) -> None:
    first = pickle.dumps(1, protocol=2)
    payload = b"\x80\x02" + STACK_PAYLOAD + b"."
    verdict, rules = _scan(tmp_path, "storages", first + b"\x00\x11raw storage bytes\xff" + payload)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def test_h2_a_tar_without_the_ustar_magic_is_a_tar(tmp_path: Path) -> None:
    evil = b"\x80\x02" + STACK_PAYLOAD + b"."
    data = _tar_block(b"pickle", evil, ustar=False) + b"\0" * 1024
    verdict, rules = _scan(tmp_path, "v7.pt", data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def test_h3_a_legacy_torch_file_that_is_also_a_tar_is_read_as_both(tmp_path: Path) -> None:
    from bastion.scan.pytorch_scanner import LEGACY_MAGIC

    evil = b"\x80\x02" + STACK_PAYLOAD + b"."
    # the tar header's name field holds the legacy magic pickle; the member is the payload
    block = bytearray(_tar_block(b"x", evil, ustar=True))
    block[: len(LEGACY_MAGIC)] = LEGACY_MAGIC
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % (sum(block[:512]))
    verdict, rules = _scan(tmp_path, "poly.pt", bytes(block) + b"\0" * 1024)
    assert verdict == "malicious", rules


def test_h4_a_joblib_array_inside_a_frame_is_not_skipped_by_guess(tmp_path: Path) -> None:
    dt = (
        G("numpy", "dtype")
        + T(S("u1"), b"\x89", b"\x88")
        + b"R"
        + T(I(3), S("|"), b"NNN", I(-1), I(-1), I(0))
        + b"b"
    )
    wrapper = (
        G("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81}(" + S("subclass") + G("numpy", "ndarray")
    )
    wrapper += S("shape") + T(I(4)) + S("order") + S("C") + S("dtype") + dt + S("allow_mmap") + b"\x89ub"
    body = wrapper + b"N0."
    framed = b"\x80\x04\x95" + struct.pack("<Q", len(body) + 4) + body + b"\x00" * 4  # BUILD mid-frame
    verdict, _ = _scan(tmp_path, "frame.joblib", framed + b"\x00" * 4)
    assert verdict == "error"


def test_h6_a_wrapper_returned_by_an_identity_function_is_a_wrapper(tmp_path: Path) -> None:
    dtype = CALL(G("numpy", "dtype"), S("f8"), b"\x89", b"\x88")
    dtype += T(I(3), S("<"), b"N", b"N", b"N", b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", I(0)) + b"b"
    state = b"}(" + S("subclass") + G("numpy", "ndarray") + S("shape") + I(2) + b"\x85" + S("order") + S("C")
    state += S("dtype") + dtype + S("allow_mmap") + b"\x89" + b"u"
    wrapper = G("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81"
    head = CALL(G("torch.jit._pickle", "restore_type_tag"), wrapper, S("x")) + state + b"b"
    call = G("os", "system") + T(S("touch /tmp/x")) + b"R0"
    array = b"X" + struct.pack("<I", 16 - 5 + len(call)) + bytes(11)  # 16 data bytes: 2 x float64
    verdict, rules = _scan(tmp_path, "h6.joblib", b"\x80\x02" + head + array + call + b".")
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def test_false_alarms_of_text_and_scripts_are_gone(tmp_path: Path) -> None:
    texts = {
        "requirements.txt": b"numpy\npint\nscipy\n",
        "labels.txt": b"mint\nnut\nprint\nprinted\n",
        "classes.csv": b"tacos\nburrito\n",
        "vocab.txt": b"__call__\n__class__\n",
        "dtypes.txt": b"int\nfloat\n",
        "train.py": b'import os\nos.environ["CUDA"] = "0"\nimport pickle\npickle.dump(m, f)\n',
    }
    for name, data in texts.items():
        (tmp_path / name).write_bytes(data)
    res = scan_paths([tmp_path])
    assert {Path(f.path).name: f.verdict.value for f in res.files} == dict.fromkeys(texts, "skipped")


def test_false_alarms_of_real_files_are_gone(tmp_path: Path) -> None:
    import datetime
    import zoneinfo

    import joblib
    import numpy as np
    import torch

    stamp = datetime.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC"))
    for proto in (0, 2, 4, 5):
        assert _scan(tmp_path, f"tz{proto}.pkl", pickle.dumps(stamp, protocol=proto)) == ("safe", [])
    np.save(tmp_path / "a.npy", np.arange(8.0))
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    joblib.dump({"w": mm}, tmp_path / "mm.joblib")
    assert scan_file(tmp_path / "mm.joblib").verdict.value == "safe"
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.nn.Linear(2, 2), legacy, _use_new_zipfile_serialization=False)
    assert scan_file(legacy).verdict.value == "safe"


def test_functions_and_value_classes_a_fitted_model_keeps_are_allowed(tmp_path: Path) -> None:
    import argparse

    import joblib
    import numpy as np
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.datasets import load_iris
    from sklearn.feature_selection import SelectKBest, chi2
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import FunctionTransformer

    x, y = load_iris(return_X_y=True)
    models = {
        "log1p": FunctionTransformer(np.log1p, inverse_func=np.expm1).fit(x),
        "chi2": SelectKBest(chi2, k=2).fit(x, y),
        "default-score": SelectKBest(k=2).fit(x, y),
        "ttr": TransformedTargetRegressor(LinearRegression(), func=np.log1p, inverse_func=np.expm1).fit(
            x, y + 1
        ),
        "args": {"args": argparse.Namespace(lr=0.1, arch="mlp"), "w": np.ones(3)},
    }
    for name, model in models.items():
        joblib.dump(model, tmp_path / f"{name}.joblib")
        assert scan_file(tmp_path / f"{name}.joblib").verdict.value == "safe", name


# -- round 9 ----------------------------------------------------------------------------------------
def _tar_of(members: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_j1_a_memo_fed_payload_after_raw_bytes_is_reported(tmp_path: Path) -> None:
    payload = T(S("touch /tmp/x")) + b"\x940" + G("os", "system") + b"h\x00R."  # args from the memo
    args = P(T(S("0"), S("cpu"), G("torch", "FloatStorage")))
    storages = P(I(1)) + args + struct.pack("<q", 1) + struct.pack("<f", 1.0) + payload
    verdict, rules = _scan(tmp_path, "storages", storages)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


@pytest.mark.parametrize("form", ["nul-junk", "base256", "octal"])
def test_j2_tar_headers_are_recognised_as_tarfile_reads_them(form: str) -> None:
    import tarfile

    from bastion.scan.archive_scanner import _is_tar

    info = tarfile.TarInfo("pickle")
    info.size = 10
    head = bytearray(info.tobuf(format=tarfile.GNU_FORMAT)[:512])
    head[257:265] = b"\0" * 8  # no ustar/GNU magic: a V7 header
    head[148:156] = b" " * 8
    total = sum(head)
    head[148:156] = {
        "nul-junk": b"%06o\0Z" % total,
        "base256": b"\x80" + total.to_bytes(7, "big"),
        "octal": b"%07o\0" % total,
    }[form]
    tarfile.TarInfo.frombuf(bytes(head), "utf-8", "surrogateescape")  # tarfile reads it
    assert _is_tar(bytes(head) + b"\0" * 512)
    head[0] ^= 1
    assert not _is_tar(bytes(head) + b"\0" * 512)


def test_j3_a_safetensors_file_that_is_also_a_tar_is_scanned_as_a_tar(tmp_path: Path) -> None:
    import json

    rest = _tar_of(
        {"storages": b"I0\n.(l.", "tensors": b"I0\n.", "pickle": b"cos\nsystem\n(S'touch /tmp/x'\ntR."}
    )
    text = '{"__metadata__":{"k":"'
    val = "a" * (148 - 8 - len(text)) + " " * 8 + "0" + "b" * 250
    tensors = {"t": {"dtype": "U8", "shape": [len(rest)], "data_offsets": [0, len(rest)]}}
    head = bytearray(
        struct.pack("<Q", 504) + (text + val + '"},' + json.dumps(tensors)[1:]).ljust(504).encode()
    )
    head[100:148] = b" " * 48
    head[329:345] = b" " * 16
    head[148:156] = b"%07o " % sum(head)
    data = bytes(head) + rest
    json.loads(data[8:512])  # a valid safetensors header
    verdict, rules = _scan(tmp_path, "model.safetensors", data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


# -- round 10 ---------------------------------------------------------------------------------------
def test_k1_a_zip_whose_directory_is_not_where_its_end_record_says_is_not_safe(tmp_path: Path) -> None:
    import io
    import zipfile

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    data = buf.getvalue()
    end = data.rfind(b"PK\x05\x06")
    cd_start = struct.unpack_from("<L", data, end + 16)[0]
    # bytes inserted before the central directory: zipfile shifts every offset by them (it takes
    # them for prepended data), torch's reader takes the offsets as written
    moved = data[:cd_start] + b"\x00" * 7 + data[cd_start:]
    with zipfile.ZipFile(io.BytesIO(moved)) as zf:
        assert zf.namelist()
    assert _scan(tmp_path, "moved.pt", moved)[0] == "error"
    assert _scan(tmp_path, "plain.pt", data) == ("safe", [])


def test_k2_a_zip64_locator_pointing_elsewhere_is_not_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import zipfile

    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes zip64 end records
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        zf.writestr("archive/version", "3\n")
    data = bytearray(buf.getvalue())
    loc = data.rfind(b"PK\x06\x07")
    assert loc > 0
    assert _scan(tmp_path, "z64ok.pt", bytes(data)) == ("safe", [])
    record = struct.unpack_from("<Q", data, loc + 8)[0]
    struct.pack_into("<Q", data, loc + 8, record - 1)  # the locator points one byte early
    assert _scan(tmp_path, "z64.pt", bytes(data))[0] == "error"


def test_k3_a_zip_appended_to_a_pickle_is_scanned_as_zipfile_readers_see_it(tmp_path: Path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.pkl", b"\x80\x02" + STACK_PAYLOAD + b".")
    data = pickle.dumps({"harmless": 1}, protocol=2) + buf.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # zipfile-based loaders open it
        assert zf.namelist() == ["data.pkl"]
    verdict, rules = _scan(tmp_path, "bundle.pkl", data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


# -- round 11 ---------------------------------------------------------------------------------------
def test_r11_a_chat_template_building_names_in_block_assignments_is_flagged() -> None:
    from bastion.scan.gguf_scanner import template_findings

    text = (
        "{% set g %}_{{''}}_globals_{{''}}_{% endset %}{% set o %}o{{''}}s{% endset %}"
        "{% set s %}sys{{''}}tem{% endset %}{{ lipsum[g][o][s]('id') }}"
    )
    kinds = {kind for kind, _, _ in template_findings(text)}
    assert "computed-attribute" in kinds
    ok = "{% set sys %}You are helpful.{% endset %}{{ sys }}"
    ok += "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert not template_findings(ok)


def test_r11_external_data_in_a_function_default_attribute_is_checked(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../secret.bin")
    default = helper.make_attribute("value", weight)
    body = helper.make_node("Constant", [], ["y"], value=weight)
    body.attribute[0].ref_attr_name = "value"
    fn = helper.make_function("local", "F", [], ["y"], [body], [helper.make_opsetid("", 17)], attributes=[])
    fn.attribute_proto.append(default)
    graph = helper.make_graph(
        [helper.make_node("F", [], ["out"], domain="local")],
        "g",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    res = scan_file(path)
    assert res.verdict.value == "malicious"
    assert "scan.onnx.external-data-escape" in [f.rule_id for f in res.findings]
