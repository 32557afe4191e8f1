"""The new evasion metrics render in the HTML report; clean and robust accuracy share one plot."""

from __future__ import annotations

from typing import Any

from tests.report.conftest import make_report

from bastion.assess.evasion.cw_l2 import CWL2, MEDIAN_L2
from bastion.assess.evasion.square_l2 import SquareAttackL2
from bastion.core.budget import Budget
from bastion.report import report_to_html
from bastion.report._plots import _axis_key


def test_new_metrics_render_and_accuracies_share_axes(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    budget = Budget(samples=20)
    cw = CWL2().run(
        make_ctx(
            CWL2,
            digits_target,
            digits,
            params={"eps": [1.0], "steps": 20, "binary_search_steps": 2},
            budget=budget,
            thresholds=[],
        )
    )
    sq = SquareAttackL2().run(
        make_ctx(
            SquareAttackL2,
            digits_target,
            digits,
            params={"eps": [1.0], "n_queries": 20},
            budget=budget,
            thresholds=[],
        )
    )
    for res in (cw, sq):
        assert _axis_key(res.series["robust_accuracy"]) == _axis_key(res.series["clean_accuracy"])
        assert res.series["robust_accuracy"].y_label == "accuracy"
    base = make_report()
    html = report_to_html(base.model_copy(update={"checks": [cw, sq], "findings": []}))
    assert MEDIAN_L2 in html
    assert "median_queries_successful@eps=1" in html
    assert 'data-plot="evasion.cw-l2/model"' in html and 'data-plot="evasion.square-l2/model"' in html
