from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.core import budget as budget_mod
from bastion.core.budget import PRESETS, Budget, BudgetMeter, BudgetUsage
from bastion.core.errors import BastionError, BudgetExhausted


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget_mod, "time", fake)
    return fake


def test_budget_validation() -> None:
    assert Budget().queries is None
    for bad in ({"queries": 0}, {"seconds": 0}, {"samples": -1}, {"minutes": 3}):
        with pytest.raises(ValidationError):
            Budget(**bad)
    b = Budget(queries=10)
    with pytest.raises(ValidationError):
        b.queries = 20  # type: ignore[misc]  # frozen


def test_merged_lets_the_other_budget_win_where_it_sets_a_limit() -> None:
    base = Budget(queries=100, seconds=60, samples=50)
    assert base.merged(None) == base
    assert base.merged(Budget(queries=5)) == Budget(queries=5, seconds=60, samples=50)
    assert base.merged(Budget(seconds=1.5, samples=7)) == Budget(queries=100, seconds=1.5, samples=7)


def test_presets_grow() -> None:
    assert list(PRESETS) == ["quick", "standard", "thorough"]
    q, s, t = PRESETS["quick"], PRESETS["standard"], PRESETS["thorough"]
    for field in ("queries", "seconds", "samples"):
        assert getattr(q, field) < getattr(s, field) < getattr(t, field)


def test_query_budget(clock: FakeClock) -> None:
    m = BudgetMeter(Budget(queries=10))
    assert m.remaining_queries() == 10
    m.charge(queries=4)
    m.charge(queries=6)
    assert m.queries == 10
    assert m.remaining_queries() == 0
    with pytest.raises(BudgetExhausted, match="query budget of 10"):
        m.charge(queries=1)
    # Nothing past the limit was spent.
    assert m.queries == 10
    assert m.usage() == BudgetUsage(queries=10, seconds=0.0, samples=0, exhausted=True)


def test_a_refused_charge_spends_nothing(clock: FakeClock) -> None:
    m = BudgetMeter(Budget(queries=10, samples=3))
    m.charge(queries=8, samples=1)
    with pytest.raises(BudgetExhausted):
        m.charge(queries=5)
    with pytest.raises(BudgetExhausted, match="sample budget of 3"):
        m.charge(queries=1, samples=3)
    u = m.usage()
    assert (u.queries, u.samples, u.exhausted) == (8, 1, True)


def test_time_budget(clock: FakeClock) -> None:
    m = BudgetMeter(Budget(seconds=5))
    clock.now += 4.0
    m.check_time()
    m.charge(queries=1)
    assert m.usage().seconds == pytest.approx(4.0)
    assert not m.usage().exhausted
    clock.now += 2.0
    with pytest.raises(BudgetExhausted, match="time budget of 5 s"):
        m.check_time()
    with pytest.raises(BudgetExhausted):
        m.charge(queries=1)
    assert m.queries == 1
    assert m.usage().exhausted


def test_unlimited(clock: FakeClock) -> None:
    m = BudgetMeter(Budget())
    m.charge(queries=10**9, samples=10**6)
    clock.now += 10**6
    m.check_time()
    assert m.remaining_queries() is None
    assert m.usage().exhausted is False
    assert m.usage().queries == 10**9


def test_budget_exhausted_is_a_bastion_error() -> None:
    assert issubclass(BudgetExhausted, BastionError)
