"""``scan.hdf5``: HDF5 files (Keras ``.h5`` models and ``.weights.h5``), behind the ``hdf5`` extra.

Threat model: ``keras.models.load_model("model.h5")`` rebuilds the model from the JSON in the
root attribute ``model_config`` (and ``training_config``); a ``Lambda`` layer there holds
marshalled bytecode that runs on load, and a custom object needs code the user must trust. The
file is opened read-only with ``h5py`` (which parses HDF5 metadata; no Python object in the file is
unpickled or run); only string attributes are read, never datasets. The HDF5 C library runs in a
child process (``bastion.scan._hdf5_child``) under an address-space limit and the file's time
limit: a crafted file that makes it loop or crash costs that child, and the file is ``error``.

Reference: https://docs.h5py.org/ ; Keras legacy H5 format (``keras/src/legacy/saving/``).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import IO, Any, ClassVar

from bastion.core.errors import MissingExtraError, ScanError
from bastion.core.registry import register
from bastion.scan._keras import check_keras_config
from bastion.scan.base import Artifact, BombError, Outcome, Scanner

__all__ = ["HDF5_MAGIC", "Hdf5Scanner", "superblock_offset"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CONFIG_ATTRS = ("model_config", "training_config")
_MAX_ATTR = 64 << 20


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


@register("scanner")
class Hdf5Scanner(Scanner):
    """HDF5 files: the Keras model config stored in root attributes."""

    id: ClassVar[str] = "scan.hdf5"
    title: ClassVar[str] = "HDF5 / Keras H5 scanner"
    formats: ClassVar[tuple[str, ...]] = ("hdf5",)
    priority: ClassVar[int] = 30
    deep_sniff: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = (
        "https://nvd.nist.gov/vuln/detail/CVE-2024-3660",
        "https://docs.h5py.org/en/stable/high/attr.html",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a Keras .h5 model whose config holds a Lambda layer (bytecode run on load)."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """The HDF5 superblock signature at offset 0 or 512 of ``head``."""
        return superblock_offset(head, len(head)) is not None

    @classmethod
    def sniff_artifact(cls, artifact: Artifact, head: bytes) -> bool:
        """The HDF5 superblock signature at 0, 512, 1024, 2048 … (after a user block)."""
        return superblock_offset(artifact.stream, artifact.size, head=head) is not None

    def scan(self, artifact: Artifact) -> Outcome:
        """Read the root attributes and check any Keras config; scan a user block's bytes too."""
        if not h5py_available():
            return Outcome.error("hdf5", str(MissingExtraError("h5py", "hdf5")))
        out = Outcome(format="hdf5")
        start = superblock_offset(artifact.stream, artifact.size) or 0
        if start:
            _scan_user_block(artifact, start, out)
        artifact.stream.seek(0)
        try:
            attrs = read_root_attrs(artifact, _CONFIG_ATTRS)
        except ScanError as exc:
            out.errors.append(str(exc))
            return out
        for key in _CONFIG_ATTRS:
            if key not in attrs:
                continue
            text = attrs[key]
            if not isinstance(text, str):
                out.errors.append(f"attribute {key!r} is not a string under {_MAX_ATTR} bytes")
                continue
            out.format = "keras-h5"
            check_keras_config(artifact, out, text, source=f"attribute {key}", prefix="scan.hdf5")
        return out


def h5py_available() -> bool:
    """Whether ``h5py`` (the ``hdf5`` extra) is installed; it is imported by the child process only."""
    import importlib.util

    return importlib.util.find_spec("h5py") is not None


#: Seconds the HDF5 child may take when the file has no time limit of its own.
CHILD_SECONDS = 120.0


