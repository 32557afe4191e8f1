"""Control 7 — graded response: log → alert → harden → throttle → key breaker → degraded mode.

Each alert on a key at ``harden_at`` severity or above counts as a strike:

1. every decision is logged (audit) and every alert raised (incident, webhook, metric);
2. 1 strike: the key's outputs are hardened: ``noisy-label`` (default) answers labels and, for a
   secret share of the classes, another class; ``label`` answers labels only; ``round``
   rounds probabilities. Labels alone do not slow a label-only thief (a clone trained on labels
   reaches ~0.98 fidelity on digits); consistent wrong labels do (see :meth:`ResponsePolicy.harden`);
3. ``throttle_after`` strikes: the key's token-bucket rate is cut by ``throttle_factor``;
4. ``breaker_after`` strikes (or a canary hit): the key's circuit breaker opens — requests are
   refused (429) until ``breaker_reset_s`` passes; then half-open: one request goes through, and
   a clean one closes the breaker, a new alert re-opens it;
5. global degraded mode: when alerts across keys pass ``alerts_per_minute``, or the backend
   breaker is open (``backend_failures`` consecutive failures, half-open after
   ``backend_reset_s``), every caller gets the configured fallback response.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

import numpy as np

from bastion.guard.config import ResponseSpec


def severity_rank(s: str) -> int:
    """Rank of a severity name (info 0 … critical 4)."""
    order = ["info", "low", "medium", "high", "critical"]
    return order.index(s) if s in order else 0


class BreakerState(str, Enum):
    """Circuit-breaker states."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: the states as module names: a member read from the Enum class (``BreakerState.OPEN``) goes
#: through the enum's metaclass and costs several times a global read; the breakers are asked
#: about their state several times per request
_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN


@dataclass
class CircuitBreaker:
    """A breaker: ``open`` refuses until ``reset_s`` has passed, then lets one trial through."""

    reset_s: float
    state: BreakerState = _CLOSED
    opened_at: float = 0.0
    trial_in_flight: bool = False

    def allow(self, now: float) -> tuple[bool, float]:
        """Whether a request may pass now, and seconds until it might (when refused)."""
        if self.state == _CLOSED:
            return True, 0.0
        if self.state == _OPEN:
            wait = self.opened_at + self.reset_s - now
            if wait > 0:
                return False, wait
            self.state = _HALF_OPEN
            self.trial_in_flight = False
        if self.trial_in_flight:
            return False, 1.0
        self.trial_in_flight = True
        return True, 0.0

    def trip(self, now: float) -> None:
        """Open (again)."""
        self.state = _OPEN
        self.opened_at = now
        self.trial_in_flight = False

    def success(self) -> None:
        """A trial (or any request) went well: close a half-open breaker."""
        if self.state == _HALF_OPEN:
            self.state = _CLOSED
        self.trial_in_flight = False


#: The degraded-mode slot of every ``distributed`` group verdict (a key id cannot hold a NUL).
_GROUP = "\x00distributed"


@dataclass
class KeyPosture:
    """What the guard currently does to one key."""

    strikes: int = 0
    hardened: bool = False
    #: hardened by an alert about this key's own traffic: the configured (deceptive) mode
    #: applies. Hardened only by ``distributed`` (a group verdict a benign tenant can be drawn
    #: into: red-team round 21), answers stay truthful: top-1 labels, or rounded probabilities.
    deceive: bool = False
    throttled: bool = False
    breaker: CircuitBreaker | None = None


