"""``defend.distill`` on the clinic digits model: the student's accuracy, robustness and membership
leakage are reported beside the teacher's by ``bastion assess`` (before/after table and plot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion import api
from bastion.cli.main import run
from bastion.core.report import Report
from bastion.report._versions import compare_versions

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ONLY = ("evasion.pgd", "membership.threshold")


def test_student_is_assessed_beside_the_teacher(tmp_path: Path) -> None:
    cfg = api.build_demo(tmp_path / "clinic")
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["checks"]["evasion.pgd"] = {"params": {"eps": [0.1], "steps": 10}}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'bastion.db'}"
    code = run(["harden", "distill", "--asset", "digits", "-c", str(cfg), "--db", db, "-p", "epochs=15"])
    assert code == 0
    out = tmp_path / "after"
    args = ["assess", "-c", str(cfg), "-o", str(out), "--budget", "quick", "--fail-on", "none", "--db", db]
    args += ["--asset", "digits"] + [a for pid in ONLY for a in ("--only", pid)]
    assert run(args) == 0
    raw: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    by = {(c["id"], c["asset"]): c for c in raw["checks"]}
    for asset in ("digits", "digits.v2"):  # teacher and student, each measured
        for pid in ONLY:
            assert by[(pid, asset)]["status"] == "ok", by.get((pid, asset))
    (cmp,) = compare_versions(Report.model_validate(raw), plots=True)
    rows = {(c.check, r.name): r for c in cmp.checks for r in c.rows}
    accuracy = rows[("evasion.pgd", "clean_accuracy")]
    robustness = rows[("evasion.pgd", "robust_accuracy@eps=0.1")]
    leakage = [r for (check, _), r in rows.items() if check == "membership.threshold"]
    for row in (accuracy, robustness):
        assert row.before is not None and row.after is not None and row.delta is not None
    known = [r for r in leakage if r.before is not None and r.after is not None and r.delta is not None]
    assert any("auc" in r.name for r in known), leakage  # membership leakage, teacher vs student
    assert accuracy.after is not None and accuracy.after > 0.8  # the student still works
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="versions"' in html and 'data-plot="versions/digits/digits.v2"' in html
