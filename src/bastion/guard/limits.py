"""Control 2 — limits: a token bucket per key and a daily query budget; 429 with Retry-After.

Each row of a request costs one token. Buckets refill at ``rate`` tokens/s up to ``burst``.
The daily budget resets at midnight UTC (by the injected clock). Memory: one small record
per configured key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_DAY = 86_400.0


@dataclass
class _Bucket:
    tokens: float
    updated: float
    day: int
    used_today: int


@dataclass(frozen=True)
class LimitDecision:
    """``allowed``, else the reason and the seconds to wait (``retry_after``, whole seconds ≥ 1).

    ``retry_after`` 0 with ``allowed`` false: waiting cannot help (more rows than the bucket
    holds; the request must be split).
    """

    allowed: bool
    reason: str = "ok"
    retry_after: int = 0


#: the decision of every request let through (frozen: one object serves them all)
_ALLOWED = LimitDecision(True)


class RateLimiter:
    """Per-key token buckets and daily quotas.

    Args:
        rate: default refill in tokens (rows) per second.
        burst: bucket depth.
        daily_quota: default rows per key per UTC day.
    """

    def __init__(self, *, rate: float, burst: float, daily_quota: int) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.daily_quota = int(daily_quota)
        self._buckets: dict[str, _Bucket] = {}
        self._factor: dict[str, float] = {}
        self._rate: dict[str, float] = {}
        self._quota: dict[str, int] = {}

    def configure(self, key_id: str, *, rate: float | None = None, daily_quota: int | None = None) -> None:
        """Per-key overrides of rate and daily quota."""
        if rate is not None:
            self._rate[key_id] = float(rate)
        if daily_quota is not None:
            self._quota[key_id] = int(daily_quota)

    def throttle(self, key_id: str, factor: float) -> None:
        """Multiply the key's refill rate by ``factor`` (graded response)."""
        self._factor[key_id] = float(factor)

    def throttled(self, key_id: str) -> bool:
        """Whether the key is throttled."""
        return key_id in self._factor

    def key_rate(self, key_id: str) -> float:
        """The key's effective refill rate."""
        return self._rate.get(key_id, self.rate) * self._factor.get(key_id, 1.0)

    def take(self, key_id: str, n: int, now: float) -> LimitDecision:
        """Charge ``n`` rows to ``key_id`` at time ``now`` (seconds), or say how long to wait."""
        if n > self.burst:  # never fits the bucket: no wait helps (nothing charged)
            return LimitDecision(
                False, f"{n} rows; at most {self.burst:g} per request (limits.burst): split it"
            )
        day = int(now // _DAY)
        b = self._buckets.get(key_id)
        if b is None:
            b = self._buckets[key_id] = _Bucket(tokens=self.burst, updated=now, day=day, used_today=0)
        if b.day != day:
            b.day, b.used_today = day, 0
        rate = self._rate.get(key_id, self.rate) * self._factor.get(key_id, 1.0)  # key_rate(), inline
        b.tokens = min(self.burst, b.tokens + max(0.0, now - b.updated) * rate)
        b.updated = now
        quota = self._quota.get(key_id, self.daily_quota)
        if b.used_today + n > quota:
            wait = (day + 1) * _DAY - now
            return LimitDecision(False, "daily query budget spent", max(1, math.ceil(wait)))
        if b.tokens < n:
            wait = (n - b.tokens) / rate
            return LimitDecision(False, "rate limit", max(1, math.ceil(wait)))
        b.tokens -= n
        b.used_today += n
        return _ALLOWED

    def used_today(self, key_id: str) -> int:
        """Rows charged to the key today."""
        b = self._buckets.get(key_id)
        return b.used_today if b else 0
