"""The mypyc-compiled pickle emulator against its pure-Python source, and the choice between them.

The install compiles ``bastion.scan.pickle_vm`` where it can (setup.py); ``bastion.scan._compiled``
lets the extension run only while the build's record matches the source. These tests check that
the compiled and the pure emulator give the same results, field for field (every value's type
too: mypyc can turn a ``bool`` into an ``int``), on generated, malicious and malformed streams and
through whole scans, and that the choice falls back to the source when it should.

Where the extension was not built they skip, except under ``CI=true``: there it must be built.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.scan import _factories as fx
from tests.scan._pickles import CALL, G, I, P, S, T
from tests.scan.test_nesting_limit import CHAINS
from tests.scan.test_vm_differential import _hand_stream, _real_stream

import bastion.scan
from bastion.scan import _compiled, pickle_vm_compiled, pickle_vm_status

SCAN_DIR = Path(bastion.scan.__file__).resolve().parent
SRC = SCAN_DIR.parents[1]
REPO = SRC.parent
CI = os.environ.get("CI") == "true"
FORCED_PURE = os.environ.get(_compiled.ENV, "") not in ("", "0")


def _require_extension() -> None:
    """Skip unless the extension is built and current; under CI=true, fail instead of skipping."""
    reason = _compiled._stale(str(SCAN_DIR))
    if reason is None:
        return
    if CI:
        pytest.fail(f"CI=true and the compiled pickle emulator is not usable: {reason}")
    pytest.skip(f"the compiled pickle emulator is not usable: {reason}")


def _compiled_vm() -> ModuleType:
    """The compiled emulator, in use in this process (else skip, or fail under CI=true)."""
    _require_extension()
    if not pickle_vm_compiled():
        if CI and not FORCED_PURE:
            pytest.fail(f"CI=true and the compiled pickle emulator is not in use: {pickle_vm_status()}")
        pytest.skip(f"the compiled pickle emulator is not in use: {pickle_vm_status()}")
    return bastion.scan.pickle_vm


def _pure_vm() -> ModuleType:
    """``pickle_vm.py`` itself, loaded under another name (its classes are its own)."""
    name = "bastion.scan._pure_pickle_vm"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCAN_DIR / "pickle_vm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_extension_is_built_and_in_use_under_ci() -> None:
    _require_extension()
    if FORCED_PURE:
        assert not pickle_vm_compiled()
        assert _compiled.ENV in pickle_vm_status()
    else:
        assert pickle_vm_compiled(), pickle_vm_status()
        assert pickle_vm_status() == "compiled (mypyc)"
        assert not str(bastion.scan.pickle_vm.__file__).endswith(".py")


# ------------------------------------------------------------------------------ the corpus


def _objects() -> Iterator[Any]:
    """Plain Python values of many kinds (every protocol writes them differently)."""
    yield {"layer": 3, "names": ["a", "b"], "t": (1, 2.5, None, True, False), "b": b"\x00" * 40}
    yield [0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -(2**31), 2**63, -(2**70), 10**40]
    yield [0.0, -0.0, 1.5, float("inf"), float("-inf"), 1e308, 5e-324]
    yield ["", "é", "\udc80".encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass"), "x" * 300]
    yield {frozenset({1, 2}), (3, 4)}, bytearray(b"abc"), OrderedDict(a=1), complex(1, 2), range(5)
    shared = [1, 2]
    yield {"a": shared, "b": shared, "c": (shared, shared)}
    recursive: list[Any] = []
    recursive.append(recursive)
    yield recursive
    yield True, False, None, Ellipsis, NotImplemented, type(None), int, len


def _library_pickles() -> Iterator[tuple[str, bytes]]:
    """Pickles as numpy, pandas, torch and joblib write them (those that are installed)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - a core dependency
        return
    arrays = [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.zeros((2, 2), dtype="<f4"),
        np.array([1, "a"], dtype=object),
    ]
    arrays.append(np.zeros(3, dtype=[("x", "<f8"), ("y", [("z", "<i2")])]))
    arrays.append(np.array(["2024-01-01"], dtype="datetime64[ns]"))
    for i, arr in enumerate(arrays):
        for proto in (2, 4, 5):
            yield f"numpy{i}-p{proto}", pickle.dumps({"w": arr, "s": np.float32(1.5)}, protocol=proto)
    try:
        import pandas as pd

        frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=pd.RangeIndex(2))
        yield "pandas", pickle.dumps({"df": frame, "cat": pd.Categorical(["a", "b"])}, protocol=4)
    except ImportError:
        pass
    try:
        import joblib  # noqa: F401

        yield "joblib", fx.joblib_bytes({"w": np.ones((4, 4)), "o": np.array([None, 1], dtype=object)})
    except ImportError:
        pass
    try:
        import torch

        buf = io.BytesIO()
        torch.save({"w": torch.ones(2, 3), "layer": torch.nn.Linear(2, 2).state_dict()}, buf)
        yield "torch-zip", buf.getvalue()
        buf = io.BytesIO()
        torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
        yield "torch-legacy", buf.getvalue()
    except ImportError:
        pass


