"""Integer features under an L2 budget: rounding never pushes a returned point out of the ε-ball.

Raw scikit-learn digits (pixel values 0..16) declared as 64 *integer* features, so every value of
every adversarial example is rounded: the worst case for rounding on the ε-sphere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import LabelOnly

from bastion.assess.evasion._common import L2_TOL, InputBounds, rng_for
from bastion.assess.evasion.hopskipjump_l2 import HopSkipJumpL2
from bastion.assess.evasion.pgd_l2 import PGDL2
from bastion.assess.evasion.square_l2 import SquareAttackL2
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.check import CheckContext, Split
from bastion.core.config import Asset, Feature, InputSpec, ProjectConfig
from bastion.targets.base import Target

pytest.importorskip("sklearn")


def _spec(unit: str) -> InputSpec:
    feats = [Feature(name=f"px{i}", min=0.0, max=16.0, type="integer") for i in range(64)]
    return InputSpec(shape=[64], features=feats, eps_unit=unit)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def raw_digits() -> tuple[Target, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from bastion.targets.sklearn_target import SklearnTarget

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    model = LogisticRegression(max_iter=300).fit(x[:1000], y[:1000])
    target = SklearnTarget(model, name="raw-digits", input_shape=(64,), num_classes=10)
    xt, yt = x[1000:1060], y[1000:1060]
    keep = np.asarray(target.predict_label(xt)) == yt
    return target, xt[keep], yt[keep]


def _bounds(unit: str) -> InputBounds:
    from bastion.assess.evasion._common import resolve_bounds

    return resolve_bounds(_spec(unit), (64,), None)


def test_finalize_l2_keeps_every_row_in_the_ball() -> None:
    rng = np.random.default_rng(0)
    b = _bounds("absolute")
    x = rng.integers(0, 17, size=(200, 64)).astype(np.float32)
    eps = 3.0
    d = rng.standard_normal((200, 64))
    d *= eps / np.linalg.norm(d, axis=1, keepdims=True)  # exactly on the sphere
    cand = x + d
    low, high = b.box(x, eps)
    plain = b.finalize(cand, low, high)
    assert (b.l2(plain, x) > eps * (1 + L2_TOL)).sum() > 50  # the bug: nearest rounding leaves the ball
    out = b.finalize_l2(cand, x, low, high, eps)
    assert np.all(b.l2(out, x) <= eps * (1 + L2_TOL))
    assert np.array_equal(out, np.rint(out))  # still integers
    assert np.all(out >= low) and np.all(out <= high)
    inside = b.l2(plain, x) <= eps * (1 + L2_TOL)
    np.testing.assert_array_equal(out[inside], plain[inside])  # rows already inside: untouched
    # minimal change: fewer values differ from nearest rounding than toward-clean rounding everywhere
    toward = np.where(cand >= x, np.floor(cand), np.ceil(cand))
    over = ~inside
    assert (out[over] != plain[over]).sum() < (toward[over] != plain[over]).sum()
    assert (b.l2(out[over], x[over]) > 0).all()  # the perturbation is kept, not dropped


def test_finalize_l2_falls_back_to_the_clean_row_off_the_integer_grid() -> None:
    b = _bounds("absolute")
    x = np.full((1, 64), 0.5, dtype=np.float32)  # clean values off the integer grid
    eps = 1.0
    low, high = b.box(x, eps)  # every value must become 0 or 1: norm 0.5·8 = 4 > ε
    out = b.finalize_l2(x + 0.1, x, low, high, eps)
    np.testing.assert_array_equal(out, x)


def _ctx(target: Target, x: np.ndarray, y: np.ndarray, unit: str, params: dict[str, Any]) -> CheckContext:
    split = Split(x=x, y=y, index=np.arange(len(x)))
    asset = Asset(name="m", kind="model", path="m.bin", task="classification", input=_spec(unit))
    return CheckContext(
        asset=asset,
        config=ProjectConfig(version=1),
        base_dir=Path("."),
        budget=Budget(),
        params=params,  # type: ignore[arg-type]
        thresholds=[],
        seed=0,
        target=target,
        data={"test": split},
    )


CASES = [
    (PGDL2, {"steps": 10}, "absolute", 4.0, False),
    (SquareAttackL2, {"n_queries": 60}, "absolute", 4.0, False),
    (HopSkipJumpL2, {"max_queries": 150}, "absolute", 4.0, True),
    (PGDL2, {"steps": 10}, "fraction", 0.25, False),
    (HopSkipJumpL2, {"max_queries": 150}, "fraction", 0.25, True),
]


@pytest.mark.parametrize(("plugin", "params", "unit", "eps", "labels"), CASES)
def test_every_l2_attack_returns_integer_points_inside_the_ball(
    raw_digits: Any, plugin: Any, params: dict[str, Any], unit: str, eps: float, labels: bool
) -> None:
    target, x, y = raw_digits
    if labels:
        target = LabelOnly(target)
    check = plugin()
    ctx = _ctx(target, x, y, unit, params)
    ctx.params = plugin.parse_params(params)
    b = _bounds(unit)
    meter = BudgetMeter(Budget())
    with check.engine(ctx, meter, b, rng_for(0, 1)) as eng:
        out = eng.attack(x, y, eps, 1)
    norms = b.l2(out.x_adv, x)
    assert norms.max() <= eps * (1 + L2_TOL)
    assert np.array_equal(out.x_adv, np.rint(out.x_adv))
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 16
    # success is what the model says of the returned (rounded) point
    wrong = np.asarray(raw_digits[0].predict_label(out.x_adv)) != y
    np.testing.assert_array_equal(wrong[out.success], True)
