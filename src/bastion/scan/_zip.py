"""Shared zip walking for the PyTorch, npz and generic-archive scanners (not a plugin)."""

from __future__ import annotations

import posixpath
import re
import zlib
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from bastion.core.severity import Severity
from bastion.scan.base import ZIP_MAGICS, Artifact, BombError, Outcome, StreamBombError

if TYPE_CHECKING:
    import zipfile  # imported when a zip is opened: not part of every scan's start-up (~9 ms)

__all__ = [
    "MAX_DOCUMENT",
    "ZIP_MAGICS",
    "ZIP_STORED",
    "BadZip",
    "is_folder",
    "open_zip",
    "read_document",
    "unsafe_member_name",
    "walk_zip",
    "zip_start",
]

#: The "stored" (uncompressed) method of the zip format (``zipfile.ZIP_STORED``).
ZIP_STORED = 0


class BadZip(Exception):
    """Not a readable zip archive (:func:`open_zip`): ``zipfile.BadZipFile`` and the other parse errors."""


_DRIVE = re.compile(r"^[A-Za-z]:")

#: What to do with one member: ``skip``, ``pickle`` (must parse), ``dispatch`` (any format,
#: not-a-model members ignored), or a callable doing the work itself.
MemberAction = str | Callable[[Artifact, "zipfile.ZipFile", "zipfile.ZipInfo", Outcome], None]