def _hand_written() -> Iterator[tuple[str, bytes]]:
    """Malicious and odd streams written opcode by opcode."""
    yield "os-system", fx.os_system_payload(Path("/nonexistent/marker"))
    yield "memo-stack-global", fx.stack_global_via_memo("os", "system", "id")
    for proto in (0, 2, 4):
        yield f"call-p{proto}", fx.global_call("subprocess", "Popen", protocol=proto)
    yield "inst", fx.inst_protocol0("os", "system", "id")
    yield "getattr", P(CALL(G("builtins", "getattr"), G("os", "path"), S("join")))
    yield (
        "reconstructor",
        P(CALL(G("copyreg", "_reconstructor"), G("os", "P"), G("builtins", "bytearray"), I(3 << 30))),
    )
    yield "bytes-bomb", P(CALL(G("builtins", "bytes"), I(1 << 40)))
    yield "range-bomb", P(CALL(G("builtins", "list"), CALL(G("builtins", "range"), I(1 << 40))))
    yield (
        "torch-size",
        P(CALL(G("torch", "FloatTensor"), CALL(G("torch", "Size"), T(I(1 << 20), I(1 << 20))))),
    )
    yield "ndarray", P(CALL(G("numpy", "ndarray"), T(I(1 << 20), I(1 << 20)), S("<f8")))
    yield (
        "nested-loads",
        P(CALL(G("pickle", "loads"), b"C" + bytes([30]) + fx.global_call("os", "system")[:30])),
    )
    text_values = b"(I01\nI00\nI010\nI0x1f\nI-5\nI\x00\nL12L\nL0x10\nF1.5\nF-inf\nF1e400\n"
    text_values += b"I99999999999999999999\n"
    yield "text-values", text_values + b"t."
    yield "text-values-called", b"cos\nsystem\n" + text_values + b"tR."  # in a preview (captured)
    yield "persid", b"\x80\x02Pabc\n."
    yield "ext", b"\x80\x02\x82\x01."
    for kind, (make, _) in sorted(CHAINS.items()):
        yield f"chain-{kind}", make(140)
    yield "empty", b""
    yield "not-a-pickle", b"GIF89a" + bytes(64)


def _streams(seed: int = 20240) -> list[tuple[str, bytes]]:
    """The corpus: generated (valid, odd), hand-written, library-made; each also truncated and flipped."""
    rng = random.Random(seed)
    base: list[tuple[str, bytes]] = []
    for i, obj in enumerate(_objects()):
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            try:
                data = pickle.dumps(obj, protocol=proto)
            except (pickle.PicklingError, TypeError, AttributeError):
                continue
            base.append((f"obj{i}-p{proto}", data))
            if proto <= 3:  # also as the argument of a call: its values then show in the preview
                body = data[2:-1] if proto >= 2 else data[:-1]
                base.append((f"obj{i}-p{proto}-called", G("os", "system") + body + b"\x85R."))
    base += [(f"real{i}", _real_stream(rng)) for i in range(120)]
    base += [(f"hand{i}", _hand_stream(rng)) for i in range(200)]
    base += list(_hand_written())
    base += list(_library_pickles())
    out = list(base)
    for name, data in base:
        if len(data) > 2:
            cut = rng.randrange(1, len(data))
            out.append((f"{name}-cut{cut}", data[:cut]))
            flipped = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            out.append((f"{name}-flip", bytes(flipped)))
    return out


# ------------------------------------------------------------------- results as plain data


def _plain(v: Any, depth: int = 0) -> Any:
    """A result as comparable plain data: every record's class and fields, every value's type."""
    if depth > 50:
        return "<deep>"
    fields = getattr(v, "_fields", None)  # (an instance's: mypyc makes it an attribute with a default)
    if isinstance(fields, tuple) and not isinstance(v, tuple):
        return [type(v).__name__, {f: _plain(getattr(v, f), depth + 1) for f in fields}]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [_plain(x, depth + 1) for x in v]]
    if isinstance(v, dict):
        return ["dict", [[_plain(k, depth + 1), _plain(x, depth + 1)] for k, x in v.items()]]
    if isinstance(v, (set, frozenset)):
        return [type(v).__name__, sorted(repr(x) for x in v)]
    return [type(v).__name__, repr(v)]


