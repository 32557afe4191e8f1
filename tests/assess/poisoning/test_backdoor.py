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
