"""ε units, input bounds, the ε grid and the evaluation set shared by the evasion attacks."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.assess.evasion._common import (
    DEFAULT_GRIDS,
    DEFAULT_THRESHOLD_EPS,
    eps_grid,
    evaluation_set,
    metric_key,
    parse_eps_metric,
    resolve_bounds,
)
from bastion.assess.evasion.square import margin_loss, p_selection
from bastion.core.check import Split
from bastion.core.config import Feature, InputSpec, Threshold
from bastion.core.errors import ConfigError


def _tabular_spec() -> InputSpec:
    return InputSpec(
        shape=[4],
        features=[
            Feature(name="age", min=0, max=100, type="integer"),
            Feature(name="sex", min=0, max=1, type="categorical", categories=[0, 1]),
            Feature(name="height", min=100, max=200, immutable=True),
            Feature(name="weight"),  # no declared range: from the train split
        ],
    )


def test_fraction_bounds_from_features_and_train_split() -> None:
    train = np.array([[10, 0, 150, 40.0], [20, 1, 160, 90.0]], dtype=np.float32)
    b = resolve_bounds(_tabular_spec(), (4,), train)
    assert b.unit == "fraction"
    np.testing.assert_array_equal(b.lo, [0, 0, 100, 40])
    np.testing.assert_array_equal(b.hi, [100, 1, 200, 90])
    np.testing.assert_array_equal(b.scale, [100, 1, 100, 50])
    np.testing.assert_array_equal(b.mutable, [True, False, False, True])
    np.testing.assert_array_equal(b.integer, [True, False, False, False])
    text = " ".join(b.notes)
    assert "weight" in text and "train split" in text
    assert "sex" in text and "height" in text and "age" in text
    np.testing.assert_allclose(b.eps_values(0.1), [10, 0, 0, 5])


def test_absolute_bounds_from_range() -> None:
    b = resolve_bounds(InputSpec(shape=[1, 8, 8], range=(0.0, 1.0)), (1, 8, 8), None)
    assert b.unit == "absolute" and b.shape == (1, 8, 8)
    assert np.all(b.scale == 1.0) and np.all(b.mutable) and b.max_eps() == 1.0
    assert b.notes == ()


def test_explicit_eps_unit_overrides_the_shape_default() -> None:
    spec = InputSpec(shape=[2], range=(0.0, 10.0), eps_unit="absolute")
    b = resolve_bounds(spec, (2,), None)
    assert b.unit == "absolute" and np.all(b.scale == 1.0) and b.max_eps() == 10.0


def test_missing_spec_uses_the_train_split_and_says_so() -> None:
    train = np.array([[0.0, 5.0], [2.0, 7.0]], dtype=np.float32)
    b = resolve_bounds(None, (2,), train)
    np.testing.assert_array_equal(b.lo, [0, 5])
    np.testing.assert_array_equal(b.hi, [2, 7])
    assert b.unit == "fraction"
    assert "no declared input range" in b.notes[0]


def test_unresolvable_bounds_list_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_bounds(None, (3,), None)
    assert "no declared range" in str(err.value)
    bad = InputSpec(shape=[4], features=[Feature(name=f"f{i}", min=0, max=1) for i in range(4)])
    with pytest.raises(ConfigError) as err:
        resolve_bounds(bad, (5,), None)
    assert len(err.value.problems) == 2  # shape and feature count


@given(
    x=st.lists(st.floats(-20, 120, allow_nan=False, width=32), min_size=4, max_size=4),
    cand=st.lists(st.floats(-500, 500, allow_nan=False, width=32), min_size=4, max_size=4),
    eps=st.floats(0.001, 1.0),
)
def test_box_and_finalize_keep_every_rule(x: list[float], cand: list[float], eps: float) -> None:
    train = np.array([[0, 0, 100, 40.0], [100, 1, 200, 90.0]], dtype=np.float32)
    b = resolve_bounds(_tabular_spec(), (4,), train)
    xa = np.array([x], dtype=np.float32)
    xa[0, 0] = np.round(xa[0, 0])  # an integer feature holds an integer
    low, high = b.box(xa, eps)
    out = b.finalize(np.array([cand], dtype=np.float32), low, high)
    e = b.eps_values(eps)
    assert np.all(low <= xa) and np.all(xa <= high)
    assert np.all(out >= low) and np.all(out <= high)
    # inside the ε-ball (float32 rounding of x ± ε aside)
    assert np.all(np.abs(out.astype(np.float64) - xa) <= e + 1e-4 * (1 + np.abs(xa)))
    # inside the declared bounds wherever the clean value is
    inside = (xa >= b.lo) & (xa <= b.hi)
    assert np.all((out >= b.lo - 1e-4) & (out <= b.hi + 1e-4) | ~inside)
    assert out[0, 1] == xa[0, 1] and out[0, 2] == xa[0, 2]  # categorical, immutable
    assert out[0, 0] == np.round(out[0, 0])  # integer
    assert np.all(b.linf(out, xa) <= eps + 1e-4)


def test_linf_is_in_the_eps_unit() -> None:
    b = resolve_bounds(
        InputSpec(shape=[2], features=[Feature(name="a", min=0, max=10), Feature(name="b", min=0, max=100)]),
        (2,),
        None,
    )
    x = np.zeros((2, 2), dtype=np.float32)
    adv = np.array([[1.0, 0.0], [0.0, 20.0]], dtype=np.float32)
    np.testing.assert_allclose(b.linf(adv, x), [0.1, 0.2])


def test_eps_grid_defaults_and_threshold_eps() -> None:
    assert eps_grid(None, "fraction")[0] == list(DEFAULT_GRIDS["fraction"])
    assert eps_grid(None, "absolute")[0] == list(DEFAULT_GRIDS["absolute"])
    # the default thresholds' metric is produced by either default grid
    assert all(DEFAULT_THRESHOLD_EPS in grid for grid in DEFAULT_GRIDS.values())
    th = [
        Threshold(metric="robust_accuracy@eps=0.3", op="lt", value=0.5),
        Threshold(metric="robust_accuracy@eps=0.1", op="lt", value=0.5),
        Threshold(metric="clean_accuracy", op="lt", value=0.5),
    ]
    grid, added = eps_grid([0.1, 0.05, 0.1], "absolute", th)
    assert grid == [0.05, 0.1, 0.3] and added == [0.3]


def test_metric_names_round_trip() -> None:
    assert metric_key("robust_accuracy", 8 / 255) == "robust_accuracy@eps=0.0313725"
    assert parse_eps_metric("robust_accuracy@eps=0.05") == ("robust_accuracy", 0.05)
    assert parse_eps_metric("auc") is None
    assert parse_eps_metric("robust_accuracy@eps=abc") is None


def test_evaluation_set_is_seeded_capped_and_a_copy() -> None:
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 3
    split = Split(x=x, y=y, index=np.arange(100, 120))
    a, b, c = evaluation_set(split, 5, 7), evaluation_set(split, 5, 7), evaluation_set(split, 5, 8)
    assert len(a.x) == 5 and a.y.dtype == np.int64
    np.testing.assert_array_equal(a.index, b.index)
    assert not np.array_equal(a.index, c.index)
    np.testing.assert_array_equal(a.x[:, 0], (a.index - 100) * 2)
    a.x[:] = -1
    assert x.min() == 0  # the split is untouched
    assert len(evaluation_set(split, None, 0).x) == 20
    with pytest.raises(ConfigError):
        evaluation_set(Split(x=x, y=None, index=np.arange(20)), 5, 0)


def test_p_schedule_halves_and_never_grows() -> None:
    ps = [p_selection(0.1, i, 1000) for i in range(1000)]
    assert ps[0] == 0.1 and ps[-1] == pytest.approx(0.1 / 512)
    assert all(b <= a for a, b in itertools.pairwise(ps))
    assert p_selection(0.1, 2, 1000) == 0.05  # 20/10000 of the run: past the first edge


def test_margin_loss_is_negative_exactly_when_misclassified() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.5, 0.0]])
    y = np.array([0, 0, 2])
    m = margin_loss(proba, y)
    assert m[0] == pytest.approx(np.log(0.7 / 0.2))
    assert m[1] < 0 and m[2] < 0


def test_importing_the_evasion_plugins_loads_no_framework() -> None:
    code = (
        "import json, sys\n"
        "import bastion.assess.evasion, bastion.assess.evasion.pgd, bastion.assess.evasion.square\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
