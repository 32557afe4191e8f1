"""Every registered evasion attack reports the same core metrics, per ε, and the report plots them."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from tests.report.conftest import make_report

from bastion.assess.evasion import PLUGIN_MODULES
from bastion.assess.evasion._common import PER_EPS_METRICS, metric_key
from bastion.core.budget import Budget
from bastion.core.registry import attacks
from bastion.core.results import CheckResult
from bastion.report import report_to_html

pytest.importorskip("torch")

for _m in PLUGIN_MODULES:
    importlib.import_module(_m)

#: Cheap parameters per attack; an attack missing here fails the coverage test below.
PARAMS: dict[str, dict[str, Any]] = {
    "evasion.fgsm": {"eps": [0.1, 0.3]},
    "evasion.pgd": {"eps": [0.1, 0.3], "steps": 3},
    "evasion.pgd-l2": {"eps": [0.5, 1.5], "steps": 3},
    "evasion.apgd-ce": {"eps": [0.1, 0.3], "steps": 3},
    "evasion.apgd-dlr": {"eps": [0.1, 0.3], "steps": 3},
    "evasion.cw-l2": {"eps": [0.5, 1.5], "steps": 5, "binary_search_steps": 1},
    "evasion.square": {"eps": [0.1, 0.3], "n_queries": 12},
    "evasion.square-l2": {"eps": [0.5, 1.5], "n_queries": 12},
    "evasion.hopskipjump": {"eps": [0.1, 0.3], "max_queries": 40, "init_evals": 5, "max_evals": 10},
    "evasion.hopskipjump-l2": {"eps": [0.5, 1.5], "max_queries": 40, "init_evals": 5, "max_evals": 10},
    "evasion.worst-case": {"eps": [0.1, 0.3], "steps": 3, "square_queries": 12},
}
EVASION_IDS = sorted(pid for pid, _ in attacks.items() if pid.startswith("evasion."))

_RESULTS: dict[str, CheckResult] = {}


def test_every_evasion_attack_is_covered() -> None:
    assert set(EVASION_IDS) == set(PARAMS)


def _run(pid: str, digits: Any, digits_target: Any, make_ctx: Any) -> CheckResult:
    if pid not in _RESULTS:
        plugin = attacks.get(pid)
        ctx = make_ctx(
            plugin, digits_target, digits, params=PARAMS[pid], budget=Budget(samples=8), thresholds=[]
        )
        _RESULTS[pid] = plugin().run(ctx)
    return _RESULTS[pid]


@pytest.mark.parametrize("pid", EVASION_IDS)
def test_result_carries_every_core_metric(pid: str, digits: Any, digits_target: Any, make_ctx: Any) -> None:
    res = _run(pid, digits, digits_target, make_ctx)
    assert res.status == "ok"
    clean = res.metrics["clean_accuracy"]
    assert clean is not None and 0 < clean <= 1
    eps_grid = PARAMS[pid]["eps"]
    for eps in eps_grid:
        for name in PER_EPS_METRICS:
            assert metric_key(name, eps) in res.metrics, (pid, name, eps)
        robust = res.metrics[metric_key("robust_accuracy", eps)]
        asr = res.metrics[metric_key("attack_success_rate", eps)]
        qps = res.metrics[metric_key("queries_per_sample", eps)]
        assert robust is not None and asr is not None
        assert robust <= clean
        assert asr == pytest.approx(1 - robust / clean)  # success rate among the clean-correct
        assert metric_key("robust_accuracy", eps) in res.intervals
        # queries: spent on the samples attacked at this ε (cw-l2 reuses its first optimisation)
        if eps == eps_grid[0] or pid != "evasion.cw-l2":
            assert qps is None or qps > 0
        if asr > 0:
            median = res.metrics[metric_key("median_perturbation", eps)]
            assert median is not None and 0 < median <= eps * (1 + 1e-5)
    assert res.series["robust_accuracy"].x == sorted(eps_grid)
    assert res.budget_used is not None and res.budget_used.queries > 0 and not res.budget_used.exhausted


def test_html_report_plots_every_attack(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    results = [_run(pid, digits, digits_target, make_ctx) for pid in EVASION_IDS]
    html = report_to_html(make_report().model_copy(update={"checks": results, "findings": []}))
    for pid in EVASION_IDS:
        assert f'data-plot="{pid}/model"' in html, pid
    for name in PER_EPS_METRICS:
        assert name in html
    assert "clean_accuracy" in html
