"""The ``poisoning.backdoor`` check on the clinic example: finds a BadNets poison, spares clean data."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bastion import api
from bastion.assess.poisoning.backdoor import BackdoorCheck, BackdoorParams
from bastion.cli.main import run
from bastion.core.budget import Budget
from bastion.core.check import CheckContext, Split
from bastion.core.config import Asset, ProjectConfig
from bastion.core.errors import ConfigError
from bastion.core.settings import load_settings
from bastion.examples.clinic_poisoned import TRUTH_FILE, build_poisoned_clinic

RULE = "poisoning.backdoor.suspected-backdoor"


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("backdoor")
    clean = api.build_demo(root / "clean")
    shutil.copytree(clean.parent, root / "poisoned")  # poisoned in place: saves a second clean build
    poisoned = build_poisoned_clinic(root / "poisoned")
    return clean, poisoned


def _assess(cfg: Path) -> api.Report:
    settings = load_settings(db_url=f"sqlite:///{cfg.parent / 'unused.db'}")
    return api.assess(cfg, settings=settings, only=["poisoning"], asset="digits", store=False)


def test_poisoned_build_finds_the_poison(builds: tuple[Path, Path]) -> None:
    _, cfg = builds
    truth = np.load(cfg.parent / TRUTH_FILE)
    poisoned = set(truth["indices"].tolist())
    assert len(poisoned) == 90 and float(truth["attack_success"]) > 0.8  # the backdoor works
    report = _assess(cfg)
    res = next(c for c in report.checks if c.id == "poisoning.backdoor" and c.asset == "digits")
    assert res.status == "ok", res.reason
    hits = [f for f in report.findings if f.rule_id == RULE]
    assert [f.evidence["class"] for f in hits] == [0]
    assert hits[0].severity.value == "high" and not hits[0].evidence["indices_truncated"]
    flagged = set(hits[0].evidence["indices"])
    tp = len(flagged & poisoned)
    precision, recall = tp / len(flagged), tp / len(poisoned)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert res.metrics["classes_flagged"] == 1.0
    assert res.metrics["flagged_rate"] == pytest.approx(len(flagged) / res.metrics["rows_examined"])
    lo, hi = res.intervals["flagged_rate"]
    assert lo <= res.metrics["flagged_rate"] <= hi
    assert "0" in res.notes["class_stats"]
    # the figures, measured by the check itself against the simulation's ground truth
    m = res.metrics
    assert m["precision"] == pytest.approx(precision) and m["recall"] == pytest.approx(recall)
    print({k: round(v, 4) for k, v in m.items() if v is not None})  # shown with -s
    assert m["precision"] >= 0.9 and m["recall"] >= 0.9
    assert m["clean_flagged_rate"] <= 0.02, m["clean_flagged_rate"]
    assert m["backdoor_success@train=poisoned"] >= 0.5, m  # the retrained poisoned model has it
    assert m["backdoor_success@train=sanitised"] <= 0.05, m
    assert m["clean_accuracy_drop@train=sanitised"] <= 0.01, m
    lo, hi = res.intervals["backdoor_success@train=sanitised"]
    assert lo <= m["backdoor_success@train=sanitised"] <= hi
    assert "digits_cnn" in res.notes["retrain"]
    assert [f.rule_id for f in report.findings if f.rule_id.startswith("poisoning.backdoor")] == [RULE]
    from bastion.report.html import report_to_html

    html = report_to_html(report)  # the figures are in the rendered report too
    for key in ("precision", "recall", "clean_flagged_rate", "backdoor_success@train=sanitised"):
        assert key in html, key


def test_project_wide_truth_is_applied_to_its_own_dataset_only(builds: tuple[Path, Path]) -> None:
    """The demo's `truth` names the digits data; on the diagnosis model it is not measured."""
    _, cfg = builds
    assert str(np.load(cfg.parent / TRUTH_FILE)["dataset_sha256"]) != ""
    settings = load_settings(db_url=f"sqlite:///{cfg.parent / 'unused.db'}")
    report = api.assess(cfg, settings=settings, only=["poisoning.backdoor"], asset="diagnosis", store=False)
    res = next(c for c in report.checks if c.id == "poisoning.backdoor" and c.asset == "diagnosis")
    assert res.status == "ok", res.reason
    assert "recall" not in res.metrics and "not measured" in res.notes["truth"]
    assert not [f for f in report.findings if f.rule_id.startswith("poisoning.backdoor.low-recall")]


