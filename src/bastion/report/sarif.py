"""SARIF 2.1.0 renderers, for code-scanning services (GitHub, GitLab, Azure DevOps).

One run per document; ``tool.driver`` is Bastion with one rule per distinct ``rule_id``. Each
result carries the finding's level, message, location (a file as a relative URI with the byte
offset when known, or a logical location for assets without a file), its fingerprint under
``partialFingerprints["bastion/v1"]`` and, for a waived finding, an external suppression.
Specification: https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from bastion.core.findings import Finding
from bastion.core.report import Report, ReportFinding
from bastion.core.scanning import ScanResult, Verdict
from bastion.core.severity import Severity
from bastion.report._common import all_errors, bastion_version, sort_findings, technique_ref
from bastion.report.json_out import escape_surrogates, json_safe

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
#: ``tool.driver.informationUri``.
INFORMATION_URI = "https://pypi.org/project/bastion-ml/"
#: Key of Bastion's fingerprint in ``partialFingerprints``.
FINGERPRINT_KEY = "bastion/v1"

#: Severity → SARIF ``level``.
LEVELS: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}

#: Severity → ``security-severity`` score (0–10), which code-scanning services rank by.
SECURITY_SEVERITY: dict[Severity, float] = {
    Severity.CRITICAL: 9.5,
    Severity.HIGH: 8.0,
    Severity.MEDIUM: 5.5,
    Severity.LOW: 3.0,
    Severity.INFO: 0.0,
}

#: The ``uriBaseId`` of every relative artifact URI (SARIF §3.4.4: a relative ``uri`` should name
#: the base it is relative to): the folder a scan ran in, or the project folder of a report.
SRCROOT = "%SRCROOT%"

#: Report baseline state → SARIF ``baselineState``.
#: SARIF ``baselineState`` per finding state; ``not-in-baseline`` (the baseline did not cover it)
#: has no SARIF word: the result carries none (not compared), its ``properties.state`` says why.
_BASELINE_STATES = {"new": "new", "unchanged": "unchanged", "fixed": "absent"}


def _uri_path(path: str, windows: bool) -> str:
    r"""``path`` with ``/`` separators: Windows separators and drives are parsed only on Windows.

    On POSIX a ``\`` or ``:`` is part of a file's name (``b\model.pkl`` is one file, not
    ``b/model.pkl``), so the path is taken as it is.
    """
    if not windows:
        return path
    win = PureWindowsPath(path)
    return "/" + win.as_posix() if win.drive else path.replace("\\", "/")


def _quote_path(path: str, *, keep_colon: bool = False) -> str:
    r"""Percent-encode ``path`` for a URI; only ``/`` (and with ``keep_colon`` a ``:``) stays literal.

    Every other reserved character (``\``, ``:``, ``%``, ``#``, ``?``, space, non-ASCII, bytes
    that are not UTF-8) is encoded, so two different names never give the same URI. A relative
    URI never keeps a ``:`` (``C:evil.pkl`` would read as a URI with the scheme ``c``).
    """
    return quote(path, safe="/:" if keep_colon else "/", errors="surrogateescape")


def path_to_uri(path: str, base_dir: str | None = None, *, windows: bool | None = None) -> str:
    r"""A file path as a SARIF artifact URI: relative paths stay relative (``/``-separated, %-encoded).

    Args:
        path: the path as recorded.
        base_dir: when given, an absolute ``path`` under it becomes relative to it.
        windows: read ``path`` as a Windows path (``\`` separators, ``C:`` drives); default:
            only when running on Windows (``os.name == "nt"``). On POSIX a ``\`` or ``:`` in a
            name is percent-encoded (``b%5Cmodel.pkl``, ``C%3Aevil.pkl``), never a separator or
            a drive.

    Returns:
        A relative URI reference, or a ``file://`` URI for an absolute path outside ``base_dir``.
    """
    win = os.name == "nt" if windows is None else windows
    posix = _uri_path(path, win)
    if posix.startswith("/"):
        if base_dir is not None:
            base = _uri_path(base_dir, win)
            try:
                rel = PurePosixPath(posix).relative_to(PurePosixPath(base))
            except ValueError:
                rel = None
            if rel is not None:
                return _quote_path(str(rel))
        # a Windows drive keeps its ":" (file:///C:/m.pt); on POSIX a ":" is part of a name
        return "file://" + _quote_path(posixpath.normpath(posix), keep_colon=win)
    return _quote_path(posixpath.normpath(posix))


def _rule_text(rule_id: str) -> str:
    """A rule id as words: ``evasion.pgd.low-robust-accuracy`` → ``evasion.pgd: low robust accuracy``."""
    plugin, _, condition = rule_id.rpartition(".")
    if not plugin:
        return rule_id
    return f"{plugin}: {condition.replace('-', ' ').replace('_', ' ')}"


class _RunBuilder:
    """Collects rules, artifacts and results for one SARIF run."""

    def __init__(self, base_dir: str | None, root: str | None = None) -> None:
        self.base_dir = base_dir
        self.root = root
        self.rules: list[dict[str, Any]] = []
        self._rule_index: dict[str, int] = {}
        self._rule_severity: dict[str, Severity] = {}
        self.artifacts: list[dict[str, Any]] = []
        self._artifact_index: dict[str, int] = {}
        self.results: list[dict[str, Any]] = []

    def artifact(
        self,
        path: str,
        *,
        sha256: str | None = None,
        size: int | None = None,
        properties: dict[str, Any] | None = None,
    ) -> tuple[str, int]:
        """Register the artifact at ``path`` (once per path as recorded); returns its URI and index.

        Artifacts are keyed by the recorded path (only spelling differences such as ``./`` or
        ``//`` folded), never by the URI, so two different files are never merged into one
        artifact.
        """
        uri = path_to_uri(path, self.base_dir)
        key = posixpath.normpath(_uri_path(path, os.name == "nt"))
        if key not in self._artifact_index:
            self._artifact_index[key] = len(self.artifacts)
            self.artifacts.append({"location": self._location(uri)})
        idx = self._artifact_index[key]
        art = self.artifacts[idx]
        if size is not None:
            art["length"] = size
        if sha256:
            art["hashes"] = {"sha-256": sha256}
        if properties:
            art.setdefault("properties", {}).update(json_safe(properties))
        return uri, idx

    @staticmethod
    def _location(uri: str) -> dict[str, Any]:
        """An ``artifactLocation``: a relative ``uri`` carries the ``uriBaseId`` it is relative to."""
        return {"uri": uri} if uri.startswith("file://") else {"uri": uri, "uriBaseId": SRCROOT}

    def base_ids(self) -> dict[str, Any] | None:
        """``originalUriBaseIds``: where :data:`SRCROOT` is, when a relative URI uses it."""
        if not any("uriBaseId" in a["location"] for a in self.artifacts):
            return None
        if self.root is None:
            what = "the folder relative paths are relative to (not recorded: resolve against the checkout)"
            return {SRCROOT: {"description": {"text": what}}}
        win = os.name == "nt"
        root = PurePosixPath(_uri_path(self.root, win)).as_posix().rstrip("/") + "/"
        root = root if root.startswith("/") else "/" + root
        return {SRCROOT: {"uri": "file://" + _quote_path(root, keep_colon=win)}}

    def rule(self, finding: Finding) -> int:
        """The index of ``finding``'s rule, adding it on first sight (worst severity wins)."""
        rid = finding.rule_id
        if rid not in self._rule_index:
            self._rule_index[rid] = len(self.rules)
            tags: list[str] = ["security", finding.threat.value]
            for tid in finding.atlas:
                if tid not in tags:
                    tags.append(tid)
            rule: dict[str, Any] = {
                "id": rid,
                "name": rid,
                # the rule's own words, not one finding's title (which carries that finding's values)
                "shortDescription": {"text": _rule_text(rid)},
                "help": {"text": finding.remediation or "No remediation recorded for this rule."},
                "properties": {"tags": tags, "threat": finding.threat.value},
            }
            if finding.atlas:
                rule["properties"]["atlas"] = [
                    {"id": t.id, "name": t.name, "url": t.url}
                    for t in (technique_ref(tid) for tid in finding.atlas)
                ]
                rule["helpUri"] = technique_ref(finding.atlas[0]).url
            web_refs = [r for r in finding.references if r.startswith(("https://", "http://"))]
            if web_refs:
                rule["helpUri"] = web_refs[0]
            if finding.references:
                rule["properties"]["references"] = list(dict.fromkeys(finding.references))
            self.rules.append(rule)
            self._rule_severity[rid] = finding.severity
        elif finding.severity > self._rule_severity[rid]:
            self._rule_severity[rid] = finding.severity
        sev = self._rule_severity[rid]
        rule = self.rules[self._rule_index[rid]]
        rule["defaultConfiguration"] = {"level": LEVELS[sev]}
        rule["properties"]["security-severity"] = f"{SECURITY_SEVERITY[sev]:.1f}"
        rule["properties"]["problem.severity"] = _problem_severity(sev)
        return self._rule_index[rid]

    def location(self, finding: Finding) -> list[dict[str, Any]]:
        """``finding``'s SARIF locations (empty when it names neither file nor asset)."""
        loc = finding.location
        out: dict[str, Any] = {}
        props: dict[str, Any] = {}
        if loc.path:
            uri, idx = self.artifact(loc.path)
            phys: dict[str, Any] = {"artifactLocation": {**self._location(uri), "index": idx}}
            if loc.offset is not None and loc.member is None:
                phys["region"] = {"byteOffset": loc.offset}
            out["physicalLocation"] = phys
        logical: list[dict[str, Any]] = []
        if loc.member:
            props["member"] = loc.member
            if loc.offset is not None:
                props["member_offset"] = loc.offset
            logical.append(
                {
                    "name": loc.member,
                    "fullyQualifiedName": f"{loc.path}/{loc.member}" if loc.path else loc.member,
                    "kind": "resource",
                }
            )
        if not loc.path and (finding.asset or loc.endpoint):
            name = finding.asset or loc.endpoint or ""
            logical.append(
                {
                    "name": name,
                    "fullyQualifiedName": loc.endpoint or name,
                    "kind": "resource",
                }
            )
        if loc.endpoint:
            props["endpoint"] = loc.endpoint
        if loc.index is not None:
            props["index"] = loc.index
        if logical:
            out["logicalLocations"] = logical
        if props:
            out["properties"] = props
        return [out] if out else []

    def add(self, finding: Finding) -> dict[str, Any]:
        """Append the result for ``finding`` and return it."""
        rule_index = self.rule(finding)
        fingerprint = (
            finding.fingerprint if isinstance(finding, ReportFinding) else finding.compute_fingerprint()
        )
        message = finding.title or finding.rule_id
        if finding.asset:
            message = f"{message} (asset: {finding.asset})"
        props: dict[str, Any] = {
            "severity": finding.severity.value,
            "threat": finding.threat.value,
            "asset": finding.asset,
            "evidence": json_safe(finding.model_dump(mode="json")["evidence"]),
            "atlas": list(finding.atlas),
        }
        result: dict[str, Any] = {
            "ruleId": finding.rule_id,
            "ruleIndex": rule_index,
            "level": LEVELS[finding.severity],
            "message": {"text": message},
            "locations": self.location(finding),
            "partialFingerprints": {FINGERPRINT_KEY: fingerprint},
        }
        if isinstance(finding, ReportFinding):
            if finding.state is not None:
                props["state"] = finding.state
                if finding.state in _BASELINE_STATES:
                    result["baselineState"] = _BASELINE_STATES[finding.state]
            if finding.waiver is not None:
                props["waived"] = True
                props["waiver"] = finding.waiver.model_dump(mode="json")
                result["suppressions"] = [
                    {
                        "kind": "external",
                        "status": "accepted",
                        "justification": (
                            f"{finding.waiver.reason} (waived until {finding.waiver.expires.isoformat()})"
                        ),
                        "properties": {"expires": finding.waiver.expires.isoformat()},
                    }
                ]
        result["properties"] = props
        self.results.append(result)
        return result

    def run(self, version: str, **extra: Any) -> dict[str, Any]:
        """The finished ``run`` object."""
        run: dict[str, Any] = {
            "tool": {
                "driver": {
                    "name": "Bastion",
                    "version": version,
                    "semanticVersion": version,
                    "informationUri": INFORMATION_URI,
                    "rules": self.rules,
                }
            },
        }
        base_ids = self.base_ids()
        if base_ids is not None:
            run["originalUriBaseIds"] = base_ids
        run.update(extra)
        if self.artifacts:
            run["artifacts"] = self.artifacts
        run["results"] = self.results
        return run


def _problem_severity(sev: Severity) -> str:
    return {"error": "error", "warning": "warning", "note": "recommendation"}[LEVELS[sev]]


def _document(run: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def _notification(level: str, text: str, descriptor: str | None = None) -> dict[str, Any]:
    note: dict[str, Any] = {"level": level, "message": {"text": text}}
    if descriptor:
        note["descriptor"] = {"id": descriptor}
    return note


def scan_to_sarif_dict(
    result: ScanResult, *, version: str | None = None, base_dir: str | None = None, root: str | None = None
) -> dict[str, Any]:
    """A scan as a SARIF 2.1.0 log (a dict; see :func:`scan_to_sarif`)."""
    builder = _RunBuilder(base_dir, root)
    notes: list[dict[str, Any]] = []
    for fr in result.files:
        builder.artifact(
            fr.path,
            sha256=fr.sha256,
            size=fr.size,
            properties={"verdict": fr.verdict.value, "format": fr.format},
        )
        for f in sort_findings(fr.findings):
            builder.add(f)
        if fr.verdict == Verdict.ERROR:
            notes.append(
                _notification("error", f"{fr.path}: not fully scanned: {fr.reason or 'unknown error'}")
            )
    invocation: dict[str, Any] = {
        "executionSuccessful": not any(fr.verdict == Verdict.ERROR for fr in result.files),
        "toolExecutionNotifications": notes,
    }
    run = builder.run(
        version or bastion_version(),
        automationDetails={"id": "bastion/scan/"},
        invocations=[invocation],
        columnKind="unicodeCodePoints",
        properties={"schema_version": result.schema_version},
    )
    return _document(run)


def scan_to_sarif(
    result: ScanResult, *, version: str | None = None, base_dir: str | None = None, root: str | None = None
) -> str:
    """Render a scan as SARIF 2.1.0 JSON.

    Every scanned file becomes an artifact (with its SHA-256, size, verdict and format); every
    finding a result. A file with verdict ``error`` becomes an error notification of the invocation,
    whose ``executionSuccessful`` is false.

    Args:
        result: the scan.
        version: Bastion's version to record; defaults to the running one.
        base_dir: absolute paths under it are written relative to it (code-scanning services want
            paths relative to the repository root); other absolute paths become ``file://`` URIs.
        root: the absolute folder relative paths are relative to (the folder the scan ran in),
            recorded as ``originalUriBaseIds["%SRCROOT%"]``; every relative URI carries
            ``uriBaseId: "%SRCROOT%"``. ``None``: the base is named but its place not recorded.

    Returns:
        The SARIF text, indented by 2.
    """
    doc = scan_to_sarif_dict(result, version=version, base_dir=base_dir, root=root)
    return escape_surrogates(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))


def report_to_sarif_dict(
    report: Report, *, base_dir: str | None = None, include_fixed: bool = False, root: str | None = None
) -> dict[str, Any]:
    """An assessment report as a SARIF 2.1.0 log (a dict; see :func:`report_to_sarif`)."""
    builder = _RunBuilder(base_dir, root)
    for asset in report.assets:
        if asset.path:
            builder.artifact(
                asset.path,
                sha256=asset.sha256,
                properties={
                    "asset": asset.name,
                    "kind": asset.kind,
                    "format": asset.format,
                    "scan_verdict": asset.scan_verdict,
                },
            )
    for f in sort_findings(report.findings):
        if f.state != "fixed" or include_fixed:
            builder.add(f)
    notes = [
        _notification(
            "error",
            f"{e.check}{' on ' + e.asset if e.asset else ''} failed: {e.error}: {e.message}",
            e.check,
        )
        for e in all_errors(report)
    ]
    start = report.run.started
    invocation: dict[str, Any] = {
        "executionSuccessful": report.run.status == "ok" and not notes,
        "commandLine": f"bastion {report.run.command}",
        "startTimeUtc": _utc(start),
        "endTimeUtc": _utc(start + dt.timedelta(seconds=report.run.seconds)),
        "toolExecutionNotifications": notes,
    }
    run = builder.run(
        report.bastion_version,
        automationDetails={"id": f"bastion/{report.run.command}/{report.run.id}"},
        invocations=[invocation],
        columnKind="unicodeCodePoints",
        properties=json_safe(
            {
                "schema_version": report.schema_version,
                "run": report.run.model_dump(mode="json"),
                "reproducibility": report.reproducibility.model_dump(mode="json"),
                "baseline": report.baseline,
            }
        ),
    )
    return _document(run)


def report_to_sarif(
    report: Report, *, base_dir: str | None = None, include_fixed: bool = False, root: str | None = None
) -> str:
    """Render an assessment report as SARIF 2.1.0 JSON.

    One result per finding, with ``baselineState`` (``new``/``unchanged``) when the report was
    compared with a baseline. Fixed findings are left out by default, so a code-scanning service
    closes their alerts; with ``include_fixed`` they appear with ``baselineState`` ``absent``. Waived
    findings carry ``suppressions: [{"kind": "external", "justification": ...}]`` so services show
    them as dismissed; errored checks become error notifications of the invocation.

    Args:
        report: the report.
        base_dir: absolute paths under it are written relative to it.
        include_fixed: also list findings the baseline had and this run no longer has.
        root: the absolute project folder (of ``bastion.yaml``) that asset paths are relative to,
            recorded as ``originalUriBaseIds["%SRCROOT%"]`` (see :func:`scan_to_sarif`).

    Returns:
        The SARIF text, indented by 2.
    """
    doc = report_to_sarif_dict(report, base_dir=base_dir, include_fixed=include_fixed, root=root)
    return escape_surrogates(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))


def _utc(moment: dt.datetime) -> str:
    """A datetime as SARIF's UTC timestamp (``YYYY-MM-DDThh:mm:ss.sssZ``); naive means UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


__all__ = [
    "FINGERPRINT_KEY",
    "INFORMATION_URI",
    "LEVELS",
    "SECURITY_SEVERITY",
    "path_to_uri",
    "report_to_sarif",
    "report_to_sarif_dict",
    "scan_to_sarif",
    "scan_to_sarif_dict",
]
