"""The scanner plugin contract and the scan context (limits, policy, dispatch, findings).

A scanner is a :class:`Scanner` subclass registered with ``@register("scanner")``. It declares
``id``, ``formats``, ``priority`` and ``sniff(head, name)``, and implements
``scan(artifact) -> Outcome``. An :class:`Artifact` is one byte stream to inspect (a file, a zip
member, a decompressed stream, a nested pickle) with where it came from; a container scanner
hands each of its members back to :meth:`ScanContext.scan`, which picks the scanner by magic
bytes (never by extension alone) and enforces the limits.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, ClassVar, Protocol, cast

from bastion.core import atlas
from bastion.core._log import get_logger
from bastion.core._plain import PlainRecord
from bastion.core._regex import LazyPattern
from bastion.core._threat import Threat
from bastion.core.registry import Plugin
from bastion.core.severity import Severity
from bastion.scan._limits import ScanLimits
from bastion.scan.policy import PicklePolicy

if TYPE_CHECKING:
    # Loaded (with pydantic) when a scanner reports something: a scan of clean files needs none.
    from bastion.core.findings import Finding, Location

log = get_logger(__name__)

__all__ = [
    "ATLAS_IDS",
    "MAGICS_OF_OTHER_FORMATS",
    "ZIP_MAGICS",
    "Artifact",
    "BombError",
    "NotThisFormat",
    "Outcome",
    "ScanContext",
    "ScanLimits",
    "Scanner",
    "StreamBombError",
    "TimeLimitExceeded",
    "formats_by_suffix",
    "has_protocol_header",
    "is_model_name",
    "starts_as_another_format",
]

#: Largest byte region :meth:`Artifact.scan_region` reads and scans as a member of its own.
MAX_REGION_SCAN = 64 << 20

#: MITRE ATLAS techniques every scan finding maps to (unsafe ML artefacts; supply chain: model).
ATLAS_IDS = [atlas.UNSAFE_ARTIFACTS, atlas.SUPPLY_CHAIN_MODEL]

#: A zip's local-file-header, end-of-central-directory and spanning signatures (a file starting
#: with one is a zip); the end record's is what ``zipfile`` looks for at a file's tail.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_ZIP_END_RECORD = ZIP_MAGICS[1]
#: The magic bytes of the formats scanners read by magic (zip, gzip, bz2, xz, 7z, ``.npy``,
#: GGUF, HDF5): bytes starting so are that format, whatever a file's name says.
MAGICS_OF_OTHER_FORMATS = (
    *ZIP_MAGICS,
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"\x93NUMPY",
    b"GGUF",
    b"\x89HDF\r\n\x1a\n",
)


def has_protocol_header(head: bytes) -> bool:
    """Whether ``head`` starts with a pickle's protocol header (``PROTO`` 0-5: ``0x80``, then 0-5)."""
    return len(head) >= 2 and head[0] == 0x80 and head[1] <= 5


def starts_as_another_format(head: bytes) -> bool:
    """Whether ``head`` starts as a pickle (``0x80``, protocol 0-5) or another format's magic.

    The magic bytes are :data:`MAGICS_OF_OTHER_FORMATS`. For the scanners that take a file by
    its name (``.safetensors``, ``saved_model.pb``): such bytes that do not parse as their format
    go on to the scanner of what they are (a pickle renamed ``model.safetensors`` is judged as
    the pickle ``torch.load`` would run; trial 33).
    """
    return has_protocol_header(head) or head.startswith(MAGICS_OF_OTHER_FORMATS)


#: File-name suffixes that mark a file as a model (a file with one of them that cannot be
#: scanned is an ``error``, not ``skipped``).
MODEL_SUFFIXES = (
    ".pkl",
    ".pickle",
    ".pk",
    ".pck",
    ".pcl",
    ".p",
    ".dill",
    ".cpkl",
    ".pt",
    ".pth",
    ".pt2",
    ".ptl",
    ".bin",
    ".ckpt",
    ".model",
    ".mdl",
    ".sav",
    ".joblib",
    ".jbl",
    ".jl",
    ".z",
    ".npy",
    ".npz",
    ".onnx",
    ".ort",
    ".h5",
    ".hdf5",
    ".keras",
    ".pb",
    ".tflite",
    ".safetensors",
    ".gguf",
    ".ggml",
    ".mar",
    ".msgpack",
    ".torchscript",
    ".weights",
    ".tar",
    ".tgz",
    ".gz",
    ".bz2",
    ".xz",
    ".lzma",
    ".zip",
    ".7z",
)

