"""``scan.numpy``: numpy ``.npy`` and ``.npz`` files.

Threat model: a ``.npy`` whose dtype holds Python objects stores the array as a pickle after the
header; ``numpy.load(..., allow_pickle=True)`` unpickles it (and older numpy did so by default).
Numeric arrays are raw data: safe, once the header parses and the data length matches the shape.
An ``.npz`` is a zip of ``.npy`` members, each checked the same way.

The header is a Python literal parsed with :func:`ast.literal_eval` (no code runs), as numpy
itself does. Reference: ``numpy/lib/format.py`` (NEP 1, the .npy format).
"""

from __future__ import annotations

import struct
from typing import IO, TYPE_CHECKING, Any, ClassVar

from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan._zip import ZIP_MAGICS, ZIP_STORED, BadZip, MemberAction, is_folder, open_zip, walk_zip
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner
from bastion.scan.pickle_scanner import analyse_pickle
from bastion.scan.pickle_vm import typestr_itemsize

if TYPE_CHECKING:
    import zipfile

__all__ = ["NPY_MAGIC", "NumpyScanner", "descr_info", "read_npy_header"]

NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 20


class NpyError(ValueError):
    """A malformed ``.npy`` header."""


def descr_info(descr: Any, depth: int = 0) -> tuple[int, bool] | None:
    """``(itemsize, hasobject)`` of a ``.npy`` ``descr`` (type string or structured list).

    Returns ``None`` when the description is not understood.
    """
    if depth > 16:
        return None
    if isinstance(descr, str):
        return typestr_itemsize(descr)
    if isinstance(descr, list):
        total, obj = 0, False
        for fld in descr:
            if not isinstance(fld, tuple) or len(fld) not in (2, 3):
                return None
            info = descr_info(fld[1], depth + 1)
            if info is None:
                return None
            size = info[0]
            if len(fld) == 3:
                shape = fld[2]
                if isinstance(shape, int):
                    shape = (shape,)
                if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
                    return None
                for d in shape:
                    size *= d
            total += size
            obj = obj or info[1]
        return total, obj
    return None


