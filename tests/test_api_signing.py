"""``bastion assess`` verifies model signatures (``signing.public_key``) and writes ``bom.json``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from tests.keys import write_ec_keypair

from bastion import api
from bastion.core.errors import ConfigError
from bastion.core.report import Report

pytest.importorskip("model_signing", reason="signing needs bastion-ml[signing]")


@pytest.fixture(scope="module")
def clinic_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.build_demo(tmp_path_factory.mktemp("clinic-src") / "clinic").parent


@pytest.fixture
def clinic(clinic_src: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clinic project with an EC key pair in ``keys/``."""

    dest = tmp_path / "clinic"
    shutil.copytree(clinic_src, dest)
    (dest / "keys").mkdir()
    write_ec_keypair(dest / "keys" / "key.pem", dest / "keys" / "pub.pem")
    return dest


def _with_key(project: Path) -> Path:
    cfg = project / "bastion.yaml"
    cfg.write_text(cfg.read_text() + "\nsigning:\n  public_key: keys/pub.pem\n")
    return cfg


def _assets(report: Report) -> dict[str, tuple[str | None, str | None]]:
    return {a.name: (a.signature, a.signature_detail) for a in report.assets}


def _findings(report: Report, rule: str) -> set[str | None]:
    return {f.asset for f in report.findings if f.rule_id == rule}


def _validate_bom(doc: dict) -> None:
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    assert error is None, str(error)


def test_signed_model_verifies_and_bom_json_is_cyclonedx_1_6(clinic: Path) -> None:
    cfg = _with_key(clinic)
    api.sign_model(clinic / "models" / "triage.joblib", key=clinic / "keys" / "key.pem")
    report = api.assess(cfg, only=["scan"], store=False)
    sig = _assets(report)
    assert sig["triage"] == ("verified", None)
    assert sig["digits"][0] == "unsigned"  # a key is configured: unsigned is a (low) finding
    assert sig["wine"] == (None, None)  # a dataset has no signature status
    assert not _findings(report, "scan.signature.verification-failed")
    unsigned = _findings(report, "scan.signature.unsigned")
    assert unsigned == {"diagnosis", "diagnosis-onnx", "digits", "vendor-model"}
    assert all(f.severity.value == "low" for f in report.findings if f.rule_id == "scan.signature.unsigned")
    ok = next(c for c in report.checks if c.id == "scan.signature" and c.asset == "triage")
    assert ok.status == "ok" and ok.metrics["verified"] == 1.0

    # a report name taken by a folder: refused before any file is written, the name given
    (clinic / "blocked" / "report.sarif").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"report\.sarif exists and is not a file; nothing was written"):
        api.write_outputs(report, clinic / "blocked", fail_on="none")
    assert sorted(p.name for p in (clinic / "blocked").iterdir()) == ["report.sarif"]
    paths = api.write_outputs(report, clinic / "out", fail_on="none")
    assert paths["bom"] == clinic / "out" / "bom.json"
    assert not list((clinic / "out").glob(".*.tmp"))
    doc = json.loads(paths["bom"].read_text())
    _validate_bom(doc)
    comps = {c["name"]: c for c in doc["components"]}
    props = {p["name"]: p["value"] for p in comps["triage"]["properties"]}
    assert comps["triage"]["type"] == "machine-learning-model"
    assert props["bastion:signature.status"] == "verified"
    assert props["bastion:scan.verdict"] == "safe"
    assert props["bastion:format"] == "joblib"
    triage = next(a for a in report.assets if a.name == "triage")
    assert comps["triage"]["hashes"] == [{"alg": "SHA-256", "content": triage.sha256}]
    vendor = {p["name"]: p["value"] for p in comps["vendor-model"]["properties"]}
    assert vendor["bastion:scan.verdict"] == "malicious" and vendor["bastion:signature.status"] == "unsigned"
    # the scan's findings under the name `bastion bom` writes (and documents), with its count
    # (trial: `bastion:findings` here, `bastion:scan.findings` there)
    own, _ = api.model_bom(clinic / "vendor-model.pkl")
    (alone,) = own["components"]
    expected = {p["name"]: p["value"] for p in alone["properties"]}["bastion:scan.findings"]
    assert int(expected) > 0 and vendor["bastion:scan.findings"] == expected
    assert props["bastion:scan.findings"] == "0"
    assert not any(p["name"] == "bastion:findings" for c in comps.values() for p in c.get("properties", []))
    # the file's own risks, as `bastion bom` writes them
    assert comps["vendor-model"]["modelCard"]["considerations"]["technicalLimitations"]
    assert "considerations" not in comps["triage"].get("modelCard", {})
    assert {n for n, c in comps.items() if c["type"] == "data"} == {"breast-cancer", "digit-images", "wine"}
    assert all(c["hashes"] for c in comps.values() if c["type"] == "data")
    assert doc["serialNumber"] == f"urn:uuid:{report.run.id[:8]}-{report.run.id[8:12]}-" + (
        f"{report.run.id[12:16]}-{report.run.id[16:20]}-{report.run.id[20:]}"
    )
    html = paths["html"].read_text()
    assert "<dt>Signature</dt>" in html and ">verified</span>" in html and "bom.json" in html