#: The model-file suffixes of formats read by their magic bytes (or their own parser), and the
#: format's name: a file so named that no scanner takes and that is no pickle is "not a … file".
_SUFFIX_FORMATS = {
    ".h5": "HDF5",
    ".hdf5": "HDF5",
    ".keras": "Keras (zip)",
    ".gguf": "GGUF",
    ".npy": "NumPy .npy",
    ".npz": "NumPy .npz (zip)",
    ".zip": "zip",
    ".tar": "tar",
    ".tgz": "gzip",
    ".gz": "gzip",
    ".bz2": "bzip2",
    ".xz": "xz",
    ".lzma": "lzma",
    ".7z": "7z",
    ".pb": "TensorFlow protobuf",
    ".tflite": "TensorFlow Lite",
    ".onnx": "ONNX",
    ".safetensors": "safetensors",
}


def formats_by_suffix(name: str) -> str | None:
    """The format a file name's suffix names, for the formats not read as pickles; else ``None``."""
    return _SUFFIX_FORMATS.get(os.path.splitext(name.lower())[1])


_MAGIC_NAMES = LazyPattern(r"^(pytorch_model|model|weights|checkpoint|data)(\.|$)", re.IGNORECASE)


def is_model_name(name: str) -> bool:
    """Whether a file name marks a model file (by suffix, e.g. ``.pt``, ``.joblib.gz``)."""
    low = name.lower()
    return low.endswith(MODEL_SUFFIXES) or ("." not in low and bool(_MAGIC_NAMES.match(low)))


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class NotThisFormat(Exception):
    """Raised by :meth:`Scanner.scan` when the sniff was wrong: the next scanner is tried."""


class BombError(Exception):
    """A container expands past the decompression limits (or the file past its time limit)."""


class TimeLimitExceeded(BombError):
    """The scan of one top-level file passed ``ScanLimits.max_seconds``."""


class StreamBombError(BombError):
    """One stream (an archive member) expands past ``max_ratio``.

    That member is not scanned, its siblings still are; the file's total budget
    (:class:`BombError`) stops everything.
    """


class Outcome(PlainRecord):
    """What scanning one artifact found.

    Attributes:
        format: detected format (``pickle``, ``joblib``, ``pytorch-zip``, ``gzip+joblib`` ...).
        findings: findings, with locations.
        globals: every callable reached (``module.name``), in first-seen order.
        errors: reasons the artifact (or a member) could not be fully scanned.
        skipped: why it is not a model file, when it is not.
        models: members of a container that were model files (not skipped).
    """

    __slots__ = ("errors", "findings", "format", "globals", "models", "skipped")
    _fields = ("format", "findings", "globals", "errors", "skipped", "models")

    def __init__(
        self,
        format: str | None = None,
        findings: list[Finding] | None = None,
        globals: dict[str, None] | None = None,
        errors: list[str] | None = None,
        skipped: str | None = None,
        models: int = 0,
    ) -> None:
        self.format = format
        self.findings: list[Finding] = [] if findings is None else findings
        self.globals: dict[str, None] = {} if globals is None else globals
        self.errors: list[str] = [] if errors is None else errors
        self.skipped = skipped
        self.models = models

    @classmethod
    def skip(cls, reason: str) -> Outcome:
        """A not-a-model outcome."""
        return cls(skipped=reason)

    @classmethod
    def error(cls, fmt: str | None, reason: str) -> Outcome:
        """A could-not-scan outcome."""
        return cls(format=fmt, errors=[reason])

    def add_globals(self, names: Iterable[str]) -> None:
        """Record reached globals (keeps first-seen order, no duplicates)."""
        for n in names:
            self.globals.setdefault(n, None)

    def absorb(self, other: Outcome, *, member: str | None = None) -> None:
        """Merge a member's outcome into this container's (skipped members add nothing)."""
        if other.skipped is not None and not other.findings and not other.errors:
            return
        self.models += 1
        self.findings.extend(other.findings)
        self.add_globals(other.globals)
        prefix = f"{member}: " if member else ""
        self.errors.extend(prefix + e for e in other.errors)

    @property
    def worst(self) -> Severity | None:
        """Highest finding severity, or ``None``."""
        if not self.findings:
            return None
        return max(f.severity for f in self.findings)


