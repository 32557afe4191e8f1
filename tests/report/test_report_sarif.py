"""SARIF 2.1.0: schema validity, rules, levels, locations, fingerprints, suppressions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bastion.core.findings import Finding, Location, Threat
from bastion.core.report import Report, ReportFinding
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.core.severity import Severity
from bastion.report import report_to_sarif, scan_to_sarif
from bastion.report.sarif import FINGERPRINT_KEY, path_to_uri

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
EXPECTED_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
EXPECTED_SCORE = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def validate(doc: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_schema_catches_a_broken_document() -> None:
    # The validator really checks: a result with a bad level is rejected.
    bad = {
        "version": "2.1.0",
        "runs": [
            {"tool": {"driver": {"name": "x"}}, "results": [{"message": {"text": "m"}, "level": "fatal"}]}
        ],
    }
    with pytest.raises(AssertionError):
        validate(bad)


def test_report_sarif_validates(report: Report) -> None:
    doc = json.loads(report_to_sarif(report))
    validate(doc)
    assert doc["version"] == "2.1.0"
    assert len(doc["runs"]) == 1


def test_scan_sarif_validates(scan_result: ScanResult) -> None:
    doc = json.loads(scan_to_sarif(scan_result, version="0.1.0"))
    validate(doc)


def test_driver_and_rules_deduplicated(report: Report) -> None:
    run = json.loads(report_to_sarif(report))["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "Bastion"
    assert driver["version"] == report.bastion_version
    assert driver["informationUri"].startswith("https://")
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    # Fixed findings are left out by default; every other rule appears once.
    expected = {f.rule_id for f in report.findings if f.state != "fixed"}
    assert set(rule_ids) == expected
    assert rule_ids.count("scan.pickle.denied-global") == 1
    by_id = {r["id"]: r for r in driver["rules"]}
    pickle_rule = by_id["scan.pickle.denied-global"]
    # the rule's words, never one finding's title with its values
    assert pickle_rule["shortDescription"]["text"] == "scan.pickle: denied global"
    refs = pickle_rule["properties"].get("references", [])
    assert len(refs) == len(set(refs))
    assert pickle_rule["help"]["text"].startswith("Do not load this file")
    props = pickle_rule["properties"]
    assert "supply-chain" in props["tags"] and "AML.T0011.000" in props["tags"]
    assert props["security-severity"] == "9.5"
    assert float(by_id["membership.lira.high-tpr"]["properties"]["security-severity"]) == 8.0
    assert by_id["governance.owner.missing"]["properties"]["security-severity"] == "3.0"
    assert by_id["extraction.knockoff.high-fidelity"]["properties"]["security-severity"] == "5.5"
    # ruleIndex points at the rule with the same id.
    for res in run["results"]:
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]


def test_levels_fingerprints_and_properties(report: Report) -> None:
    run = json.loads(report_to_sarif(report))["runs"][0]
    results = run["results"]
    by_fp = {r["partialFingerprints"][FINGERPRINT_KEY]: r for r in results}
    listed = [f for f in report.findings if f.state != "fixed"]
    assert len(results) == len(listed)
    for f in listed:
        res = by_fp[f.fingerprint]
        assert res["ruleId"] == f.rule_id
        assert res["level"] == EXPECTED_LEVEL[f.severity.value]
        assert res["properties"]["severity"] == f.severity.value
        assert res["properties"]["asset"] == f.asset
        assert res["properties"]["evidence"] == f.model_dump(mode="json")["evidence"]
        assert f.title in res["message"]["text"]
        if f.state:
            assert res["properties"]["state"] == f.state
            assert res["baselineState"] == f.state


def test_waived_finding_is_suppressed(report: Report) -> None:
    results = json.loads(report_to_sarif(report))["runs"][0]["results"]
    suppressed = [r for r in results if "suppressions" in r]
    assert len(suppressed) == 1
    (res,) = suppressed
    assert res["ruleId"] == "evasion.hopskipjump.low-robust-accuracy"
    (sup,) = res["suppressions"]
    assert sup["kind"] == "external"
    assert "Accepted by the CISO" in sup["justification"]
    assert "2099-01-31" in sup["justification"]
    assert res["properties"]["waived"] is True
    assert res["properties"]["waiver"]["expires"] == "2099-01-31"


def test_fixed_findings_only_when_asked(report: Report) -> None:
    doc = json.loads(report_to_sarif(report, include_fixed=True))
    validate(doc)
    fixed = [r for r in doc["runs"][0]["results"] if r.get("baselineState") == "absent"]
    assert [r["ruleId"] for r in fixed] == ["drift.psi.minor-drift"]


def test_locations(report: Report) -> None:
    results = json.loads(report_to_sarif(report))["runs"][0]["results"]
    by_rule_asset = {(r["ruleId"], r["properties"]["asset"]): r for r in results}

    # A plain file with an offset: relative URI and a byteOffset region.
    triage = by_rule_asset[("scan.pickle.denied-global", "triage-model")]["locations"][0]
    assert triage["physicalLocation"]["artifactLocation"]["uri"] == "models/triage.pkl"
    assert triage["physicalLocation"]["region"] == {"byteOffset": 7}

    # An offset inside an archive member is not a file offset: the member is a logical location.
    diag = by_rule_asset[("scan.pickle.denied-global", "diagnosis-model")]["locations"][0]
    assert diag["physicalLocation"]["artifactLocation"]["uri"] == "models/diagnosis.pt"
    assert "region" not in diag["physicalLocation"]
    assert diag["logicalLocations"][0]["name"] == "archive/data.pkl"
    assert diag["properties"] == {"member": "archive/data.pkl", "member_offset": 42}

    # No file: a logical location naming the asset (and its endpoint).
    api = by_rule_asset[("extraction.knockoff.high-fidelity", "triage-api")]["locations"][0]
    assert "physicalLocation" not in api
    assert api["logicalLocations"][0]["name"] == "triage-api"
    assert api["logicalLocations"][0]["fullyQualifiedName"] == "https://triage.example.org/predict"
    owner = by_rule_asset[("governance.owner.missing", "triage-api")]["locations"][0]
    assert owner["logicalLocations"] == [
        {"name": "triage-api", "fullyQualifiedName": "triage-api", "kind": "resource"}
    ]

    # Project-wide findings have no location at all.
    project = by_rule_asset[("governance.incident-plan.missing", None)]
    assert project["locations"] == []


def test_artifacts_carry_hashes(report: Report, scan_result: ScanResult) -> None:
    run = json.loads(report_to_sarif(report))["runs"][0]
    arts = {a["location"]["uri"]: a for a in run["artifacts"]}
    assert arts["models/diagnosis.pt"]["hashes"] == {"sha-256": "cd" * 32}
    for res in run["results"]:
        for loc in res["locations"]:
            if "physicalLocation" in loc:
                al = loc["physicalLocation"]["artifactLocation"]
                assert run["artifacts"][al["index"]]["location"]["uri"] == al["uri"]
    scan_run = json.loads(scan_to_sarif(scan_result))["runs"][0]
    scan_arts = {a["location"]["uri"]: a for a in scan_run["artifacts"]}
    assert scan_arts["models/evil.pkl"]["properties"]["verdict"] == "malicious"
    assert scan_arts["models/evil.pkl"]["length"] == 120


def test_invocation_reports_errors(report: Report, scan_result: ScanResult) -> None:
    inv = json.loads(report_to_sarif(report))["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert inv["startTimeUtc"] == "2025-01-01T12:00:00.000Z"
    assert inv["endTimeUtc"] == "2025-01-01T12:00:42.500Z"
    assert any("poisoning.spectral" in n["message"]["text"] for n in inv["toolExecutionNotifications"])
    scan_inv = json.loads(scan_to_sarif(scan_result))["runs"][0]["invocations"][0]
    assert scan_inv["executionSuccessful"] is False
    (note,) = scan_inv["toolExecutionNotifications"]
    assert "models/broken.pkl" in note["message"]["text"] and note["level"] == "error"


def test_scan_sarif_levels_and_fingerprints(scan_result: ScanResult) -> None:
    results = json.loads(scan_to_sarif(scan_result))["runs"][0]["results"]
    findings = scan_result.findings()
    assert len(results) == len(findings)
    fps = {r["partialFingerprints"][FINGERPRINT_KEY]: r for r in results}
    for f in findings:
        assert fps[f.compute_fingerprint()]["level"] == EXPECTED_LEVEL[f.severity.value]
    evil = next(r for r in results if r["ruleId"] == "scan.pickle.denied-global")
    assert evil["locations"][0]["physicalLocation"]["region"]["byteOffset"] == 33


def test_rule_takes_worst_severity() -> None:
    def f(sev: Severity, path: str) -> Finding:
        return Finding(
            rule_id="scan.pickle.unknown-global",
            severity=sev,
            threat=Threat.SUPPLY_CHAIN,
            title="t",
            location=Location(path=path),
        )

    scan = ScanResult(
        files=[
            FileResult(path="a.pkl", verdict=Verdict.SUSPICIOUS, findings=[f(Severity.LOW, "a.pkl")]),
            FileResult(path="b.pkl", verdict=Verdict.SUSPICIOUS, findings=[f(Severity.HIGH, "b.pkl")]),
        ]
    )
    doc = json.loads(scan_to_sarif(scan))
    validate(doc)
    (rule,) = doc["runs"][0]["tool"]["driver"]["rules"]
    assert rule["properties"]["security-severity"] == "8.0"
    assert rule["defaultConfiguration"]["level"] == "error"


@pytest.mark.parametrize("sev", list(Severity))
def test_every_severity_maps(sev: Severity, report_factory: Callable[..., Report]) -> None:
    finding = ReportFinding.of(
        Finding(rule_id="x.y.z", severity=sev, threat=Threat.RUNTIME, title="t", asset="a")
    )
    doc = json.loads(report_to_sarif(report_factory(findings=[finding], errors=[], checks=[])))
    validate(doc)
    (res,) = doc["runs"][0]["results"]
    assert res["level"] == EXPECTED_LEVEL[sev.value]
    assert (
        doc["runs"][0]["tool"]["driver"]["rules"][0]["properties"]["security-severity"]
        == (EXPECTED_SCORE[sev.value])
    )


@pytest.mark.parametrize(
    ("path", "base", "windows", "uri"),
    [
        ("models/a b.pkl", None, False, "models/a%20b.pkl"),
        ("./models/x.pt", None, False, "models/x.pt"),
        ("/repo/models/x.pt", "/repo", False, "models/x.pt"),
        ("/elsewhere/x.pt", "/repo", False, "file:///elsewhere/x.pt"),
        # on POSIX a backslash or a colon is part of a file's name: encoded, never a separator or drive
        ("models\\win.pt", None, False, "models%5Cwin.pt"),
        ("b\\model.pkl", None, False, "b%5Cmodel.pkl"),
        ("C:evil.pkl", None, False, "C%3Aevil.pkl"),
        ("C:\\repo\\m.pt", None, False, "C%3A%5Crepo%5Cm.pt"),
        ("/srv/C:evil.pkl", None, False, "file:///srv/C%3Aevil.pkl"),
        ("50%.pkl", None, False, "50%25.pkl"),
        ("a#b?.pkl", None, False, "a%23b%3F.pkl"),
        # on Windows (os.name == "nt") the same strings are Windows paths
        ("models\\win.pt", None, True, "models/win.pt"),
        ("C:\\repo\\m.pt", "C:\\repo", True, "m.pt"),
        ("C:\\other\\m.pt", "C:\\repo", True, "file:///C:/other/m.pt"),
    ],
)
def test_path_to_uri(path: str, base: str | None, windows: bool, uri: str) -> None:
    assert path_to_uri(path, base, windows=windows) == uri


def test_path_to_uri_reads_windows_paths_only_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.report.sarif as sarif

    monkeypatch.setattr(sarif.os, "name", "posix")
    assert path_to_uri("b\\model.pkl") == "b%5Cmodel.pkl"
    monkeypatch.setattr(sarif.os, "name", "nt")
    assert path_to_uri("b\\model.pkl") == "b/model.pkl"


def test_distinct_posix_names_stay_distinct_artifacts() -> None:
    # red-team round 22 F2: on Linux the malicious file "b\\model.pkl" was reported at "b/model.pkl"
    # (a different, clean file) and merged into its artifact; "C:evil.pkl" became file:///C:evil.pkl
    bad = Finding(
        rule_id="scan.pickle.denied-global",
        severity=Severity.CRITICAL,
        threat=Threat.SUPPLY_CHAIN,
        title="os.system",
    )
    files = [
        FileResult(path="b/model.pkl", verdict=Verdict.SAFE, format="pickle"),
        FileResult(
            path="b\\model.pkl",
            verdict=Verdict.MALICIOUS,
            format="pickle",
            findings=[bad.model_copy(update={"location": Location(path="b\\model.pkl")})],
        ),
        FileResult(
            path="C:evil.pkl",
            verdict=Verdict.MALICIOUS,
            format="pickle",
            findings=[bad.model_copy(update={"location": Location(path="C:evil.pkl")})],
        ),
    ]
    doc = json.loads(scan_to_sarif(ScanResult(files=files), version="0.1.0", root="/w"))
    validate(doc)
    run = doc["runs"][0]
    arts = [a["location"] for a in run["artifacts"]]
    assert arts == [
        {"uri": "b/model.pkl", "uriBaseId": "%SRCROOT%"},
        {"uri": "b%5Cmodel.pkl", "uriBaseId": "%SRCROOT%"},
        {"uri": "C%3Aevil.pkl", "uriBaseId": "%SRCROOT%"},
    ]
    where = [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in run["results"]]
    assert sorted((w["uri"], w["index"]) for w in where) == [("C%3Aevil.pkl", 2), ("b%5Cmodel.pkl", 1)]
    assert run["artifacts"][0]["properties"]["verdict"] == "safe"


def test_base_dir_relativises(scan_result: ScanResult) -> None:
    files = [fr.model_copy(update={"path": "/repo/" + fr.path}) for fr in scan_result.files]
    doc = json.loads(scan_to_sarif(ScanResult(files=files), base_dir="/repo"))
    validate(doc)
    uris = {a["location"]["uri"] for a in doc["runs"][0]["artifacts"]}
    assert "models/broken.pkl" in uris  # this file has no finding: its URI comes from /repo/...
    assert not any(u.startswith("file:") or "repo" in u for u in uris)
    without_base = json.loads(scan_to_sarif(ScanResult(files=files)))["runs"][0]["artifacts"]
    assert "file:///repo/models/broken.pkl" in {a["location"]["uri"] for a in without_base}


def test_relative_uris_name_their_base_and_the_base_is_recorded_when_known(
    report: Report, scan_result: ScanResult, tmp_path: Path
) -> None:
    # SARIF §3.4.4: a relative uri should carry the uriBaseId it is relative to; the run's
    # originalUriBaseIds says where that base is (a file URI ending in "/") when the tool knows it
    doc = json.loads(report_to_sarif(report, root=str(tmp_path / "my project")))
    validate(doc)
    run = doc["runs"][0]
    assert run["originalUriBaseIds"] == {"%SRCROOT%": {"uri": f"file://{tmp_path}/my%20project/"}}
    locs = [
        loc["physicalLocation"]["artifactLocation"]
        for res in run["results"]
        for loc in res["locations"]
        if "physicalLocation" in loc
    ]
    assert locs and all(al["uriBaseId"] == "%SRCROOT%" for al in locs)
    assert all(a["location"]["uriBaseId"] == "%SRCROOT%" for a in run["artifacts"])
    # unknown base (a stored report shown later): named and described, never guessed
    unknown = json.loads(report_to_sarif(report))["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]
    assert "uri" not in unknown and "not recorded" in unknown["description"]["text"]
    # an absolute path is a file URI and takes no base id
    absolute = ScanResult(files=[FileResult(path="/srv/models/m.pkl", verdict=Verdict.SAFE)])
    run = json.loads(scan_to_sarif(absolute, version="0.1.0", root="/work"))["runs"][0]
    assert run["artifacts"][0]["location"] == {"uri": "file:///srv/models/m.pkl"}
    assert "originalUriBaseIds" not in run
    scan_run = json.loads(scan_to_sarif(scan_result, version="0.1.0", root="/ci/checkout"))["runs"][0]
    validate({"version": "2.1.0", "runs": [scan_run]})
    assert scan_run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == "file:///ci/checkout/"


def test_scan_cli_sarif_records_the_folder_it_ran_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    from bastion.cli.main import run

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    monkeypatch.chdir(tmp_path)
    assert run(["scan", "models", "-f", "sarif"]) == 0
    run_doc = json.loads(capsys.readouterr().out)["runs"][0]
    assert run_doc["artifacts"][0]["location"] == {"uri": "models/m.pkl", "uriBaseId": "%SRCROOT%"}
    assert run_doc["originalUriBaseIds"]["%SRCROOT%"]["uri"] == f"file://{tmp_path}/"


def test_a_finding_outside_a_narrowed_baseline_renders_everywhere(
    report_factory: Callable[..., Report],
) -> None:
    """``not-in-baseline`` (the baseline did not cover it) has no SARIF baselineState: none is set."""
    import datetime as dt

    from bastion.core.report import RunInfo, RunScope
    from bastion.report import report_to_html, report_to_markdown

    base = report_factory()
    findings = [
        f.model_copy(update={"state": "not-in-baseline"}) for f in base.findings if f.state != "fixed"
    ]
    baseline_run = RunInfo(
        id="run-20241201-def456",
        status="ok",
        started=dt.datetime(2024, 12, 1, 9, 0, tzinfo=dt.UTC),
        seconds=3.0,
        scope=RunScope(only=["evasion"], asset="digits"),
    )
    report = report_factory(findings=findings, baseline_run=baseline_run)
    doc = json.loads(report_to_sarif(report))
    validate(doc)
    for res in doc["runs"][0]["results"]:
        assert res["properties"]["state"] == "not-in-baseline" and "baselineState" not in res
    assert "(narrowed: --only evasion --asset digits)" in report_to_markdown(report)
    html = report_to_html(report)
    assert "narrowed: <code>--only evasion --asset digits</code>" in html and "not-in-baseline" in html
