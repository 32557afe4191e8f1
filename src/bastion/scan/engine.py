"""The scan use-case: walk paths, dispatch each file to the scanners, give verdicts."""

from __future__ import annotations

import contextlib
import errno
import io
import marshal
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bastion.core._log import get_logger
from bastion.core._scan_records import FileRecord, ScanRecords, Verdict
from bastion.core.errors import ConfigError, ScanError
from bastion.core.files import read_config_text
from bastion.core.hashing import file_sha256
from bastion.core.registry import scanners as scanner_registry
from bastion.core.severity import Severity
from bastion.scan import _compiled
from bastion.scan.base import Artifact, Outcome, ScanContext, ScanLimits, Scanner
from bastion.scan.builtin import load_builtin_scanners
from bastion.scan.policy import PicklePolicy, Rule, load_rules

if TYPE_CHECKING:
    from bastion.core.scanning import FileResult, ScanResult

log = get_logger(__name__)

__all__ = [
    "POOL_MIN_FILES",
    "Progress",
    "load_rule_files",
    "scan_file",
    "scan_paths",
    "scan_records",
    "verdict_of",
]

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


#: Each verdict's value, and the verdict of each value (an enum's ``.value`` and ``Verdict(value)``
#: are slow, and run once per file).
_VERDICT_VALUES = {v: v.value for v in Verdict}
_VERDICTS = {v.value: v for v in Verdict}
#: The verdicts and severities each file's verdict is decided by (read once: see above).
_SKIPPED, _MALICIOUS, _ERROR = Verdict.SKIPPED, Verdict.MALICIOUS, Verdict.ERROR
_SUSPICIOUS, _SAFE = Verdict.SUSPICIOUS, Verdict.SAFE
_HIGH, _MEDIUM = Severity.HIGH, Severity.MEDIUM


def verdict_of(out: Outcome) -> Verdict:
    """The verdict of one file's outcome.

    ``malicious`` (a high/critical finding) beats ``error`` (incomplete scan) beats
    ``suspicious`` (a medium finding) beats ``safe``; ``skipped`` when it is not a model file.
    """
    if out.skipped is not None and not out.findings and not out.errors:
        return _SKIPPED
    worst = out.worst
    if worst is not None and worst >= _HIGH:
        return _MALICIOUS
    if out.errors:
        return _ERROR
    if worst is not None and worst >= _MEDIUM:
        return _SUSPICIOUS
    return _SAFE


def _reason(out: Outcome, verdict: Verdict) -> str | None:
    if verdict is _SKIPPED:
        return out.skipped
    if out.errors:
        text = "; ".join(dict.fromkeys(out.errors))
        return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
    return None


#: Files at least this large are hashed in a thread while the scan reads them.
_THREAD_HASH_MIN = 8 << 20
#: Without hashing, files up to this size are still read at once (one read instead of one per
#: scanner look: the head, then the pickle reader's refills).
_READ_WHOLE_MAX = 1 << 20
#: How :func:`_scan_one` opens a file (read-only; not inherited by programs this one starts).
#: ``O_NONBLOCK``: a file replaced by a FIFO since the walk must not block the scan on ``open``
#: (waiting for a writer that never comes); it has no effect on regular files.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
)