class Scanner(Plugin):
    """Base class of scanner plugins.

    Class attributes (besides :class:`bastion.core.registry.Plugin`'s):
        formats: the formats it reports (``("pickle", "joblib")``).
        priority: sniffing order, lowest first; the generic pickle scanner comes last.
    """

    threat: ClassVar[Threat] = Threat.SUPPLY_CHAIN
    applies_to: ClassVar[frozenset[str]] = frozenset({"model"})
    atlas: ClassVar[tuple[str, ...]] = tuple(ATLAS_IDS)
    formats: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 100
    #: Whether dispatch calls :meth:`sniff_artifact` (the whole stream) rather than :meth:`sniff`.
    deep_sniff: ClassVar[bool] = False
    #: A promise about :meth:`sniff` that lets dispatch skip the call: it returns ``True`` only
    #: for a head whose first byte is one of these, or a name matching :attr:`sniff_suffixes`.
    #: ``None`` (the default): no promise, dispatch always asks. Checked for every shipped
    #: scanner by ``tests/scan/test_sniff_hints.py`` (each first byte against every format's head).
    sniff_first_bytes: ClassVar[bytes | None] = None
    #: With :attr:`sniff_first_bytes`: lower-case name endings (``.onnx``) for which :meth:`sniff`
    #: may accept a head of any first byte.
    sniff_suffixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """Whether this scanner should try the artifact.

        Args:
            head: the first bytes (up to 1024) of the artifact.
            name: its file or member name (base name).
        """
        raise NotImplementedError

    @classmethod
    def sniff_artifact(cls, artifact: Artifact, head: bytes) -> bool:
        """:meth:`sniff` with the whole stream at hand (the default just calls :meth:`sniff`).

        For formats whose magic may sit past the first 1024 bytes (an HDF5 superblock after a
        user block); called only when the class sets ``deep_sniff = True``. May move the
        stream's position.
        """
        return cls.sniff(head, artifact.name)

    def scan(self, artifact: Artifact) -> Outcome:
        """Inspect ``artifact`` statically; never import, unpickle or load it.

        Raises:
            NotThisFormat: the artifact is not this format after all (next scanner is tried).
        """
        raise NotImplementedError