def _run(vm: ModuleType, data: bytes, options: dict[str, Any]) -> Any:
    try:
        return _plain(vm.emulate(io.BytesIO(data), **options))
    except BaseException as exc:  # emulate never raises: if it does, both must raise the same
        return ["raised", type(exc).__name__, str(exc)]


def _always(module: str, name: str) -> bool:
    return True


def _os_only(module: str, name: str) -> bool:
    return module in ("os", "builtins", "torch", "numpy")


#: emulate's options, so that every path runs: previews and blobs, folding, joblib off, the
#: lenient memo, tiny value, stack and read limits, a deadline already past, a start offset.
OPTIONS: list[dict[str, Any]] = [
    {},
    {"capture": _always, "fold": _always},
    {"capture": _os_only, "joblib": False, "lenient_memo": True},
    {"max_value": 8, "max_stack": 16, "limit": 64},
    {"start": 1000, "deadline": 0.0},
]


def _differences(vm: ModuleType, pure: ModuleType, streams: list[tuple[str, bytes]]) -> list[str]:
    bad = []
    for name, data in streams:
        for i, options in enumerate(OPTIONS):
            a, b = _run(vm, data, options), _run(pure, data, options)
            if a != b:
                bad.append(f"{name} (options {i}): compiled {str(a)[:300]} != pure {str(b)[:300]}")
    return bad


def test_compiled_and_pure_emulators_give_identical_results() -> None:
    vm, pure = _compiled_vm(), _pure_vm()
    assert vm is not pure and not str(vm.__file__).endswith(".py") and str(pure.__file__).endswith(".py")
    streams = _streams()
    assert len(streams) > 1000
    bad = _differences(vm, pure, streams)
    assert not bad, f"{len(bad)} differences, first: " + "\n".join(bad[:5])


def test_the_comparison_sees_a_difference() -> None:
    """The comparison is not blind: a bool where an int was (mypyc's slip) is a difference."""
    pure = _pure_vm()
    one, true = pure.PickleResult(start=0, protocol=1), pure.PickleResult(start=0, protocol=True)
    assert _plain(one) != _plain(true)
    assert _plain(pure.GlobalRef("os", "system", 0, "GLOBAL")) != _plain(
        pure.GlobalRef("os", "system", 1, "GLOBAL")
    )


def test_compiled_and_pure_helpers_agree() -> None:
    """The emulator's helpers other modules call (numpy's, torch's sizes; the argument walk)."""
    vm, pure = _compiled_vm(), _pure_vm()
    for typestr in ("<f8", "|b1", "<U3", "O", "<M8[ns]", "float64", "V16", "S0", "<c16", "", "?"):
        assert vm.typestr_itemsize(typestr) == pure.typestr_itemsize(typestr), typestr
    for v in (0, 1, True, False, 2**70, "x", b"ab", None, 1.5, [1, 2], (3,)):
        assert _plain(vm.preview(v)) == _plain(pure.preview(v)), v
        assert vm.requested_bytes("builtins", "bytes", (v,)) == pure.requested_bytes(
            "builtins", "bytes", (v,)
        )


# --------------------------------------------------------------------- whole scans, two ways

_SCAN = (
    "import json, sys\n"
    "from bastion.scan import pickle_vm_status, scan_paths\n"
    "result = scan_paths([sys.argv[1]], jobs=1)\n"
    "print(json.dumps({'status': pickle_vm_status(), 'result': result.model_dump(mode='json')}))\n"
)


