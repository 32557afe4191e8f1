"""Build hook: compile the scanner's pickle emulator with mypyc, or leave it pure Python.

Everything else about the package is in pyproject.toml. An install (``make venv``, ``pip
install``, editable or not) builds ``bastion.scan.pickle_vm`` into a C extension with mypyc
(``build-system.requires`` pins its version) and writes ``bastion/scan/_mypyc.record`` beside
it: what :mod:`bastion.scan._compiled` checks before it lets the extension run. ``make mypyc``
rebuilds it in place after an edit (until then the edited source runs, pure).

The install never fails for the extension's sake: with no C compiler, a mypyc error, a failed
audit (below) or ``BASTION_PURE_PYTHON=1`` set, it goes on without the extension and says why
once (here, and in the record: ``bastion.scan.pickle_vm_status()``, which ``make venv`` prints).

The audit refuses an extension whose compiled code could behave differently from its source
where mypyc's semantics differ from Python's: a ``bool`` converted to an ``int`` (a typed
``int`` holding ``True`` comes back as ``1``), an ``int`` converted to a ``float``, and a name
bound by two ``except`` clauses of different types, one of them a class the module defines
(mypyc gives the name the first clause's type, and the second clause raises ``TypeError``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
#: The package whose modules are compiled, as a path under src/.
PACKAGE = ("bastion", "scan")
PACKAGE_DIR = ROOT.joinpath("src", *PACKAGE)
MYPYC_DIR = ROOT / "build" / "mypyc"
#: mypyc's compilation group: its runtime library is the extension ``bastion.scan._native__mypyc``.
GROUP = ".".join((*PACKAGE, "_native"))


def _load_compiled_support() -> ModuleType:
    """``bastion.scan._compiled`` from its file (stdlib only; the package is not importable here)."""
    spec = importlib.util.spec_from_file_location("_bastion_scan_compiled", PACKAGE_DIR / "_compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUPPORT = _load_compiled_support()

#: Conversions in mypyc's IR (``ops.txt``) that can change what a value is, not only its representation.
_LOSSY_IR = (
    (re.compile(r"= extend \S+: builtins\.bool to builtins\.int\b"), "converts a bool to an int"),
    (re.compile(r"\bCPyFloat_FromTagged\("), "converts an int to a float"),
)


def audit_ir(ops_text: str) -> list[str]:
    """Where mypyc's IR of the compiled modules converts a value to another Python type."""
    problems: list[str] = []
    function = "<module>"
    for line in ops_text.splitlines():
        if line.startswith("def "):
            function = line[4:].partition("(")[0]
        for pattern, what in _LOSSY_IR:
            if pattern.search(line):
                problems.append(f"{function} {what}")
    return problems


def _handler_names(body: list[ast.stmt]) -> Iterator[ast.ExceptHandler]:
    """The ``except ... as name`` clauses of one function's body, not of functions nested in it."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
            yield node
        stack.extend(ast.iter_child_nodes(node))


def audit_except_names(sources: dict[str, str]) -> list[str]:
    """Names that two ``except`` clauses of one function bind to different types, one native.

    ``sources``: module name -> source text of every compiled module (their classes are native).
    """
    trees = {name: ast.parse(text) for name, text in sources.items()}
    native = {n.name for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    problems = []
    for module, tree in trees.items():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            bound: dict[str, set[str]] = {}
            for handler in _handler_names(fn.body):
                assert handler.name is not None and handler.type is not None
                bound.setdefault(handler.name, set()).add(ast.unparse(handler.type))
            for name, types in sorted(bound.items()):
                named = {n for t in types for n in _names(t)}
                if len(types) > 1 and named & native:
                    problems.append(
                        f"{module}.{fn.name} binds `{name}` in except clauses of {len(types)} types "
                        f"({', '.join(sorted(types))}): give each clause its own name"
                    )
    return problems


def _names(expr: str) -> Iterator[str]:
    """The names in an expression (``pickle.UnpicklingError``: ``pickle``, ``UnpicklingError``)."""
    for node in ast.walk(ast.parse(expr, mode="eval")):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr


def _say(message: str) -> None:
    sys.stderr.write(f"bastion: {message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def _in_root() -> Iterator[None]:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(cwd)


def mypyc_extensions() -> list[Extension]:
    """Type-check, compile to C and audit the modules in ``SUPPORT.MODULES``; their extensions.

    Raises:
        RuntimeError: mypyc is missing or failed, or the audit found a problem.
    """
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        raise RuntimeError(f"mypyc is not installed ({exc})") from None
    paths = [str(Path("src", *PACKAGE, f"{m}.py")) for m in SUPPORT.MODULES]
    options = [
        "--config-file=",  # not pyproject's: its plugins (pydantic) are not in the build environment
        "--follow-imports=silent",  # type-checks what the modules import, reports only their errors
        "--ignore-missing-imports",
        f"--cache-dir={MYPYC_DIR / 'mypy_cache'}",
    ]
    with _in_root():
        try:
            extensions: list[Extension] = mypycify(
                [*options, *paths], opt_level="3", target_dir=str(MYPYC_DIR), group_name=GROUP
            )
        except SystemExit as exc:  # mypyc prints its errors, then exits
            raise RuntimeError(f"mypyc failed (exit status {exc.code}; its errors are above)") from None
        texts = [Path(p).read_text(encoding="utf-8") for p in paths]
    sources = dict(zip(SUPPORT.MODULES, texts, strict=True))
    problems = audit_ir((MYPYC_DIR / "ops.txt").read_text(encoding="utf-8"))
    problems += audit_except_names(sources)
    if problems:
        raise RuntimeError("the mypyc audit refused the compiled code: " + "; ".join(problems))
    return extensions


def _extension_names() -> list[str]:
    """The extensions mypyc makes: one per module (a stub that loads it), and the group's library."""
    return [*(".".join((*PACKAGE, m)) for m in SUPPORT.MODULES), f"{GROUP}__mypyc"]


