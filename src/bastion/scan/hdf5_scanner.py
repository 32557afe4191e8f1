"""``scan.hdf5``: HDF5 files (Keras ``.h5`` models and ``.weights.h5``), behind the ``hdf5`` extra.

Threat model: ``keras.models.load_model("model.h5")`` rebuilds the model from the JSON in the
root attribute ``model_config`` (and ``training_config``); a ``Lambda`` layer there holds
marshalled bytecode that runs on load, and a custom object needs code the user must trust. The
file is opened read-only with ``h5py`` (which parses HDF5 metadata; no Python object in the file is
unpickled or run); only string attributes are read, never datasets.

Reference: https://docs.h5py.org/ ; Keras legacy H5 format (``keras/src/legacy/saving/``).
"""

from __future__ import annotations

import io
from typing import IO, Any, ClassVar

from bastion.core.errors import MissingExtraError, require
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
        try:
            h5py = require("h5py", "hdf5")
        except MissingExtraError as exc:
            return Outcome.error("hdf5", str(exc))
        out = Outcome(format="hdf5")
        start = superblock_offset(artifact.stream, artifact.size) or 0
        if start:
            _scan_user_block(artifact, start, out)
        artifact.stream.seek(0)
        try:
            with h5py.File(artifact.stream, "r") as f:
                for key in _CONFIG_ATTRS:
                    if key not in f.attrs:
                        continue
                    text = _text(f.attrs[key])
                    if text is None or len(text) > _MAX_ATTR:
                        out.errors.append(f"attribute {key!r} is not a string under {_MAX_ATTR} bytes")
                        continue
                    out.format = "keras-h5"
                    check_keras_config(artifact, out, text, source=f"attribute {key}", prefix="scan.hdf5")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            out.format = out.format or "hdf5"
            out.errors.append(f"not a readable HDF5 file: {exc}")
        return out


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
    offset = 0
    while offset + len(HDF5_MAGIC) <= size:
        if offset + len(HDF5_MAGIC) <= len(data):
            sig = data[offset : offset + len(HDF5_MAGIC)]
        elif stream is not None:
            stream.seek(offset)
            sig = stream.read(len(HDF5_MAGIC))
        else:
            return None
        if sig == HDF5_MAGIC:
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
