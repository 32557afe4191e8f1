"""``scan.sevenzip``: 7z archives, behind the ``7z`` extra (``py7zr``).

Threat model: as for any archive (see :mod:`bastion.scan.archive_scanner`): a malicious model
wrapped so that a scanner reading the outer bytes misses it, decompression bombs, and member
names that escape the extraction folder. Members are decompressed into spooled temporary files
(within the scan's byte budget, never onto the scanned folder) and dispatched by magic bytes.

Reference: https://py7zr.readthedocs.io/ ; 7z format (7zFormat.txt in the LZMA SDK).
"""

from __future__ import annotations

from typing import IO, Any, ClassVar

from bastion.core.errors import MissingExtraError, require
from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan._zip import unsafe_member_name
from bastion.scan.base import Artifact, BombError, Outcome, ScanContext, Scanner

__all__ = ["SEVENZIP_MAGIC", "SevenZipScanner"]

SEVENZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"


class _Spool:
    """A py7zr writer that spools one member into a temporary file and charges the budget."""

    def __init__(self, ctx: ScanContext, name: str) -> None:
        import tempfile  # here, not at module level: every scan imports this module (~2 ms)

        self.ctx = ctx
        self.name = name
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=ctx.limits.spool_memory)  # noqa: SIM115
        self.length = 0

    def write(self, s: bytes | bytearray) -> int:
        self.ctx.charge(len(s), what=f"7z member {self.name!r}")
        self.length += len(s)
        return self.file.write(s)

    def read(self, size: int | None = None) -> bytes:
        return self.file.read(-1 if size is None else size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def flush(self) -> None:
        self.file.flush()

    def size(self) -> int:
        return self.length

    def close(self) -> None:
        """py7zr calls this when the member is done; the file stays open for scanning."""


@register("scanner")
class SevenZipScanner(Scanner):
    """7z archives: members scanned by magic bytes, with bomb and traversal checks."""

    id: ClassVar[str] = "scan.sevenzip"
    title: ClassVar[str] = "7z archive scanner"
    formats: ClassVar[tuple[str, ...]] = ("7z",)
    priority: ClassVar[int] = 50
    sniff_first_bytes: ClassVar[bytes | None] = b"7"  # the 7z signature
    references: ClassVar[tuple[str, ...]] = ("https://py7zr.readthedocs.io/",)
    threat_model: ClassVar[str] = "The attacker wraps a malicious model in a 7z archive or builds a 7z bomb."

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """The 7z signature."""
        return head.startswith(SEVENZIP_MAGIC)

    def scan(self, artifact: Artifact) -> Outcome:
        """List, bound-check, decompress and dispatch every member."""
        try:
            py7zr = require("py7zr", "7z")
        except MissingExtraError as exc:
            return Outcome.error("7z", str(exc))
        ctx = artifact.ctx
        out = Outcome(format="7z")
        spools: dict[str, _Spool] = {}

        class Factory(py7zr.io.WriterFactory):  # type: ignore[name-defined]
            def create(self, filename: str) -> Any:
                sp = _Spool(ctx, filename)
                spools[filename] = sp
                return sp

        artifact.stream.seek(0)
        try:
            with py7zr.SevenZipFile(artifact.stream, "r") as zf:
                if zf.needs_password():
                    return Outcome.error("7z", "encrypted 7z archive cannot be scanned")
                infos = [i for i in zf.list() if not i.is_directory]
                if len(infos) > ctx.limits.max_members:
                    raise BombError(f"7z archive with {len(infos)} members (limit {ctx.limits.max_members})")
                declared = sum(int(i.uncompressed or 0) for i in infos)
                if declared > ctx.limits.max_decompressed_bytes:
                    raise BombError(f"decompression bomb: 7z members declare {declared} bytes")
                for info in infos:
                    why = unsafe_member_name(info.filename)
                    if why:
                        out.findings.append(
                            artifact.finding(
                                "scan.sevenzip.path-traversal",
                                Severity.HIGH,
                                f"Archive member {info.filename!r} escapes the extraction folder ({why})",
                                evidence={"member": info.filename, "reason": why},
                                remediation="Do not extract this archive; rebuild it from a trusted source.",
                                references=("https://cwe.mitre.org/data/definitions/22.html",),
                            )
                        )
                zf.extract(factory=Factory())
        except BombError:
            for sp in spools.values():
                sp.file.close()
            raise
        except Exception as exc:  # py7zr raises many types on corrupt input
            for sp in spools.values():
                sp.file.close()
            return Outcome.error("7z", f"corrupt or unsupported 7z archive: {type(exc).__name__}: {exc}")
        for name in sorted(spools):
            sp = spools[name]
            with sp.file:
                sp.file.seek(0)
                out.absorb(ctx.scan(artifact.child(name, sp.file, sp.length)))
        return out