@dataclass
class ResponsePolicy:
    """Turns alerts into actions; tracks key breakers, the backend breaker and degraded mode."""

    spec: ResponseSpec
    keys: dict[str, KeyPosture] = field(default_factory=dict)
    backend: CircuitBreaker | None = None
    backend_failures: int = 0
    degraded_until: float = 0.0
    #: last alert time of each key (``None``: alerts about no key) that alerted in the last minute
    _recent: OrderedDict[str | None, float] = field(default_factory=OrderedDict)  # (``_GROUP``: groups)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        self.backend = CircuitBreaker(self.spec.backend_reset_s)

    def posture(self, key_id: str) -> KeyPosture:
        """The key's posture (created on first use)."""
        p = self.keys.get(key_id)
        if p is None:
            p = self.keys[key_id] = KeyPosture(breaker=CircuitBreaker(self.spec.breaker_reset_s))
        return p

    # -- alerts -> actions --------------------------------------------------------------------
    def on_alert(
        self,
        key_id: str | None,
        severity: str,
        now: float,
        *,
        force_breaker: bool = False,
        group: bool = False,
    ) -> list[str]:
        """Record an alert; return the actions it newly takes.

        Actions: ``harden``, ``throttle``, ``breaker``, ``degraded``. Degraded mode counts the
        *keys* that alerted in the last minute (alerts about no key count as one), not alerts:
        a few burned keys, each raising its five extraction rules, must not put every client on
        the fallback (12 keys did, red-team round 21). ``group``: a verdict on a group of keys
        (``distributed``); the key is hardened truthfully (see :class:`KeyPosture`).
        """
        actions: list[str] = []
        # A trap hit (force_breaker) is one key's doing and opens that key's breaker: it does not
        # count towards the service-wide rate, or one request of repeated traps could degrade all.
        if not force_breaker:
            slot = _GROUP if group else key_id  # one group verdict is one alerting party, not N
            self._recent[slot] = now
            self._recent.move_to_end(slot)
        while self._recent and next(iter(self._recent.values())) < now - 60.0:
            self._recent.popitem(last=False)
        if len(self._recent) >= self.spec.degraded.alerts_per_minute and not self.degraded(now):
            self.degraded_until = now + self.spec.degraded.duration_s
            actions.append("degraded")
        if key_id is None:
            return actions
        p = self.posture(key_id)
        if severity_rank(severity) < severity_rank(self.spec.harden_at) and not force_breaker:
            return actions
        p.strikes += 1
        p.deceive = p.deceive or not group
        if not p.hardened:
            p.hardened = True
            actions.append("harden")
        if p.strikes >= self.spec.throttle_after and not p.throttled:
            p.throttled = True
            actions.append("throttle")
        assert p.breaker is not None
        if force_breaker or p.strikes >= self.spec.breaker_after:
            if p.breaker.state != _OPEN:
                actions.append("breaker")
            p.breaker.trip(now)
        return actions

    def key_allowed(self, key_id: str, now: float) -> tuple[bool, float]:
        """Whether the key's breaker lets a request through now (and the wait if not)."""
        p = self.keys.get(key_id)
        if p is None or p.breaker is None:
            return True, 0.0
        return p.breaker.allow(now)

    def key_gate(self, key_id: str, now: float) -> tuple[bool, float, bool]:
        """:meth:`key_allowed` and, when allowed, :meth:`in_trial`, in one call (once per request)."""
        p = self.keys.get(key_id)
        b = p.breaker if p is not None else None
        if b is None:
            return True, 0.0, False
        ok, wait = b.allow(now)
        return ok, wait, ok and b.state == _HALF_OPEN and b.trial_in_flight

    def in_trial(self, key_id: str) -> bool:
        """Whether the key's breaker is half-open with its one trial request let through."""
        p = self.keys.get(key_id)
        b = p.breaker if p is not None else None
        return b is not None and b.state == _HALF_OPEN and b.trial_in_flight

    def trial_over(self, key_id: str) -> None:
        """A trial request ended without closing or re-opening the breaker: let the next one try.

        The trial was rejected before the model (400, 422, 429): it settled nothing.
        """
        p = self.keys.get(key_id)
        b = p.breaker if p is not None else None
        if b is not None and b.state == _HALF_OPEN:
            b.trial_in_flight = False

    def key_clean(self, key_id: str) -> None:
        """A request of the key raised no alert: a half-open breaker closes."""
        p = self.keys.get(key_id)
        if p is not None and p.breaker is not None:
            p.breaker.success()

    def settle_key(self, key_id: str, clean: bool, now: float) -> tuple[KeyPosture, bool]:
        """:meth:`posture`, :meth:`key_clean` (when ``clean``) and :meth:`degraded`, in one call.

        Once per request, after its alerts were raised: ``(the key's posture, degraded)``.
        """
        p = self.keys.get(key_id)
        if p is None:
            p = self.keys[key_id] = KeyPosture(breaker=CircuitBreaker(self.spec.breaker_reset_s))
        b = p.breaker
        if clean and b is not None:  # CircuitBreaker.success()
            if b.state == _HALF_OPEN:
                b.state = _CLOSED
            b.trial_in_flight = False
        assert self.backend is not None
        return p, now < self.degraded_until or self.backend.state == _OPEN

    # -- backend ---------------------------------------------------------------------------------
    def backend_allowed(self, now: float) -> bool:
        """Whether to call the backend now (closed, or half-open trial)."""
        assert self.backend is not None
        return self.backend.allow(now)[0]

    def backend_ok(self) -> None:
        """A backend call succeeded."""
        assert self.backend is not None
        self.backend_failures = 0
        self.backend.success()

    def backend_failed(self, now: float) -> bool:
        """A backend call failed; return whether the backend breaker (re)opened."""
        assert self.backend is not None
        self.backend_failures += 1
        if self.backend.state == _HALF_OPEN or self.backend_failures >= self.spec.backend_failures:
            self.backend.trip(now)
            return True
        self.backend.trial_in_flight = False
        return False

    def degraded(self, now: float) -> bool:
        """Whether global degraded mode is on (alert spike, or the backend breaker open)."""
        assert self.backend is not None
        return now < self.degraded_until or self.backend.state == _OPEN

    # -- output hardening -----------------------------------------------------------------------
    def harden(
        self, probs: np.ndarray, *, key_id: str = "", truthful: bool = False
    ) -> tuple[list[object], str]:
        """Hardened outputs of ``probs`` ``(N, C)`` for a flagged key, and the output kind shown.

        ``noisy-label``: labels, but for each flagged key a secret set of ``round(flip_fraction·C)``
        classes (at least 2; chosen by HMAC-SHA-256 of key and class under a secret drawn at
        start) is answered as one other secret class (e.g. 3, 7 and 1 all answered as 5). Repeats
        and near-duplicates get the same answer (nothing to average out), and a clone trained on
        the answers learns the wrong class for those classes — its fidelity drops by about
        ``flip_fraction``. The map merges classes, so it cannot be inverted: a thief holding
        labelled rows can learn which classes are merged, never which one an answer was (a
        cyclic shift could be read off such rows and undone: red-team round 18 took a clone from
        0.70 to 0.96 fidelity that way). The kind shown is ``label``: the caller cannot tell which
        answers are wrong. A deception defence in the spirit of prediction poisoning (Orekondy et
        al. 2020, arXiv:1906.10908), at label level; benign users of a flagged key get wrong
        answers too, which is why it applies only after an alert at ``harden_at``.

        Args:
            probs: the model's probabilities ``(N, C)``.
            key_id: the flagged key (each key gets its own shifted classes).
            truthful: never deceive (``noisy-label`` answers true top-1 labels instead): for a
                key flagged only as a member of a ``distributed`` group.
        """
        labels = probs.argmax(axis=1)
        if self.spec.harden == "round":
            return np.round(probs, self.spec.round_decimals).tolist(), "round"
        if truthful or self.spec.harden == "label" or self.spec.flip_fraction <= 0 or probs.shape[1] < 2:
            return [int(i) for i in labels], "label"
        mapping = self._flip_map(key_id, probs.shape[1])
        return [mapping.get(int(v), int(v)) for v in labels], "label"

    def _flip_map(self, key_id: str, num_classes: int) -> dict[int, int]:
        """The key's secret class merge of ``noisy-label`` hardening (``{class: answered class}``)."""
        m = min(num_classes, max(2, round(self.spec.flip_fraction * num_classes)))
        rank = sorted(
            range(num_classes),
            key=lambda c: hmac.new(self.secret, f"{key_id}|{c}".encode(), hashlib.sha256).digest(),
        )
        if m >= num_classes:  # every class merged would answer one class: keep one out as the answer
            m = num_classes - 1
        chosen, answer = rank[:m], rank[m]
        return dict.fromkeys(chosen, answer)