class Artifact(PlainRecord):
    """One byte stream to scan, and where it came from.

    Attributes:
        path: the top-level file path as given (for locations).
        member: where inside that file (``archive/data.pkl``; levels joined by ``!``), or ``None``.
        name: base name of this stream (file or member name), for name hints.
        stream: readable, seekable binary stream positioned at 0.
        size: length in bytes, when known.
        depth: container nesting level (0 for a file).
        ctx: the scan context (policy, limits, dispatch).
    """

    __slots__ = ("ctx", "depth", "member", "name", "path", "size", "stream")
    _fields = ("path", "member", "name", "stream", "size", "depth", "ctx")

    def __init__(
        self,
        path: str,
        member: str | None,
        name: str,
        stream: IO[bytes],
        size: int | None,
        depth: int,
        ctx: ScanContext,
    ) -> None:
        self.path = path
        self.member = member
        self.name = name
        self.stream = stream
        self.size = size
        self.depth = depth
        self.ctx = ctx

    def head(self, n: int = 1024) -> bytes:
        """The first ``n`` bytes (the stream is rewound)."""
        self.stream.seek(0)
        data = self.stream.read(n)
        self.stream.seek(0)
        return data

    def location(self, offset: int | None = None) -> Location:
        """A :class:`Location` in this artifact."""
        from bastion.core.findings import Location

        return Location(path=self.path, member=self.member, offset=offset)

    def child(self, name: str, stream: IO[bytes], size: int | None, *, label: str | None = None) -> Artifact:
        """An artifact for a member of this one (``label`` defaults to ``name``)."""
        part = label or name
        member = part if self.member is None else f"{self.member}!{part}"
        return Artifact(
            path=self.path,
            member=member,
            name=os.path.basename(name.rstrip("/")) or name,
            stream=stream,
            size=size,
            depth=self.depth + 1,
            ctx=self.ctx,
        )

    def scan_region(self, out: Outcome, start: int, length: int, *, name: str, what: str) -> None:
        """Scan ``length`` bytes at ``start`` (at most :data:`MAX_REGION_SCAN`) as a member, by magic.

        For bytes the format's own reader ignores but another loader may not (a pickle appended
        after the data makes the file a polyglot). All-zero padding is skipped; a region that is
        no model format adds nothing; a payload there is reported as a member ``<what at start>``.
        """
        import io

        self.stream.seek(start)
        data = self.stream.read(min(length, MAX_REGION_SCAN))
        if not data.strip(b"\x00"):
            return
        child = self.child(name, io.BytesIO(data), len(data), label=f"<{what} at {start}>")
        sub = self.ctx.scan(child)
        if sub.skipped is None or sub.findings:
            out.absorb(sub, member=child.member)

    def finding(
        self,
        rule_id: str,
        severity: Severity,
        title: str,
        *,
        offset: int | None = None,
        evidence: dict[str, Any] | None = None,
        remediation: str = "",
        references: Iterable[str] = (),
    ) -> Finding:
        """A supply-chain finding located in this artifact."""
        from bastion.core.findings import Finding

        return Finding(
            rule_id=rule_id,
            severity=severity,
            threat=Threat.SUPPLY_CHAIN,
            title=title,
            location=self.location(offset),
            evidence=dict(evidence or {}),
            atlas=list(ATLAS_IDS),
            remediation=remediation,
            references=list(dict.fromkeys(references)),  # a rule's reference may also be a scanner's
        )


