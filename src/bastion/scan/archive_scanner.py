"""``scan.archive``: tar, zip and gzip/bz2/xz wrappers; every member is scanned by its magic.

Threat model: an attacker wraps a malicious model in an archive or a compressed stream so that
a scanner that looks at extensions or at the outer bytes misses it, or builds a decompression
bomb, or an archive whose members escape the extraction folder (``../``, absolute paths, links
pointing outside). Members are handed back to the dispatcher, which picks the scanner by magic
bytes; limits on decompressed size, ratio, member count and nesting depth apply throughout.
"""

from __future__ import annotations

import struct
import zlib
from typing import IO, TYPE_CHECKING, ClassVar, Protocol

from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan._zip import ZIP_MAGICS, BadZip, open_zip, unsafe_member_name, walk_zip
from bastion.scan.base import Artifact, BombError, Outcome, ScanContext, Scanner, is_model_name

if TYPE_CHECKING:  # the compression and tar modules load when such a file is met (~8 ms otherwise)
    import tarfile

    from bastion.core.findings import Finding

__all__ = ["ArchiveScanner", "TrailingData", "decompress_into"]

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
_BZ2_BLOCK = (b"1AY&SY", b"\x17rE8P\x90")
#: The magic bytes this scanner's sniff accepts, bz2's and tar's headers aside.
_MAGICS = (GZIP_MAGIC, XZ_MAGIC, *ZIP_MAGICS)


def _is_bz2(head: bytes) -> bool:
    return len(head) >= 10 and head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in _BZ2_BLOCK


#: The last head :func:`_is_tar` judged, and its answer: dispatch asks twice about each file's
#: head (this scanner's sniff, then the tar-polyglot check). One tuple, replaced whole (threads).
_TAR_LAST: list[tuple[bytes, bool]] = [(b"", False)]


def _is_tar(head: bytes) -> bool:
    """Whether ``head`` starts with a tar header block, as ``tarfile`` decides it.

    The ustar magic, or a header whose checksum holds, read as ``tarfile`` reads it (the field
    cut at its first NUL, octal or base-256): ``tarfile`` (and ``torch.load``, which tries the
    tar format first for any file that is not a zip) reads both.
    """
    last = _TAR_LAST[0]
    if last[0] is head:  # the same (immutable) bytes object: the same answer
        return last[1]
    found = _tar_header(head)
    _TAR_LAST[0] = (head, found)
    return found


def _tar_header(head: bytes) -> bool:
    """:func:`_is_tar`, computed."""
    if len(head) >= 262 and head[257:262] == b"ustar":
        return True
    if len(head) < 512:
        return False
    field = head[148:156]
    if field[0] in (0o200, 0o377):  # base-256
        stored = int.from_bytes(field[1:], "big")
        if field[0] == 0o377:
            stored = -(256 ** (len(field) - 1) - stored)
    else:
        text = field.split(b"\0", 1)[0].strip()
        if text.strip(b"01234567"):
            return False
        if not head[:512].strip(b"\0"):
            return False
        stored = int(text or b"0", 8)
    if not -65536 <= stored <= 131072:  # no 512-byte header sums beyond (cheap: most files stop here)
        return False
    unsigned = 256 + sum(struct.unpack_from("148B8x356B", head))
    signed = 256 + sum(struct.unpack_from("148b8x356b", head))
    return stored in (unsigned, signed)


def in_one_tar_member(art: Artifact, start: int, end: int) -> bool:
    """Whether bytes ``[start, end)`` of ``art`` (a tar archive) lie inside one member's data.

    A tar whose member is a zip (a ``model.tar.gz`` of a ``.pt`` checkpoint) ends with that
    zip's end record: ``zipfile`` finds the member's zip there, which the tar scan reads as a
    member. Reads the headers only, as many as the member limit allows; ``False`` when the
    archive cannot be read that far.
    """
    import tarfile

    art.stream.seek(0)
    try:
        with tarfile.open(fileobj=art.stream, mode="r:") as tf:
            for count, m in enumerate(tf, 1):
                if count > art.ctx.limits.max_members:
                    return False
                if m.isreg() and m.offset_data <= start and end <= m.offset_data + m.size:
                    return True
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False
    return False


def scan_tar(art: Artifact) -> Outcome:
    """Scan ``art`` as a tar archive (each member by its magic); for other scanners' polyglots."""
    return ArchiveScanner()._tar(art)