def test_tampered_model_fails_verification_is_a_high_finding_and_not_loaded(clinic: Path) -> None:
    cfg = _with_key(clinic)
    digits = clinic / "models" / "digits.pt"
    api.sign_model(digits, key=clinic / "keys" / "key.pem")
    # Swap in another harmless PyTorch checkpoint: the scanner still says safe, the signature does not.
    shutil.copyfile(clinic / "models" / "diagnosis.pt", digits)
    report = api.assess(cfg, asset="digits", only=["scan", "evasion.square"], store=False)
    status, detail = _assets(report)["digits"]
    assert status == "failed" and detail and "digits.pt" in detail
    assert str(clinic) not in detail  # the project's paths, relative to its folder
    assert next(a for a in report.assets if a.name == "digits").scan_verdict == "safe"
    failed = [f for f in report.findings if f.rule_id == "scan.signature.verification-failed"]
    assert [f.asset for f in failed] == ["digits"]
    assert failed[0].severity.value == "high" and failed[0].location.path == "models/digits.pt"
    assert api.exit_code(report, "high") == 1
    attack = [c for c in report.checks if c.id == "evasion.square" and c.asset == "digits"]
    assert attack and attack[0].status == "skipped" and "signature did not verify" in (attack[0].reason or "")


def test_without_a_key_signatures_are_reported_not_findings(clinic: Path) -> None:
    api.sign_model(clinic / "models" / "triage.joblib", key=clinic / "keys" / "key.pem")
    report = api.assess(clinic / "bastion.yaml", only=["scan"], store=False)
    sig = _assets(report)
    assert sig["triage"][0] == "error" and "signing.public_key" in (sig["triage"][1] or "")
    assert sig["digits"] == ("unsigned", None)
    assert not [f for f in report.findings if f.rule_id.startswith("scan.signature.")]
    assert not [c for c in report.checks if c.id == "scan.signature"]


def test_missing_public_key_fails_preflight(clinic: Path) -> None:
    cfg = _with_key(clinic)
    (clinic / "keys" / "pub.pem").unlink()
    with pytest.raises(ConfigError, match=r"signing\.public_key: .*pub\.pem"):
        api.assess(cfg, only=["scan"], store=False)
    with pytest.raises(ConfigError, match=r"signing\.public_key: .*pub\.pem"):
        api.preflight(cfg)  # `bastion assess --dry-run` finds it too


def _tamper_digits(clinic: Path) -> None:
    """Sign digits.pt, unpin its hash, then change one weight (same architecture: it still loads)."""
    import re

    import torch

    digits = clinic / "models" / "digits.pt"
    api.sign_model(digits, key=clinic / "keys" / "key.pem")
    cfg = clinic / "bastion.yaml"
    text = cfg.read_text()
    start = text.index("models/digits.pt")
    pin = re.compile(r"\n\s*sha256: [0-9a-f]{64}")
    m = pin.search(text, start)
    assert m is not None
    cfg.write_text(text[: m.start()] + text[m.end() :])
    sd = torch.load(digits, weights_only=True)
    first = next(iter(sd))
    sd[first] = sd[first] + 0.01
    torch.save(sd, digits)


def test_a_run_narrowed_to_an_attack_still_fails_its_gate_on_a_failed_signature(clinic: Path) -> None:
    cfg = _with_key(clinic)
    _tamper_digits(clinic)
    report = api.assess(cfg, asset="digits", only=["evasion.square"], store=False)
    assert _findings(report, "scan.signature.verification-failed") == {"digits"}
    assert api.exit_code(report, "high") == 1