class _ZipMagicFirst:
    """A read-only view of a stream whose first four bytes read as a zip's local-header magic.

    For a zip written into another file with offsets that count that file's bytes
    (``ZipFile(path, "a")`` on a non-zip): ``zipfile`` reads it from its end record and never
    looks at offset 0, so the view is the archive ``zipfile`` reads, and the scanners that pick
    a zip by its magic and the file's name (``.skops``, ``.keras``) see one.
    """

    MAGIC = ZIP_MAGICS[0]

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def read(self, n: int = -1, /) -> bytes:
        at = self._fh.tell()
        data = self._fh.read(n)
        if at < 4 and data:
            k = min(4 - at, len(data))
            data = self.MAGIC[at : at + k] + data[k:]
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class ScanContext:
    """Policy, limits and scanner dispatch for one top-level file.

    Args:
        policy: the pickle policy (allow/deny rules and the user's additions).
        limits: hard limits.
        scanners: scanner instances, in sniffing order.
    """

    def __init__(self, policy: PicklePolicy, limits: ScanLimits, scanners: list[Scanner]) -> None:
        self.policy = policy
        self.limits = limits
        self.scanners = scanners
        self.decompressed = 0
        self.nested_pickles = 0
        self.deadline: float | None = (
            time.monotonic() + limits.max_seconds if limits.max_seconds is not None else None
        )

    # -- time budget
    def timed_out(self) -> bool:
        """Whether this file's scan has passed ``max_seconds``."""
        return self.deadline is not None and time.monotonic() > self.deadline

    def also_by_magic(self, art: Artifact, out: Outcome, rule_prefix: str) -> Outcome:
        """``out``, plus ``art`` read as the format its first bytes say, when that reading works.

        For the formats taken by their name (protobufs have no magic): a ``.pb`` or ``.onnx``
        that parses as one and also starts as a pickle (or zip, gzip … :func:`starts_as_another_format`)
        is a polyglot: ``torch.load`` or ``pickle.load`` reads the other format. The bytes are
        scanned by their magic under no name (no scanner takes them by name again) and, when
        that reading is complete or reaches something dangerous (a medium or worse finding), the
        file gets ``<rule_prefix>.polyglot`` (medium) and that scan's findings. A reading that
        fails at once (a valid model whose first bytes merely look like a pickle header) adds
        nothing.
        """
        label = "<read by its first bytes>"
        other = self.scan(art.child("", art.stream, art.size, label=label))
        art.stream.seek(0)
        if other.skipped is not None or (
            other.errors and not any(f.severity >= Severity.MEDIUM for f in other.findings)
        ):
            return out
        what = other.format or "another format"
        out.findings.append(
            art.finding(
                f"{rule_prefix}.polyglot",
                Severity.MEDIUM,
                f"File is also {what} from its first byte, read as that by loaders that go by content",
                offset=0,
                evidence={"also": what},
                remediation="torch.load and pickle.load read the bytes as the other format, not the "
                "model its name says; rebuild the file from a trusted source.",
                references=("https://docs.python.org/3/library/pickle.html",),
            )
        )
        out.absorb(other, member=label)
        return out

    def time_limit_message(self) -> str:
        """The reason recorded for a file that ran out of time."""
        return f"time limit: not fully scanned within {self.limits.max_seconds:g} s (ScanLimits.max_seconds)"

    def check_time(self) -> None:
        """Raise when this file's scan has passed ``max_seconds``.

        Raises:
            TimeLimitExceeded: the deadline passed.
        """
        if self.timed_out():
            raise TimeLimitExceeded(self.time_limit_message())

    # -- decompression budget
    def charge(self, nbytes: int, *, what: str) -> None:
        """Count ``nbytes`` extracted from a container or compressed stream.

        Raises:
            BombError: the file's total passes ``max_decompressed_bytes``.
        """
        self.decompressed += nbytes
        if self.decompressed > self.limits.max_decompressed_bytes:
            raise BombError(
                f"decompression bomb: {what} expands past the limit of "
                f"{self.limits.max_decompressed_bytes} bytes"
            )

    def check_ratio(self, produced: int, consumed: int, *, what: str) -> None:
        """Check the expansion ratio of one stream.

        Raises:
            StreamBombError: more than ``ratio_floor`` bytes came out at a ratio above ``max_ratio``.
        """
        if produced > self.limits.ratio_floor and produced > self.limits.max_ratio * max(consumed, 1):
            raise StreamBombError(
                f"decompression bomb: {what} expands {produced} bytes from {consumed} "
                f"(ratio above {self.limits.max_ratio:g})"
            )

    def spool(
        self, reader: _Readable, *, what: str, compressed_size: int | None = None
    ) -> tuple[IO[bytes], int]:
        """Copy a (decompressing) stream into a seekable temporary file, within the limits.

        Args:
            reader: the stream to drain.
            what: a name for messages.
            compressed_size: bytes of compressed input, for the ratio check (``None``: skip it).

        Returns:
            ``(spooled file positioned at 0, length)``.

        Raises:
            BombError: a limit is exceeded (the temporary file is closed).
        """
        import tempfile  # on first use: ~5 ms of start-up a scan of plain files does not need

        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=self.limits.spool_memory)  # noqa: SIM115
        total = 0
        try:
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                self.charge(len(chunk), what=what)
                self.check_time()
                if compressed_size is not None:
                    self.check_ratio(total, compressed_size, what=what)
                out.write(chunk)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out, total

    # -- dispatch
    def _also_as_tar(self, art: Artifact, head: bytes, scanner: Scanner, out: Outcome) -> Outcome:
        """``out``, plus the artifact scanned as a tar archive when it is also one.

        ``torch.load`` reads any file that is not a zip as a (pre-0.1.10) tar checkpoint first:
        a GGUF, safetensors or legacy-pickle file whose first block is also a valid tar header
        is loaded as that tar, whatever its own format says.
        """
        if scanner.id == "scan.archive":
            return out
        archive = _ARCHIVE_SCANNER[0] if _ARCHIVE_SCANNER else _archive_scanner()
        if not archive._is_tar(head):
            return out
        out.absorb(archive.scan_tar(art), member="<as a tar archive>")
        return out

    def _also_as_zip(self, art: Artifact, head: bytes, out: Outcome) -> Outcome:
        """``out``, plus the zip archive at the tail of a file that is not a zip from its start.

        ``zipfile`` finds an archive by the end record at the file's tail, whatever comes
        before it: ``skops.io.load``, Keras (``zipfile.is_zipfile``) and any ``ZipFile(path)``
        read an HDF5, GGUF, safetensors, ``.npy``, ONNX or pickle file with a zip appended as
        that zip. Such a file is a polyglot (``scan.archive.appended-zip``, medium) and its zip
        is scanned under the file's own name, so the scanners that go by name (``.skops``,
        ``.keras``) judge it as its loader would. The first check costs one read of the tail.

        A tar archive whose zip is one of its members' data (a ``model.tar`` of a ``.pt``
        checkpoint: the member's end record ends the tar) is not a polyglot: no finding, and
        the zip is still scanned under the file's name.
        """
        if head.startswith(ZIP_MAGICS) or art.size is None or art.size < 22:
            return out
        tail = min(art.size, 65536 + 22)  # where zipfile looks for the end record
        art.stream.seek(art.size - tail)
        if _ZIP_END_RECORD not in art.stream.read(tail):
            return out
        import zipfile

        from bastion.scan._zip import zip_span

        start, end = zip_span(art.stream)
        try:
            art.stream.seek(0)
            zipfile.ZipFile(art.stream).close()  # does zipfile read an archive there?
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, KeyError):
            return out
        label = f"<zip appended at {start}>"
        archive = _ARCHIVE_SCANNER[0] if _ARCHIVE_SCANNER else _archive_scanner()
        if not (archive._is_tar(head) and archive.in_one_tar_member(art, start, end)):
            out.findings.append(
                art.finding(
                    "scan.archive.appended-zip",
                    Severity.MEDIUM,
                    f"File is also a zip archive (from offset {start}), read as one by zipfile-based loaders",
                    offset=start,
                    evidence={"zip_offset": start},
                    remediation="skops.io, Keras and zipfile read the appended archive, not the file's "
                    "own format; rebuild the file from a trusted source.",
                    references=("https://docs.python.org/3/library/zipfile.html",),
                )
            )
        if start > 0:  # an archive appended as it was: scanned from its start, by name
            art.stream.seek(start)
            data, length = self.spool(art.stream, what="appended zip archive")
            with data:
                child = art.child(art.name, data, length, label=label)
                out.absorb(self.scan(child), member=child.member)
        else:  # offsets written for the whole file (``ZipFile(path, "a")``): the whole file, as a zip
            view = cast("IO[bytes]", _ZipMagicFirst(art.stream))
            whole = art.child(art.name, view, art.size, label=label)
            out.absorb(self._dispatch(whole, _ZipMagicFirst.MAGIC + head[4:], polyglots=False) or Outcome())
        return out

    def scan(self, art: Artifact) -> Outcome:
        """Scan one artifact with the first scanner whose sniff accepts it.

        Never raises for hostile input: failures become ``Outcome.errors``.
        """
        if art.depth > self.limits.max_depth:
            return Outcome.error(None, f"containers nested deeper than {self.limits.max_depth} levels")
        if art.depth > 0 and self.timed_out():  # a member or nested payload, once time is up
            return Outcome.error(None, self.time_limit_message())
        try:
            head = art.head(1024)
        except OSError as exc:
            return Outcome.error(None, f"unreadable: {exc}")
        found = self._dispatch(art, head, polyglots=True)
        if found is not None:
            return found
        try:  # no format of its own, but perhaps a zip archive at its tail
            appended = self._also_as_zip(art, head, Outcome())
        except BombError as exc:
            return Outcome.error("zip", str(exc))
        if appended.findings or appended.errors:
            return appended
        if is_model_name(art.name):
            return Outcome.error(None, "unsupported or unrecognised model format")
        return Outcome.skip("not a model file (no model magic bytes, no model file name)")

    def _dispatch(self, art: Artifact, head: bytes, *, polyglots: bool) -> Outcome | None:
        """The outcome of the first scanner whose sniff accepts ``head``; ``None`` if none does.

        ``polyglots``: also scan the artifact as the tar and zip archives it may be as well.
        Scanners whose :attr:`Scanner.sniff_first_bytes` rule ``head`` out are not asked (those
        with :attr:`Scanner.sniff_suffixes` still are when the name ends so).
        """
        low: str | None = None
        for scanner, sniff, deep, suffixes in _sniffers(self.scanners)[head[0] if head else _EMPTY_HEAD]:
            try:
                if suffixes is not None:  # asked for its names only: the first byte rules it out
                    if low is None:
                        low = art.name.lower()
                    if not low.endswith(suffixes):
                        continue
                ok = sniff(art, head) if deep else sniff(head, art.name)
                if not ok:
                    continue
            except Exception:
                log.exception("sniff of %s failed on %s", scanner.id, art.name)
                continue
            try:
                art.stream.seek(0)
                if not polyglots:
                    return scanner.scan(art)
                return self._also_as_zip(art, head, self._also_as_tar(art, head, scanner, scanner.scan(art)))
            except NotThisFormat:
                continue
            except BombError as exc:
                return Outcome.error(scanner.formats[0] if scanner.formats else None, str(exc))
            except MemoryError:
                return Outcome.error(None, "too large to scan in memory")
            except Exception as exc:
                log.exception("scanner %s failed on %s", scanner.id, art.name)
                return Outcome.error(
                    scanner.formats[0] if scanner.formats else None,
                    f"internal scanner error in {scanner.id}: {type(exc).__name__}: {exc}",
                )
        return None


