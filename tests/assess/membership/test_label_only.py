"""membership.label-only: boundary-distance leakage from labels alone, under the query budget."""

from __future__ import annotations

import numpy as np

from bastion.assess.evasion._common import resolve_bounds
from bastion.assess.membership.label_only import MembershipLabelOnly, boundary_distances
from bastion.core.budget import Budget
from bastion.core.capability import Capability
from bastion.core.config import InputSpec
from bastion.core.registry import attacks


def test_registered_and_needs_labels_only() -> None:
    assert attacks.get("membership.label-only") is MembershipLabelOnly
    assert MembershipLabelOnly.requires == frozenset()
    assert any("2007.14321" in r for r in MembershipLabelOnly.references)


def test_overfit_label_only_target_leaks(overfit_digits, make_ctx) -> None:
    target = overfit_digits.target(label_only=True)
    assert Capability.PROBABILITIES not in target.capabilities
    ctx = make_ctx(MembershipLabelOnly, overfit_digits, target=target)
    assert MembershipLabelOnly().applicable(ctx) is None
    assert MembershipLabelOnly().preflight(ctx) == []
    r = MembershipLabelOnly().run(ctx)
    assert r.status == "ok"
    auc = r.metrics["auc"]
    assert auc is not None and auc > 0.7  # measured 0.779
    assert r.intervals["auc"][0] > 0.6
    med_in, med_out = r.metrics["median_distance@members"], r.metrics["median_distance@nonmembers"]
    assert med_in is not None and med_out is not None and med_in > med_out
    assert "membership.label-only.membership-leakage" in {f.rule_id for f in r.findings}
    exposed = next(iter(r.findings)).evidence["exposed_records"]
    assert len(exposed) == 10 and set(exposed) <= set(overfit_digits.train.tolist())
    # Worst case 1 + 8 × (1 + 7) = 65 queries per record, 400 records.
    assert 400 < r.budget_used.queries <= 400 * 65
    assert r.metrics["tpr@fpr=0.001"] is None and "tpr@fpr=0.001" in r.notes


def test_regularised_label_only_target_does_not_leak(regularised_cancer, make_ctx) -> None:
    ctx = make_ctx(MembershipLabelOnly, regularised_cancer, target=regularised_cancer.target(label_only=True))
    r = MembershipLabelOnly().run(ctx)
    auc = r.metrics["auc"]
    assert auc is not None and 0.35 < auc < 0.6  # measured 0.450
    assert r.findings == []


def test_query_budget_caps_the_sample_and_is_respected(overfit_digits, make_ctx) -> None:
    budget = Budget(queries=65 * 2 * 30, samples=2000)
    ctx = make_ctx(
        MembershipLabelOnly, overfit_digits, target=overfit_digits.target(label_only=True), budget=budget
    )
    r = MembershipLabelOnly().run(ctx)
    assert r.status == "ok"
    assert r.budget_used.queries <= budget.queries
    assert r.budget_used.samples == 30 and "30 members" in r.notes["sample"]


def test_budget_below_one_pair_is_a_preflight_error(overfit_digits, make_ctx) -> None:
    ctx = make_ctx(
        MembershipLabelOnly,
        overfit_digits,
        target=overfit_digits.target(label_only=True),
        budget=Budget(queries=100),
    )
    problems = MembershipLabelOnly().preflight(ctx)
    assert len(problems) == 1 and "budget.queries = 100" in problems[0]


def test_deterministic_under_a_seed(overfit_digits, make_ctx) -> None:
    def run() -> dict[str, float | None]:
        ctx = make_ctx(
            MembershipLabelOnly,
            overfit_digits,
            target=overfit_digits.target(label_only=True),
            budget=Budget(samples=50),
        )
        return MembershipLabelOnly().run(ctx).metrics

    assert run() == run()


def test_boundary_distance_of_a_linear_rule_is_exact_along_an_axis() -> None:
    """A 1-D threshold at 0.3: a point at 0.8 is 0.5 from the boundary, the bisection finds it."""
    bounds = resolve_bounds(InputSpec(shape=[1], range=(0.0, 1.0)), (1,), None)

    def predict(x: np.ndarray) -> np.ndarray:
        return (x[:, 0] > 0.3).astype(np.int64)

    x = np.array([[0.8], [0.1], [0.9]], dtype=np.float32)
    y = np.array([1, 1, 1])
    dist, correct = boundary_distances(
        predict,
        x,
        y,
        bounds,
        directions=4,
        steps=20,
        max_distance=1.0,
        aggregate="min",
        rng=np.random.default_rng(0),
    )
    assert correct.tolist() == [True, False, True]
    assert dist[1] == 0.0
    # Every 1-D direction is ±1: toward the boundary the distance is 0.5 (0.6); away it never flips.
    assert abs(dist[0] - 0.5) < 1e-4 and abs(dist[2] - 0.6) < 1e-4