def test_clean_build_raises_no_backdoor_finding(builds: tuple[Path, Path]) -> None:
    cfg, _ = builds
    report = _assess(cfg)
    res = next(c for c in report.checks if c.id == "poisoning.backdoor" and c.asset == "digits")
    assert res.status == "ok" and res.metrics["classes_flagged"] == 0.0
    assert not [f for f in report.findings if f.rule_id.startswith("poisoning.backdoor")]


def test_cli_demo_poisoned_reuses_the_build(builds: tuple[Path, Path]) -> None:
    _, cfg = builds
    before = cfg.read_bytes()
    assert run(["demo", str(cfg.parent), "--poisoned", "--no-assess"]) == 0
    assert cfg.read_bytes() == before
    assert "poisoning.backdoor" in before.decode()


def _ctx(target: object, data: dict[str, Split]) -> CheckContext:
    cfg = ProjectConfig.model_validate({"version": 1, "project": {"name": "t"}, "assets": []})
    return CheckContext(
        asset=Asset(name="m", kind="model", path="m.pt"),
        config=cfg,
        base_dir=Path("."),
        budget=Budget(),
        params=BackdoorParams(),
        thresholds=[],
        target=target,
        data=data,
    )


def test_applicable_names_what_is_missing() -> None:
    split = Split(x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]), index=np.arange(4))
    unlabelled = Split(x=split.x, y=None, index=split.index)
    check = BackdoorCheck()
    assert "torch model target" in (check.applicable(_ctx(SimpleNamespace(), {"train": split})) or "")
    torch_like = SimpleNamespace(module=object())
    assert "labelled 'train' split" in (check.applicable(_ctx(torch_like, {})) or "")
    assert "labelled 'train' split" in (check.applicable(_ctx(torch_like, {"train": unlabelled})) or "")
    assert check.applicable(_ctx(torch_like, {"train": split})) is None