def test_harden_and_guard_fit_refuse_a_model_whose_signature_fails(clinic: Path, tmp_path: Path) -> None:
    from bastion.core.errors import IntegrityError
    from bastion.core.settings import load_settings

    cfg = _with_key(clinic)
    _tamper_digits(clinic)
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(IntegrityError, match=r"digits\.pt: not loaded: its signature did not verify"):
        api.harden(cfg, "pgd-at", asset="digits", params={"epochs": 1, "steps": 1}, settings=settings)
    with pytest.raises(IntegrityError, match="not loaded: its signature did not verify"):
        api.guard_fit(cfg, asset="digits", out=tmp_path / "profile")
    assert not (clinic / ".bastion" / "models").exists() or not any(
        (clinic / ".bastion" / "models").iterdir()
    )


def test_a_models_folder_signed_as_a_whole_verifies_each_asset_in_it(clinic: Path, tmp_path: Path) -> None:
    """``bastion sign models/`` (one bundle, ``models.sig``): assess, harden and guard fit use it."""
    from bastion.core.errors import IntegrityError

    cfg = _with_key(clinic)
    old = clinic / "models" / "old.pkl"  # signed with the folder, removed later
    old.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    api.sign_model(clinic / "models", key=clinic / "keys" / "key.pem")
    assert (clinic / "models.sig").is_file() and not (clinic / "models" / "digits.pt.sig").exists()
    report = api.assess(cfg, only=["scan"], store=False)
    sig = _assets(report)
    assert {n: s for n, (s, _) in sig.items() if n in ("digits", "triage", "diagnosis")} == dict.fromkeys(
        ("digits", "triage", "diagnosis"), "verified"
    )
    assert sig["vendor-model"][0] == "unsigned"  # outside models/: no bundle covers it
    checks = {c.asset: c for c in report.checks if c.id == "scan.signature"}
    assert checks["digits"].notes["signature_path"].endswith("models.sig")
    in_models = {a.name for a in report.assets if (a.path or "").startswith("models/")}
    assert {"digits", "triage", "diagnosis"} <= in_models
    # a file of the folder removed (trial: every model still "verified", the removal nowhere):
    # the folder, signed as a whole, no longer verifies (as `bastion verify models` says), so
    # none of its models is verified or loaded, and each says why
    old.unlink()
    report = api.assess(cfg, only=["scan"], store=False)
    sig = _assets(report)
    assert {n: s for n, (s, _) in sig.items() if n in in_models} == dict.fromkeys(in_models, "failed")
    assert all("old.pkl removed" in (sig[n][1] or "") for n in in_models), sig
    assert "digits.pt itself has its signed bytes" in (sig["digits"][1] or "")
    assert str(clinic) not in (sig["digits"][1] or "")  # the project's paths, relative to its folder
    assert _findings(report, "scan.signature.verification-failed") == in_models
    assert sig["vendor-model"][0] == "unsigned"
    bom = json.loads(api.write_outputs(report, tmp_path / "out", fail_on="none")["bom"].read_text())
    _validate_bom(bom)
    props = {c["name"]: {p["name"]: p["value"] for p in c["properties"]} for c in bom["components"]}
    assert props["triage"]["bastion:signature.status"] == "failed"
    assert "old.pkl removed" in props["triage"]["bastion:signature.reason"]
    with pytest.raises(IntegrityError, match="not loaded: its signature did not verify"):
        api.guard_fit(cfg, asset="digits", out=tmp_path / "profile")  # its own bytes are intact
    # re-signed, then one file of the folder changes: the others fail with it, naming it
    api.sign_model(clinic / "models", key=clinic / "keys" / "key.pem")
    shutil.copyfile(clinic / "models" / "diagnosis.pt", clinic / "models" / "digits.pt")
    report = api.assess(cfg, only=["scan"], store=False)
    sig = _assets(report)
    assert sig["digits"][0] == "failed" and "digits.pt changed" in (sig["digits"][1] or "")
    assert "digits.pt itself" not in (sig["digits"][1] or "")
    assert sig["triage"][0] == "failed" and "digits.pt changed" in (sig["triage"][1] or "")
    assert _findings(report, "scan.signature.verification-failed") == in_models
    with pytest.raises(IntegrityError, match="not loaded: its signature did not verify"):
        api.guard_fit(cfg, asset="digits", out=tmp_path / "profile")
