"""Silent misuse caught before a number is reported: logits declared as probabilities, inputs off range."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import Data

from bastion.assess.evasion._common import check_probabilities, probability_error
from bastion.assess.evasion.pgd import PGD
from bastion.assess.evasion.square import SquareAttack
from bastion.assess.evasion.worst_case import WorstCase
from bastion.core.budget import Budget
from bastion.core.check import Split
from bastion.core.errors import TargetError

torch = pytest.importorskip("torch")


def test_probability_error() -> None:
    assert probability_error(np.array([[0.2, 0.8], [0.5, 0.5]])) is None
    msg = probability_error(np.array([[2.0, -1.0], [0.5, 0.5]]))
    assert msg is not None and "logits" in msg and "row 0" in msg
    with pytest.raises(TargetError, match="not a probability vector"):
        check_probabilities(np.array([[3.0, 1.0]]), "m")


@pytest.mark.parametrize("plugin", [SquareAttack, WorstCase, PGD])
def test_logits_declared_as_probabilities(plugin: Any, digits: Data, digits_cnn: Any, make_ctx: Any) -> None:
    from bastion.targets.torch_target import TorchTarget

    wrong = TorchTarget(
        digits_cnn, name="digits", input_shape=(1, 8, 8), num_classes=10, output="probabilities"
    )
    problems = plugin().preflight(make_ctx(plugin, wrong, digits))
    assert any("logits declared as probabilities" in p for p in problems), problems


def test_square_run_refuses_non_probabilities(digits: Data, digits_cnn: Any, make_ctx: Any) -> None:
    from bastion.targets.torch_target import TorchTarget

    wrong = TorchTarget(
        digits_cnn, name="digits", input_shape=(1, 8, 8), num_classes=10, output="probabilities"
    )
    with pytest.raises(TargetError, match="probability"):
        SquareAttack().run(make_ctx(SquareAttack, wrong, digits, budget=Budget(samples=10)))


def test_inputs_in_the_wrong_units(digits: Data, digits_target: Any, make_ctx: Any) -> None:
    scaled = Data(
        train=Split(x=digits.train.x * 16, y=digits.train.y, index=digits.train.index),
        test=Split(x=digits.test.x * 16, y=digits.test.y, index=digits.test.index),
        spec=digits.spec,
    )
    problems = PGD().preflight(make_ctx(PGD, digits_target, scaled))
    assert any("outside the declared range" in p and "wrong units" in p for p in problems), problems


def test_a_few_rows_slightly_off_range_are_noted(digits: Data, digits_target: Any, make_ctx: Any) -> None:
    x = digits.test.x.copy()
    x[:3, 0, 0, 0] = 1.05
    off = Data(
        train=digits.train, test=Split(x=x, y=digits.test.y, index=digits.test.index), spec=digits.spec
    )
    ctx = make_ctx(PGD, digits_target, off, params={"eps": [0.1], "steps": 2}, budget=Budget(samples=len(x)))
    assert PGD().preflight(ctx) == []
    res = PGD().run(ctx)
    assert "outside the declared range" in res.notes["input_range"]


def test_preflight_lists_every_incompatibility_at_once(digits: Data, digits_cnn: Any, make_ctx: Any) -> None:
    """Wrong units, logits declared as probabilities, ε off the range and a tiny budget: all four."""
    from bastion.targets.torch_target import TorchTarget

    wrong = TorchTarget(
        digits_cnn, name="digits", input_shape=(1, 8, 8), num_classes=10, output="probabilities"
    )
    scaled = Data(
        train=Split(x=digits.train.x * 16, y=digits.train.y, index=digits.train.index),
        test=Split(x=digits.test.x * 16, y=digits.test.y, index=digits.test.index),
        spec=digits.spec,
    )
    ctx = make_ctx(
        SquareAttack, wrong, scaled, params={"eps": [0.1, 1.5]}, budget=Budget(samples=50, queries=100)
    )
    problems = SquareAttack().preflight(ctx)
    assert any("outside the declared range" in p for p in problems), problems
    assert any("logits declared as probabilities" in p for p in problems), problems
    assert any("eps[1]" in p and "beyond the input range" in p for p in problems), problems
    assert any(p.startswith("budget.queries: 100") for p in problems), problems
    assert len(problems) == 4


def test_l2_radius_is_checked_against_the_l2_diameter(digits: Data, digits_cnn: Any, make_ctx: Any) -> None:
    """An L2 ε of 2 on 64 values in [0, 1] is legitimate (the box's L2 diameter is 8); 9 is not."""
    from bastion.assess.evasion.hopskipjump_l2 import HopSkipJumpL2
    from bastion.assess.evasion.pgd_l2 import PGDL2
    from bastion.targets.torch_target import TorchTarget

    target = TorchTarget(digits_cnn, name="digits", input_shape=(1, 8, 8), num_classes=10)
    for attack in (PGDL2, HopSkipJumpL2):
        ctx = make_ctx(attack, target, digits, params={"eps": [1.5, 2.0, 9.0]})
        problems = attack().preflight(ctx)
        assert [p for p in problems if "eps[" in p] == [
            "params.eps[2]: 9 is beyond the input box's L2 diameter (8 in absolute units)"
        ], problems
    linf = make_ctx(PGD, target, digits, params={"eps": [2.0]})  # an L∞ ε of 2 is still refused
    assert any("eps[0]" in p and "beyond the input range" in p for p in PGD().preflight(linf))
