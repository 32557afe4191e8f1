"""The scan use-case: walk paths, dispatch each file to the scanners, give verdicts."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from bastion.core.errors import ScanError
from bastion.core.registry import scanners as scanner_registry
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.core.severity import Severity
from bastion.scan.base import Artifact, Outcome, ScanContext, ScanLimits, Scanner
from bastion.scan.builtin import load_builtin_scanners
from bastion.scan.policy import PicklePolicy

log = logging.getLogger(__name__)

__all__ = ["scan_file", "scan_paths", "verdict_of"]

_LINK = "\0symlink"  # marks an in-folder file symlink in _walk's output

#: Folders never walked into (version-control internals).
SKIP_DIRS = frozenset({".git", ".hg", ".svn"})
_MAX_REASON = 2000


def _scanners() -> list[Scanner]:
    load_builtin_scanners()
    found: list[Scanner] = []
    for _, cls in scanner_registry.items():
        if isinstance(cls, type) and issubclass(cls, Scanner):
            found.append(cls())
    found.sort(key=lambda s: (s.priority, s.id))
    return found


def verdict_of(out: Outcome) -> Verdict:
    """The verdict of one file's outcome.

    ``malicious`` (a high/critical finding) beats ``error`` (incomplete scan) beats
    ``suspicious`` (a medium finding) beats ``safe``; ``skipped`` when it is not a model file.
    """
    if out.skipped is not None and not out.findings and not out.errors:
        return Verdict.SKIPPED
    worst = out.worst
    if worst is not None and worst >= Severity.HIGH:
        return Verdict.MALICIOUS
    if out.errors:
        return Verdict.ERROR
    if worst is not None and worst >= Severity.MEDIUM:
        return Verdict.SUSPICIOUS
    return Verdict.SAFE


def _reason(out: Outcome, verdict: Verdict) -> str | None:
    if verdict is Verdict.SKIPPED:
        return out.skipped
    if out.errors:
        text = "; ".join(dict.fromkeys(out.errors))
        return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
    return None


def _hash(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _scan_one(
    display: str, path: Path, policy: PicklePolicy, limits: ScanLimits, scanners: list[Scanner]
) -> FileResult:
    try:
        digest, size = _hash(path)
    except OSError as exc:
        return FileResult(path=display, verdict=Verdict.ERROR, reason=f"unreadable: {exc}")
    ctx = ScanContext(policy, limits, scanners)
    try:
        with path.open("rb") as fh:
            art = Artifact(path=display, member=None, name=path.name, stream=fh, size=size, depth=0, ctx=ctx)
            out = ctx.scan(art)
    except OSError as exc:
        return FileResult(
            path=display, verdict=Verdict.ERROR, sha256=digest, size=size, reason=f"unreadable: {exc}"
        )
    verdict = verdict_of(out)
    log.debug("scanned %s: %s (%s)", display, verdict.value, out.format)
    return FileResult(
        path=display,
        format=None if verdict is Verdict.SKIPPED else out.format,
        verdict=verdict,
        sha256=digest,
        size=size,
        findings=out.findings,
        reason=_reason(out, verdict),
        globals=sorted(out.globals),
    )


def _walk(root: Path) -> Iterator[tuple[str, Path | None, str | None]]:
    """Yield ``(display path, path to scan or None, skip reason)`` under ``root``, sorted.

    In-folder file symlinks come with the reason ``_LINK`` (scanned unless their target is).
    """
    real_root = os.path.realpath(root)
    stack = [root]
    found: list[tuple[str, Path | None, str | None]] = []
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.append((str(folder), None, f"unreadable folder: {exc}"))
            continue
        for e in entries:
            p = Path(e.path)
            try:
                if e.is_symlink():
                    target = os.path.realpath(p)
                    inside = target == real_root or target.startswith(real_root + os.sep)
                    if not os.path.exists(target):
                        found.append((str(p), None, "broken symlink"))
                    elif not inside:
                        found.append((str(p), None, "symlink to outside the scanned folder not followed"))
                    elif os.path.isdir(target):
                        found.append((str(p), None, "symlinked folder not followed"))
                    else:
                        found.append((str(p), p, _LINK))
                elif e.is_dir(follow_symlinks=False):
                    if e.name not in SKIP_DIRS:
                        stack.append(p)
                elif e.is_file(follow_symlinks=False):
                    found.append((str(p), p, None))
                else:
                    found.append((str(p), None, "not a regular file"))
            except OSError as exc:
                found.append((str(p), None, f"unreadable: {exc}"))
    found.sort(key=lambda t: t[0])
    yield from found


def scan_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
) -> ScanResult:
    """Scan files and folders (recursively) without loading anything.

    Args:
        paths: files and folders. Folders are walked recursively in sorted order; symlinks
            are followed only to files inside the folder; ``.git``/``.hg``/``.svn`` are skipped.
        allow: the user's allow-list additions, ``'module.Name'`` or ``'module.*'``; never read
            from the scanned folder; cannot allow a deny-listed callable.
        limits: scan limits (decompressed bytes, ratio, nesting); defaults to :class:`ScanLimits`.

    Returns:
        A :class:`bastion.core.scanning.ScanResult` with one ``FileResult`` per file found.

    Raises:
        ScanError: a path does not exist (every missing path is named).
        ConfigError: an ``allow`` entry is malformed.
    """
    given = [Path(os.fspath(p)) for p in paths]
    missing = [str(p) for p in given if not p.exists() and not p.is_symlink()]
    if missing:
        raise ScanError("no such file or folder: " + ", ".join(missing))
    policy = PicklePolicy(allow)
    lim = limits or ScanLimits()
    scanners = _scanners()
    result = ScanResult()
    seen: set[str] = set()
    for p in given:
        items = list(_walk(p)) if p.is_dir() else [(str(p), p, None)]
        real_files = {os.path.realpath(q) for _, q, why in items if q is not None and why is None}
        for display, path, skip in items:
            if skip == _LINK and path is not None:
                if os.path.realpath(path) in real_files:
                    result.files.append(
                        FileResult(
                            path=display,
                            verdict=Verdict.SKIPPED,
                            reason="symlink to a file of the scanned folder (scanned at its own path)",
                        )
                    )
                    continue
                skip = None
            key = os.path.realpath(path) if path is not None else display
            if key in seen:
                continue
            seen.add(key)
            if path is None:
                result.files.append(FileResult(path=display, verdict=Verdict.SKIPPED, reason=skip))
                continue
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                result.files.append(
                    FileResult(path=display, verdict=Verdict.ERROR, reason=f"unreadable: {exc}")
                )
                continue
            if not stat.S_ISREG(mode):
                result.files.append(
                    FileResult(path=display, verdict=Verdict.SKIPPED, reason="not a regular file")
                )
                continue
            result.files.append(_scan_one(display, path, policy, lim, scanners))
    return result


def scan_file(
    path: str | os.PathLike[str],
    *,
    allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
) -> FileResult:
    """Scan one file without loading it.

    Args:
        path: the file.
        allow: see :func:`scan_paths`.
        limits: see :func:`scan_paths`.

    Raises:
        ScanError: the path does not exist or is a folder.
        ConfigError: an ``allow`` entry is malformed.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise ScanError(f"no such file: {p}")
    if p.is_dir():
        raise ScanError(f"{p} is a folder; use scan_paths to scan folders")
    result = scan_paths([p], allow=allow, limits=limits)
    return result.files[0]
