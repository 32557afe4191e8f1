"""``scan.safetensors``: safetensors files, checked against the format's own invariants (stdlib only).

Threat model: a safetensors file cannot run code, but a hostile header can (1) be huge, so a
reader allocates gigabytes before it checks anything; (2) point tensors outside the data buffer
(a reader without bounds checks reads past the file or another process' memory), or make two
tensors overlap (a *polyglot*: the same bytes are two tensors, or a pickle hides in a gap that
no tensor covers); (3) declare a shape whose element count does not match its byte range, so a
framework that trusts one and copies the other over- or under-reads. The scanner reads only the
8-byte length and the JSON header; tensor bytes are never read.

Layout: ``u64 little-endian N`` + ``N`` bytes of UTF-8 JSON
(``{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``) +
the byte buffer; offsets are relative to the buffer.

Reference: https://github.com/huggingface/safetensors (format spec; the reference reader caps
the header at 100 MB and rejects overlapping or out-of-bounds offsets); Trail of Bits' 2023
safetensors audit (polyglot files).
"""

from __future__ import annotations

import json
import struct
from typing import Any, ClassVar

from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner, starts_as_another_format

__all__ = ["DTYPE_BYTES", "MAX_HEADER", "SafetensorsScanner"]

#: The largest header the reference reader accepts (bytes).
MAX_HEADER = 100_000_000

#: Bytes per element of each safetensors dtype (sub-byte types counted in bits below).
DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "C64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

_REFS = ("https://github.com/huggingface/safetensors#format",)
_REMEDIATE = (
    "The header does not describe its data consistently; re-export the weights from a trusted source."
)