def _read_upto(fd: int, n: int, expected: int) -> bytes:
    """Up to ``n`` bytes from ``fd``: fewer only at the end of the file.

    A first read that gives exactly the ``expected`` size (``n - 1``: what ``fstat`` said) ends
    there: a regular file gives what was asked unless it ends first, so asking for one byte more
    has already told whether it grew (a second read would only find the end).
    """
    data = os.read(fd, n)
    got = len(data)
    if got >= n or got == expected or not data:
        return data
    parts = [data]
    while got < n:
        more = os.read(fd, n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _BackgroundHash:
    """Hash a file in a thread (hashlib and file reads release the GIL) while it is scanned.

    Where ``/proc/self/fd`` exists (Linux), the thread opens the very file the scan opened (its
    descriptor's link, on a duplicate the thread owns), so the digest is of the scanned bytes even
    if the path is replaced meanwhile (a rename over it); elsewhere it opens ``path`` again.
    """

    def __init__(self, fd: int, path: Path) -> None:
        import threading

        self.result: tuple[str, int] | None = None
        self.error: OSError | None = None
        own = os.dup(fd) if os.path.isdir(_PROC_FDS) else -1  # closed by the thread
        self._thread = threading.Thread(target=self._run, args=(own, path), name="bastion-hash", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            if own >= 0:
                os.close(own)
            raise

    def _run(self, fd: int, path: Path) -> None:
        try:
            try:
                self.result = file_sha256(Path(f"{_PROC_FDS}/{fd}") if fd >= 0 else path, with_size=True)
            finally:
                if fd >= 0:
                    os.close(fd)
        except OSError as exc:
            self.error = exc

    def join(self) -> tuple[str, int]:
        """The digest and size; raises the thread's ``OSError``."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


#: This process's open descriptors as links to their files (Linux).
_PROC_FDS = "/proc/self/fd"


def _scan_one(
    display: str,
    path: str | os.PathLike[str],
    policy: PicklePolicy,
    limits: ScanLimits,
    scanners: list[Scanner],
    digest_files: bool = True,
) -> FileRecord:
    """Scan one file, never raising (an unreadable file is an ``error`` verdict).

    Small files are read once (hash and scan share the bytes; without hashing, files up to
    ``_READ_WHOLE_MAX``); large ones are hashed in a thread while the scanners read only what
    they need.
    """
    digest: str | None = None
    background: _BackgroundHash | None = None
    path = os.fspath(path)
    ctx = ScanContext(policy, limits, scanners)
    try:
        # A raw descriptor: a small file is read with one system call and no file object.
        fd = os.open(path, _OPEN_FLAGS)
        fh: IO[bytes] | None = None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):  # as open() says it (the file became a folder since the walk)
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if not stat.S_ISREG(st.st_mode):  # a FIFO, device or socket now: never read (it may block)
                return FileRecord(
                    path=display,
                    verdict=Verdict.ERROR,
                    reason="unreadable: no longer a regular file (replaced while the scan ran)",
                )
            size = st.st_size
            data: bytes | None = None
            if size < _THREAD_HASH_MIN if digest_files else size <= _READ_WHOLE_MAX:
                data = _read_upto(fd, size + 1, size)
                if digest_files:
                    import hashlib  # on first use (``--hash``): ~2 ms of start-up otherwise

                    digest = hashlib.sha256(data).hexdigest()
                    if len(data) != size:
                        return FileRecord(
                            path=display,
                            verdict=Verdict.ERROR,
                            reason=f"file changed while being scanned ({size} bytes, then {len(data)})",
                        )
                elif len(data) != size:  # changed since the stat: scanned from the file, as a large one
                    data = None
                    os.lseek(fd, 0, os.SEEK_SET)
            elif digest_files:
                background = _BackgroundHash(fd, Path(path))
            if data is not None:
                stream: IO[bytes] = io.BytesIO(data)
            else:
                stream = fh = open(fd, "rb", closefd=False)  # noqa: SIM115 - closed below
            art = Artifact(
                path=display,
                member=None,
                name=os.path.basename(path),
                stream=stream,
                size=size,
                depth=0,
                ctx=ctx,
            )
            try:
                out = ctx.scan(art)
            except BaseException:
                if background is not None:  # never leave the hash thread reading behind us
                    with contextlib.suppress(OSError):
                        background.join()
                raise
        finally:
            if fh is not None:
                fh.close()
            os.close(fd)
    except OSError as exc:
        if background is not None:
            with contextlib.suppress(OSError):
                digest = background.join()[0]
        return FileRecord(path=display, verdict=Verdict.ERROR, sha256=digest, reason=f"unreadable: {exc}")
    if background is not None:
        try:
            digest, hashed = background.join()
        except OSError as exc:
            return FileRecord(path=display, verdict=Verdict.ERROR, size=size, reason=f"unreadable: {exc}")
        if hashed != size:
            return FileRecord(
                path=display,
                verdict=Verdict.ERROR,
                sha256=digest,
                size=hashed,
                reason=f"file changed while being scanned ({size} bytes, then {hashed})",
            )
    verdict = verdict_of(out)
    log.debug("scanned %s: %s (%s)", display, _VERDICT_VALUES[verdict], out.format)
    # Every field is built here from checked values (Finding objects, a Verdict, str/int): a plain
    # record, converted to the pydantic contract only where it is returned (see scan_paths).
    return FileRecord(
        path=display,
        format=None if verdict is _SKIPPED else out.format,
        verdict=verdict,
        sha256=digest,
        size=size,
        findings=out.findings,
        reason=_reason(out, verdict),
        globals=sorted(out.globals),
    )


#: The start of a :func:`_walk` reason for a folder or entry that could not be read (an error).
_UNREADABLE = "unreadable"


def _walk(root: Path, reals: dict[str, str] | None = None) -> Iterator[tuple[str, str | None, str | None]]:
    """Yield ``(display path, path to scan or None, skip reason)`` under ``root``, sorted.

    In-folder file symlinks come with the reason ``_LINK`` (scanned unless their target is). A
    folder or entry that cannot be read comes with a reason starting with :data:`_UNREADABLE`:
    an ``error`` verdict, never a skip (what is in it was not scanned).
    ``reals`` (if given) receives each file's resolved path, derived from the folder's (no
    symlinked folder is walked into), so callers need not resolve every file again.
    """
    real_root = os.path.realpath(root)
    stack = [(str(root), real_root)]  # paths as ``str(Path(...))`` spells them: no Path per entry
    found: list[tuple[str, str | None, str | None]] = []
    while stack:
        folder, real_folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.append((folder, None, f"{_UNREADABLE} folder: {exc}"))
            continue
        prefix = "" if folder == "." else folder if folder.endswith(os.sep) else folder + os.sep
        # what os.path.join(real_folder, name) gives (a resolved folder is absolute, a name has no sep)
        real_prefix = real_folder if real_folder.endswith(os.sep) else real_folder + os.sep
        for e in entries:
            p = prefix + e.name
            try:
                if e.is_symlink():
                    target = os.path.realpath(p)
                    inside = target == real_root or target.startswith(real_root + os.sep)
                    if not os.path.exists(target):
                        found.append((p, None, "broken symlink"))
                    elif os.path.isdir(target):
                        found.append((p, None, "symlinked folder not followed"))
                    elif not os.path.isfile(target):  # a FIFO (open would block), a device, a socket
                        found.append((p, None, "symlink to something that is not a regular file"))
                    elif not inside:
                        # a file kept elsewhere (a Hugging Face cache snapshot links every file
                        # into ../../blobs): scanned at the link's path, like the loader reads it
                        found.append((p, p, None))
                        if reals is not None:
                            reals[p] = target
                    else:
                        found.append((p, p, _LINK))
                        if reals is not None:
                            reals[p] = target
                elif e.is_dir(follow_symlinks=False):
                    if e.name not in SKIP_DIRS:
                        stack.append((p, os.path.join(real_folder, e.name)))
                elif e.is_file(follow_symlinks=False):
                    found.append((p, p, None))
                    if reals is not None:
                        reals[p] = real_prefix + e.name
                else:
                    found.append((p, None, "not a regular file"))
            except OSError as exc:
                found.append((p, None, f"{_UNREADABLE}: {exc}"))
    found.sort(key=lambda t: t[0])
    yield from found


def load_rule_files(
    rules: Sequence[str | os.PathLike[str]],
    allow: Sequence[str] = (),
    project_allow: Sequence[str] = (),
    *,
    report_allowed: bool = False,
) -> PicklePolicy:
    """The pickle policy: shipped rules, plus extra rule files, plus the user's allow entries.

    Args:
        rules: TOML rule files in the shipped format (``kind = "deny"`` adds deny rules,
            ``kind = "allow"`` allow rules). Deny always wins, so no file can allow a
            deny-listed callable.
        allow: the user's allow entries (see :class:`PicklePolicy`).
        project_allow: a project file's ``scan.allow`` entries (see :class:`PicklePolicy`).
        report_allowed: report what only an ``allow`` entry let through (see :class:`PicklePolicy`).

    Raises:
        ConfigError: a file is missing, not a regular file, too large (over
            :data:`~bastion.core.files.MAX_CONFIG_BYTES`), unreadable or malformed (every
            problem is listed).
    """
    if not rules:
        return PicklePolicy(allow, project_allow=project_allow, report_allowed=report_allowed)
    base = PicklePolicy(allow, project_allow=project_allow, report_allowed=report_allowed)
    extra_allow: list[Rule] = []
    extra_deny: list[Rule] = []
    problems: list[str] = []
    for item in rules:
        path = Path(os.fspath(item))
        try:
            text = read_config_text(path, what="rule file")
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        import tomllib  # only for a user's rule files (pure Python, ~8 ms to import)

        try:
            doc_kind = tomllib.loads(text).get("kind")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: not valid TOML: {exc}")
            continue
        if doc_kind not in ("allow", "deny"):
            problems.append(f"{path}: kind must be 'allow' or 'deny', got {doc_kind!r}")
            continue
        try:
            _, loaded = load_rules(str(doc_kind), text, source=str(path))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        loaded = [r._replace(source=str(path)) for r in loaded]
        (extra_deny if doc_kind == "deny" else extra_allow).extend(loaded)
    if problems:
        raise ConfigError("bad --rules file", problems)
    policy = PicklePolicy(
        allow,
        project_allow=project_allow,
        report_allowed=report_allowed,
        allow_rules=(*base.allow_rules, *extra_allow),
        deny_rules=(*base.deny_rules, *extra_deny),
    )
    policy.allow_version = base.allow_version + ("+custom" if extra_allow else "")
    policy.deny_version = base.deny_version + ("+custom" if extra_deny else "")
    return policy


#: Per-process state of a worker of the parallel scan (set by :func:`_init_worker`).
_WORKER: dict[str, object] = {}


def _init_worker(policy: PicklePolicy, limits: ScanLimits, digest_files: bool) -> None:
    _WORKER["digest"] = digest_files
    _WORKER["policy"] = policy
    _WORKER["limits"] = limits
    _WORKER["scanners"] = _scanners()


#: A harmless protocol-4 pickle (``{}``) scanned once before a pool forks (see :func:`_warm_up`).
_WARM_PICKLE = b"\x80\x04}\x94."


def _warm_up(policy: PicklePolicy, limits: ScanLimits, scanners: list[Scanner]) -> None:
    """Scan a tiny pickle in memory, so the modules scanners import on first use are loaded."""
    ctx = ScanContext(policy, limits, scanners)
    art = Artifact(
        path="<warm-up>",
        member=None,
        name="warm-up.pkl",
        stream=io.BytesIO(_WARM_PICKLE),
        size=len(_WARM_PICKLE),
        depth=0,
        ctx=ctx,
    )
    with contextlib.suppress(Exception):
        ctx.scan(art)


def _scan_or_error(
    display: str, path: str, policy: PicklePolicy, limits: ScanLimits, scanners: list[Scanner], digest: bool
) -> FileRecord:
    """:func:`_scan_one` in a worker process: a crash is an error verdict, never a lost file."""
    try:
        return _scan_one(display, path, policy, limits, scanners, digest)
    except Exception as exc:
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return FileRecord(path=display, verdict=Verdict.ERROR, reason=reason)


def _work(item: tuple[str, str]) -> FileRecord:
    display, path = item
    policy = _WORKER["policy"]
    limits = _WORKER["limits"]
    scanners = _WORKER["scanners"]
    assert isinstance(policy, PicklePolicy) and isinstance(limits, ScanLimits) and isinstance(scanners, list)
    return _scan_or_error(display, path, policy, limits, scanners, bool(_WORKER["digest"]))


#: ``jobs=0`` starts a worker process only per this many files (a pool costs a few ms a worker
#: with ``fork``; one small file scans in under a millisecond).
POOL_MIN_FILES = 64


#: ``jobs=N`` starts at most this many worker processes per CPU (``-j 5000`` would fork a process
#: per file: slower, and thousands of processes on a shared machine).
MAX_JOBS_PER_CPU = 4


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _auto_workers(total: int) -> int:
    """Workers for ``jobs=0``: one per CPU, but only as many as the files keep busy."""
    return max(1, min(_cpus(), total // POOL_MIN_FILES))


def _capped_workers(jobs: int) -> int:
    """``jobs`` (> 0) capped at :data:`MAX_JOBS_PER_CPU` per CPU, with a warning when capped."""
    cap = MAX_JOBS_PER_CPU * _cpus()
    if jobs > cap:
        log.warning("jobs=%d capped at %d (%d worker processes per CPU at most)", jobs, cap, MAX_JOBS_PER_CPU)
        return cap
    return jobs


def _start_method() -> str:
    """The pool's start method.

    ``fork`` where safe (Linux, no other thread: workers inherit the loaded scanners for
    free); else ``forkserver`` or ``spawn`` (each worker imports the scanners again).
    """
    import sys
    import threading

    if sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1:
        return "fork"  # decided without importing multiprocessing (~5 ms)
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class _Workers:
    """Files scanned by other processes while this one scans its own share.

    Iterating yields their records in the order of the items given (waiting as needed);
    :meth:`close` stops whatever is still running (after an exception or Ctrl-C).
    """

    def __iter__(self) -> Iterator[FileRecord]:
        return iter(())  # none: this process scans everything

    def close(self) -> None:
        """Stop the workers still running and release them (idempotent)."""


class _Pool(_Workers):
    """A process pool of ``nproc`` (forkserver/spawn) scanning ``items``, started at once."""

    def __init__(
        self,
        items: list[tuple[int, tuple[str, str]]],
        nproc: int,
        policy: PicklePolicy,
        limits: ScanLimits,
        digest: bool,
    ) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(
            max_workers=nproc,
            mp_context=multiprocessing.get_context(_start_method()),
            initializer=_init_worker,
            initargs=(policy, limits, digest),
        )
        chunk = max(1, min(64, len(items) // (nproc * 4)))
        self._displays = [d for _, (d, _) in items]
        try:
            self._results = self._pool.map(_work, [(d, str(p)) for _, (d, p) in items], chunksize=chunk)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[FileRecord]:
        from concurrent.futures.process import BrokenProcessPool

        got = 0
        try:
            for rec in self._results:
                got += 1
                yield rec
        except BrokenProcessPool as exc:  # a worker died: its files and the rest are errors, not lost
            why = f"internal error: worker process failed ({type(exc).__name__})"
            for d in self._displays[got:]:
                yield FileRecord(path=d, verdict=Verdict.ERROR, reason=why)
        self._pool.shutdown()

    def close(self) -> None:
        """Cancel what has not started and stop the workers at once (one may be stuck on a file)."""
        # no public API before 3.14; None once the pool has shut down (iterated to the end)
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.kill()


class _Forked(_Workers):
    """``nproc`` forked children scanning ``items`` (Linux, no other thread), started at once.

    Lighter than a process pool (no ``multiprocessing`` import, no queues, no manager thread):
    child ``k`` scans items ``k, k + nproc, …`` with the scanners it inherited and appends each
    file's record, as a length-prefixed frame (see :func:`_encode`), to an anonymous in-memory
    file as soon as it is done (our own records, never scanned data; a file, not a pipe, so a
    child never waits for this process to read). Iterating reaps the children and reads their
    records. A child that dies (killed, out of memory) costs only the file it was scanning, an
    ``error`` naming the cause: the records it wrote are kept and the files it did not reach
    are scanned here.
    """

    def __init__(
        self,
        items: list[tuple[int, tuple[str, str]]],
        nproc: int,
        policy: PicklePolicy,
        limits: ScanLimits,
        scanners: list[Scanner],
        digest: bool,
    ) -> None:
        self._shares = [[(d, p) for _, (d, p) in items[k::nproc]] for k in range(nproc)]
        self._scan = (policy, limits, scanners, digest)
        self._order: list[int] = []
        self._unreaped: set[int] = set()
        self._files: dict[int, int] = {}  # pid -> its records file, until read
        try:
            for share in self._shares:
                pid, fd = _fork_child(share, policy, limits, scanners, digest)
                self._order.append(pid)
                self._unreaped.add(pid)
                self._files[pid] = fd
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[FileRecord]:
        got: list[list[FileRecord]] = []
        for pid, share in zip(self._order, self._shares, strict=True):
            _, status = os.waitpid(pid, 0)
            self._unreaped.discard(pid)
            records = _read_records(self._files.pop(pid), len(share))
            if len(records) < len(share):  # died while scanning share[len(records)]
                display, _ = share[len(records)]
                why = (
                    f"internal error: the worker process died while scanning this file ({_wait_text(status)})"
                )
                records.append(FileRecord(path=display, verdict=Verdict.ERROR, reason=why))
                policy, limits, scanners, digest = self._scan
                for display, path in share[len(records) :]:  # not reached: scanned here
                    records.append(_scan_one(display, path, policy, limits, scanners, digest))
            got.append(records)
        nproc = len(got)
        for j in range(sum(len(g) for g in got)):
            yield got[j % nproc][j // nproc]

    def close(self) -> None:
        while self._files:
            with contextlib.suppress(OSError):
                os.close(self._files.popitem()[1])
        if not self._unreaped:
            return
        import signal

        for pid in list(self._unreaped):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
            self._unreaped.discard(pid)


def _wait_text(status: int) -> str:
    """A ``waitpid`` status in words."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"wait status {status}"


def _records_file() -> int:
    """An anonymous read-write file descriptor (``memfd`` on Linux; a temporary file elsewhere)."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        try:
            return int(memfd("bastion-scan-records", 0))
        except OSError:
            pass
    import tempfile

    with tempfile.TemporaryFile() as fh:
        return os.dup(fh.fileno())


def _read_records(fd: int, most: int) -> list[FileRecord]:
    """The records a child wrote to ``fd`` (closed here), up to the first incomplete one."""
    out: list[FileRecord] = []
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(fd, "rb") as fh:
        data = memoryview(fh.read())
    pos, end = 0, len(data)
    while len(out) < most and pos + 5 <= end:
        size = int.from_bytes(data[pos : pos + 4], "little")
        stop = pos + 4 + size
        if stop > end:  # a record cut short by the child's death
            break
        try:
            out.append(_unpack(_decode(data[pos + 4 : stop])))  # our child's records (never scanned data)
        except Exception:
            break
        pos = stop
    return out


def _encode(rec: FileRecord) -> bytes:
    """One record as a frame: 4-byte little-endian length, then ``m`` + marshal or ``p`` + pickle.

    ``marshal`` (built in: no import, and faster) for a record of plain values; ``pickle`` when
    it carries findings (pydantic models).
    """
    packed = _pack(rec)
    body = b""
    if not rec.findings:
        with contextlib.suppress(ValueError):  # a value of a type marshal does not write
            body = b"m" + marshal.dumps(packed)
    if not body:
        import pickle

        body = b"p" + pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(4, "little") + body


def _decode(body: memoryview) -> tuple[Any, ...]:
    """The packed record of one frame's body (see :func:`_encode`)."""
    if body[0] == ord("m"):
        packed = marshal.loads(body[1:])
    else:
        import pickle

        packed = pickle.loads(body[1:])
    if not isinstance(packed, tuple):
        raise TypeError(f"not a packed record: {type(packed).__name__}")
    return packed


def _pack(rec: FileRecord) -> tuple[Any, ...]:
    """A record as a tuple of plain values (pickles ten times faster than the dataclass).

    ``FileRecord``'s fields in their order, spelt out here and in :func:`_unpack` (a loop over
    the names cost the parent ~24K instructions per record); a test keeps them in step.
    """
    verdict = _VERDICT_VALUES[rec.verdict]
    return (rec.path, rec.format, verdict, rec.sha256, rec.size, rec.findings, rec.reason, rec.globals)


def _unpack(t: tuple[Any, ...]) -> FileRecord:
    """The record :func:`_pack` packed.

    Raises:
        ValueError: ``t`` does not have one value per field.
    """
    path, fmt, verdict, sha256, size, findings, reason, found = t
    return FileRecord(
        path=path,
        format=fmt,
        verdict=_VERDICTS.get(verdict) or Verdict(verdict),
        sha256=sha256,
        size=size,
        findings=findings,
        reason=reason,
        globals=found,
    )


def _fork_child(
    share: list[tuple[str, str]],
    policy: PicklePolicy,
    limits: ScanLimits,
    scanners: list[Scanner],
    digest: bool,
) -> tuple[int, int]:
    """Fork a child that scans ``share``, appending each record to a file: ``(pid, its fd)``."""
    fd = _records_file()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
        code = 1
        try:
            write = os.write
            for display, path in share:
                if os.getppid() != parent:  # the parent was killed (SIGTERM, SIGKILL): stop
                    break
                rec = _scan_or_error(display, path, policy, limits, scanners, digest)
                data = memoryview(_encode(rec))
                while data:  # written at once: kept if this process dies on a later file
                    data = data[write(fd, data) :]
            code = 0
        finally:
            os._exit(code)  # no atexit handlers, no flush of the parent's buffered output
    return pid, fd


#: Called after each file with ``(files done, files to scan, display path)``.
Progress = Callable[[int, int, str], None]


def scan_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    project_allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
    rules: Sequence[str | os.PathLike[str]] = (),
    jobs: int = 1,
    progress: Progress | None = None,
    digest: bool = True,
    report_allowed: bool = False,
) -> ScanResult:
    """Scan files and folders (recursively) without loading anything.

    Args:
        paths: files and folders. Folders are walked recursively in sorted order; symlinks to
            files are followed (a file linked twice is scanned once), symlinked folders are not;
            ``.git``/``.hg``/``.svn`` are skipped.
        allow: the user's allow-list additions, ``'module.Name'`` or ``'module.*'``; never read
            from the scanned folder; cannot allow a deny-listed callable.
        project_allow: a project file's ``scan.allow`` additions (a ``bastion.yaml``, which
            someone else may have written): only the user's own code, matched as written
            (see :class:`~bastion.scan.policy.PicklePolicy`).
        limits: scan limits (decompressed bytes, ratio, nesting); defaults to :class:`ScanLimits`.
        rules: extra rule files (explicit paths only; see :func:`load_rule_files`).
        jobs: worker processes. ``1``: in this process; ``N > 1``: up to N processes (at most
            :data:`MAX_JOBS_PER_CPU` per CPU: a larger ``N`` is capped, with a warning);
            ``0`` (auto): one per CPU when there are enough files for a pool to pay for itself
            (at least :data:`POOL_MIN_FILES` per worker), else in this process. Results keep
            the sorted order whatever the number of workers.
        progress: called after each scanned file with ``(done, total, path)``.
        digest: compute each file's SHA-256 (``False``: ``sha256`` is ``None``; hashing reads
            every byte, so a scan that only parses headers is much faster without it).
        report_allowed: report each global that only an ``allow`` entry let through as an
            ``info`` finding ``<scanner>.user-allowed`` (a ``project_allow`` entry's always is,
            as ``<scanner>.project-allowed``); the scan gates of ``assess``, ``harden`` and the
            guard set it (see :class:`~bastion.scan.policy.PicklePolicy`).

    Returns:
        A :class:`bastion.core.scanning.ScanResult` with one ``FileResult`` per file found.

    Raises:
        ScanError: a path does not exist (every missing path is named).
        ConfigError: an ``allow`` entry or a rule file is malformed, or a ``project_allow``
            entry names a module a project file may not allow.
    """
    return scan_records(
        paths,
        allow=allow,
        project_allow=project_allow,
        limits=limits,
        rules=rules,
        jobs=jobs,
        progress=progress,
        digest=digest,
        report_allowed=report_allowed,
    ).to_result()


def scan_records(
    paths: Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    project_allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
    rules: Sequence[str | os.PathLike[str]] = (),
    jobs: int = 1,
    progress: Progress | None = None,
    digest: bool = True,
    report_allowed: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> ScanRecords:
    """:func:`scan_paths` (same arguments, same errors), returning the scanner's plain records.

    :class:`~bastion.core._scan_records.ScanRecords` has the fields of ``ScanResult`` and builds
    it with ``to_result()``; no pydantic import unless a scanner reports a finding. For renderers
    that need no model, e.g. ``bastion scan -f json``.

    ``on_ready`` (if given) is called once the scanners are loaded, before the first file is
    scanned and before any worker process forks (``bastion scan`` resumes garbage collection
    there: see :func:`bastion.cli.main.run`).

    Returns:
        One :class:`~bastion.core._scan_records.FileRecord` per file found.

    Raises:
        ScanError: a path does not exist (every missing path is named).
        ConfigError: an ``allow`` entry or a rule file is malformed.
    """
    given = [Path(os.fspath(p)) for p in paths]
    missing = [str(p) for p in given if not p.exists() and not p.is_symlink()]
    if missing:
        raise ScanError("no such file or folder: " + ", ".join(missing))
    if jobs < 0:
        raise ConfigError(f"jobs must be >= 0, got {jobs}")
    policy = load_rule_files(rules, allow, project_allow, report_allowed=report_allowed)
    lim = limits or ScanLimits()
    log.debug("pickle emulator: %s", _compiled.status())
    entries: list[FileRecord | tuple[str, str]] = []
    seen: dict[str, str] = {}  # real path -> the display path it was listed under
    reals: dict[str, str] = {}

    def real(display: str, q: str) -> str:
        return reals.get(display) or os.path.realpath(q)

    for p in given:
        walked = p.is_dir()
        items = list(_walk(p, reals)) if walked else [(str(p), str(p), None)]
        # the resolved paths of the files listed (only in-folder symlinks are checked against them)
        real_files: set[str] | None = None
        for display, path, skip in items:
            # A file the walk yielded is a regular file (its directory entry, or its symlink's
            # target, was checked there): no second stat. A path given directly is checked.
            regular = walked and skip is None
            if skip == _LINK and path is not None:
                if real_files is None:
                    real_files = {real(d, q) for d, q, why in items if q is not None and why is None}
                if real(display, path) in real_files:
                    entries.append(
                        FileRecord(
                            path=display,
                            verdict=Verdict.SKIPPED,
                            reason="symlink to a file of the scanned folder (scanned at its own path)",
                        )
                    )
                    continue
                skip = None
            # entries with nothing to scan are keyed apart: a link to a FIFO must not vanish
            # because the FIFO's own display path equals the link's resolved path
            key = real(display, path) if path is not None else "\0" + display
            if key in seen:  # listed already: a second link to it says so; overlapping paths do not
                if path is not None and os.path.islink(path):
                    why = f"symlink to the same file as {seen[key]}"
                    entries.append(FileRecord(path=display, verdict=Verdict.SKIPPED, reason=why))
                continue
            seen[key] = display
            if path is None:
                unread = skip is not None and skip.startswith(_UNREADABLE)
                verdict = Verdict.ERROR if unread else Verdict.SKIPPED
                entries.append(FileRecord(path=display, verdict=verdict, reason=skip))
                continue
            try:
                mode = stat.S_IFREG if regular else os.stat(path).st_mode
            except OSError as exc:
                entries.append(FileRecord(path=display, verdict=Verdict.ERROR, reason=f"unreadable: {exc}"))
                continue
            if not stat.S_ISREG(mode):
                entries.append(FileRecord(path=display, verdict=Verdict.SKIPPED, reason="not a regular file"))
                continue
            entries.append((display, path))
    todo = [(i, e) for i, e in enumerate(entries) if isinstance(e, tuple)]
    total = len(todo)
    workers = _auto_workers(total) if jobs == 0 else _capped_workers(jobs)
    workers = max(1, min(workers, total))
    done: dict[int, FileRecord] = {}
    if workers == 1:
        scanners = _scanners()
        if on_ready is not None:
            on_ready()
        for n, (i, (display, path)) in enumerate(todo, 1):
            done[i] = _scan_one(display, path, policy, lim, scanners, digest)
            if progress is not None:
                progress(n, total, display)
    else:
        # This process scans the first share itself while ``workers - 1`` processes scan the
        # rest: one process fewer to start, and no CPU left waiting on the results.
        mine, theirs = todo[: total // workers], todo[total // workers :]
        # Load the scanners (and the modules they import on first use) before forking, so that
        # forked workers inherit them instead of each importing them again.
        scanners = _scanners()
        _warm_up(policy, lim, scanners)
        if on_ready is not None:
            on_ready()
        others: _Workers
        try:
            if _start_method() == "fork":
                others = _Forked(theirs, workers - 1, policy, lim, scanners, digest)
            else:
                others = _Pool(theirs, workers - 1, policy, lim, digest)
        except OSError as exc:  # no process to spare (fork refused): scan everything here
            log.warning("could not start worker processes (%s); scanning in this process", exc)
            others, mine, theirs = _Workers(), todo, []
        try:
            n = 0
            for i, (display, path) in mine:
                done[i] = _scan_one(display, path, policy, lim, scanners, digest)
                n += 1
                if progress is not None:
                    progress(n, total, display)
            for (i, (display, _)), fr in zip(theirs, others, strict=True):
                done[i] = fr
                n += 1
                if progress is not None:
                    progress(n, total, display)
        finally:
            others.close()
    result = ScanRecords()
    for i, e in enumerate(entries):
        result.files.append(done[i] if isinstance(e, tuple) else e)
    return result


def scan_file(
    path: str | os.PathLike[str],
    *,
    allow: Sequence[str] = (),
    project_allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
    report_allowed: bool = False,
) -> FileResult:
    """Scan one file without loading it.

    Args:
        path: the file.
        allow: see :func:`scan_paths`.
        project_allow: see :func:`scan_paths` (a ``bastion.yaml``'s ``scan.allow``).
        limits: see :func:`scan_paths`.
        report_allowed: see :func:`scan_paths`.

    Raises:
        ScanError: the path does not exist or is a folder.
        ConfigError: an ``allow`` entry is malformed.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise ScanError(f"no such file: {p}")
    if p.is_dir():
        raise ScanError(f"{p} is a folder; use scan_paths to scan folders")
    result = scan_paths(
        [p], allow=allow, project_allow=project_allow, limits=limits, report_allowed=report_allowed
    )
    return result.files[0]
