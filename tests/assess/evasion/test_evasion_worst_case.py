"""``evasion.worst-case`` and ``evasion.hopskipjump`` on the digits CNN and the cancer models."""

from __future__ import annotations

from typing import Any

import pytest
from tests.assess.evasion.conftest import LabelOnly, ProbaOnly, RecordingTarget, robust

from bastion.assess.evasion._common import metric_key
from bastion.assess.evasion.apgd_ce import APGDCE
from bastion.assess.evasion.hopskipjump import HopSkipJump
from bastion.assess.evasion.pgd import PGD
from bastion.assess.evasion.square import SquareAttack
from bastion.assess.evasion.worst_case import WorstCase
from bastion.core.budget import Budget
from bastion.core.registry import attacks

torch = pytest.importorskip("torch")


def test_registered() -> None:
    assert attacks.get("evasion.worst-case") is WorstCase
    assert attacks.get("evasion.hopskipjump") is HopSkipJump
    assert HopSkipJump.requires == frozenset()


def test_worst_case_at_most_every_single_attack(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    eps = 0.1
    budget = Budget(samples=80, queries=500_000)
    singles = {
        "pgd": PGD().run(
            make_ctx(
                PGD, digits_target, digits, params={"eps": [eps], "steps": 20}, budget=budget, thresholds=[]
            )
        ),
        "apgd": APGDCE().run(
            make_ctx(
                APGDCE,
                digits_target,
                digits,
                params={"eps": [eps], "steps": 20},
                budget=budget,
                thresholds=[],
            )
        ),
        "square": SquareAttack().run(
            make_ctx(
                SquareAttack,
                digits_target,
                digits,
                params={"eps": [eps], "n_queries": 100},
                budget=budget,
                thresholds=[],
            )
        ),
    }
    worst = WorstCase().run(
        make_ctx(
            WorstCase,
            digits_target,
            digits,
            params={"eps": [eps], "steps": 20, "square_queries": 100},
            budget=budget,
            thresholds=[],
        )
    )
    w = robust(worst, eps)
    assert w <= min(robust(r, eps) for r in singles.values())
    broken = sum(worst.metrics[metric_key(f"broken_by_{s}", eps)] for s in ("apgd_ce", "apgd_dlr", "square"))  # type: ignore[misc]
    assert worst.metrics["clean_accuracy"] - w == pytest.approx(broken / 80)  # type: ignore[operator]
    # the first stage is exactly evasion.apgd-ce (same samples, seed and parameters)
    first = worst.metrics[metric_key("broken_by_apgd_ce", eps)]
    assert robust(singles["apgd"], eps) == pytest.approx(worst.metrics["clean_accuracy"] - first / 80)  # type: ignore[operator]
    assert worst.notes["stages"] == "apgd_ce → apgd_dlr → square"


def test_worst_case_black_box_runs_square_only(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    target = ProbaOnly(digits_target)
    res = WorstCase().run(
        make_ctx(
            WorstCase, target, digits, params={"eps": [0.1], "square_queries": 50}, budget=Budget(samples=30)
        )
    )
    assert res.notes["stages"].startswith("square; left out: apgd_ce")
    assert res.metrics[metric_key("broken_by_apgd_ce", 0.1)] is None
    assert robust(res, 0.1) < res.metrics["clean_accuracy"]  # type: ignore[operator]


def test_hopskipjump_label_only(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    rec = RecordingTarget(digits_target)
    target = LabelOnly(rec)
    res = HopSkipJump().run(
        make_ctx(
            HopSkipJump,
            target,
            digits,
            params={"eps": [0.1, 0.2], "max_queries": 300},
            budget=Budget(samples=30),
        )
    )
    clean = res.metrics["clean_accuracy"]
    assert clean is not None
    assert robust(res, 0.2) <= robust(res, 0.1) < clean
    assert robust(res, 0.2) < 0.5 * clean
    qps = res.metrics[metric_key("queries_per_sample", 0.1)]
    assert qps is not None and qps <= 300
    for rows in rec.rows:
        assert rows.min() >= 0.0 and rows.max() <= 1.0


def test_hopskipjump_budget_preflight(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(HopSkipJump, digits_target, digits, budget=Budget(samples=30, queries=200))
    assert any("budget.queries" in p for p in HopSkipJump().preflight(ctx))