def _scan_in_subprocess(folder: Path, *, pure: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != _compiled.ENV}
    if pure:
        env[_compiled.ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _SCAN, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


@pytest.mark.slow
def test_whole_scans_are_identical_compiled_and_pure(tmp_path: Path) -> None:
    _compiled_vm()
    folder = tmp_path / "models"
    folder.mkdir()
    from tests.scan.test_fuzz import SEEDS

    files = {f"seed-{name}": data for name, data in SEEDS.items()}
    for i, (name, data) in enumerate(_streams(seed=7)[::3]):
        files[f"{i:04d}-{name}.pkl" if i % 2 else f"{i:04d}-{name}.bin"] = data
    for name, data in files.items():
        (folder / name.replace("/", "_")).write_bytes(data)
    compiled, pure = _scan_in_subprocess(folder, pure=False), _scan_in_subprocess(folder, pure=True)
    assert compiled["status"] == "compiled (mypyc)" and pure["status"].startswith("pure Python")
    a, b = compiled["result"]["files"], pure["result"]["files"]
    assert len(a) == len(b) == len(files)
    bad = [f"{x['path']}: {x} != {y}" for x, y in zip(a, b, strict=True) if x != y]
    assert not bad, f"{len(bad)} files differ, first: " + "\n".join(bad[:3])
    verdicts = {f["verdict"] for f in a}
    assert {"safe", "malicious", "error"} <= verdicts, verdicts


# ------------------------------------------------------------------ the choice of emulator

_STATUS = (
    "import json\n"
    "import bastion.scan as s\n"
    "from bastion.scan import pickle_vm as m\n"
    "edited = getattr(m, 'EDITED', False)\n"
    "print(json.dumps([s.pickle_vm_compiled(), s.pickle_vm_status(), m.__file__, edited]))\n"
)


def _status_in_subprocess(src: Path, **env_vars: str) -> tuple[bool, str, str, bool]:
    env = {k: v for k, v in os.environ.items() if k != _compiled.ENV}
    env.update(env_vars)
    env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", _STATUS], env=env, capture_output=True, text=True, check=True)
    compiled, status, path, edited = json.loads(out.stdout)
    return compiled, status, path, edited


def test_the_env_var_forces_pure_python() -> None:
    compiled, status, path, _ = _status_in_subprocess(SRC, **{_compiled.ENV: "1"})
    assert not compiled and path.endswith("pickle_vm.py")
    assert status == f"pure Python ({_compiled.ENV}=1 is set)"
    unset = _status_in_subprocess(SRC, **{_compiled.ENV: "0"})
    assert unset[:2] == _status_in_subprocess(SRC)[:2]  # "0" is as if unset


def test_an_edited_source_runs_as_edited_not_as_compiled(tmp_path: Path) -> None:
    _require_extension()
    src = tmp_path / "src"
    shutil.copytree(SRC / "bastion", src / "bastion", ignore=shutil.ignore_patterns("__pycache__"))
    compiled, status, path, _ = _status_in_subprocess(src)  # copied with their times: still current
    assert compiled and status == "compiled (mypyc)" and not path.endswith(".py")
    source = src / "bastion" / "scan" / "pickle_vm.py"
    os.utime(source)  # touched, same text: its digest says current
    assert _status_in_subprocess(src)[0]
    with source.open("a", encoding="utf-8") as fh:
        fh.write("\nEDITED = True\n")
    compiled, status, path, edited = _status_in_subprocess(src)
    assert not compiled and path == str(source) and edited
    assert "pickle_vm.py changed since its extension was built" in status


# ---------------------------------------------------------------------- the record, alone


def _built(folder: Path) -> Path:
    """A folder as a build leaves it: the sources, two extension files, the record."""
    folder.mkdir()
    for name in _compiled.MODULES:
        (folder / f"{name}.py").write_text("X = 1\n", encoding="utf-8")
    exts = [folder / "pickle_vm.so", folder / "_native__mypyc.so"]
    for ext in exts:
        ext.write_bytes(b"\x7fELF" + bytes(60))
    (folder / _compiled.RECORD).write_text(
        _compiled.record_text(str(folder), [str(e) for e in exts]), "utf-8"
    )
    return folder


def _stale(folder: Path) -> str | None:
    reason: str | None = _compiled._stale(str(folder))
    return reason


def test_a_current_build_is_used(tmp_path: Path) -> None:
    assert _stale(_built(tmp_path / "b")) is None


def test_a_touched_source_with_the_same_text_is_current(tmp_path: Path) -> None:
    folder = _built(tmp_path / "b")
    later = time.time_ns() + 10**9
    os.utime(folder / "pickle_vm.py", ns=(later, later))
    assert _stale(folder) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: (f / "pickle_vm.py").write_text("X = 2\n", encoding="utf-8"), "pickle_vm.py changed"),
        (lambda f: (f / "pickle_vm.py").write_text("X = 22\n", encoding="utf-8"), "pickle_vm.py changed"),
        (lambda f: (f / "pickle_vm.py").unlink(), "pickle_vm.py is missing"),
        (lambda f: (f / "pickle_vm.so").write_bytes(b"other"), "pickle_vm.so was replaced"),
        (lambda f: (f / "_native__mypyc.so").unlink(), "_native__mypyc.so is missing"),
        (lambda f: (f / _compiled.RECORD).unlink(), "no compiled extension was built"),
        (lambda f: (f / _compiled.RECORD).write_text("failed no compiler\n"), "build failed (no compiler)"),
        (lambda f: (f / _compiled.RECORD).write_text("garbage\n"), "unreadable record"),
        (lambda f: (f / _compiled.RECORD).write_text(""), "does not match"),
    ],
)
def test_a_build_that_does_not_match_is_not_used(
    tmp_path: Path, change: Callable[[Path], object], expected: str
) -> None:
    folder = _built(tmp_path / "b")
    change(folder)
    reason = _stale(folder)
    assert reason is not None and expected in reason, reason


