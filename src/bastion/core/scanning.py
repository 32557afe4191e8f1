"""Scan verdicts and results: the contract between ``bastion.scan`` and every renderer.

Verdicts: ``malicious`` (a deny-listed callable or a container trick), ``suspicious``
(a callable the allow-list does not know), ``safe`` (everything reached is allow-listed),
``error`` (a model file not fully scanned: exit 2), ``skipped`` (not a model file).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Verdict and the schema version are defined without pydantic (the scan engine's plain records
# use them); this module is their public home.
from bastion.core._scan_records import SCAN_SCHEMA_VERSION as SCAN_SCHEMA_VERSION
from bastion.core._scan_records import Verdict as Verdict
from bastion.core._scan_records import scan_exit_code
from bastion.core.findings import Finding


class FileResult(BaseModel):
    """One scanned file.

    Attributes:
        path: the path as given (or found under a given folder).
        format: the detected format (``pickle``, ``pytorch-zip``, ``joblib``, ``npy``, ``npz``,
            ``onnx``, ``gzip`` ...), ``None`` when skipped.
        verdict: see :class:`Verdict`.
        sha256: hex digest of the file's bytes as scanned.
        size: bytes.
        findings: every finding, with location (member, byte offset).
        reason: why it was skipped or errored.
        globals: every callable reached (``module.name``), for the ML-BOM and audits.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    format: str | None = None
    verdict: Verdict
    sha256: str | None = None
    size: int | None = None
    findings: list[Finding] = Field(default_factory=list)
    reason: str | None = None
    globals: list[str] = Field(default_factory=list)


class ScanResult(BaseModel):
    """A scan of one or more paths."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCAN_SCHEMA_VERSION
    bastion_version: str | None = None
    files: list[FileResult] = Field(default_factory=list)

    def findings(self) -> list[Finding]:
        """All findings of all files."""
        return [f for fr in self.files for f in fr.findings]

    def exit_code(self, fail_on: str = "medium") -> int:
        """The documented exit code: 2 errors > 1 findings at/above ``fail_on`` > 3 nothing scanned > 0."""
        return scan_exit_code(self.files, fail_on)
