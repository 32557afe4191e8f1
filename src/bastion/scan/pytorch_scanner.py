"""``scan.pytorch``: PyTorch checkpoints, zip (``torch.save`` ≥ 1.6, TorchScript) and legacy.

Threat model: ``torch.load(weights_only=False)`` (the default before PyTorch 2.6, and what many
loaders still pass) unpickles ``archive/data.pkl``; an attacker who ships the checkpoint runs
code at load time. The zip may also hide a second pickle member, duplicate member names (readers
disagree on which copy wins), or TorchScript code (``code/*.py``) that runs under
``torch.jit.load``.

Zip checkpoints: every ``.pkl`` member is scanned (``data.pkl``, ``constants.pkl``, any other);
raw tensor storages (``<archive>/data/<key>``) are data and skipped; every other member is
dispatched by its magic bytes. Legacy checkpoints (``_use_new_zipfile_serialization=False``) are
five pickles in a row (magic number, protocol, system info, the object, storage keys) followed by
raw storages; all five are scanned.

Reference: ``torch/serialization.py`` (``_save``, ``_legacy_save``, ``_load``).
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any, ClassVar

from bastion.core._regex import LazyPattern
from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan._zip import ZIP_MAGICS, BadZip, MemberAction, open_zip, walk_zip
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner
from bastion.scan.pickle_scanner import analyse_pickle
from bastion.scan.pickle_vm import Reader

if TYPE_CHECKING:
    import zipfile

__all__ = ["LEGACY_MAGIC", "PyTorchScanner"]

#: Start of a legacy checkpoint: protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"
_MAX_CODE = 16 << 20
_STORAGE = LazyPattern(r"^(?:[^/]+/)?data/\d+$")
_META = LazyPattern(
    r"^(?:[^/]+/)?(?:version|\.format_version|\.storage_alignment|byteorder|\.data/version|"
    r"\.data/serialization_id|serialization_id)$"
)


def _is_torch_zip(names: list[str]) -> bool:
    # torch's zip reader (miniz, flags 0) finds members whatever their case
    return any(n.lower() == "data.pkl" or n.lower().endswith("/data.pkl") for n in names)


#: Operator names in a mobile archive's ``bytecode.pkl`` (its ``operators`` table): ``aten::from_file``,
#: each a pickled string (``BINUNICODE``: ``X`` and a 4-byte length; ``SHORT_BINUNICODE``: 0x8c, 1 byte).
_MOBILE_OP = LazyPattern(rb"([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z0-9_]+)?")
_PICKLED_TEXT = LazyPattern(rb"X(.{4})|\x8c(.)", re.DOTALL)


def _mobile_ops(data: bytes) -> list[tuple[str, str]]:
    """``(namespace, operator)`` of every pickled string of ``data`` that names an operator."""
    out: list[tuple[str, str]] = []
    for m in _PICKLED_TEXT.finditer(data):
        n = int.from_bytes(m.group(1), "little") if m.group(1) is not None else m.group(2)[0]
        if n > 256:
            continue
        text = data[m.end() : m.end() + n]
        op = _MOBILE_OP.fullmatch(text)
        if op is not None:
            out.append((op.group(1).decode(), op.group(2).decode()))
    return out


@register("scanner")
class PyTorchScanner(Scanner):
    """PyTorch zip checkpoints, TorchScript archives and legacy (pre-1.6) checkpoints."""

    id: ClassVar[str] = "scan.pytorch"
    title: ClassVar[str] = "PyTorch checkpoint scanner"
    formats: ClassVar[tuple[str, ...]] = ("pytorch-zip", "torchscript", "pytorch-legacy")
    priority: ClassVar[int] = 10
    #: zip magic (``PK``), or the legacy magic number (a pickle: ``\x80``)
    sniff_first_bytes: ClassVar[bytes | None] = b"P\x80"
    references: ClassVar[tuple[str, ...]] = (
        "https://pytorch.org/docs/stable/notes/serialization.html",
        "https://github.com/advisories/GHSA-53q9-r3pm-6pq6",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a checkpoint the victim loads with torch.load(weights_only=False) "
        "or torch.jit.load; the scanner reads the archive without loading it."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """Zip magic (the member list decides) or the legacy magic-number pickle."""
        return head.startswith(ZIP_MAGICS) or head.startswith(LEGACY_MAGIC)

    def scan(self, artifact: Artifact) -> Outcome:
        """Scan a zip or legacy checkpoint.

        Raises:
            NotThisFormat: a zip that is not a PyTorch archive (no ``data.pkl``).
        """
        if artifact.head(len(LEGACY_MAGIC)) == LEGACY_MAGIC:
            return self._legacy(artifact)
        try:
            zf = open_zip(artifact)
        except BadZip as exc:
            if artifact.name.lower().endswith((".pt", ".pth", ".ckpt", ".bin", ".pt2", ".ptl")):
                return Outcome.error("pytorch-zip", f"corrupt zip archive: {exc}")
            raise NotThisFormat from exc
        with zf:
            names = [i.filename for i in zf.infolist()]
            if not _is_torch_zip(names):
                from bastion.scan._torch_export import is_export_archive  # ast: only for a zip

                if is_export_archive(names):
                    return self._export(artifact, zf)
                raise NotThisFormat
            from bastion.scan._torchscript import (  # ast: a torch zip's
                SIDE_EFFECT_OPS,
                STANDARD_OP_NAMESPACES,
                CodeIssue,
                analyse_torchscript,
            )

            lowered = [n.lower() for n in names]
            script = any("/code/" in n or n.startswith("code/") for n in lowered)
            out = Outcome(format="torchscript" if script else "pytorch-zip")
            code_members: list[str] = []
            unparsed: list[str] = []
            issues: list[tuple[str, CodeIssue]] = []

            def read_code(art: Artifact, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Outcome) -> None:
                code_members.append(info.filename)
                if info.file_size > _MAX_CODE:
                    unparsed.append(info.filename)
                    return
                art.ctx.charge(info.file_size, what=f"member {info.filename!r}")
                with zf.open(info) as fh:
                    text = fh.read(_MAX_CODE + 1).decode("utf-8", "replace")
                for issue in analyse_torchscript(text):
                    if issue.kind == "unparsed":
                        unparsed.append(info.filename)
                    else:
                        issues.append((info.filename, issue))

            def read_bytecode(
                art: Artifact, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Outcome
            ) -> None:
                # the lite interpreter runs this table's operators and never compiles code/
                art.ctx.charge(info.file_size, what=f"member {info.filename!r}")
                with zf.open(info) as fh:
                    data = fh.read(_MAX_CODE + 1)
                sub, _ = analyse_pickle(art.child(info.filename, io.BytesIO(data), len(data)), strict=True)
                out.absorb(sub)
                if len(data) > _MAX_CODE:
                    unparsed.append(info.filename)
                    return
                for ns, op in _mobile_ops(data):
                    if ns not in STANDARD_OP_NAMESPACES:
                        issues.append(
                            (info.filename, CodeIssue("custom-op", Severity.MEDIUM, f"{ns}::{op}", 0))
                        )
                    elif op in SIDE_EFFECT_OPS:
                        issues.append(
                            (info.filename, CodeIssue("side-effect-op", Severity.HIGH, f"{ns}::{op}", 0))
                        )

            def classify(name: str) -> MemberAction:
                low = name.lower()  # torch finds members whatever their case
                if low.endswith("bytecode.pkl"):
                    return read_bytecode
                if low.endswith(".pkl") or low.endswith(".debug_pkl"):
                    return "pickle"
                if _STORAGE.match(name) or _META.match(name):
                    return "skip"
                if script and ("/code/" in low or low.startswith("code/")) and low.endswith(".py"):
                    return read_code
                return "dispatch"

            walk_zip(artifact, zf, out, plugin_id=self.id, classify=classify, any_case=True)
            if script and not unparsed:
                # TorchScript's unpickler resolves __torch__.* classes from the archive's own
                # (analysed) code, never by importing Python modules: not unknown callables.
                out.findings = [
                    f
                    for f in out.findings
                    if not (
                        f.rule_id == "scan.pickle.unknown-global"
                        and str(f.evidence.get("global", "")).startswith("__torch__.")
                    )
                ]
            for member, issue in issues:
                out.findings.append(
                    artifact.child(member, io.BytesIO(), 0).finding(
                        f"scan.pytorch.torchscript-{issue.kind}",
                        issue.severity,
                        f"TorchScript code uses {issue.detail} ({issue.kind.replace('-', ' ')})",
                        evidence={"member": member, "line": issue.line, "construct": issue.detail},
                        remediation="Plain TorchScript reaches only tensor maths; this code reaches "
                        "native libraries or the host. Review it before torch.jit.load, or export to "
                        "a data-only format (safetensors, ONNX).",
                        references=("https://pytorch.org/docs/stable/jit_language_reference.html",),
                    )
                )
            if unparsed:
                out.findings.append(
                    artifact.finding(
                        "scan.pytorch.torchscript-code",
                        Severity.MEDIUM,
                        f"TorchScript archive carries {len(unparsed)} code members that were not analysed",
                        evidence={
                            "members": unparsed[:20],
                            "count": len(unparsed),
                            "code_members": len(code_members),
                        },
                        remediation="TorchScript code runs under torch.jit.load; review it or "
                        "export the model to a data-only format (safetensors, ONNX).",
                        references=("https://pytorch.org/docs/stable/jit.html",),
                    )
                )
            return out

    def _export(self, art: Artifact, zf: zipfile.ZipFile) -> Outcome:
        """A ``torch.export`` archive (``.pt2``): its pickles and files by magic, its graph JSON checked."""
        from bastion.scan._torch_export import analyse_export_json, is_graph_member, native_members

        out = Outcome(format="pytorch-export")
        found: list[tuple[str, Any]] = []

        def read_json(art: Artifact, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Outcome) -> None:
            art.ctx.charge(info.file_size, what=f"member {info.filename!r}")
            with zf.open(info) as fh:
                data = fh.read(64 << 20 | 1)
            found.extend((info.filename, issue) for issue in analyse_export_json(data, info.filename))

        def classify(name: str) -> MemberAction:
            if is_graph_member(name):
                return read_json
            return "pickle" if name.lower().endswith(".pkl") else "dispatch"

        walk_zip(art, zf, out, plugin_id=self.id, classify=classify, any_case=True)
        native = native_members(zf.namelist())
        if native:
            out.findings.append(
                art.finding(
                    "scan.pytorch.export-native-code",
                    Severity.HIGH,
                    f"torch.export archive carries {len(native)} native-code member(s) (AOTInductor), "
                    "loaded with dlopen",
                    evidence={"members": native[:20], "count": len(native)},
                    remediation="torch.export.load runs a shared library's constructors as it loads it: "
                    "load only archives built by yourself, or export without AOTInductor.",
                    references=("https://pytorch.org/docs/stable/torch.compiler_aot_inductor.html",),
                )
            )
        for member, issue in found:
            out.findings.append(
                art.child(member, io.BytesIO(), 0).finding(
                    f"scan.pytorch.{issue.kind}",
                    issue.severity,
                    f"torch.export graph evaluates or calls more than tensor operations: {issue.detail}",
                    evidence={"member": member, "detail": issue.detail},
                    remediation="torch.export.load sympifies its expressions, resolves its targets by "
                    "getattr and ExportedProgram.module() execs its guards: do not load this archive.",
                    references=("https://pytorch.org/docs/stable/export.html",),
                )
            )
        return out

    def _legacy(self, art: Artifact) -> Outcome:
        out = Outcome(format="pytorch-legacy")
        rd = Reader(art.stream, start=0)
        labels = ("magic number", "protocol version", "system info", "object", "storage keys")
        for i, label in enumerate(labels):
            sub, res = analyse_pickle(art, strict=True, multi=False, reader=rd, fmt="pytorch-legacy")
            out.findings.extend(sub.findings)
            out.add_globals(sub.globals)
            if sub.errors:
                out.errors.extend(f"legacy checkpoint {label} pickle: {e}" for e in sub.errors)
                break
            if i == 0 and res.globals:
                out.errors.append("legacy checkpoint magic pickle holds globals")
        return out  # (a legacy file that is also a tar is scanned as one too: ScanContext.scan)