class BuildMypyc(build_ext):
    """``build_ext`` that compiles with mypyc.

    mypyc runs only when the extensions are built, not each time setup.py is read (a PEP 517
    build reads it several times): setup() gets placeholders (:func:`_placeholders`) named as
    mypyc names its extensions, and their build settings are filled in here. On any failure the
    build goes on without them (pure Python) and records why.
    """

    def run(self) -> None:
        """Build the extensions and write the record; on any failure, record why and go on."""
        inplace = bool(self.inplace or getattr(self, "editable_mode", False))
        folder = PACKAGE_DIR if inplace else Path(self.build_lib).joinpath(*PACKAGE)
        record = folder / SUPPORT.RECORD
        record.unlink(missing_ok=True)  # no record of an earlier build survives this one
        pure = os.environ.get(SUPPORT.ENV, "")
        try:
            if pure not in ("", "0"):
                raise RuntimeError(f"{SUPPORT.ENV}={pure} was set for the build")
            compiled = _source_digests(SUPPORT.record_text(str(PACKAGE_DIR), []))
            made = {e.name: e for e in mypyc_extensions()}
            if sorted(made) != sorted(e.name for e in self.extensions):
                raise RuntimeError(f"mypyc made the extensions {sorted(made)}, not {_extension_names()}")
            for ext in self.extensions:  # the placeholders setuptools prepared, with mypyc's settings
                ext.__dict__.update({k: v for k, v in vars(made[ext.name]).items() if not k.startswith("_")})
            super().run()
            built = [folder / Path(self.get_ext_filename(e.name)).name for e in self.extensions]
            text = SUPPORT.record_text(str(folder), [str(p) for p in built])
            if _source_digests(text) != compiled:  # an edit while mypyc ran: the record would lie
                raise RuntimeError("a compiled module's source changed during the build")
            record.write_text(text, encoding="utf-8")
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            folder.mkdir(parents=True, exist_ok=True)
            record.write_text(f"failed {reason}\n", encoding="utf-8")
            _say(f"the scanner's pickle emulator stays pure Python (slower, same results): {reason}")
            return
        _say(f"compiled {', '.join(SUPPORT.MODULES)} with mypyc")

    def get_outputs(self) -> list[str]:
        """The extension files built; none when the build fell back to pure Python."""
        outputs: list[str] = super().get_outputs()
        return [p for p in outputs if os.path.exists(p)]


def _source_digests(record: str) -> dict[str, str]:
    """Module -> SHA-256 of its source, from a record's ``source`` lines."""
    return {f[1]: f[2] for f in (line.split() for line in record.splitlines()) if f[0] == "source"}


def _placeholders() -> list[Extension]:
    """The extensions, without their C sources yet: so that setuptools runs ``build_ext``."""
    return [Extension(name, sources=[]) for name in _extension_names()]


def _setup_kwargs() -> dict[str, Any]:
    return {"ext_modules": _placeholders(), "cmdclass": {"build_ext": BuildMypyc}}


if __name__ == "__main__":
    setup(**_setup_kwargs())