def test_spectre_selected_by_params_and_sanitise_from_report(
    builds: tuple[Path, Path], tmp_path: Path
) -> None:
    """params.detector: spectre finds the poison; its report drives `data sanitize --from-report`."""
    import hashlib
    import json

    clean_cfg, cfg = builds
    spectre_cfg = cfg.with_name("bastion.spectre.yaml")
    text = (
        cfg.read_text(encoding="utf-8")
        .replace("params: {max_indices: 1000,", "params: {max_indices: 1000, detector: spectre,")
        .replace(", retrain_recipe: 'bastion.examples.clinic_recipes:digits_cnn'", "")
    )  # measured above
    assert "retrain_recipe" not in text
    assert "detector: spectre" in text
    spectre_cfg.write_text(text, encoding="utf-8")
    report = _assess(spectre_cfg)
    res = next(c for c in report.checks if c.id == "poisoning.backdoor" and c.asset == "digits")
    assert res.status == "ok" and res.notes["detector"] == "detect.spectre"
    hits = [f for f in report.findings if f.rule_id == RULE]
    assert [f.evidence["class"] for f in hits] == [0]
    poisoned = set(np.load(cfg.parent / TRUTH_FILE)["indices"].tolist())
    flagged = set(hits[0].evidence["indices"])
    tp = len(flagged & poisoned)
    assert tp / len(flagged) >= 0.9 and tp / len(poisoned) >= 0.85, (tp, len(flagged))

    data = cfg.parent / "data" / "digits.npz"
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    assert hits[0].evidence["dataset_sha256"] == before
    rep_path = tmp_path / "report.json"
    rep_path.write_text(report.model_dump_json(), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'store.db'}"
    out = tmp_path / "clean.npz"
    args = ["data", "sanitize", str(data), "--remove", "flagged", "--from-report", str(rep_path)]
    assert (
        run(
            [
                *args,
                "--rule",
                "poisoning.backdoor",
                "--db",
                db,
                "--to",
                str(out),
                "-o",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["version"]["details"]["removed_rows"] == sorted(flagged)
    assert doc["version"]["parent_id"] == doc["parent"]
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before  # the original is untouched
    with np.load(data) as old, np.load(out) as new:
        assert new["x"].shape[0] == old["x"].shape[0] - len(flagged)

    # a report for another dataset version, indices out of range, a malformed report: exit 2
    other = clean_cfg.parent / "data" / "digits.npz"
    assert run([*args[:2], str(other), *args[3:], "--db", db]) == 2
    bad = json.loads(rep_path.read_text())
    finding = next(f for f in bad["findings"] if f["rule_id"] == RULE)
    finding["evidence"]["indices"] = [10**9]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert run([*args[:5], "--from-report", str(tmp_path / "bad.json"), "--db", db]) == 2
    (tmp_path / "junk.json").write_text('{"findings": 3}')
    assert run([*args[:5], "--from-report", str(tmp_path / "junk.json"), "--db", db]) == 2
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before


def _variant(cfg: Path, name: str, params: str) -> Path:
    """A copy of the poisoned clinic's config whose backdoor check gets ``params`` instead."""
    text = cfg.read_text(encoding="utf-8")
    start = text.index("params: {max_indices: 1000,")
    end = text.index("}\n", start) + 1
    out = cfg.with_name(name)
    out.write_text(text[:start] + f"params: {params}" + text[end:], encoding="utf-8")
    return out


def test_bad_detector_params_fail_dry_run_and_preflight(
    builds: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue: {bogus: 1} and {quantile: 2} passed --dry-run, then crashed at run time (exit 2)."""
    _, cfg = builds
    bad = _variant(
        cfg, "bastion.badparams.yaml", "{detector: spectre, detector_params: {bogus: 1, quantile: 2}}"
    )
    capsys.readouterr()
    assert run(["assess", "-c", str(bad), "--dry-run", "--asset", "digits", "--only", "poisoning"]) == 2
    text = capsys.readouterr().err
    assert "checks.poisoning.backdoor.params.detector_params.quantile" in text
    assert "checks.poisoning.backdoor.params.detector_params.bogus" in text
    assert "not a parameter of spectre" in text and "alpha" in text  # what it takes is listed
    # the full run stops in preflight, before any check runs: nothing crashes
    with pytest.raises(ConfigError) as info:
        _assess(bad)
    assert "detector_params.quantile" in str(info.value) and "detector_params.bogus" in str(info.value)
    # the same against the default detector's own params
    ac = _variant(cfg, "bastion.badac.yaml", "{detector_params: {alpha: 4}}")
    with pytest.raises(
        ConfigError, match=r"detector_params\.alpha: not a parameter of activation-clustering"
    ):
        api.preflight(ac, asset="digits", only=["poisoning"])
    # valid detector params still pass
    ok = _variant(
        cfg, "bastion.okparams.yaml", "{detector: spectre, detector_params: {alpha: 4, quantile: 0.99}}"
    )
    api.preflight(ok, asset="digits", only=["poisoning"])


def test_unknown_layer_is_a_preflight_error_listing_the_layers(builds: tuple[Path, Path]) -> None:
    """Issue: a mistyped layer skipped the check (a passing gate); now assess stops in preflight."""
    _, cfg = builds
    bad = _variant(cfg, "bastion.badlayer.yaml", "{layer: fc9}")
    with pytest.raises(ConfigError) as info:
        _assess(bad)
    msg = str(info.value)
    assert "checks.poisoning.backdoor on digits: params.layer: the model has no layer 'fc9'" in msg
    from bastion.detect.poisoning import layer_names
    from bastion.examples.clinic_models import DigitsCNN

    names = layer_names(DigitsCNN())
    assert names and all(n in msg for n in names)


def test_preflight_layer_check_on_the_check_api() -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    )
    ctx = _ctx(SimpleNamespace(module=net), {})
    check = BackdoorCheck()
    assert check.preflight(ctx) == []  # default layer
    ctx.params = BackdoorParams(layer="1")
    assert check.preflight(ctx) == []
    ctx.params = BackdoorParams(layer="fc")
    assert check.preflight(ctx) == ["params.layer: the model has no layer 'fc'; its layers: 0, 1, 2, 3"]
