"""Issue 5's headline: PGD-AT on the clinic digits model, judged by ``bastion assess`` before/after.

``bastion harden pgd-at --asset digits`` must raise worst-case robust accuracy at ε=0.1 by at
least 30 points with clean accuracy within 5 points. The worst case is ``evasion.worst-case``
(APGD-CE → APGD-DLR → Square per sample) when it reports ε=0.1, and never more than
``evasion.pgd``'s robust accuracy at ε=0.1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion import api
from bastion.cli.main import run

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ONLY = ("evasion.pgd", "evasion.worst-case")


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = api.build_demo(tmp_path_factory.mktemp("clinic") / "clinic")
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    # the worst case at ε=0.1 within seconds: fewer APGD steps and Square queries than AutoAttack.
    data["checks"]["evasion.worst-case"] = {
        "params": {"eps": [0.1], "steps": 20, "square_queries": 100},
        "budget": {"queries": 200_000},
    }
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg


def _assess(cfg: Path, out: Path, db: str) -> dict[str, Any]:
    args = ["assess", "-c", str(cfg), "-o", str(out), "--budget", "quick", "--fail-on", "none", "--db", db]
    args += ["--asset", "digits"] + [a for pid in ONLY for a in ("--only", pid)]
    assert run(args) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report


def _robust(report: dict[str, Any], asset: str) -> tuple[float, float]:
    """(clean accuracy, worst robust accuracy at ε=0.1 over the checks that report it)."""
    checks = {c["id"]: c for c in report["checks"] if c["asset"] == asset and c["status"] == "ok"}
    assert set(checks) == set(ONLY), [(c["id"], c["status"]) for c in report["checks"]]
    robust = {pid: c["metrics"]["robust_accuracy@eps=0.1"] for pid, c in checks.items()}
    assert None not in robust.values(), robust  # no ε left unmeasured (budget)
    # the worst case is per sample over APGD-CE, APGD-DLR and Square: never above PGD alone
    assert robust["evasion.worst-case"] <= robust["evasion.pgd"] + 0.02
    clean = checks["evasion.pgd"]["metrics"]["clean_accuracy"]
    assert clean == checks["evasion.worst-case"]["metrics"]["clean_accuracy"]
    return float(clean), float(min(robust.values()))


def test_pgd_at_raises_worst_case_robust_accuracy(clinic: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'bastion.db'}"
    before = _assess(clinic, tmp_path / "before", db)
    assert {a["name"] for a in before["assets"]} == {"digits"}
    t0 = time.monotonic()
    code = run(
        [
            "harden",
            "pgd-at",
            "--asset",
            "digits",
            "-c",
            str(clinic),
            "--db",
            db,
            "-p",
            "steps=5",
            "-p",
            "eval_steps=0",
        ]
    )
    harden_s = time.monotonic() - t0
    assert code == 0
    after = _assess(clinic, tmp_path / "after", db)
    assert {a["name"] for a in after["assets"]} == {"digits", "digits.v2"}

    clean0, robust0 = _robust(after, "digits")
    clean1, robust1 = _robust(after, "digits.v2")
    print(
        f"clean {clean0:.3f} -> {clean1:.3f}; worst robust@0.1 {robust0:.3f} -> {robust1:.3f}; "
        f"harden {harden_s:.1f} s"
    )
    assert robust1 - robust0 >= 0.30
    assert abs(clean1 - clean0) <= 0.05
    assert _robust(before, "digits") == (clean0, robust0)  # the original is assessed the same way

    html = (tmp_path / "after" / "report.html").read_text(encoding="utf-8")
    assert 'id="versions"' in html and 'data-plot="versions/digits/digits.v2"' in html