#: :mod:`bastion.scan.archive_scanner`, once :func:`_archive_scanner` has imported it (it imports
#: this module: a function-level import ran on every file, about 2 µs each).
_ARCHIVE_SCANNER: list[Any] = []


def _archive_scanner() -> Any:
    """:mod:`bastion.scan.archive_scanner` (imported on first use, then kept)."""
    from bastion.scan import archive_scanner

    _ARCHIVE_SCANNER.append(archive_scanner)
    return archive_scanner


#: One dispatch entry: the scanner, its sniff method (bound once), whether it sniffs the whole
#: artifact, and the name endings it is asked for (``None``: asked whatever the name).
_Sniffer = tuple[Scanner, Any, bool, tuple[str, ...] | None]
#: The index of :func:`_sniffers`' entry for an empty head (no first byte).
_EMPTY_HEAD = 256
#: ``(scanners, their dispatch table)`` of the last list :func:`_sniffers` was asked for (one
#: tuple, read at once: the guard scans from several threads).
_SNIFFERS: list[tuple[list[Scanner], tuple[tuple[_Sniffer, ...], ...]]] = []


def _sniffers(scanners: list[Scanner]) -> tuple[tuple[_Sniffer, ...], ...]:
    """The dispatch table of ``scanners``: the scanners to ask, in order, for each first byte.

    Row :data:`_EMPTY_HEAD` serves an empty head. Sniff methods are bound once.
    A scanner whose :attr:`Scanner.sniff_first_bytes` leave a byte out is absent from that byte's
    row, or present with its :attr:`Scanner.sniff_suffixes` (asked only for those names). A scan's
    scanners are one list for all its files: the table is built once for it.
    """
    last = _SNIFFERS[0] if _SNIFFERS else None
    if last is not None and last[0] is scanners:
        return last[1]
    rows: list[list[_Sniffer]] = [[] for _ in range(_EMPTY_HEAD + 1)]
    for s in scanners:
        sniff = s.sniff_artifact if s.deep_sniff else s.sniff
        firsts = s.sniff_first_bytes
        suffixes = tuple(x.lower() for x in s.sniff_suffixes)
        for byte, row in enumerate(rows):
            if firsts is None or byte == _EMPTY_HEAD or byte in firsts:
                row.append((s, sniff, s.deep_sniff, None))
            elif suffixes:
                row.append((s, sniff, s.deep_sniff, suffixes))
    table = tuple(tuple(row) for row in rows)
    _SNIFFERS[:] = [(scanners, table)]
    return table