# ------------------------------------------------------------------------ setup.py's audit


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bastion_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # (setup() runs only as __main__)
    return module


def test_the_audit_passes_the_compiled_sources_and_catches_what_it_is_for() -> None:
    setup = _setup_module()
    sources = {m: (SCAN_DIR / f"{m}.py").read_text(encoding="utf-8") for m in _compiled.MODULES}
    assert setup.audit_except_names(sources) == []
    reused = (
        "class Mine(ValueError): ...\n"
        "def f():\n"
        "    try: pass\n"
        "    except Mine as e: pass\n"
        "    except ValueError as e: pass\n"
        "def g():\n"
        "    try: pass\n"
        "    except KeyError as e: pass\n"
        "    except ValueError as e: pass\n"
    )
    assert [p.split(" binds")[0] for p in setup.audit_except_names({"m": reused})] == ["m.f"]
    ir = (
        "def f(x):\nL0:\n    r3 = extend r2: builtins.bool to builtins.int\n"
        "def g(x):\n    r0 = CPyFloat_FromTagged(x)\n"
    )
    assert setup.audit_ir(ir) == ["f converts a bool to an int", "g converts an int to a float"]


# --------------------------------------------------------------------------- recursion


def _recursive_groups(source: str) -> set[frozenset[str]]:
    """Groups of functions that call each other in a cycle, by name (methods and nested ones too)."""
    import ast

    graph: dict[str, set[str]] = {}
    functions = [
        n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    names = {f.name for f in functions}
    for fn in functions:
        calls = graph.setdefault(fn.name, set())
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                callee = node.func
                name = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", None)
                if name in names:
                    calls.add(name)
    groups = set()
    for start in graph:  # the functions from which `start` is reachable and that it reaches
        reach, todo = set(), [start]
        while todo:
            for callee in graph.get(todo.pop(), ()):
                if callee not in reach:
                    reach.add(callee)
                    todo.append(callee)
        if start in reach:
            groups.add(frozenset(n for n in reach if start in _reachable(graph, n)))
    return groups


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for callee in graph.get(todo.pop(), ()):
            if callee not in seen:
                seen.add(callee)
                todo.append(callee)
    return seen


#: Every recursion in the compiled modules, and what bounds it. Compiled, a recursion never raises
#: RecursionError: one that a stream can drive deep enough overflows the C stack and kills the
#: scan (tests/scan/test_nesting_limit.py). A new one needs an explicit bound, and a line here.
REVIEWED_RECURSION = {
    frozenset({"_render"}): "depth > 6",
    frozenset({"_bytes_length", "_iter_count"}): "depth > 16",
    frozenset({"_may_materialise"}): "depth >= 3 with nested containers",
    frozenset({"_lazy_length"}): "depth > 8 and a node budget",
    frozenset({"_product"}): "MAX_NESTING",
    frozenset({"dtype_info", "_dtype_info"}): "MAX_NESTING",
    frozenset({"_dtype_objects"}): "depth > 32",
    frozenset({"walk"}): "find_blobs's max_depth",
    frozenset({"_value_checks", "_hidden_calls"}): "MAX_NESTING",
    frozenset({"read", "_fill"}): "none: Reader.read calls the stream's read, not itself",
    frozenset({"pop"}): "none: _VM.pop calls the stack list's pop, not itself",
    frozenset({"__init__"}): "none: PickleParseError.__init__ calls its base class's",
}


def test_every_recursion_in_the_compiled_modules_is_bounded() -> None:
    found: set[frozenset[str]] = set()
    for name in _compiled.MODULES:
        found |= _recursive_groups((SCAN_DIR / f"{name}.py").read_text(encoding="utf-8"))
    assert found == set(REVIEWED_RECURSION), (
        f"new: {[sorted(g) for g in found - set(REVIEWED_RECURSION)]}; "
        f"gone: {[sorted(g) for g in set(REVIEWED_RECURSION) - found]}"
    )