def scan_zip(art: Artifact) -> Outcome:
    """Scan ``art`` as a zip archive (each member by its magic), as ``zipfile`` reads it."""
    return ArchiveScanner()._zip(art)


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    low = name.lower()
    for s in suffixes:
        if low.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return name + ".decompressed"


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def decompress_into(
    ctx: ScanContext, stream: IO[bytes], kind: str, *, compressed_size: int | None, whole: bool = False
) -> tuple[IO[bytes], int]:
    """Decompress ``stream`` from its current position into a spooled file, within the limits.

    Args:
        ctx: the scan context (limits, budget).
        stream: the compressed bytes.
        kind: ``gzip``, ``bz2``, ``xz``, ``lzma`` (lzma-alone) or ``zlib``.
        compressed_size: compressed length for the ratio check (``None``: no ratio check).
        whole: ``zlib`` only: the stream must end where the file ends (joblib's zlib reader
            feeds bytes after the end of the stream back to the finished decompressor, which
            keeps them and hands them back doubled: ``joblib.load`` loops, its memory growing
            without bound).

    Returns:
        ``(spooled file at position 0, decompressed length)``.

    Raises:
        BombError: a limit is exceeded.
        ValueError: the stream is corrupt or truncated (message says which).
    """
    import lzma  # its error type is caught below whatever the kind

    src: _Readable
    if kind == "gzip":
        import gzip

        src = gzip.GzipFile(fileobj=stream, mode="rb")
    elif kind == "bz2":
        import bz2

        src = bz2.BZ2File(stream, mode="rb")
    elif kind in ("xz", "lzma"):
        # FORMAT_AUTO, as joblib and lzma.open read them: concatenated streams of either kind
        # (an xz stream then an lzma-alone one); a fixed format would drop the other kind's
        # streams as trailing garbage, and with them what the loader unpickles
        src = lzma.LZMAFile(stream, mode="rb")  # noqa: SIM115
    elif kind == "zlib":
        src = _ZlibReader(stream, whole=whole)
    else:  # pragma: no cover - callers pass known kinds
        raise ValueError(f"unknown compression {kind!r}")
    try:
        return ctx.spool(src, what=f"{kind} stream", compressed_size=compressed_size)
    except (BombError, TrailingData):
        raise
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise ValueError(f"corrupt or truncated {kind} stream: {exc}") from exc


class TrailingData(ValueError):
    """A zlib stream read with ``whole=True`` is followed by more bytes."""


class _ZlibReader:
    """A file-like ``read`` over a raw zlib stream (joblib's default compressor).

    ``whole``: bytes after the end of the stream raise ``ValueError`` (see :func:`decompress_into`).
    """

    def __init__(self, fh: IO[bytes], *, whole: bool = False) -> None:
        self._fh = fh
        self._d = zlib.decompressobj()
        self._tail = b""
        self._done = False
        self._whole = whole

    def read(self, n: int = -1) -> bytes:
        n = n if n and n > 0 else 1 << 20
        while not self._done:
            if self._tail:
                data, self._tail = self._tail, b""
            else:
                data = self._fh.read(1 << 16)
                if not data:
                    if not self._d.eof:
                        raise EOFError("zlib stream ends before its end marker")
                    self._done = True
                    return b""
            out = self._d.decompress(data, n)
            self._tail = self._d.unconsumed_tail
            if self._d.eof:
                self._done = True
                if self._whole and (self._d.unused_data or self._fh.read(1)):
                    raise TrailingData(
                        "data after the end of the zlib stream (joblib.load loops on it, its memory "
                        "growing without bound)"
                    )
            if out:
                return out
        return b""