def read_npy_header(fh: IO[bytes]) -> tuple[dict[str, Any], int]:
    """Read a ``.npy`` header from the start of ``fh``.

    Returns:
        ``(header dict with descr/fortran_order/shape, offset of the data)``.

    Raises:
        NpyError: not a well-formed header.
    """
    magic = fh.read(8)
    if len(magic) < 8 or not magic.startswith(NPY_MAGIC):
        raise NpyError("missing .npy magic")
    major = magic[6]
    if major == 1:
        raw = fh.read(2)
        if len(raw) < 2:
            raise NpyError("truncated .npy header length")
        (hlen,) = struct.unpack("<H", raw)
        offset = 10
    elif major in (2, 3):
        raw = fh.read(4)
        if len(raw) < 4:
            raise NpyError("truncated .npy header length")
        (hlen,) = struct.unpack("<I", raw)
        offset = 12
    else:
        raise NpyError(f"unsupported .npy format version {major}.{magic[7]}")
    if hlen > _MAX_HEADER:
        raise NpyError(f".npy header of {hlen} bytes is too large")
    text = fh.read(hlen)
    if len(text) < hlen:
        raise NpyError("truncated .npy header")
    import ast  # here: an .npy file's first header loads it, not every scan's start-up

    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError, TypeError) as exc:
        # the reason without ``literal_eval``'s text, which can quote an object's memory address
        # (``<ast.Call object at 0x7f…>``): the same file always gets the same verdict text
        why = (
            "nested too deeply" if isinstance(exc, (RecursionError, MemoryError)) else "not a Python literal"
        )
        raise NpyError(f"malformed .npy header: {why} ({type(exc).__name__})") from exc
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyError(".npy header must hold exactly descr, fortran_order and shape")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise NpyError(f".npy header has a malformed shape {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise NpyError(".npy header has a non-boolean fortran_order")
    return header, offset + hlen


def _data_size(header: dict[str, Any]) -> tuple[int, bool]:
    info = descr_info(header["descr"])
    if info is None:
        raise NpyError(f"unsupported .npy dtype {header['descr']!r}")
    count = 1
    for d in header["shape"]:
        count *= d
    return count * info[0], info[1]


def scan_npy(art: Artifact, plugin_id: str = "scan.numpy") -> Outcome:
    """Scan one ``.npy`` artifact: header, then the pickle (object dtype) or the data length."""
    art.stream.seek(0)
    try:
        header, data_at = read_npy_header(art.stream)
        nbytes, hasobject = _data_size(header)
    except NpyError as exc:
        return Outcome.error("npy", str(exc))
    if hasobject:
        art.stream.seek(data_at)
        out, _ = analyse_pickle(art, start=data_at, strict=True, fmt="npy")
        out.format = "npy"
        out.findings.append(
            art.finding(
                f"{plugin_id}.object-array",
                Severity.INFO,
                "Object-dtype array stored as a pickle (loads only with allow_pickle=True)",
                offset=data_at,
                evidence={"descr": str(header["descr"])[:200], "shape": list(header["shape"])[:8]},
                remediation="Store numeric arrays; keep allow_pickle=False when loading.",
                references=("https://numpy.org/doc/stable/reference/generated/numpy.load.html",),
            )
        )
        return out
    size = art.size
    if size is None:
        size = art.stream.seek(0, 2)
        art.stream.seek(0)
    have = size - data_at
    out = Outcome(format="npy")
    if have < nbytes:
        out.errors.append(f"truncated .npy: {have} of {nbytes} data bytes present")
    elif have > nbytes:
        out.findings.append(
            art.finding(
                f"{plugin_id}.trailing-data",
                Severity.LOW,
                f"{have - nbytes} bytes follow the array data",
                offset=data_at + nbytes,
                evidence={"expected": nbytes, "present": have},
                remediation="numpy ignores them; check why the file carries them.",
            )
        )
        # numpy ignores them; another loader need not (a pickle appended there is a polyglot)
        art.scan_region(out, data_at + nbytes, have - nbytes, name="trailing", what="trailing bytes")
    return out


@register("scanner")
class NumpyScanner(Scanner):
    """numpy ``.npy`` (object arrays are pickles) and ``.npz`` (zip of ``.npy``) files."""

    id: ClassVar[str] = "scan.numpy"
    title: ClassVar[str] = "numpy array file scanner"
    formats: ClassVar[tuple[str, ...]] = ("npy", "npz")
    priority: ClassVar[int] = 20
    sniff_first_bytes: ClassVar[bytes | None] = b"\x93P"  # ``.npy`` or zip magic
    references: ClassVar[tuple[str, ...]] = (
        "https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html",
        "https://nvd.nist.gov/vuln/detail/CVE-2019-6446",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships an array file the victim loads with numpy.load(allow_pickle=True)."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """``.npy`` magic, or a zip (the member list decides whether it is an ``.npz``)."""
        return head.startswith(NPY_MAGIC) or head.startswith(ZIP_MAGICS)

    def scan(self, artifact: Artifact) -> Outcome:
        """Scan an ``.npy`` or ``.npz``.

        Raises:
            NotThisFormat: a zip that is not an ``.npz``.
        """
        if artifact.head(len(NPY_MAGIC)) == NPY_MAGIC:
            return scan_npy(artifact, self.id)
        try:
            zf = open_zip(artifact)
        except BadZip as exc:
            if artifact.name.lower().endswith(".npz"):
                return Outcome.error("npz", f"corrupt zip archive: {exc}")
            raise NotThisFormat from exc
        with zf:
            files = [i.filename for i in zf.infolist() if not is_folder(i)]
            npy = [n for n in files if n.endswith(".npy")]
            if not (artifact.name.lower().endswith(".npz") or (npy and len(npy) == len(files))):
                raise NotThisFormat
            out = Outcome(format="npz")

            def classify(name: str) -> MemberAction:
                return self._member if name.endswith(".npy") else "dispatch"

            walk_zip(artifact, zf, out, plugin_id=self.id, classify=classify)
            return out

    def _member(self, art: Artifact, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Outcome) -> None:
        with zf.open(info) as fh:
            try:
                header, data_at = read_npy_header(fh)
                nbytes, hasobject = _data_size(header)
            except NpyError as exc:
                out.errors.append(f"member {info.filename!r}: {exc}")
                return
        if not hasobject:
            # Numeric member: the header and the declared length are enough; no need to inflate.
            have = info.file_size - data_at
            if have < nbytes:
                out.errors.append(
                    f"member {info.filename!r}: truncated .npy: {have} of {nbytes} data bytes present"
                )
            return
        with zf.open(info) as fh:
            compressed = info.compress_type != ZIP_STORED
            data, size = art.ctx.spool(
                fh,
                what=f"member {info.filename!r}",
                compressed_size=info.compress_size if compressed else None,
            )
        with data:
            out.absorb(scan_npy(art.child(info.filename, data, size), self.id))