def read_root_attrs(artifact: Artifact, keys: tuple[str, ...]) -> dict[str, object]:
    """The root attributes ``keys`` of an HDF5 stream, read by the HDF5 library in a child process.

    Returns:
        key → its text, or ``{"not_text": type}`` for a value that is not a string (or is longer
        than 64 MiB); keys the file lacks are absent.

    Raises:
        ScanError: the file is not readable HDF5 (the library's reason), or the child did not
            answer within the file's remaining time (``ScanLimits.max_seconds``), crashed, or was
            stopped by its memory limit.
    """
    import json
    import os
    import subprocess
    import sys
    import time

    deadline = artifact.ctx.deadline
    timeout = CHILD_SECONDS if deadline is None else max(0.5, deadline - time.monotonic())
    path, spooled = _child_path(artifact)
    # ``-I``: no PYTHON* variables, no user site, no current folder on the path; the child's code is
    # this package's file, run as a script, so only h5py needs to be importable there
    cmd = [sys.executable, "-I", "-c", _child_source(), path, *keys]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ScanError(
            f"HDF5 metadata not read within {timeout:.0f} s (the HDF5 library looped on this file)"
        ) from None
    except OSError as exc:
        raise ScanError(f"cannot start the HDF5 reader process: {exc}") from None
    finally:
        if spooled:
            os.unlink(path)
    try:
        answer = json.loads(proc.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        code = proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise ScanError(f"the HDF5 library failed on this file ({how})") from None
    if answer.get("error"):
        raise ScanError(f"not a readable HDF5 file: {answer['error']}")
    return dict(answer.get("attrs") or {})


@functools.cache
def _child_source() -> str:
    """The text of ``_hdf5_child.py`` (read once per process)."""
    return Path(__file__).with_name("_hdf5_child.py").read_text(encoding="utf-8")


def _child_path(artifact: Artifact) -> tuple[str, bool]:
    """A path the child can open for the artifact's bytes, and whether it is a temporary copy.

    For a top-level file, the scanned descriptor itself where ``/proc`` has it (``/proc/<pid>/fd/N``:
    the bytes scanned, even if the path was replaced since). Anything else — a file the engine
    read into memory (the path is never opened again: it may have been replaced since, and the
    verdict must be of the bytes hashed), a container member, an unlinked spool file HDF5 cannot
    reopen — is copied to a temporary file.
    """
    import os
    import shutil
    import tempfile

    if artifact.member is None and artifact.depth == 0:
        try:
            fd: int | None = artifact.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        proc = f"/proc/{os.getpid()}/fd/{fd}"
        if fd is not None and os.path.isfile(proc):
            return proc, False
    artifact.stream.seek(0)
    with tempfile.NamedTemporaryFile(prefix="bastion-h5-", suffix=".h5", delete=False) as tmp:
        try:
            shutil.copyfileobj(artifact.stream, tmp)
        except BaseException:  # a full disk: no copy left behind
            tmp.close()
            os.unlink(tmp.name)
            raise
    return tmp.name, True


def superblock_offset(source: bytes | IO[bytes], size: int | None, *, head: bytes = b"") -> int | None:
    """Where the HDF5 superblock signature is, or ``None``.

    HDF5 looks for it at offset 0 and then at 512, 1024, 2048 … (a *user block* of any power-of-two
    size from 512 bytes may come first: its bytes are the user's, ignored by HDF5).

    Args:
        source: the bytes, or a seekable stream (its position is not restored).
        size: the stream's length (``None``: found by seeking to the end).
        head: the stream's first bytes, when already read (saves reads for small offsets).
    """
    if isinstance(source, bytes):
        data, stream = source, None
        size = len(source)
    else:
        data, stream = head, source
        if size is None:
            size = stream.seek(0, io.SEEK_END)
    n = len(HDF5_MAGIC)
    offset = 0
    if len(data) >= 512 + n:  # offsets 0 and 512 are in the bytes at hand (the usual head)
        if data.startswith(HDF5_MAGIC):
            return 0
        if data.startswith(HDF5_MAGIC, 512):
            return 512
        offset = 1024
    while offset + n <= size:
        if offset + n <= len(data):
            if data.startswith(HDF5_MAGIC, offset):
                return offset
        elif stream is None:
            return None
        else:
            stream.seek(offset)
            if stream.read(n) == HDF5_MAGIC:
                return offset
        offset = 512 if offset == 0 else offset * 2
    return None


class _Window:
    """The first ``limit`` bytes of a stream, as a reader (for :meth:`ScanContext.spool`)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream, self._left = stream, limit

    def read(self, n: int = -1, /) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._stream.read(n) if n else b""
        self._left -= len(data)
        return data


def _scan_user_block(artifact: Artifact, start: int, out: Outcome) -> None:
    """Scan the user block (bytes before the superblock) as a stream of its own.

    HDF5 ignores it, but another loader need not: a pickle there makes the file a polyglot that
    ``torch.load``/``pickle.load`` would run.
    """
    artifact.stream.seek(0)
    try:
        block, size = artifact.ctx.spool(_Window(artifact.stream, start), what="HDF5 user block")
    except BombError as exc:
        out.errors.append(str(exc))
        return
    with block:
        child = artifact.child("userblock", block, size, label=f"<HDF5 user block, {start} bytes>")
        sub = artifact.ctx.scan(child)
    if sub.skipped is None or sub.findings:
        out.absorb(sub, member=child.member)