@register("scanner")
class SafetensorsScanner(Scanner):
    """safetensors: header size, offsets in bounds and non-overlapping, dtype/shape agreement."""

    id: ClassVar[str] = "scan.safetensors"
    title: ClassVar[str] = "safetensors header checker"
    formats: ClassVar[tuple[str, ...]] = ("safetensors",)
    priority: ClassVar[int] = 30
    references: ClassVar[tuple[str, ...]] = (
        "https://github.com/huggingface/safetensors",
        "https://github.com/trailofbits/publications/blob/master/reviews/2023-03-eleutherai-huggingface-safetensors-securityreview.pdf",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a safetensors file whose header makes a reader allocate too much, "
        "read out of bounds, or interpret overlapping bytes (polyglots)."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """A ``.safetensors`` name, or a plausible u64 header length followed by ``{``."""
        if len(head) >= 10 and head[8] == 0x7B:  # "{" (most heads stop here)
            (n,) = struct.unpack_from("<Q", head)
            if 2 <= n <= MAX_HEADER and head[9:10] in b'"} \t\r\n':
                return True
        return name.lower().endswith(".safetensors")

    def scan(self, artifact: Artifact) -> Outcome:
        """Check the header; never read the tensor bytes.

        Raises:
            NotThisFormat: the bytes are not safetensors and the name does not say they are.
        """
        named = artifact.name.lower().endswith(".safetensors")
        stream = artifact.stream
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(0)
        raw = stream.read(8)

        def bad(reason: str) -> Outcome:
            if named and not starts_as_another_format(raw):
                return Outcome.error("safetensors", reason)
            raise NotThisFormat(reason)  # not safetensors: a pickle (or zip ...) goes on to its scanner

        if len(raw) < 8:
            return bad("file shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            return bad(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
        if 8 + n > size:
            return bad(f"header length {n} runs past the end of the file ({size} bytes)")
        text = stream.read(n)
        try:
            header = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return bad(f"header is not UTF-8 JSON: {exc}")
        except RecursionError:
            return bad("header JSON nests too deeply to be parsed")
        if not isinstance(header, dict):
            return bad("header is not a JSON object")
        return self._check(artifact, header, buffer=size - 8 - n, data_start=8 + n)

    def _check(self, art: Artifact, header: dict[str, Any], *, buffer: int, data_start: int) -> Outcome:
        out = Outcome(format="safetensors")
        meta = header.get("__metadata__")
        if meta is not None and (
            not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())
        ):
            out.errors.append("__metadata__ must map strings to strings")
        spans: list[tuple[int, int, str]] = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            where = f"tensor {name!r}"
            if not isinstance(entry, dict):
                out.errors.append(f"{where}: entry is not an object")
                continue
            dtype, shape, offs = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
            if (
                not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or not isinstance(offs, list)
                or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)
                or not isinstance(dtype, str)
            ):
                out.errors.append(f"{where}: dtype, shape or data_offsets malformed")
                continue
            begin, end = offs
            if end < begin or end > buffer:
                out.findings.append(
                    art.finding(
                        "scan.safetensors.offset-out-of-bounds",
                        Severity.HIGH,
                        f"safetensors {where} points outside the data buffer",
                        offset=data_start + min(begin, buffer),
                        evidence={"tensor": name, "data_offsets": offs, "buffer_bytes": buffer},
                        remediation=_REMEDIATE,
                        references=_REFS,
                    )
                )
                continue
            spans.append((begin, end, name))
            width = DTYPE_BYTES.get(dtype)
            if width is None:
                out.findings.append(
                    art.finding(
                        "scan.safetensors.unknown-dtype",
                        Severity.MEDIUM,
                        f"safetensors {where} has unknown dtype {dtype!r}",
                        evidence={"tensor": name, "dtype": dtype},
                        remediation=_REMEDIATE,
                        references=_REFS,
                    )
                )
                continue
            count = 1
            for d in shape:
                count *= d
            expected = count * width
            if expected != end - begin:
                out.findings.append(
                    art.finding(
                        "scan.safetensors.shape-mismatch",
                        Severity.HIGH,
                        f"safetensors {where}: {dtype}{shape} needs {expected:g} bytes, "
                        f"offsets give {end - begin}",
                        offset=data_start + begin,
                        evidence={"tensor": name, "dtype": dtype, "shape": shape, "data_offsets": offs},
                        remediation=_REMEDIATE,
                        references=_REFS,
                    )
                )
        spans.sort()
        covered = 0
        gaps: list[list[int]] = []
        for begin, end, name in spans:
            if begin < covered:
                out.findings.append(
                    art.finding(
                        "scan.safetensors.overlapping-tensors",
                        Severity.HIGH,
                        f"safetensors tensor {name!r} overlaps another tensor's bytes",
                        offset=data_start + begin,
                        evidence={"tensor": name, "data_offsets": [begin, end], "overlaps_until": covered},
                        remediation=_REMEDIATE,
                        references=_REFS,
                    )
                )
            elif begin > covered:
                gaps.append([covered, begin])
            covered = max(covered, end)
        if covered < buffer:
            gaps.append([covered, buffer])
        if gaps:
            out.findings.append(
                art.finding(
                    "scan.safetensors.unreferenced-bytes",
                    Severity.LOW,
                    f"safetensors buffer holds {sum(b - a for a, b in gaps)} bytes no tensor covers",
                    offset=data_start + gaps[0][0],
                    evidence={"gaps": gaps[:10], "count": len(gaps)},
                    remediation="Unreferenced bytes can hide a second file (a polyglot); "
                    "re-export the weights.",
                    references=_REFS,
                )
            )
            _scan_gaps(art, out, gaps, data_start)
        return out


def _scan_gaps(art: Artifact, out: Outcome, gaps: list[list[int]], data_start: int) -> None:
    """Scan the bytes no tensor covers (at most 16 ranges) by magic (:meth:`Artifact.scan_region`).

    No safetensors reader looks at them, but another loader may (a pickle after the buffer makes
    the file a polyglot): a payload there is reported as a member.
    """
    for begin, end in gaps[:16]:
        art.scan_region(out, data_start + begin, end - begin, name="unreferenced", what="unreferenced bytes")