def member_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged member raises (a bad CRC or stream, an unknown method, encryption)."""
    import zipfile  # loaded already when a member is read

    return (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError, RuntimeError)


#: Largest metadata document (a Keras ``config.json``, a skops ``schema.json``) read from an archive.
MAX_DOCUMENT = 64 << 20


def read_document(art: Artifact, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Outcome) -> bytes | None:
    """The bytes of a metadata member, charged to the decompression budget.

    ``None`` (with an error on ``out``) when the member is over :data:`MAX_DOCUMENT`.

    Raises:
        BombError: the file's decompression budget is spent.
    """
    if info.file_size > MAX_DOCUMENT:
        out.errors.append(f"{info.filename} of {info.file_size} bytes is over the {MAX_DOCUMENT}-byte limit")
        return None
    art.ctx.charge(info.file_size, what=info.filename)
    with zf.open(info) as fh:
        return fh.read(MAX_DOCUMENT + 1)


def is_folder(info: zipfile.ZipInfo) -> bool:
    """Whether a member is a folder entry: its name ends with ``/`` and it holds no data.

    ``ZipInfo.is_dir()`` looks at the name only, but ``zipfile`` reads a ``w/`` member's data
    like any other and numpy's ``NpzFile`` lists it as the key ``'w/'`` (``np.load`` then
    unpickles it): a member with a declared size is scanned whatever its name. ``is_dir()``
    also raises ``IndexError`` on a member with an empty name (a crafted archive; found by
    fuzzing); such a member is a file here, scanned like any other.
    """
    return info.filename.endswith("/") and info.file_size == 0


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name would escape the extraction folder, or ``None``."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        return "parent-directory component '..'"
    return None


def open_zip(art: Artifact) -> zipfile.ZipFile:
    """Open ``art`` as a zip archive.

    Raises:
        BadZip: not a readable zip (``zipfile.BadZipFile`` and the other parse errors).
    """
    import zipfile

    art.stream.seek(0)
    try:
        zf = zipfile.ZipFile(art.stream)
        why = _ambiguous_directory(art.stream)
        if why is not None:
            zf.close()
            raise BadZip(f"ambiguous zip: {why}")
        return zf
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
        zipfile.LargeZipFile,
        KeyError,
    ) as exc:
        raise BadZip(str(exc)) from exc


#: The size of a zip end-of-central-directory record without its comment.
_END_RECORD_SIZE = 22


def _end_record(stream: IO[bytes]) -> tuple[int, int, bool] | None:
    """``(prepended bytes, end record offset, zip64)`` as ``zipfile`` reads the end record.

    ``zipfile`` takes the bytes between where the central directory is said to be and where it
    is for data prepended to the archive; ``None`` when there is no end record.
    """
    import zipfile

    zf: Any = zipfile  # its end-record helpers and constants (private, stable since Python 2)
    try:
        endrec = zf._EndRecData(stream)
    except (OSError, ValueError, EOFError):
        return None
    if endrec is None:
        return None
    location = int(endrec[zf._ECD_LOCATION])
    zip64 = endrec[zf._ECD_SIGNATURE] == zf.stringEndArchive64
    prepended = location - endrec[zf._ECD_SIZE] - endrec[zf._ECD_OFFSET]
    if zip64:
        prepended -= zf.sizeEndCentDir64 + zf.sizeEndCentDir64Locator
    return int(prepended), location, zip64


def _ambiguous_directory(stream: IO[bytes]) -> str | None:
    """Why readers would find different central directories in this zip, or ``None``.

    Python's ``zipfile`` takes bytes before the archive for prepended data and shifts every
    offset by them, and reads a zip64 end record just before its locator; ``torch.load``'s
    reader (miniz) uses the offsets as written and the locator's. A model archive where the two
    differ (two central directories, two zip64 records) is not read the same way by everyone.
    """
    import struct

    end = _end_record(stream)
    if end is None:
        return None
    prepended, location, zip64 = end
    if zip64:
        stream.seek(location - 20)  # the zip64 locator (20 bytes) before the end record
        locator = stream.read(20)
        if len(locator) == 20:
            _, _, record, _ = struct.unpack("<4sLQL", locator)
            expected = location - 20 - 56  # where zipfile reads the 56-byte zip64 end record
            if record != expected:
                return f"the zip64 locator points at offset {record}, zipfile reads the record at {expected}"
    if prepended:
        return (
            f"the central directory is {prepended} bytes away from where the end record says "
            "(zipfile and torch.load read different members)"
        )
    return None


def zip_start(stream: IO[bytes]) -> int:
    """Where a zip found by its end record at the tail starts (the bytes before it); 0 if none."""
    return zip_span(stream)[0]


def zip_span(stream: IO[bytes]) -> tuple[int, int]:
    """``(start, end)``: the bytes of the zip ``zipfile`` finds by its end record at the tail.

    ``end`` is just past the end record (its comment aside); ``(0, 0)`` when there is none.
    """
    end = _end_record(stream)
    if end is None:
        return 0, 0
    return max(end[0], 0), end[1] + _END_RECORD_SIZE


def walk_zip(
    art: Artifact,
    zf: zipfile.ZipFile,
    out: Outcome,
    *,
    plugin_id: str,
    classify: Callable[[str], MemberAction],
    any_case: bool = False,
) -> None:
    """Check a zip's members (names, duplicates, sizes) and scan each as ``classify`` says.

    Findings: ``<plugin_id>.path-traversal`` and ``<plugin_id>.duplicate-member`` (high: a
    container trick). Errors: encrypted or unreadable members, decompression bombs.
    ``any_case``: the archive's reader finds members whatever their case (torch's, miniz):
    names that differ only in case are duplicates too.
    """
    from bastion.scan.pickle_scanner import analyse_pickle

    ctx = art.ctx
    infos = zf.infolist()
    if len(infos) > ctx.limits.max_members:
        raise BombError(f"zip archive with {len(infos)} members (limit {ctx.limits.max_members})")
    seen: dict[str, int] = {}
    spellings: dict[str, set[str]] = {}
    for info in infos:
        seen[info.filename] = seen.get(info.filename, 0) + 1
        if any_case:
            spellings.setdefault(info.filename.lower(), set()).add(info.filename)
    for group in (sorted(g) for g in spellings.values() if len(g) > 1):
        out.findings.append(
            art.finding(
                f"{plugin_id}.duplicate-member",
                Severity.HIGH,
                f"Archive holds members whose names differ only in case: {group[:4]}",
                evidence={"members": group[:8]},
                remediation="Its reader finds members whatever their case; which copy it loads is "
                "not the one a case-sensitive reader checks. Rebuild from a trusted source.",
                references=("https://pytorch.org/docs/stable/notes/serialization.html",),
            )
        )
    for name, count in sorted(seen.items()):
        if count > 1:
            out.findings.append(
                art.finding(
                    f"{plugin_id}.duplicate-member",
                    Severity.HIGH,
                    f"Archive holds {count} members named {name!r}",
                    evidence={"member": name, "count": count},
                    remediation="Readers disagree on which copy they load; rebuild the archive "
                    "from a trusted source.",
                    references=("https://www.bamsoftware.com/hacks/zipbomb/",),
                )
            )
    declared = sum(i.file_size for i in infos if not is_folder(i))
    room = ctx.limits.max_decompressed_bytes - ctx.decompressed
    if declared > room:  # scan the members that fit, skip the rest: a bomb must not hide a payload
        out.errors.append(
            f"decompression bomb: zip members declare {declared} bytes "
            f"(limit {ctx.limits.max_decompressed_bytes}); members past the limit not scanned"
        )
    for info in infos:
        if is_folder(info):
            continue
        if declared > room:
            if info.file_size > room:
                continue  # would pass the budget: not inflated (reported above)
            room -= info.file_size
        why = unsafe_member_name(info.filename)
        if why:
            out.findings.append(
                art.finding(
                    f"{plugin_id}.path-traversal",
                    Severity.HIGH,
                    f"Archive member {info.filename!r} escapes the extraction folder ({why})",
                    evidence={"member": info.filename, "reason": why},
                    remediation="Do not extract this archive; rebuild it from a trusted source.",
                    references=("https://cwe.mitre.org/data/definitions/22.html",),
                )
            )
        action = classify(info.filename)
        if action == "skip":
            continue
        if info.flag_bits & 0x1:
            out.errors.append(f"member {info.filename!r} is encrypted and cannot be scanned")
            continue
        if info.file_size > ctx.limits.ratio_floor and info.file_size > ctx.limits.max_ratio * max(
            info.compress_size, 1
        ):  # this member is not inflated; the others still are (a bomb must not hide a payload)
            out.errors.append(
                f"decompression bomb: member {info.filename!r} expands {info.compress_size} "
                f"bytes to {info.file_size}; not scanned"
            )
            continue
        try:
            ctx.check_time()
            if callable(action):
                action(art, zf, info, out)
                continue
            with zf.open(info) as fh:
                data, size = _spool_member(art, fh, info)
            with data:
                child = art.child(info.filename, data, size)
                if action == "pickle":
                    sub, _ = analyse_pickle(child, strict=True)
                    out.absorb(sub)
                else:
                    out.absorb(ctx.scan(child))
        except StreamBombError as exc:  # this member only: its siblings are still scanned
            out.errors.append(f"{exc}; not scanned")
        except BombError as exc:  # the file's budget or time: stop here, keeping what came before
            out.errors.append(str(exc))
            return
        except member_errors() as exc:
            out.errors.append(f"member {info.filename!r} is unreadable: {exc}")


def _spool_member(art: Artifact, fh: IO[bytes], info: zipfile.ZipInfo) -> tuple[IO[bytes], int]:
    compressed = info.compress_type != ZIP_STORED
    return art.ctx.spool(
        fh,
        what=f"member {info.filename!r}",
        compressed_size=info.compress_size if compressed else None,
    )


def member_basename(name: str) -> str:
    """Last path component of a member name."""
    return posixpath.basename(name.rstrip("/"))