@register("scanner")
class ArchiveScanner(Scanner):
    """tar archives, zip archives and gzip/bz2/xz compressed streams."""

    id: ClassVar[str] = "scan.archive"
    title: ClassVar[str] = "Archive and compression wrapper scanner"
    formats: ClassVar[tuple[str, ...]] = ("tar", "zip", "gzip", "bz2", "xz")
    priority: ClassVar[int] = 50
    references: ClassVar[tuple[str, ...]] = (
        "https://docs.python.org/3/library/tarfile.html#tarfile-extraction-filter",
        "https://www.bamsoftware.com/hacks/zipbomb/",
        "https://cwe.mitre.org/data/definitions/409.html",
    )
    threat_model: ClassVar[str] = (
        "The attacker wraps a model in an archive or compressed stream to hide it, to exhaust "
        "the scanner, or to write outside the extraction folder."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """gzip, bz2, xz, zip magic bytes, or a tar header (ustar magic or a valid V7 checksum)."""
        return head.startswith(_MAGICS) or (head[:3] == b"BZh" and _is_bz2(head)) or _is_tar(head)

    def scan(self, artifact: Artifact) -> Outcome:
        """Scan the archive's members or the decompressed stream.

        A limit passed (bomb, time) is an ``error`` labelled with this archive's own format.
        """
        head = artifact.head(512)
        if head.startswith(ZIP_MAGICS):
            kind = "zip"
        elif _is_tar(head):
            kind = "tar"
        else:
            kind = "gzip" if head.startswith(GZIP_MAGIC) else "xz" if head.startswith(XZ_MAGIC) else "bz2"
        try:
            if kind == "zip":
                return self._zip(artifact)
            if kind == "tar":
                return self._tar(artifact)
            return self._wrapper(artifact, kind)
        except BombError as exc:
            return Outcome.error(kind, str(exc))

    def _wrapper(self, art: Artifact, kind: str) -> Outcome:
        size = art.size
        try:
            art.stream.seek(0)
            data, length = decompress_into(art.ctx, art.stream, kind, compressed_size=size)
        except ValueError as exc:
            return Outcome.error(kind, str(exc))
        suffixes = {"gzip": (".gz", ".gzip", ".z"), "bz2": (".bz2", ".bz"), "xz": (".xz",)}[kind]
        if art.name.lower().endswith((".tgz",)):
            inner_name = art.name[:-4] + ".tar"
        else:
            inner_name = _strip_suffix(art.name, suffixes)
        with data:
            sub = art.ctx.scan(art.child(inner_name, data, length, label=f"{kind}:{inner_name}"))
        if sub.skipped is not None and not sub.findings and not sub.errors:
            # ``model.joblib`` or ``model.pkl.xz`` holding no model: what does its loader read?
            stripped = not inner_name.endswith(".decompressed")
            if is_model_name(inner_name if stripped else art.name) and not inner_name.endswith(".tar"):
                return Outcome.error(kind, f"{kind} content is not a model file ({sub.skipped})")
        return _wrap(kind, sub)

    def _zip(self, art: Artifact) -> Outcome:
        try:
            zf = open_zip(art)
        except BadZip as exc:
            return Outcome.error("zip", f"corrupt zip archive: {exc}")
        out = Outcome(format="zip")
        with zf:
            walk_zip(art, zf, out, plugin_id=self.id, classify=lambda name: "dispatch")
        return _container_result(out, "zip")

    def _tar(self, art: Artifact) -> Outcome:
        import tarfile

        ctx = art.ctx
        out = Outcome(format="tar")
        art.stream.seek(0)
        try:
            tf = tarfile.open(fileobj=art.stream, mode="r:")  # noqa: SIM115 - closed below
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            return Outcome.error("tar", f"corrupt tar archive: {exc}")
        with tf:
            count = 0
            links: dict[str, str] = {}  # where each symlink member lands -> its target
            links_by_member: dict[str, str] = {}  # symlink member name -> its target
            try:
                for member in tf:
                    count += 1
                    if count > ctx.limits.max_members:
                        raise BombError(f"tar archive with more than {ctx.limits.max_members} members")
                    if member.issym():
                        links_by_member[member.name] = member.linkname
                    self._tar_member(art, tf, member, out, links)
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                out.errors.append(f"corrupt tar archive: {exc}")
            except BombError as exc:  # a limit: stop here, keeping what the members before it showed
                out.errors.append(str(exc))
            # a link is followed when read, after every member is out: ``a -> b/b/../..`` is
            # inside until a later ``b -> .`` makes it point above the folder
            traversal = "scan.archive.path-traversal"
            flagged = {f.evidence.get("member") for f in out.findings if f.rule_id == traversal}
            for name, target in list(links_by_member.items()):
                if name in flagged:
                    continue
                where = _resolve(name.rstrip("/").rpartition("/")[0], links)
                if where is None or _target_leaves(where, target, links):
                    why = f"link to {target!r} (leaves the extraction folder once the archive is extracted)"
                    out.findings.append(_traversal(art, name, why, tarfile.SYMTYPE.decode()))
        return _container_result(out, "tar")

    def _tar_member(
        self, art: Artifact, tf: tarfile.TarFile, m: tarfile.TarInfo, out: Outcome, links: dict[str, str]
    ) -> None:
        import tarfile

        why = unsafe_member_name(m.name) or _escapes(m, links)
        if m.isdev() or m.isfifo():
            why = why or "device or FIFO member"
        if why:
            out.findings.append(_traversal(art, m.name, why, m.type.decode("latin-1", "replace")))
        # tarfile reads and extracts a member of a type it does not know as a regular file
        # (``extractfile``, ``extract``: torch's legacy tar loader uses both): scan its data too
        if not (m.isreg() or m.type not in tarfile.SUPPORTED_TYPES):
            return
        art.ctx.charge(m.size, what=f"member {m.name!r}")
        fh = tf.extractfile(m)
        if fh is None:  # pragma: no cover - regular and unknown-type members always have data
            return
        with fh:
            out.absorb(art.ctx.scan(art.child(m.name, fh, m.size)))


def _traversal(art: Artifact, name: str, why: str, kind: str) -> Finding:
    return art.finding(
        "scan.archive.path-traversal",
        Severity.HIGH,
        f"Archive member {name!r} escapes the extraction folder ({why})",
        evidence={"member": name, "reason": why, "type": kind},
        remediation="Do not extract this archive (or extract with tarfile's 'data' "
        "filter); rebuild it from a trusted source.",
        references=("https://docs.python.org/3/library/tarfile.html#tarfile-extraction-filter",),
    )


#: Links followed at most while resolving one member path (a cycle, or a chain this long, escapes).
MAX_LINK_HOPS = 64


def _resolve(path: str, links: dict[str, str]) -> str | None:
    """Where ``path`` lands under the extraction folder, following the symlinks extracted before it.

    ``links`` maps each symlink member's landing place (relative, normalised) to its target.
    The operating system follows a symlink in every component of a path it creates, the last
    one included (``open(path, "wb")`` writes through a link), so ``a -> .`` then
    ``a/a/b -> ../..`` puts ``b`` at the folder's root, pointing two levels above it.

    Returns:
        The normalised relative landing place, or ``None`` when the path leaves the folder (an
        absolute link target, ``..`` above the root, or more than :data:`MAX_LINK_HOPS` links).
    """
    todo = path.split("/")[::-1]  # a stack: the next component last
    out: list[str] = []
    hops = 0
    while todo:
        p = todo.pop()
        if p in ("", "."):
            continue
        if p == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(p)
        target = links.get("/".join(out))
        if target is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or target.startswith("/") or len(todo) > 4096:
            return None
        out.pop()  # the link's target replaces it, relative to the folder holding it
        todo.extend(target.split("/")[::-1])
    return "/".join(out)


def _target_leaves(where: str, target: str, links: dict[str, str]) -> bool:
    """Whether a symlink in folder ``where`` (resolved) to ``target`` points outside the folder."""
    return target.startswith("/") or _resolve(f"{where}/{target}", links) is None


def _escapes(m: tarfile.TarInfo, links: dict[str, str]) -> str | None:
    """Why extracting ``m`` after the members before it writes or points outside the folder.

    A symlink lands where its folder resolves to (records it in ``links``) and must point
    inside; a hard link's target is a path from the root (``tarfile`` links to
    ``os.path.join(folder, linkname)``); any other member must land inside, following links.
    """
    if m.issym():
        parent, _, base = m.name.rstrip("/").rpartition("/")
        where = _resolve(parent, links)
        if where is None:
            return "its folder is reached through a link that leaves the extraction folder"
        here = f"{where}/{base}" if where else base
        links[here] = m.linkname
        if _target_leaves(where, m.linkname, links):
            return f"link to {m.linkname!r} (leaves the extraction folder from {here!r})"
        return None
    if m.islnk() and (m.linkname.startswith("/") or _resolve(m.linkname, links) is None):
        return f"link to {m.linkname!r} (leaves the extraction folder)"
    if _resolve(m.name, links) is None:
        return "its path goes through a link that leaves the extraction folder"
    return None


def _container_result(out: Outcome, kind: str) -> Outcome:
    if out.models == 0 and not out.findings and not out.errors:
        return Outcome(format=None, skipped=f"{kind} archive without model members")
    return out


def _wrap(kind: str, sub: Outcome) -> Outcome:
    if sub.skipped is not None and not sub.findings and not sub.errors:
        return Outcome(skipped=f"{kind} stream whose content is not a model file ({sub.skipped})")
    sub.format = f"{kind}+{sub.format}" if sub.format else kind
    return sub
