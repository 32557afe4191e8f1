"""extraction.surrogate: fidelity of a label-query clone vs N, under the budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bastion.assess.extraction.surrogate import SurrogateExtraction, SurrogateParams
from bastion.core import atlas
from bastion.core.budget import Budget
from bastion.core.capability import Capability
from bastion.core.check import Split
from bastion.core.config import Feature, InputSpec
from bastion.core.errors import PluginError
from bastion.core.findings import Threat
from bastion.core.registry import attacks
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

QUICK = {"queries": [20, 300], "hidden_layer_sizes": [32], "max_iter": 200}


def _comparable(r: CheckResult) -> dict[str, object]:
    d = r.model_dump(mode="json")
    d.pop("seconds")
    d["budget_used"].pop("seconds")
    return d


def test_registered_with_contract_attributes() -> None:
    assert attacks.get("extraction.surrogate") is SurrogateExtraction
    assert SurrogateExtraction.threat is Threat.EXTRACTION
    assert SurrogateExtraction.requires == frozenset()
    assert SurrogateExtraction.atlas == ("AML.T0024.002", "AML.T0005.001")
    assert all(atlas.is_known(t) for t in SurrogateExtraction.atlas)
    assert any("1609.02943" in r for r in SurrogateExtraction.references)
    assert any("1812.02766" in r for r in SurrogateExtraction.references)
    (th,) = SurrogateExtraction.default_thresholds
    assert (th.metric, th.op, th.value, th.rule) == ("fidelity@max_queries", "ge", 0.9, "high-fidelity-clone")


def test_image_model_clone_improves_with_queries(digits_lr, make_ctx) -> None:
    target = digits_lr.target()
    ctx = make_ctx(SurrogateExtraction, digits_lr, params=QUICK, budget=Budget(samples=200), target=target)
    r = SurrogateExtraction().run(ctx)
    assert r.status == "ok"
    small = r.metrics["fidelity@queries=20,pool=natural"]
    large = r.metrics["fidelity@queries=300,pool=natural"]
    assert small is not None and large is not None
    assert large > small + 0.1  # measured 0.50 -> 0.94
    assert large >= 0.85
    lo, hi = r.intervals["fidelity@queries=300,pool=natural"]
    assert lo <= large <= hi
    assert r.metrics["target_accuracy"] is not None and r.metrics["target_accuracy"] > 0.9
    assert r.metrics["accuracy@queries=300,pool=natural"] is not None
    # Uniform noise within [0, 16] is a poor query pool for digits.
    syn = r.metrics["fidelity@queries=300,pool=synthetic"]
    assert syn is not None and syn < large
    assert "declared input range [0, 16]" in r.notes["pool=synthetic"]
    series = r.series["fidelity_natural"]
    assert series.x == [20.0, 300.0] and series.log_x and series.x_label == "queries"
    assert series.y == [small, large]
    assert set(r.series) == {"fidelity_natural", "fidelity_synthetic"}
    # Queries: 200 fidelity labels + 300 per pool (smaller N reuse a prefix).
    assert target.queries == 200 + 300 + 300
    assert r.budget_used is not None and r.budget_used.queries == target.queries


def test_high_fidelity_clone_is_a_finding(cancer_lr, make_ctx) -> None:
    r = SurrogateExtraction().run(
        make_ctx(SurrogateExtraction, cancer_lr, params={**QUICK, "pools": ["natural"]})
    )
    assert r.metrics["fidelity@max_queries"] == r.metrics["fidelity@queries=285,pool=natural"]
    assert "285 by the budget or pool size" in r.notes["grid_natural"]  # only 285 train rows
    value = r.metrics["fidelity@max_queries"]
    assert value is not None and value >= 0.9
    (f,) = r.findings
    assert f.rule_id == "extraction.surrogate.high-fidelity-clone"
    assert f.severity is Severity.MEDIUM and f.threat is Threat.EXTRACTION
    assert f.atlas == ["AML.T0024.002", "AML.T0005.001"]
    assert f.evidence["pool"] == "natural" and f.evidence["queries"] == 285
    assert f.evidence["interval"] == list(r.intervals["fidelity@max_queries"])


def test_label_only_target_works(cancer_lr, make_ctx) -> None:
    target = cancer_lr.target(label_only=True)
    assert Capability.PROBABILITIES not in target.capabilities
    check = SurrogateExtraction()
    ctx = make_ctx(SurrogateExtraction, cancer_lr, params={**QUICK, "pools": ["natural"]}, target=target)
    assert check.applicable(ctx) is None
    r = check.run(ctx)
    assert r.status == "ok" and r.metrics["fidelity@max_queries"] is not None


def test_budget_caps_the_grid(digits_lr, make_ctx) -> None:
    target = digits_lr.target()
    budget = Budget(queries=500, samples=100)
    ctx = make_ctx(SurrogateExtraction, digits_lr, params=QUICK, budget=budget, target=target)
    r = SurrogateExtraction().run(ctx)
    # 100 fidelity labels; 400 left, 200 per pool: the grid becomes [20, 200].
    assert "fidelity@queries=200,pool=natural" in r.metrics
    assert "fidelity@queries=300,pool=natural" not in r.metrics
    assert "capped at 200" in r.notes["grid_synthetic"]
    assert target.queries == 100 + 200 + 200 <= 500
    assert r.budget_used is not None and r.budget_used.queries == target.queries
    assert r.budget_used.samples == 100


def test_budget_too_small_is_a_preflight_problem(cancer_lr, make_ctx) -> None:
    check = SurrogateExtraction()
    ok = make_ctx(SurrogateExtraction, cancer_lr, params=QUICK)
    assert check.preflight(ok) == []
    tight = make_ctx(SurrogateExtraction, cancer_lr, params=QUICK, budget=Budget(queries=210, samples=200))
    problems = check.preflight(tight)
    assert len(problems) == 1 and "no surrogate can be trained" in problems[0]
    r = check.run(tight)
    assert r.status == "skipped" and "fewer than 10 queries" in (r.reason or "")


def test_natural_pool_is_disjoint_from_the_fidelity_set(cancer_lr, make_ctx) -> None:
    everything = np.arange(len(cancer_lr.x))
    data = {
        **cancer_lr.data(),
        "population": Split(x=cancer_lr.x, y=None, index=everything),
    }
    target = cancer_lr.recording()
    ctx = make_ctx(
        SurrogateExtraction,
        cancer_lr,
        params={**QUICK, "pools": ["natural"]},
        target=target,
        data=data,
        budget=Budget(samples=50),
    )
    r = SurrogateExtraction().run(ctx)
    assert f"{len(cancer_lr.test)} rows also in the fidelity set removed" in r.notes["pool=natural"]
    fidelity_batch, natural_batch = target.batches
    assert len(fidelity_batch) == 50 and len(natural_batch) == 285
    test_rows = {row.tobytes() for row in cancer_lr.x[cancer_lr.test]}
    assert not any(row.tobytes() in test_rows for row in natural_batch)


def test_synthetic_queries_stay_within_declared_features(cancer_lr, make_ctx) -> None:
    features = [Feature(name=f"f{i}", min=0.0, max=float(i + 1)) for i in range(29)]
    features.append(Feature(name="grade", type="integer", min=1, max=3))
    spec = InputSpec(shape=[30], features=features)
    target = cancer_lr.recording()
    ctx = make_ctx(
        SurrogateExtraction,
        cancer_lr,
        params={**QUICK, "pools": ["synthetic"]},
        target=target,
        input_spec=spec,
        budget=Budget(samples=50),
    )
    r = SurrogateExtraction().run(ctx)
    assert r.status == "ok" and set(r.series) == {"fidelity_synthetic"}
    assert r.notes["pool=synthetic"] == "uniform within the declared feature ranges"
    _, synthetic = target.batches
    assert synthetic.shape == (300, 30) and synthetic.dtype == np.float32
    assert (synthetic[:, :29] >= 0).all() and (synthetic[:, :29] <= np.arange(1, 30)).all()
    assert set(np.unique(synthetic[:, 29]).tolist()) <= {1.0, 2.0, 3.0}


def test_deterministic_under_seed_and_json(cancer_lr, make_ctx) -> None:
    params = {"queries": [20, 60], "hidden_layer_sizes": [16], "max_iter": 100}
    a = SurrogateExtraction().run(make_ctx(SurrogateExtraction, cancer_lr, params=params, seed=7))
    b = SurrogateExtraction().run(make_ctx(SurrogateExtraction, cancer_lr, params=params, seed=7))
    assert _comparable(a) == _comparable(b)
    text = json.dumps(a.model_dump(mode="json"), allow_nan=False)
    assert CheckResult.model_validate_json(text).metrics == a.metrics


def test_not_applicable_without_fidelity_set(cancer_lr, make_ctx) -> None:
    ctx = make_ctx(SurrogateExtraction, cancer_lr, data={"train": cancer_lr.data()["train"]})
    assert "'test'" in (SurrogateExtraction().applicable(ctx) or "")


def test_params_validated() -> None:
    with pytest.raises(PluginError, match="queries"):
        SurrogateExtraction.parse_params({"queries": [5]})
    with pytest.raises(PluginError, match="pools"):
        SurrogateExtraction.parse_params({"pools": ["web"]})
    p = SurrogateExtraction.parse_params({"queries": [500, 50, 50]})
    assert isinstance(p, SurrogateParams) and p.queries == [50, 500] and p.pools == ["natural", "synthetic"]
