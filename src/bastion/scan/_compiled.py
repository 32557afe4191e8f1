"""Which pickle emulator runs: the mypyc-compiled extension, or the pure-Python source.

An install (``make venv``, ``pip install``) compiles :data:`MODULES` with mypyc where it can
(``setup.py``) and writes :data:`RECORD` next to the extensions: the digest, size and time of
each source it compiled, and the size of each extension file it built. :func:`select` runs when
:mod:`bastion.scan` is imported, before any of its modules: it keeps the compiled modules only
while that record matches the files beside it. A source edited since the build (an editable
install) runs as edited, never as it was compiled before; so does everything when the build
failed or did not run, when an extension was replaced, and when ``BASTION_PURE_PYTHON=1`` is
set. The compiled and the pure modules give the same results (``tests/scan/test_compiled.py``
compares them); the compiled emulator is faster.

The check costs two ``stat`` calls and a small read; a source whose size and time differ from
the record's is hashed (about a millisecond) before it is judged changed.

``bastion.scan.pickle_vm_status()`` says which one an import gets, and why (``make venv``
prints it after an install).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["ENV", "MODULES", "RECORD", "compiled", "record_text", "select", "status"]

#: The modules of this package that are compiled (all of them, or none, are used compiled).
MODULES = ("pickle_vm",)
#: The build's record, in this package's folder (never in a git checkout: see .gitignore).
RECORD = "_mypyc.record"
#: Set to ``1`` to run the pure-Python modules even where the compiled ones are built.
ENV = "BASTION_PURE_PYTHON"

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE = __name__.rpartition(".")[0]
_UNSELECTED = "not selected yet"
#: Why the pure modules run (``None``: the compiled ones may; :func:`status` says which did).
_reason: str | None = _UNSELECTED


def _digest(path: str) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def record_text(folder: str, extensions: list[str]) -> str:
    """The record of a build that compiled :data:`MODULES` in ``folder`` into ``extensions``.

    One line per source (``source NAME SHA256 SIZE MTIME_NS``) and per extension file
    (``extension FILENAME SIZE``, the file in ``folder``). Used by ``setup.py``.
    """
    lines = []
    for name in MODULES:
        path = os.path.join(folder, name + ".py")
        st = os.stat(path)
        lines.append(f"source {name} {_digest(path)} {st.st_size} {st.st_mtime_ns}")
    for path in extensions:
        lines.append(f"extension {os.path.basename(path)} {os.stat(path).st_size}")
    return "\n".join(lines) + "\n"


def _stale(folder: str) -> str | None:
    """Why the compiled modules in ``folder`` must not be used, or ``None`` if they may be."""
    try:
        with open(os.path.join(folder, RECORD), encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return "no compiled extension was built"
    sources: set[str] = set()
    extensions = 0
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split()
        if kind == "failed":
            return f"the mypyc build failed ({rest})"
        if kind == "source" and len(fields) == 4:
            name, digest, size, mtime_ns = fields
            try:
                st = os.stat(os.path.join(folder, name + ".py"))
            except OSError:
                return f"{name}.py is missing"
            if (str(st.st_size), str(st.st_mtime_ns)) != (size, mtime_ns) and (
                str(st.st_size) != size or _digest(os.path.join(folder, name + ".py")) != digest
            ):
                return f"{name}.py changed since its extension was built (rebuild: make mypyc)"
            sources.add(name)
        elif kind == "extension" and len(fields) == 2:
            filename, size = fields
            try:
                if str(os.stat(os.path.join(folder, filename)).st_size) != size:
                    return f"{filename} was replaced since the build"
            except OSError:
                return f"{filename} is missing"
            extensions += 1
        else:
            return f"unreadable record {RECORD}"
    if sources != set(MODULES) or not extensions:
        return f"the record {RECORD} does not match this version"
    return None


class _PureSource:
    """A meta path finder that gives the ``.py`` of a compiled module, ahead of its extension."""

    @classmethod
    def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in MODULES:
            return None
        from importlib.util import spec_from_file_location

        return spec_from_file_location(fullname, os.path.join(_HERE, name + ".py"))


def select() -> None:
    """Choose, before any of :data:`MODULES` is imported, between compiled and pure modules.

    Called by ``bastion/scan/__init__.py``; an import of one of those modules afterwards gets
    the compiled extension only if the build's record matches the sources (see above). Once a
    process has chosen, it keeps its choice (a second call, after a reload of the package, does
    nothing: the modules already imported stay).
    """
    global _reason
    if _reason != _UNSELECTED:
        return
    pure = os.environ.get(ENV, "")
    _reason = f"{ENV}={pure} is set" if pure not in ("", "0") else _stale(_HERE)
    if _reason is not None and _PureSource not in sys.meta_path:
        sys.meta_path.insert(0, _PureSource)


def compiled() -> bool:
    """Whether the compiled pickle emulator is the one in use (imports it if not yet imported)."""
    import importlib
    import importlib.machinery

    module = importlib.import_module(f"{_PACKAGE}.pickle_vm")
    spec = getattr(module, "__spec__", None)
    return isinstance(getattr(spec, "loader", None), importlib.machinery.ExtensionFileLoader)


def status() -> str:
    """One line: which pickle emulator runs, and why not the compiled one when it does not."""
    if compiled():
        return "compiled (mypyc)"
    return f"pure Python ({_reason or 'the compiled extension does not load on this Python'})"
