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
from typing import TYPE_CHECKING, ClassVar

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
_STORAGE = re.compile(r"^(?:[^/]+/)?data/\d+$")
_META = re.compile(
    r"^(?:[^/]+/)?(?:version|\.format_version|\.storage_alignment|byteorder|\.data/version|"
    r"\.data/serialization_id|serialization_id)$"
)


def _is_torch_zip(names: list[str]) -> bool:
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


@register("scanner")
class PyTorchScanner(Scanner):
    """PyTorch zip checkpoints, TorchScript archives and legacy (pre-1.6) checkpoints."""

    id: ClassVar[str] = "scan.pytorch"
    title: ClassVar[str] = "PyTorch checkpoint scanner"
    formats: ClassVar[tuple[str, ...]] = ("pytorch-zip", "torchscript", "pytorch-legacy")
    priority: ClassVar[int] = 10
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
                raise NotThisFormat
            from bastion.scan._torchscript import CodeIssue, analyse_torchscript  # ast: a torch zip's

            script = any("/code/" in n or n.startswith("code/") for n in names)
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

            def classify(name: str) -> MemberAction:
                if name.endswith(".pkl") or name.endswith(".debug_pkl"):
                    return "pickle"
                if _STORAGE.match(name) or _META.match(name):
                    return "skip"
                if script and ("/code/" in name or name.startswith("code/")) and name.endswith(".py"):
                    return read_code
                return "dispatch"

            walk_zip(artifact, zf, out, plugin_id=self.id, classify=classify)
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
