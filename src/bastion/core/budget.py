"""Budgets: every attack runs under one and reports what it used."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import BudgetExhausted


class Budget(BaseModel):
    """Limits for one check. ``None`` means unlimited.

    Attributes:
        queries: model queries (one input row = one query).
        seconds: wall-clock seconds.
        samples: evaluation samples (rows or images) the check may use.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    queries: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0)
    samples: int | None = Field(default=None, ge=1)

    def merged(self, other: Budget | None) -> Budget:
        """This budget with every limit ``other`` sets taking precedence."""
        if other is None:
            return self
        data = self.model_dump()
        data.update({k: v for k, v in other.model_dump().items() if v is not None})
        return Budget(**data)


class BudgetUsage(BaseModel):
    """What a check used of its budget."""

    model_config = ConfigDict(extra="forbid")

    queries: int = 0
    seconds: float = 0.0
    samples: int = 0
    exhausted: bool = False


#: Named budget presets for ``--budget``; a check's own ``budget`` in ``bastion.yaml`` overrides.
PRESETS: dict[str, Budget] = {
    "quick": Budget(queries=20_000, seconds=60, samples=100),
    "standard": Budget(queries=200_000, seconds=300, samples=300),
    "thorough": Budget(queries=2_000_000, seconds=1800, samples=2000),
}


class BudgetMeter:
    """Counts what a check spends and raises ``BudgetExhausted`` past a limit.

    Args:
        budget: the limits.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._queries = 0
        self._samples = 0
        self._start = time.monotonic()
        self._exhausted = False

    @property
    def queries(self) -> int:
        """Queries charged so far."""
        return self._queries

    @property
    def seconds(self) -> float:
        """Seconds since the meter started."""
        return time.monotonic() - self._start

    def remaining_queries(self) -> int | None:
        """Queries left, or ``None`` when unlimited."""
        if self.budget.queries is None:
            return None
        return max(0, self.budget.queries - self._queries)

    def charge(self, queries: int = 0, samples: int = 0) -> None:
        """Record ``queries`` and ``samples``; raise if that passes a limit or time is up.

        Raises:
            BudgetExhausted: the charge would pass ``queries`` or ``samples``, or ``seconds`` elapsed.
        """
        if self.budget.queries is not None and self._queries + queries > self.budget.queries:
            self._exhausted = True
            raise BudgetExhausted(
                f"query budget of {self.budget.queries} exhausted ({self._queries} used, {queries} asked)"
            )
        if self.budget.samples is not None and self._samples + samples > self.budget.samples:
            self._exhausted = True
            raise BudgetExhausted(f"sample budget of {self.budget.samples} exhausted")
        self.check_time()
        self._queries += queries
        self._samples += samples

    def check_time(self) -> None:
        """Raise ``BudgetExhausted`` when the time budget has elapsed."""
        if self.budget.seconds is not None and self.seconds > self.budget.seconds:
            self._exhausted = True
            raise BudgetExhausted(f"time budget of {self.budget.seconds:g} s exhausted")

    def usage(self) -> BudgetUsage:
        """A snapshot of what was used."""
        return BudgetUsage(
            queries=self._queries,
            seconds=round(self.seconds, 4),
            samples=self._samples,
            exhausted=self._exhausted,
        )
