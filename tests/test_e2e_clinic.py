"""End to end: build the clinic example, assess it at the quick budget, check every output."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from bastion import api
from bastion.cli.main import run
from bastion.core.settings import load_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("clinic")
    cfg = api.build_demo(dest / "clinic")
    return cfg


@pytest.fixture(scope="session")
def assessed(clinic: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    out = tmp_path_factory.mktemp("out")
    db = f"sqlite:///{out / 'bastion.db'}"
    code = run(
        [
            "assess",
            "-c",
            str(clinic),
            "-o",
            str(out / "report"),
            "--budget",
            "quick",
            "--fail-on",
            "none",
            "--db",
            db,
        ]
    )
    return out, db, code


def test_build_is_deterministic(clinic: Path, tmp_path: Path) -> None:
    again = api.build_demo(tmp_path / "again")
    for rel in ("models/diagnosis.pt", "models/triage.joblib", "data/digits_splits.npz", "bastion.yaml"):
        assert (clinic.parent / rel).read_bytes() == (again.parent / rel).read_bytes(), rel


def test_vendor_payload_never_runs(assessed: tuple[Path, str, int]) -> None:
    from bastion.examples.clinic import MARKER_NAME

    assert not (Path(tempfile.gettempdir()) / MARKER_NAME).exists()


def test_assessment_covers_every_threat(assessed: tuple[Path, str, int]) -> None:
    out, _, code = assessed
    assert code == 0, "--fail-on none with a complete run exits 0"
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["run"]["status"] == "ok", report["errors"]
    verdicts = {a["name"]: a["scan_verdict"] for a in report["assets"] if a["kind"] == "model"}
    assert verdicts["vendor-model"] == "malicious"
    for name in ("diagnosis", "diagnosis-onnx", "digits", "triage"):
        assert verdicts[name] == "safe", (name, verdicts)
    ok = {(c["id"], c["asset"]) for c in report["checks"] if c["status"] == "ok"}
    ids = {c for c, _ in ok}
    for check in (
        "evasion.pgd",
        "evasion.square",
        "membership.threshold",
        "extraction.surrogate",
        "poisoning.data-health",
        "governance.controls",
    ):
        assert check in ids, (check, sorted(ids))
    assert ("evasion.pgd", "digits") in ok and ("evasion.pgd", "diagnosis") in ok
    skipped = {(c["id"], c["asset"]): c["reason"] for c in report["checks"] if c["status"] == "skipped"}
    assert "loss-gradients" in skipped[("evasion.pgd", "triage")]
    threats = {f["threat"] for f in report["findings"]}
    assert {"supply-chain", "governance"} <= threats
    vendor = [f for f in report["findings"] if f["asset"] == "vendor-model" and f["threat"] == "supply-chain"]
    assert vendor and all(f["atlas"] for f in vendor)
    # located as bastion.yaml names the file (relative), so SARIF viewers can resolve it
    assert {f["location"]["path"] for f in vendor if f["rule_id"].startswith("scan.pickle")} == {
        "vendor-model.pkl"
    }
    pgd = next(c for c in report["checks"] if c["id"] == "evasion.pgd" and c["asset"] == "digits")
    clean = pgd["metrics"]["clean_accuracy"]
    assert clean > 0.8
    robust = [v for k, v in pgd["metrics"].items() if k.startswith("robust_accuracy@")]
    assert robust and min(robust) < clean
    for f in report["findings"]:
        assert f["remediation"], f["rule_id"]


def test_no_raw_records_in_outputs(assessed: tuple[Path, str, int], clinic: Path) -> None:
    import numpy as np

    out, _, _ = assessed
    x = np.load(clinic.parent / "data/breast_cancer.npz")["x"]
    text = (out / "report" / "report.json").read_text() + (out / "report" / "report.html").read_text()
    for value in (x[0, 0], x[3, 2], x[10, 5]):
        assert f"{value:.6g}" not in text or f"{value:.6g}" in ("0", "1")


def test_sarif_and_html_written(assessed: tuple[Path, str, int], clinic: Path) -> None:
    out, _, _ = assessed
    sarif = json.loads((out / "report" / "report.sarif").read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
    # asset paths are relative to the project folder, which the SARIF records as their base
    base = sarif["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base == clinic.parent.resolve().as_uri() + "/"
    html = (out / "report" / "report.html").read_text()
    assert "<svg" in html and "AML.T0011.000" in html


def test_history_show_and_baseline(
    assessed: tuple[Path, str, int], clinic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, db, _ = assessed
    runs = api.history(db_url=db)
    assert len(runs) >= 1
    rep = api.show(runs[0].id[:8], db_url=db)
    assert rep.run.id == runs[0].id
    assert run(["show", "latest", "--db", db, "-f", "json", "-o", str(out / "again.json")]) == 0
    again = json.loads((out / "again.json").read_text())
    first = json.loads((out / "report" / "report.json").read_text())
    assert again["findings"] == first["findings"]
    # a baseline run of one cheap check marks governance findings unchanged
    report = api.assess(
        clinic, settings=load_settings(db_url=db, budget="quick"), only=["governance"], baseline="latest"
    )
    states = {f.state for f in report.findings if f.threat.value == "governance"}
    assert "unchanged" in states
    # the other families were not re-tested: none of their findings is claimed fixed (or shown);
    # the scan runs anyway (it gates loading), so the malicious vendor file is still reported
    assert all(f.rule_id.startswith(("governance.", "scan.")) for f in report.findings)
    assert {f.state for f in report.findings if f.rule_id.startswith("scan.")} == {"unchanged"}
    assert not any(f.state == "fixed" for f in report.findings if f.threat.value != "governance")
    assert report.run.scope is not None and report.run.scope.only == ["governance"]
    assert api.show(report.run.id, db_url=db).run.scope == report.run.scope  # stored with the run


def test_dry_run_runs_nothing(clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "x.db"
    code = run(
        ["assess", "-c", str(clinic), "--dry-run", "--db", f"sqlite:///{db}", "-o", str(tmp_path / "r")]
    )
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert any(c["skip"] for c in plan["checks"]) and any(c["skip"] is None for c in plan["checks"])
    assert not db.exists() and not (tmp_path / "r").exists()


def test_bad_config_writes_nothing(clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "proj"
    shutil.copytree(clinic.parent, broken, ignore=shutil.ignore_patterns("bastion-report", ".bastion"))
    text = (broken / "bastion.yaml").read_text().replace("path: models/digits.pt", "path: models/missing.pt")
    (broken / "bastion.yaml").write_text(text)
    db = tmp_path / "b.db"
    code = run(
        ["assess", "-c", str(broken / "bastion.yaml"), "--db", f"sqlite:///{db}", "-o", str(tmp_path / "r")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_unreachable_db_exit_2(clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            "assess",
            "-c",
            str(clinic),
            "--db",
            "postgresql+psycopg://u:hunter2@127.0.0.1:1/x",
            "-o",
            str(tmp_path / "r"),
            "--only",
            "governance",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "127.0.0.1" in err
    assert not (tmp_path / "r").exists()


def test_dataset_shape_mismatch(clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "proj"
    shutil.copytree(clinic.parent, broken, ignore=shutil.ignore_patterns("bastion-report", ".bastion"))
    text = (broken / "bastion.yaml").read_text().replace("shape: [1, 8, 8]", "shape: [1, 9, 9]")
    (broken / "bastion.yaml").write_text(text)
    code = run(
        [
            "assess",
            "-c",
            str(broken / "bastion.yaml"),
            "--db",
            f"sqlite:///{tmp_path / 'd.db'}",
            "-o",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "digits" in capsys.readouterr().err


def test_assess_on_postgres(clinic: Path, postgres_url: str, tmp_path: Path) -> None:
    report = api.assess(
        clinic, settings=load_settings(db_url=postgres_url, budget="quick"), only=["governance", "poisoning"]
    )
    assert report.run.status == "ok"
    runs = api.history(db_url=postgres_url)
    assert runs[0].id == report.run.id
    assert api.show(report.run.id, db_url=postgres_url).model_dump() == report.model_dump()


def test_html_report_in_chromium(assessed: tuple[Path, str, int], chromium_path: str) -> None:
    from playwright.sync_api import sync_playwright

    out, _, _ = assessed
    html = out / "report" / "report.html"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html.as_uri())
        figures = page.query_selector_all("figure[data-plot] svg")
        assert len(figures) >= 4
        for svg in figures:
            box = svg.bounding_box()
            assert box and box["width"] > 50 and box["height"] > 50
        browser.close()
    assert errors == []


def test_a_narrowed_run_still_reports_a_malicious_model_file(clinic: Path, tmp_path: Path) -> None:
    """``--only governance`` does not hide the scanner's verdict on the clinic's booby-trapped vendor
    model (the scan runs anyway, to decide loading); an explicit ``--skip scan`` does."""
    s = load_settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", budget="quick")
    narrowed = api.assess(clinic, settings=s, only=["governance"], store=False)
    scan = [f for f in narrowed.findings if f.rule_id.startswith("scan.")]
    assert scan and all(f.asset == "vendor-model" for f in scan), [(f.rule_id, f.asset) for f in scan]
    assert any(f.severity.value == "critical" for f in scan)
    skipped = api.assess(clinic, settings=s, only=["governance"], skip=["scan"], store=False)
    assert not [f for f in skipped.findings if f.rule_id.startswith("scan.")]


def test_baseline_latest_on_an_empty_store_is_a_run_without_baseline(clinic: Path, tmp_path: Path) -> None:
    """The README's CI command on its first job: nothing stored yet is not an error."""
    s = load_settings(db_url=f"sqlite:///{tmp_path / 'first.db'}", budget="quick")
    report = api.assess(clinic, settings=s, only=["governance"], baseline="latest", store=False)
    assert report.baseline is None and all(f.state is None for f in report.findings)
    with pytest.raises(Exception, match="not found"):  # an explicit id that does not exist still fails
        api.assess(clinic, settings=s, only=["governance"], baseline="0123456789abcdef", store=False)


def test_dry_run_refuses_a_threshold_on_a_metric_the_check_lacks(clinic: Path, tmp_path: Path) -> None:
    """``--dry-run`` validates what the real run's preflight validates without data."""
    proj = tmp_path / "proj"
    shutil.copytree(clinic.parent, proj, ignore=shutil.ignore_patterns("bastion-report", ".bastion"))
    cfg = proj / "bastion.yaml"
    text = cfg.read_text()
    good = 'metric: "robust_accuracy@eps=0.1", op: "<"'
    assert good in text, "the clinic config changed; adapt this test"
    cfg.write_text(text.replace(good, 'metric: "robust_acc@eps=0.1", op: "<"', 1))
    where = r"checks\.evasion\.pgd\.thresholds\[0\]\.metric: 'robust_acc@eps=0\.1'"
    with pytest.raises(Exception, match=where):
        api.plan(cfg)
    db = tmp_path / "x.db"
    assert run(["assess", "-c", str(cfg), "--dry-run", "--db", f"sqlite:///{db}"]) == 2
    assert not db.exists()
