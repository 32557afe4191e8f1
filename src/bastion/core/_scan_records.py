"""Scan verdicts and plain scan records, free of pydantic (the scanner's own results).

:mod:`bastion.core.scanning` is the public contract (:class:`~bastion.core.scanning.FileResult`
and :class:`~bastion.core.scanning.ScanResult`, pydantic models). The scan engine builds the plain
records below instead and converts them (:meth:`ScanRecords.to_result`) where the contract is
returned, so that ``bastion scan -f json`` renders a scan of clean files without importing
pydantic (~70 ms of start-up). The records have the same fields, defaults and field order as
the models, and the renderers read either.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

from bastion.core._plain import PlainRecord
from bastion.core.severity import FAIL_ON_CHOICES, gates

if TYPE_CHECKING:
    from bastion.core.findings import Finding
    from bastion.core.scanning import FileResult, ScanResult

SCAN_SCHEMA_VERSION = "1.0.0"


class Verdict(str, Enum):
    """A scanned file's verdict."""

    SAFE = "safe"
    SUSPICIOUS = "suspicious"
    MALICIOUS = "malicious"
    ERROR = "error"
    SKIPPED = "skipped"


def scan_exit_code(files: Iterable[Any], fail_on: str = "medium") -> int:
    """The documented exit code of a scan's files (records or models; see ``ScanResult.exit_code``).

    Raises:
        ValueError: ``fail_on`` is not one of ``FAIL_ON_CHOICES``.
    """
    if fail_on not in FAIL_ON_CHOICES:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON_CHOICES)}, got {fail_on!r}")
    files = list(files)
    error, skipped = Verdict.ERROR, Verdict.SKIPPED  # read once: an enum member read is slow
    if any(fr.verdict == error for fr in files):
        return 2
    if any(gates(f.severity, fail_on) for fr in files for f in fr.findings):
        return 1
    if not any(fr.verdict != skipped for fr in files):
        return 3
    return 0


class FileRecord(PlainRecord):
    """One scanned file: the fields of :class:`~bastion.core.scanning.FileResult`, unvalidated.

    Built by the scan engine from checked values only (findings are ``Finding`` models).
    """

    __slots__ = ("findings", "format", "globals", "path", "reason", "sha256", "size", "verdict")
    #: The fields, in the order of ``FileResult``'s.
    _fields = ("path", "format", "verdict", "sha256", "size", "findings", "reason", "globals")

    def __init__(
        self,
        *,
        path: str,
        verdict: Verdict,
        format: str | None = None,
        sha256: str | None = None,
        size: int | None = None,
        findings: list[Finding] | None = None,
        reason: str | None = None,
        globals: list[str] | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.verdict = verdict
        self.sha256 = sha256
        self.size = size
        self.findings: list[Finding] = [] if findings is None else findings
        self.reason = reason
        self.globals: list[str] = [] if globals is None else globals

    def to_result(self) -> FileResult:
        """The record as the public model (no validation: every value was checked when built)."""
        from bastion.core.scanning import FileResult

        return FileResult.model_construct(
            path=self.path,
            format=self.format,
            verdict=self.verdict,
            sha256=self.sha256,
            size=self.size,
            findings=self.findings,
            reason=self.reason,
            globals=self.globals,
        )


class ScanRecords(PlainRecord):
    """A scan of one or more paths: the fields of :class:`~bastion.core.scanning.ScanResult`."""

    __slots__ = ("bastion_version", "files", "schema_version")
    _fields = ("schema_version", "bastion_version", "files")

    def __init__(
        self,
        schema_version: str = SCAN_SCHEMA_VERSION,
        bastion_version: str | None = None,
        files: list[FileRecord] | None = None,
    ) -> None:
        self.schema_version = schema_version
        self.bastion_version = bastion_version
        self.files: list[FileRecord] = [] if files is None else files

    def findings(self) -> list[Finding]:
        """All findings of all files."""
        return [f for fr in self.files for f in fr.findings]

    def exit_code(self, fail_on: str = "medium") -> int:
        """See :meth:`bastion.core.scanning.ScanResult.exit_code`."""
        return scan_exit_code(self.files, fail_on)

    def to_result(self) -> ScanResult:
        """The scan as the public model (imports pydantic)."""
        from bastion.core.scanning import ScanResult

        return ScanResult.model_construct(
            schema_version=self.schema_version,
            bastion_version=self.bastion_version,
            files=[fr.to_result() for fr in self.files],
        )
