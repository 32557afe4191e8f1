"""Control 9 — Prometheus metrics of one guard app (its own registry, so apps never collide)."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from bastion.core.errors import require


def _adder(metric: Any) -> Any:
    """The ``inc(amount)`` of an observable counter's value (what ``metric.inc`` ends in).

    ``Counter.inc`` first checks that the metric is observable (a child, or unlabelled: always
    true here) and that the amount is not negative (the callers add 1 or a row count), then
    calls its value's ``inc``; taken once, the per-request count skips those checks. A
    ``prometheus_client`` without the attribute gets the public method.
    """
    value = getattr(metric, "_value", None)
    return value.inc if value is not None and callable(getattr(value, "inc", None)) else metric.inc


class GuardMetrics:
    """Counters, a latency histogram and gauges, exposed at ``/metrics``.

    Metrics: ``bastion_guard_requests_total{decision}``, ``bastion_guard_rows_total``,
    ``bastion_guard_alerts_total{rule}``, ``bastion_guard_request_seconds``,
    ``bastion_guard_degraded`` (0/1), ``bastion_guard_open_breakers``,
    ``bastion_guard_backend_failures_total``, ``bastion_guard_shed_total`` (refused 503 before a
    decision: upstream busy, or ``limits.max_inflight`` reached),
    ``bastion_guard_webhooks_dropped_total``, ``bastion_guard_webhooks_failed_total``,
    ``bastion_guard_incidents_lost_total``.
    """

    def __init__(self) -> None:
        prom = require("prometheus_client", "guard")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "bastion_guard_requests", "Requests by decision", ["decision"], registry=r
        )
        self.rows = prom.Counter("bastion_guard_rows", "Rows answered by the model", registry=r)
        self.alerts = prom.Counter("bastion_guard_alerts", "Alerts raised by rule", ["rule"], registry=r)
        self.latency = prom.Histogram(
            "bastion_guard_request_seconds",
            "Guard time per request",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.degraded = prom.Gauge("bastion_guard_degraded", "1 while in degraded mode", registry=r)
        self.open_breakers = prom.Gauge(
            "bastion_guard_open_breakers", "Keys with an open breaker", registry=r
        )
        self.backend_failures = prom.Counter(
            "bastion_guard_backend_failures", "Failed backend calls", registry=r
        )
        self.shed = prom.Counter(
            "bastion_guard_shed",
            "Requests refused 503 before a decision (upstream busy, or limits.max_inflight held)",
            registry=r,
        )

        self.webhooks_dropped = prom.Counter(
            "bastion_guard_webhooks_dropped",
            "Alerts not POSTed: the webhook queue was full",
            registry=r,
        )
        self.webhooks_failed = prom.Counter(
            "bastion_guard_webhooks_failed", "Webhook POSTs that failed", registry=r
        )
        self.incidents_lost = prom.Counter(
            "bastion_guard_incidents_lost",
            "Alerts not recorded as incidents (store failed, or its queue was full)",
            registry=r,
        )
        self._synced: dict[str, int] = {}

        # labelled children resolved once per label value (``labels()`` hashes and locks each call);
        # the adders of the counters and histogram touched by every request, taken once
        self._add_rows = _adder(self.rows)
        h = self.latency
        total: Any = getattr(h, "_sum", None)
        buckets: Any = getattr(h, "_buckets", None)
        bounds: Any = getattr(h, "_upper_bounds", None)
        self._latency_parts: tuple[Any, list[Any], list[float]] | None = (
            (total.inc, [b.inc for b in buckets], list(bounds))
            if None not in (total, buckets, bounds) and len(buckets) == len(bounds)
            else None
        )
        self._requests_by: dict[str, Any] = {}
        self._alerts_by: dict[str, Any] = {}

    def request(self, decision: str) -> None:
        """Count one request under its decision (``bastion_guard_requests_total{decision}``)."""
        add = self._requests_by.get(decision)
        if add is None:
            add = self._requests_by[decision] = _adder(self.requests.labels(decision=decision))
        add(1)

    def answered(self, decision: str, seconds: float) -> None:
        """:meth:`request` and :meth:`observe_latency` of one answered request, in one call."""
        self.request(decision)
        self.observe_latency(seconds)

    def add_rows(self, n: int) -> None:
        """Count ``n`` (≥ 0) rows answered by the model (``bastion_guard_rows_total``)."""
        self._add_rows(n)

    def observe_latency(self, seconds: float) -> None:
        """Observe one request's guard time (``bastion_guard_request_seconds``), as ``latency.observe``.

        The sum grows by ``seconds`` and the first bucket whose upper bound is at least
        ``seconds`` by one (``bisect`` over the bounds instead of ``observe``'s loop).
        """
        parts = self._latency_parts
        if parts is None or seconds != seconds:  # no internals to use, or NaN (observe counts no bucket)
            self.latency.observe(seconds)
            return
        add_sum, buckets, bounds = parts
        add_sum(seconds)
        i = bisect_left(bounds, seconds)
        if i < len(buckets):
            buckets[i](1)

    def alert(self, rule: str) -> None:
        """Count one alert under its rule (``bastion_guard_alerts_total{rule}``)."""
        child = self._alerts_by.get(rule)
        if child is None:
            child = self._alerts_by[rule] = self.alerts.labels(rule=rule)
        child.inc()

    def sync_counts(self, **totals: int) -> None:
        """Bring counters kept elsewhere as plain totals up to date (``name=total``; at scrape time).

        Names: ``webhooks_dropped``, ``webhooks_failed``, ``incidents_lost``. A counter only grows:
        each is increased by its total's growth since the last call.
        """
        for name, total in totals.items():
            grown = int(total) - self._synced.get(name, 0)
            if grown > 0:
                getattr(self, name).inc(grown)
                self._synced[name] = int(total)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        out: Any = self._prom.generate_latest(self.registry)
        return bytes(out), str(self._prom.CONTENT_TYPE_LATEST)
