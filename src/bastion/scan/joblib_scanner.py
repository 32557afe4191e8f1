"""``scan.joblib``: joblib's compressed files (zlib, lzma, the pre-0.10 ``ZF`` format).

Threat model: ``joblib.load`` unpickles its files, so a joblib file runs code at load time like
any pickle; joblib also writes raw numpy buffers between pickle opcodes, which a naive pickle
scanner chokes on (and an attacker can hide opcodes behind a wrong length). Plain joblib files
are pickle streams and go through ``scan.pickle``, whose emulator skips each
``NumpyArrayWrapper``'s raw bytes by the length computed from its shape and dtype; this scanner
handles the compressed forms joblib chooses by magic bytes (``compress=3`` is zlib): it
decompresses within the limits and hands the stream back to the dispatcher. gzip, bz2 and xz
joblib files are handled by ``scan.archive`` the same way.

Reference: ``joblib/compressor.py`` and ``joblib/numpy_pickle_compat.py``.
"""

from __future__ import annotations

from typing import IO, ClassVar

from bastion.core.registry import register
from bastion.scan.archive_scanner import TrailingData, decompress_into
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner, is_model_name

__all__ = ["JoblibScanner"]

ZFILE_PREFIX = b"ZF"
LZMA_PREFIX = b"\x5d\x00"
LZ4_PREFIX = b"\x04\x22\x4d\x18"
_ZF_HEADER = 2 + 19  # "ZF" + hex length padded to len(hex(2**64))


def _is_zlib(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0 and not head[1] & 0x20


def _is_zfile(head: bytes) -> bool:
    """Whether joblib reads the file in its old format: it starts with ``ZF`` (``_detect_compressor``)."""
    return head[:2] == ZFILE_PREFIX


@register("scanner")
class JoblibScanner(Scanner):
    """joblib files compressed with zlib (``compress=3``), lzma, or the old ``ZF`` format."""

    id: ClassVar[str] = "scan.joblib"
    title: ClassVar[str] = "joblib compressed-file scanner"
    formats: ClassVar[tuple[str, ...]] = ("zlib", "lzma", "joblib-zfile", "lz4")
    priority: ClassVar[int] = 30
    #: zlib (``0x78``), ``ZF``, lz4 (``0x04``), lzma-alone (``0x5d``)
    sniff_first_bytes: ClassVar[bytes | None] = b"\x78Z\x04\x5d"
    references: ClassVar[tuple[str, ...]] = (
        "https://joblib.readthedocs.io/en/stable/persistence.html",
        "https://github.com/joblib/joblib/blob/main/joblib/compressor.py",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a joblib-dumped model the victim loads with joblib.load."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """A zlib header, an lzma-alone header, joblib's ``ZF`` prefix, or the lz4 frame magic."""
        return (
            _is_zlib(head)
            or _is_zfile(head)
            or head.startswith(LZ4_PREFIX)
            or (head.startswith(LZMA_PREFIX) and len(head) >= 13)
        )

    def scan(self, artifact: Artifact) -> Outcome:
        """Decompress within the limits and scan the content.

        Raises:
            NotThisFormat: the weak magic was a coincidence (a non-model name that does not
                decompress).
        """
        head = artifact.head(64)
        if head.startswith(LZ4_PREFIX):
            return Outcome.error(
                "lz4", "lz4-compressed joblib files are not supported (needs the lz4 package)"
            )
        if _is_zfile(head):
            return self._zfile(artifact, head)
        kind = "zlib" if _is_zlib(head) else "lzma"
        try:
            artifact.stream.seek(0)
            data, length = decompress_into(
                artifact.ctx, artifact.stream, kind, compressed_size=artifact.size, whole=kind == "zlib"
            )
        except TrailingData as exc:  # a whole zlib stream and more: no coincidence, whatever the name
            return Outcome.error(kind, str(exc))
        except ValueError as exc:
            if is_model_name(artifact.name):
                return Outcome.error(kind, str(exc))
            raise NotThisFormat from exc
        return self._inner(artifact, kind, data, length)

    def _zfile(self, art: Artifact, head: bytes) -> Outcome:
        """Scan joblib's pre-0.10 format.

        ``ZF``, the length in hex (read as ``int(field, 16)`` reads it: ``0x``/``0X`` or none,
        blanks, ``_``), an optional blank, one zlib stream.

        Raises:
            NotThisFormat: the length field does not parse and the name is not a model's (a
                file that merely starts with ``ZF``; joblib fails on it too).
        """
        try:
            int(head[2:_ZF_HEADER], 16)
        except ValueError as exc:
            if is_model_name(art.name):
                return Outcome.error("joblib-zfile", "malformed joblib ZF header")
            raise NotThisFormat from exc
        body = _ZF_HEADER + (1 if head[_ZF_HEADER : _ZF_HEADER + 1] == b" " else 0)
        try:
            art.stream.seek(body)
            size = None if art.size is None else art.size - body
            data, length = decompress_into(art.ctx, art.stream, "zlib", compressed_size=size)
        except ValueError as exc:
            return Outcome.error("joblib-zfile", str(exc))
        return self._inner(art, "joblib-zfile", data, length)

    def _inner(self, art: Artifact, kind: str, data: IO[bytes], length: int) -> Outcome:
        name = art.name
        for suffix in (".z", ".zlib", ".lzma", ".gz"):
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
        with data:
            sub = art.ctx.scan(art.child(name, data, length, label=f"{kind}:{name}"))
        if sub.skipped is not None and not sub.findings and not sub.errors:
            if is_model_name(art.name):
                return Outcome.error(kind, f"{kind} content is not a model file ({sub.skipped})")
            return Outcome(skipped=f"{kind} stream whose content is not a model file")
        sub.format = f"{kind}+{sub.format}" if sub.format else kind
        return sub
