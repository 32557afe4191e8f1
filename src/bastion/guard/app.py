"""The guard service: :class:`Guard` (every control, framework-free) and the FastAPI app factory.

``POST /v1/models/{name}/predict`` with ``{"instances": [...]}`` and ``Authorization: Bearer <key>``
(or ``X-API-Key``) answers ``{"predictions": [...], "output": "probabilities"|"label"|"round",
"request_id": ...}``. Order of controls: payload size (413) → access (401/403, the key
checked against the served model, so an unauthenticated caller cannot probe model names) → model
name (404) → key breaker (429) → JSON and input validation (400/422) → limits (429) → degraded
mode (fallback) → canaries and honeytokens → model (backend breaker; fallback on failure) → anomaly and
extraction detectors → graded response → durable audit record → answer. Any unexpected
error denies with 503 (fail closed); a request is answered only after its audit record is
committed. ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus) need no key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bastion.core import atlas
from bastion.core.capability import Capability
from bastion.core.errors import ConfigError, IntegrityError
from bastion.core.project_trust import cleartext_credentials_problem
from bastion.core.redact import redact_url
from bastion.guard.access import KEY_HEADERS, AccessControl
from bastion.guard.anomaly import AnomalyMonitor
from bastion.guard.audit import (
    Alert,
    AuditSink,
    GroupCommit,
    IncidentWriter,
    WebhookSender,
    failure_reason,
    input_sha256,
)
from bastion.guard.canary import CanaryWatch, HoneytokenWatch
from bastion.guard.config import GuardConfig, HoneytokenSpec, UpstreamSource, audit_key
from bastion.guard.extraction import ExtractionDetector
from bastion.guard.health import UpstreamProbe
from bastion.guard.limits import RateLimiter
from bastion.guard.metrics import GuardMetrics
from bastion.guard.profile import Profile, load_profile, verify_profile_signature
from bastion.guard.response import ResponsePolicy, severity_rank
from bastion.guard.validation import InputRejected, InputValidator
from bastion.store.audit import AuditEntry
from bastion.targets.base import Target

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def steady_clock() -> Clock:
    """Seconds since the epoch that a step of the system clock never moves.

    The wall time at start plus ``time.monotonic()`` since.
    Durations — rate buckets, breaker resets, the daily quota's day — must not follow an NTP
    step or an operator's ``date -s``: a step back across midnight gave a key a second day's
    quota, a step forward reopened a breaker a honeytoken had tripped (red-team round 24).
    ``CLOCK_MONOTONIC`` is slewed by NTP as the wall clock is, so the two stay close.
    """
    wall0, mono0 = time.time(), time.monotonic()
    return lambda: wall0 + (time.monotonic() - mono0)


#: ATLAS techniques and severities of the guard's alert rules.
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "guard.extraction.class-coverage": ("high", (atlas.EXTRACT_MODEL, atlas.INFERENCE_API_ACCESS)),
    "guard.extraction.synthetic-queries": ("high", (atlas.EXTRACT_MODEL, atlas.INFERENCE_API_ACCESS)),
    "guard.extraction.boundary-probing": ("high", (atlas.EXTRACT_MODEL, atlas.INFERENCE_API_ACCESS)),
    "guard.extraction.probing-session": ("high", (atlas.CRAFT_ADVERSARIAL, atlas.EVADE_MODEL)),
    "guard.extraction.exploration": ("high", (atlas.EXTRACT_MODEL, atlas.INFERENCE_API_ACCESS)),
    # a group verdict that benign tenants asking about different classes are drawn into (52 of 52
    # with no attacker: red-team round 24): an alert for people, never an automatic penalty
    # (``response.harden_at: medium`` hardens its keys, truthfully)
    "guard.extraction.distributed": ("medium", (atlas.EXTRACT_MODEL, atlas.INFERENCE_API_ACCESS)),
    "guard.canary.hit": ("critical", (atlas.INFERENCE_API_ACCESS,)),
    "guard.honeytoken.hit": (
        "critical",
        (atlas.INFER_MEMBERSHIP, atlas.EXTRACT_MODEL, atlas.INFERENCE_API_ACCESS),
    ),
    "guard.anomaly.ood-rate": ("medium", (atlas.CRAFT_ADVERSARIAL,)),
    "guard.anomaly.output-drift": ("medium", (atlas.EVADE_MODEL,)),
    "guard.backend.down": ("high", ()),
    "guard.response.degraded": ("high", ()),
}


@dataclass
class Reply:
    """What the guard answers: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Decided(NamedTuple):
    """A decided request waiting for its audit record's commit."""

    t0: float
    request_id: str
    reply: Reply
    entry: AuditEntry


def upstream_headers(up: UpstreamSource) -> dict[str, str]:
    """Request headers for the upstream: its bearer token from ``token_env`` (never stored).

    Raises:
        ConfigError: ``token_env`` names an unset variable, or would go over plain http to
            another machine.
    """
    if not up.token_env:
        return {}
    for url in (up.url, up.ready_url):  # checked by the config too (an UpstreamSource built otherwise)
        problem = cleartext_credentials_problem(url) if url else None
        if problem:
            raise ConfigError(
                f"upstream: token_env {up.token_env} refused for {redact_url(url or '')}: {problem}"
            )
    token = os.environ.get(up.token_env)
    if not token:
        raise ConfigError(f"upstream: environment variable {up.token_env} is not set")
    return {"Authorization": f"Bearer {token}"}


def load_serving_target(cfg: GuardConfig, *, allow: Sequence[str] = ()) -> tuple[Target, str]:
    """The model the guard serves and its identity (file SHA-256, or the upstream URL's hash).

    In-process models follow the same rule as ``bastion assess``: the file is scanned first and
    loaded only when judged ``safe``, from the very bytes whose SHA-256 the scanner recorded
    (and the asset's pinned ``sha256`` when present). ``allow``: the scan's allow-list
    additions typed by the user (``bastion guard serve --allow``), beside the project file's
    ``scan.allow``; each global only one of them let through is logged (info).

    Raises:
        ConfigError: bad config or asset; IntegrityError: unsafe verdict or hash mismatch;
        TargetError / MissingExtraError: the model cannot be loaded.
    """
    if cfg.upstream is not None:
        from bastion.targets.http_target import HttpTarget

        up = cfg.upstream
        headers = upstream_headers(up)
        t = HttpTarget(
            up.url,
            name=up.name,
            input_shape=tuple(up.input_shape),
            num_classes=up.num_classes,
            output=up.output,
            request_key=up.request_key,
            response_key=up.response_key,
            wire=up.wire,
            input_name=up.input_name,
            headers=headers,
            timeout=up.timeout,
            max_batch=10_000,
            max_retries=0,
            cache_size=0,
            max_response_bytes=up.max_response_bytes,
            max_connections=up.max_connections,  # one per request in flight (the guard's threads)
        )
        return t, hashlib.sha256(up.url.encode()).hexdigest()
    assert cfg.model is not None
    from bastion.core.config import load_config
    from bastion.core.scanning import Verdict
    from bastion.scan import scan_file
    from bastion.scan.pickle_scanner import ADDITION_RULE_SUFFIXES
    from bastion.targets import build_target

    cfg_path = Path(cfg.model.config)
    project = load_config(cfg_path)
    asset = project.asset(cfg.model.asset)
    base = cfg_path.resolve().parent
    if asset.kind == "endpoint" or asset.framework == "http":
        return build_target(asset, base_dir=base), hashlib.sha256(str(asset.url).encode()).hexdigest()
    if not asset.path:
        raise ConfigError(f"asset {asset.name!r} has no path")
    path = base / asset.path
    fr = scan_file(path, allow=allow, project_allow=project.scan.allow, report_allowed=True)
    if fr.verdict != Verdict.SAFE:
        raise IntegrityError(f"{path}: the scanner judged the model file {fr.verdict.value}; not serving it")
    for f in fr.findings:
        if f.rule_id.endswith(ADDITION_RULE_SUFFIXES):
            log.info("%s: %s", path, f.title)
    if project.signing.public_key:  # as assess: a model whose signature fails is not served
        from bastion.scan.signing import refuse_failed_signature

        refuse_failed_signature(  # signed bytes = scanned bytes = the bytes loaded below
            path,
            key=base / project.signing.public_key,
            root=base,
            sha256=fr.sha256,
            require_signed=project.signing.require,
        )
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != fr.sha256:
        raise IntegrityError(f"{path}: file changed after it was scanned (SHA-256 {sha[:12]}…)")
    return build_target(asset, base_dir=base, verified_bytes=data, verified_sha256=sha), sha


class Guard:
    """Every control of the guard around one target; thread-safe; the clock is injected.

    Args:
        config: the guard config.
        target: the model (in process or an ``HttpTarget`` proxy).
        store: the audit sink (``bastion.store.audit.AuditLog``).
        profile: the fitted profile (``None``: shape/finiteness validation only, no detectors).
        model_sha256: identity of the served model, recorded in every audit record.
        clock: seconds since the epoch (default :func:`steady_clock`; a simulated clock in tests).
    """

    def __init__(
        self,
        config: GuardConfig,
        *,
        target: Target,
        store: AuditSink,
        profile: Profile | None = None,
        model_sha256: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.target = target
        self.store = store
        self.profile = profile
        self.model_sha256 = model_sha256
        self.clock = clock or steady_clock()
        self.name = config.name
        self.access = AccessControl(config.keys)
        for kid in self.access.expired(self.clock()):
            log.warning("guard key %s has expired (expires in guard.yaml); it is refused", kid)
        lim = config.limits
        self.limiter = RateLimiter(rate=lim.rate, burst=lim.burst, daily_quota=lim.daily_quota)
        for k in config.keys:
            self.limiter.configure(k.id, rate=k.rate, daily_quota=k.daily_quota)
        up = config.upstream
        self.validator = InputValidator(
            input_shape=target.input_shape,
            profile=profile,
            request_key=up.request_key if up else "instances",
            max_rows=lim.max_rows,
        )
        self.response_key = up.response_key if up else "predictions"
        if profile is not None and tuple(profile.input_shape) != tuple(target.input_shape):
            raise ConfigError(
                f"guard profile is for input shape {profile.input_shape}, "
                f"the model takes {target.input_shape}"
            )
        if profile is not None and int(profile.num_classes) != int(target.num_classes):
            where = "upstream.num_classes" if config.upstream is not None else "the model"
            raise ConfigError(
                f"guard profile is for a model of {profile.num_classes} classes; "
                f"{where} says {target.num_classes}"
            )
        self.anomaly = (
            AnomalyMonitor(
                profile,
                window=config.anomaly.window,
                psi_alert=config.anomaly.psi_alert,
                ks_alert=config.anomaly.ks_alert,
            )
            if profile is not None and config.anomaly.enabled
            else None
        )
        self.extraction = (
            ExtractionDetector(
                config.extraction, num_classes=target.num_classes, dims=int(profile.components.shape[0])
            )
            if profile is not None and config.extraction.enabled
            else None
        )
        self.extraction_exempt = frozenset(k.id for k in config.keys if k.extraction_exempt)
        #: controls configured on but off for want of a profile (said at start and in /readyz:
        #: a guard.yaml without ``profile:`` served a pixel of 1e30 in silence, red-team round 21)
        self.controls_off = (
            [
                name
                for name, on in (
                    ("input ranges", True),
                    ("anomaly", config.anomaly.enabled),
                    ("extraction", config.extraction.enabled),
                    ("profile honeytokens", True),
                )
                if on
            ]
            if profile is None
            else []
        )
        if self.controls_off:
            log.error(
                "guard %s runs without a profile: %s are off; fit one with `bastion guard fit` and "
                "set profile: in guard.yaml",
                config.name,
                ", ".join(self.controls_off),
            )
        self.canaries = CanaryWatch(config.canaries)
        honey = [config.honeytokens] if config.honeytokens is not None else []
        if profile is not None and profile.honeytokens:
            try:
                honey.append(HoneytokenSpec.model_validate(profile.honeytokens))
            except ValueError as exc:
                raise ConfigError(f"guard profile: malformed honeytokens: {exc}") from None
        self.honeytokens = HoneytokenWatch(honey, n_features=int(np.prod(target.input_shape)))
        self._honey_on = bool(self.honeytokens)  # its sets are fixed at construction
        self.policy = ResponsePolicy(config.response)
        self.metrics = GuardMetrics()
        self.alert_counts: dict[str, int] = {}  # rule id -> alerts raised since start
        self.webhooks = WebhookSender(config.alerts.webhooks, timeout=config.alerts.timeout)
        self.incidents = IncidentWriter(store)
        self.commits = GroupCommit(store)
        #: predict requests the app holds now (set by the app on its event loop; read by ready())
        self.inflight = 0
        self._lock = threading.RLock()
        self._ood_window: deque[int] = deque(maxlen=config.anomaly.window)
        self._ood_since = 0
        self.labels_only = Capability.PROBABILITIES not in target.capabilities
        up = config.upstream
        self.upstream_probe = (
            UpstreamProbe(
                up.ready_url,
                interval=up.ready_interval,
                timeout=min(up.timeout, 2.0),
                headers=upstream_headers(up),
            )
            if up is not None and up.ready_url
            else None
        )

    # -- entry point ---------------------------------------------------------------------------
    def handle(self, model: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Decide and answer one predict request (never raises; fails closed with 503).

        The audit record is committed (``GroupCommit.write``, in this thread) before this returns.
        """
        decided = self._decide(model, headers, body)
        return self._answer(decided, self.commits.write([decided.entry])[0])  # no record, no answer

    async def handle_async(self, model: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """:meth:`handle` on an event loop: the same decision, the record group-committed.

        The request is decided on the loop; its record goes to :class:`GroupCommit`, which
        commits it in one transaction with the records of the requests decided in the same turn
        of the loop, and the answer waits for that commit. Never raises; fails closed with 503.
        """
        decided = self._decide(model, headers, body)
        return self._answer(decided, await self.commits.commit(decided.entry))

    def _decide(self, model: str, headers: Mapping[str, str], body: bytes) -> _Decided:
        t0 = time.perf_counter()
        now = self.clock()
        rid = _request_id()
        known: dict[str, Any] = {}  # what _handle learnt before any error (the caller's key id)
        try:
            # an ASGI server's headers (Starlette's ``Headers``, with ``raw``) are lower-case
            # already; only those that carry the key are read (decoded as ``dict(headers.items())``
            # would: the last of a repeated header wins)
            raw = getattr(headers, "raw", None)
            if raw is not None:
                lower = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k in KEY_HEADERS}
            else:
                lower = {k.lower(): v for k, v in headers.items()}
            try:
                reply, record = self._handle(model, lower, body, now, rid, known)
            finally:
                trial = known.pop("trial", None)
                if trial is not None:  # a half-open breaker's trial ended before its verdict
                    with self._lock:
                        self.policy.trial_over(trial)
        except Exception as exc:
            log.error("guard error on request %s: %s", rid, type(exc).__name__, exc_info=log.isEnabledFor(10))
            reply = Reply(503, {"detail": "guard error; request denied"})
            record = {"decision": "error", "status": 503, "error": type(exc).__name__, **known}
        record.setdefault("status", reply.status)
        decision = str(record.pop("decision", "allow" if reply.status == 200 else "deny"))
        key_id = record.pop("key_id", None)
        full = {
            "ts": now,
            "request_id": rid,
            "model": self.name,
            "model_sha256": self.model_sha256,
            **record,
        }
        created = dt.datetime.fromtimestamp(now, dt.UTC)
        entry = AuditEntry(key_id=key_id, decision=decision, record=full, created=created)
        return _Decided(t0, rid, reply, entry)

    def _answer(self, decided: _Decided, committed: bool) -> Reply:
        reply, decision = decided.reply, decided.entry.decision
        if not committed:  # no audit record, no answer
            reply = Reply(503, {"detail": "audit log unavailable; request denied"})
            decision = "error"
        reply.headers["X-Request-Id"] = decided.request_id
        reply.body.setdefault("request_id", decided.request_id)
        self.metrics.answered(decision, time.perf_counter() - decided.t0)
        return reply

    def _handle(
        self, model: str, headers: dict[str, str], body: bytes, now: float, rid: str, known: dict[str, Any]
    ) -> tuple[Reply, dict[str, Any]]:
        lim = self.config.limits
        if len(body) > lim.max_body_bytes:
            return Reply(413, {"detail": f"payload over {lim.max_body_bytes} bytes"}), {"decision": "reject"}
        # the key first, checked against the model this guard serves: a caller without a valid
        # key learns nothing about which model names exist (401 for any name)
        acc = self.access.check(headers, self.name, now)
        if acc.status != 200:  # not ``acc.allowed`` (a property: a call per request)
            denied: dict[str, Any] = {"decision": "deny", "key_id": acc.key_id, "reason": acc.reason}
            challenge = {"WWW-Authenticate": 'Bearer realm="bastion-guard"'} if acc.status == 401 else {}
            return Reply(acc.status, {"detail": acc.reason}, challenge), denied
        if model != self.name:
            return Reply(404, {"detail": f"no model {model!r}"}), {"decision": "reject", "key_id": acc.key_id}
        key = str(acc.key_id)
        known["key_id"] = key  # an internal error after this point is still recorded under the key
        rec: dict[str, Any] = {"key_id": key}
        with self._lock:
            ok, wait, trial = self.policy.key_gate(key, now)
            if trial:
                known["trial"] = key  # released whatever this request's outcome (see _decide)
        if not ok:
            rec.update(decision="breaker", reason="key circuit breaker open")
            return Reply(429, {"detail": "circuit breaker open for this key"}, _retry(wait)), rec
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting is malformed too
            if isinstance(exc, ValueError) and "digits" in str(exc) and "integer string" in str(exc):
                # valid JSON, but an integer over Python's 4,300-digit limit: a value problem
                why = "a number has too many digits"
                rec.update(decision="reject", field="(body)", reason=why)
                return Reply(422, {"detail": [{"field": "(body)", "reason": why}]}), rec
            rec.update(decision="reject", reason="malformed JSON")
            return Reply(400, {"detail": "malformed JSON"}), rec
        try:
            x = self.validator.parse(parsed, raw=body)
        except InputRejected as exc:
            rec.update(decision="reject", field=exc.field, reason=exc.reason)  # never the caller's value
            return Reply(exc.status, {"detail": [{"field": exc.field, "reason": exc.detail}]}), rec
        rec["input_sha256"] = input_sha256(x)
        rec["rows"] = len(x)
        # traps first: a hit alerts even when the request is then limited or degraded
        # one alert per trap and request, however many rows repeat it (60 copies of one row must
        # not raise 60 alerts: alert floods are what degraded mode watches)
        # the rows as float64 once: the honeytokens and the detectors read these
        x64 = x.astype(np.float64)
        canary_rows = self.canaries.hit_rows(x, x64=x64)
        # (each comprehension is a function call: the common request, with no hit, makes none)
        alerts = (
            [
                self._alert("guard.canary.hit", key, {"canary": c})
                for c in dict.fromkeys(c for _, c in canary_rows)
            ]
            if canary_rows
            else []
        )
        trap_rows: set[int] = {row for row, _ in canary_rows} if canary_rows else set()
        by_token: dict[str, list[int]] = {}
        honey = self.honeytokens.hits(x64, bound=self.validator.abs_bound) if self._honey_on else []
        for row, tid in honey:
            trap_rows.add(row)
            by_token.setdefault(tid, []).append(row)
        for tid, hit_rows in by_token.items():
            ev = {"honeytoken": tid, "row": hit_rows[0], "matches": len(hit_rows)}
            alerts.append(self._alert("guard.honeytoken.hit", key, ev))
        with self._lock:
            lim_dec = self.limiter.take(key, len(x), now)
        if not lim_dec.allowed and not lim_dec.retry_after:  # more rows than limits.burst: split it
            field = self.validator.request_key
            rec.update(decision="reject", field=field, reason="more rows than limits.burst")
            self._raise_early(alerts, rec, now)
            return Reply(422, {"detail": [{"field": field, "reason": lim_dec.reason}]}), rec
        if not lim_dec.allowed:
            rec.update(decision="limit", reason=lim_dec.reason)
            self._raise_early(alerts, rec, now)
            return Reply(429, {"detail": lim_dec.reason}, _retry(lim_dec.retry_after)), rec
        with self._lock:
            # an open backend breaker answers the fallback; a half-open one lets one trial call
            # through and the others get the fallback until it settles (all 30 concurrent
            # requests reached a still-failing upstream before: red-team round 24)
            if not self.policy.backend_allowed(now):
                rec.update(decision="fallback", reason="degraded mode")
                self._raise_early(alerts, rec, now)
                return self._fallback(), rec
        # only a request that reaches the model has its rows logged: a key past its quota or the
        # burst must not write raw rows at request rate (66 kB records, 19 GB/h: red-team round 21)
        if self.config.log_inputs:  # a trap's values (canary, honeytoken) are never logged
            rows = x.reshape(len(x), -1).tolist()
            rec["input"] = [None if i in trap_rows else r for i, r in enumerate(rows)]
        # -- the model (outside the lock; the backend breaker decides whether to call it) --------
        try:
            probs, rows_p = self._predict(x)
        except Exception as exc:  # the upstream's error is never passed on; its reason is logged
            log.warning("request %s: backend failed: %s", rid, failure_reason(exc))
            with self._lock:
                opened = self.policy.backend_failed(now)
            self.metrics.backend_failures.inc()
            if opened:
                alerts.append(self._alert("guard.backend.down", None, {"error": type(exc).__name__}))
            with self._lock:
                actions = self._raise(alerts, now)
            rec.update(decision="fallback", reason=f"backend failed: {type(exc).__name__}", actions=actions)
            rec["alerts"] = [a.summary() for a in alerts]
            return self._fallback(), rec
        # each row's top-1 probability and label (first maximum, as argmax), in Python: for the
        # few rows of a request cheaper than numpy calls; shared by the parts below
        top = [max(r) for r in rows_p]
        labels = [r.index(t) for r, t in zip(rows_p, top, strict=True)]
        with self._lock:
            self.policy.backend_ok()
            alerts += self._detect(key, x64, rows_p, top, labels, now)
            actions = self._raise(alerts, now) if alerts else []  # (a call less when none)
            clean = not alerts or not any(a.key_id == key for a in alerts)
            posture, degraded = self.policy.settle_key(key, clean, now)
        self.metrics.add_rows(len(x))
        rec["output"] = {
            "labels": labels[:32],
            "mean_confidence": round(_mean(top), 4),
        }
        rec["alerts"] = [a.summary() for a in alerts] if alerts else []
        if actions:
            rec["actions"] = actions
        if degraded:
            rec.update(decision="fallback", reason="degraded mode")
            return self._fallback(), rec
        if posture.hardened:
            preds, kind = self.policy.harden(probs, key_id=key, truthful=not posture.deceive)
            mode = self.config.response.harden
            rec["output"]["hardened"] = mode if posture.deceive or mode != "noisy-label" else "label"
            rec["decision"] = "harden"
            return Reply(200, {self.response_key: preds, "output": kind}), rec
        if self.labels_only:
            preds, kind = list(labels), "label"
            rec["output"]["hardened"] = kind
            rec["decision"] = "harden"
            return Reply(200, {self.response_key: preds, "output": kind}), rec
        rec["decision"] = "allow"
        return Reply(200, {self.response_key: rows_p, "output": "probabilities"}), rec

    # -- pieces ----------------------------------------------------------------------------------
    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, list[list[float]]]:
        """The model's probabilities for ``x``: ``(N, C)`` and the same as ``N`` lists.

        Raises:
            ValueError: the output is not ``N`` rows of finite numbers (a NaN or infinity from
                a broken model or upstream is a backend failure, never passed on).
        """
        if self.labels_only:
            lab = np.asarray(self.target.predict_label(x))
            c = self.target.num_classes
            # a label outside [0, C) (a -1 would index np.eye from the end: class C-1) or not an
            # integer is a broken model, never an answer
            if (
                lab.shape != (len(x),)
                or lab.dtype.kind not in "iu"
                or (len(lab) and not 0 <= lab.min() <= lab.max() < c)
            ):
                raise ValueError(
                    f"model labels of shape {lab.shape} ({lab.dtype}) are not {len(x)} labels in [0, {c})"
                )
            probs = np.eye(c, dtype=np.float64)[lab]
        else:
            probs = np.asarray(self.target.predict_proba(x), dtype=np.float64)
        if probs.ndim != 2 or len(probs) != len(x) or probs.shape[1] == 0:
            raise ValueError(f"model output of shape {probs.shape} for {len(x)} rows")
        rows: list[list[float]] = probs.tolist()
        # any NaN or infinity makes the sum one; so may finite values that overflow it (1e308 in
        # two rows): then decide value by value, so that a row never fails for its neighbours
        if not math.isfinite(sum(map(sum, rows))) and not bool(np.isfinite(probs).all()):
            raise ValueError("model output holds NaN or infinity")
        return probs, rows

    def _fallback(self) -> Reply:
        deg = self.config.response.degraded
        return Reply(deg.status, dict(deg.fallback), {"X-Bastion-Degraded": "1"})

    def _alert(self, rule_id: str, key: str | None, evidence: dict[str, Any]) -> Alert:
        sev, ids = RULES[rule_id]
        return Alert(rule_id=rule_id, severity=sev, atlas=ids, key_id=key, evidence=evidence)

    def _detect(
        self,
        key: str,
        x: np.ndarray,
        probs: list[list[float]],
        top: list[float],
        labels: list[int],
        now: float,
    ) -> list[Alert]:
        """New detector alerts for one request.

        ``x``: the rows ``(N, *shape)``; ``probs``: their probabilities (``N`` lists of ``C``);
        ``top`` and ``labels``: each row's top-1 probability and label (``N`` each).
        """
        p = self.profile
        if p is None or (self.anomaly is None and self.extraction is None):
            return []
        out: list[Alert] = []
        # distances, sketch coordinates and cells of every row from one matrix product
        dist, z, cells = p.locate(x.reshape(len(x), -1))
        if self.anomaly is not None:
            ood = self.anomaly.ood_mask(dist)
            self._ood_window.extend(ood)
            self._ood_since += len(x)
            w = self.config.anomaly.window
            if self._ood_since >= w and len(self._ood_window) >= w:
                self._ood_since = 0
                rate = sum(self._ood_window) / len(self._ood_window)
                if rate >= self.config.anomaly.ood_rate_alert:
                    out.append(self._alert("guard.anomaly.ood-rate", None, {"ood_rate": round(rate, 4)}))
            drift = self.anomaly.observe_outputs(top)
            if drift is not None:
                out.append(self._alert("guard.anomaly.output-drift", None, drift))
        if self.extraction is not None and key not in self.extraction_exempt:
            if self.anomaly is None:
                # the profile's OOD bound feeds ``synthetic-queries`` with the anomaly alerts off too
                # (turning those off silently disabled that extraction rule: red-team round 21)
                thr = p.ood_threshold
                ood = [bool(d > thr) for d in dist]
            if self.labels_only:
                margins = [1.0] * len(x)
            elif len(probs[0]) > 1:  # top-1 minus top-2 probability
                margins = [t - sorted(r)[-2] for r, t in zip(probs, top, strict=True)]
            else:
                margins = top
            for ea in self.extraction.observe(
                key, z=z, cells=cells, labels=labels, margins=margins, ood=ood, now=now
            ):
                ev: dict[str, Any] = dict(ea.evidence)
                if ea.keys:
                    ev["keys"] = list(ea.keys)
                out.append(self._alert(f"guard.extraction.{ea.rule}", ea.key_id, ev))
        return out

    def _raise_early(self, alerts: list[Alert], rec: dict[str, Any], now: float) -> None:
        """Raise trap alerts of a request that ends before the model (limited, degraded)."""
        if not alerts:
            return
        with self._lock:
            actions = self._raise(alerts, now)
        rec["alerts"] = [a.summary() for a in alerts]
        if actions:
            rec["actions"] = actions

    def _raise(self, alerts: list[Alert], now: float) -> list[str]:
        """Graded response, incidents, webhooks and metrics for new alerts (called under the lock)."""
        if not alerts:  # nothing new: no breaker changed state (the gauge below stays right)
            return []
        actions: list[str] = []
        min_sev = severity_rank(self.config.alerts.min_severity)
        for a in alerts:
            acts = self.policy.on_alert(
                a.key_id,
                a.severity,
                now,
                force_breaker=a.rule_id in _TRAP_RULES,
                group=a.rule_id == "guard.extraction.distributed",
            )
            if a.key_id is not None and "throttle" in acts:
                self.limiter.throttle(a.key_id, self.config.response.throttle_factor)
            actions += [f"{act}:{a.key_id}" if a.key_id else act for act in acts]
            self.metrics.alert(a.rule_id)
            self.alert_counts[a.rule_id] = self.alert_counts.get(a.rule_id, 0) + 1
            log.warning(
                json.dumps(
                    {"event": "alert", "rule_id": a.rule_id, "key_id": a.key_id, "severity": a.severity}
                )
            )
            created = dt.datetime.fromtimestamp(now, dt.UTC)
            self.incidents.record(
                rule_id=a.rule_id,
                severity=a.severity,
                asset=self.name,
                key_id=a.key_id,
                atlas=list(a.atlas),
                details={"evidence": a.evidence, "actions": acts},
                created=created,
            )
            if severity_rank(a.severity) >= min_sev:
                self.webhooks.submit(
                    {
                        "rule_id": a.rule_id,
                        "severity": a.severity,
                        "atlas": list(a.atlas),
                        "key_id": a.key_id,
                        "model": self.name,
                        "evidence": a.evidence,
                        "actions": acts,
                        "ts": now,
                    }
                )
        return actions

    def refresh_gauges(self) -> None:
        """Set the state gauges (degraded mode, keys with an open breaker) from the current state.

        Called when metrics are scraped, not on every request: a gauge is read only then. The
        webhook and incident losses counted by their threads are brought up to date here too.
        """
        self.metrics.sync_counts(
            webhooks_dropped=self.webhooks.dropped,
            webhooks_failed=self.webhooks.failed,
            incidents_lost=self.incidents.failed + self.incidents.dropped,
        )
        with self._lock:
            self.metrics.degraded.set(1.0 if self.policy.degraded(self.clock()) else 0.0)
            self.metrics.open_breakers.set(
                sum(
                    1
                    for p in self.policy.keys.values()
                    if p.breaker is not None and p.breaker.state != "closed"
                )
            )

    def ready(self) -> dict[str, Any]:
        """Readiness: degraded mode, backend breaker, the audit log, the upstream's health.

        Not ready while the audit log cannot take a record (``AuditLog.writable``: a read-only
        or locked database answers every request 503, so a load balancer should skip it).

        The upstream is probed in proxy mode with ``upstream.ready_url`` (at most once per
        ``ready_interval``). Ready unless degraded or the probed upstream is not healthy. May
        block for one probe (at most ``min(upstream.timeout, 2)`` seconds): call it off the loop.
        """
        now = self.clock()
        seq, h = self.store.head
        assert self.policy.backend is not None
        degraded = self.policy.degraded(now)
        info: dict[str, Any] = {
            "ready": not degraded,
            "degraded": degraded,
            "backend": self.policy.backend.state.value,
            "audit_head": {"seq": seq, "hash": h},
            "model_sha256": self.model_sha256,
        }
        if self.controls_off:
            info["controls_off"] = list(self.controls_off)
        # requests held: at the bound, new ones are refused (503); audit batches waiting for a
        # stalled database: requests would wait with them (red-team round 26)
        held, cap = self.inflight, self.config.limits.max_inflight
        lag = self.commits.writer_lag()
        info["inflight"] = held
        if held >= cap:
            info["ready"] = False
            info["reason"] = f"{held} requests in flight (limits.max_inflight)"
        if lag > WRITER_LAG_READY_S:
            info["ready"] = False
            info["audit_writer_lag_s"] = round(lag, 1)
        writable = getattr(self.store, "writable", None)  # AuditLog: can a record be appended now?
        if writable is not None:
            why = writable()
            info["audit"] = {"ok": True} if why is None else {"ok": False, "reason": why}
            info["ready"] = info["ready"] and why is None
        if self.upstream_probe is not None:
            up = self.upstream_probe.check()
            info["upstream"] = up
            info["ready"] = info["ready"] and bool(up["ok"])
        return info


_TRAP_RULES = frozenset({"guard.canary.hit", "guard.honeytoken.hit"})

#: not ready while an audit batch has waited this long for the database (seconds)
WRITER_LAG_READY_S = 2.0

#: ``/readyz`` answers within this many seconds (not ready if its checks have not finished)
READY_DEADLINE_S = 3.0


#: random bytes for request ids, drawn from ``os.urandom`` 4 KiB (256 ids) at a time: [bytes, next offset]
_ID_POOL: list[Any] = [b"", 0]
_ID_LOCK = threading.Lock()


def _id_pool_after_fork() -> None:
    """In a forked child: discard the inherited bytes and make a new lock.

    A thread of the parent may have held the lock at the fork; the child would wait for it forever.
    """
    global _ID_LOCK
    _ID_LOCK = threading.Lock()
    _ID_POOL[0], _ID_POOL[1] = b"", 0


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to guard against
    os.register_at_fork(after_in_child=_id_pool_after_fork)  # a child never reuses them


def _mean(values: list[float]) -> float:
    """The mean of finite ``values`` (``N`` ≥ 1), finite even when their sum overflows."""
    n = len(values)
    m = sum(values) / n
    return m if math.isfinite(m) else sum(v / n for v in values)


def _request_id() -> str:
    """A random request id: the hex of a version-4 UUID (as ``uuid.uuid4().hex``, without the object).

    The bytes come from ``os.urandom`` (the OS CSPRNG, as ``uuid4``), one system call per 256
    ids; a forked child discards the bytes it inherited.
    """
    with _ID_LOCK:
        buf, at = _ID_POOL
        if at + 16 > len(buf):
            buf, at = os.urandom(4096), 0
            _ID_POOL[0] = buf
        _ID_POOL[1] = at + 16
    b = bytearray(buf[at : at + 16])
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    return b.hex()


def _retry(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(np.ceil(seconds))))}


def build_guard(
    config: GuardConfig,
    *,
    store: AuditSink | None = None,
    clock: Clock | None = None,
    target: Target | None = None,
    model_sha256: str | None = None,
    profile: Profile | None = None,
    allow: Sequence[str] = (),
) -> Guard:
    """A :class:`Guard` from config: the model scanned and loaded, the profile signature- and hash-checked.

    ``allow``: the model scan's allow-list additions typed by the user (see
    :func:`load_serving_target`).

    Raises:
        ConfigError, IntegrityError, StoreError: as :func:`load_serving_target`,
        :func:`~bastion.guard.profile.verify_profile_signature`, :func:`load_profile` and ``AuditLog.open``.
    """
    if profile is None and config.profile is not None:
        ref = config.profile
        verify_profile_signature(ref.path, public_key=ref.public_key, signature=ref.signature)
        profile = load_profile(ref.path, expected_sha256=ref.sha256)
    if target is None:
        target, sha = load_serving_target(config, allow=allow)
        model_sha256 = model_sha256 or sha
        fitted_for = profile.meta.get("model_sha256") if profile is not None else None
        if config.model is not None and fitted_for and fitted_for != model_sha256:
            raise IntegrityError(
                f"guard profile {config.profile.path if config.profile else ''} was fitted for model "
                f"SHA-256 {str(fitted_for)[:12]}…, the served file has {model_sha256[:12]}…; "
                "re-run bastion guard fit"
            )
    if store is None:
        from bastion.store.audit import AuditLog
        from bastion.store.repository import default_url

        store = AuditLog.open(
            config.audit.db or default_url(), chain=config.audit.chain, key=audit_key(config.audit.key_env)
        )
    return Guard(
        config, target=target, store=store, profile=profile, model_sha256=model_sha256 or "", clock=clock
    )


#: An in-process model answering one row faster than this (seconds) is run on the event loop.
INLINE_MAX_SECONDS = 0.002


def _runs_inline(target: Target) -> bool:
    """Whether requests run on the event loop: a fast in-process model (no network wait) does.

    Measured on 2 cores (``benchmarks/guard.py --only-http``): handling a request in the
    thread pool costs about twice the server CPU of handling it inline (8 threads contend for
    the GIL and the guard's locks), while a request's work (parse, model, detectors, one SQLite
    WAL commit) is ~1 ms of CPU that could not run in parallel anyway. A slow model would stall
    every other request (health checks included) while it computes, so the model is timed once
    at start-up on a zero row: only one answering within :data:`INLINE_MAX_SECONDS` runs inline.
    An ``HttpTarget`` (proxy mode or an endpoint asset) waits on its upstream, so it keeps the
    thread pool; so does a model that fails the timing call.
    """
    from bastion.targets.http_target import HttpTarget

    if isinstance(target, HttpTarget):
        return False
    queries = target.queries
    try:
        row = np.zeros((1, *target.input_shape), dtype=np.float32)
        best = float("inf")
        for _ in range(3):  # the first call may warm caches
            t0 = time.perf_counter()
            target.predict_label(row)
            best = min(best, time.perf_counter() - t0)
    except Exception:  # the guard's own error handling deals with a broken model per request
        return False
    finally:
        target.queries = queries  # timing calls are not client queries
    return best <= INLINE_MAX_SECONDS


async def _read_body(request: Any, limit: int) -> bytes | None:
    """The body, or ``None`` once it passes ``limit`` bytes (read no further)."""
    # the first Content-Length, as ``request.headers.get`` gives it (an ASGI server's header names
    # are lower-case bytes), read from the raw list without the ``Headers`` lookup's layers
    declared = None
    for k, v in request.scope["headers"]:
        if k == b"content-length":
            declared = v.decode("latin-1")
            break
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    config: GuardConfig,
    *,
    store: AuditSink | None = None,
    clock: Clock | None = None,
    target: Target | None = None,
    profile: Profile | None = None,
    guard: Guard | None = None,
    allow: Sequence[str] = (),
) -> Any:
    """The FastAPI app of the guard.

    Args:
        config: the guard config.
        store: audit sink (``AuditLog``); opened from ``config.audit`` when ``None``.
        clock: time source (seconds since the epoch).
        target: a ready target (tests); otherwise loaded from config after a safe scan.
        profile: a ready profile; otherwise loaded (hash-checked) from ``config.profile``.
        guard: a ready :class:`Guard` (overrides the other arguments).
        allow: the model scan's allow-list additions typed by the user (``guard serve --allow``;
            see :func:`load_serving_target`).

    Raises:
        MissingExtraError: fastapi is not installed (``pip install 'bastion-ml[guard]'``).
    """
    from bastion.core.errors import require

    fastapi = require("fastapi", "guard")
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    g = guard or build_guard(config, store=store, clock=clock, target=target, profile=profile, allow=allow)
    from contextlib import asynccontextmanager

    # proxy mode: one worker thread per upstream connection, and no more. A request beyond them
    # waits on the event loop, before its call (and its deadline) starts; a thread waiting for
    # a free connection spent its deadline there and counted as a backend failure, so bursts of
    # one key opened a healthy upstream's breaker (red-team round 24)
    calls: Any = None
    threads: Any = None

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        nonlocal calls, threads
        if config.upstream is not None:
            import anyio

            calls = anyio.CapacityLimiter(config.upstream.max_connections)  # slots, held on the loop
            threads = anyio.CapacityLimiter(config.upstream.max_connections)  # their worker threads
        g.webhooks.start()
        yield
        g.webhooks.stop()
        # incidents deferred while the database was locked, and the records the writer thread
        # holds, are written first; a stalled database is waited for a bounded time (round 27)
        quarter = config.server.shutdown_timeout / 4
        g.incidents.close(timeout=quarter)
        g.commits.close(timeout=quarter)
        if g.upstream_probe is not None:
            g.upstream_probe.close()
        seq, h = g.store.head
        commits = {"transactions": g.commits.batches, "records": g.commits.records}
        stopped = {"event": "guard-stopped", "audit_head": {"seq": seq, "hash": h}, "commits": commits}
        log.info(json.dumps(stopped))

    app = fastapi.FastAPI(
        title="bastion guard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.guard = g
    limit = config.limits.max_body_bytes

    inline = _runs_inline(g.target)

    max_inflight = config.limits.max_inflight

    async def predict(request: Request) -> Any:
        body = await _read_body(request, limit)
        if body is None:
            body = b"\0" * (limit + 1)  # the guard records the 413 decision
        # a bounded number of requests held at once, whatever holds them (a stalled audit
        # database, a slow model or upstream): the rest are refused, like the proxy's shed below
        # (no decision made, so no audit record; red-team round 26). Counted from the end of the
        # body: a client dripping its body must not hold a slot that others need.
        if g.inflight >= max_inflight:
            g.metrics.shed.inc()
            return JSONResponse(
                {"detail": "the guard holds its limit of requests in flight; retry"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        g.inflight += 1
        try:
            if inline:  # CPU-bound, in process: a thread hop only adds GIL contention (about 2x CPU)
                name = str(request.path_params["name"])
                reply = await g.handle_async(name, request.headers, body)
                return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
            return await _decide_and_answer(request, body)
        finally:
            g.inflight -= 1

    async def _decide_and_answer(request: Request, body: bytes) -> Any:
        """A request handled off the event loop (remote or slow model); inline ones are in ``predict``."""
        name = str(request.path_params["name"])
        if calls is not None:  # a remote model blocks on the network: keep the event loop free
            import anyio
            import anyio.to_thread

            assert config.upstream is not None
            # the wait for a connection is bounded (a request shed here is like a load balancer's
            # 503: no decision was made, so no audit record), and a caller that hung up meanwhile
            # is not served: 1,200 hang-ups queued 12 s of upstream calls nobody read (round 26)
            with anyio.move_on_after(config.upstream.timeout) as waited:
                await calls.acquire()
            if waited.cancelled_caught:
                g.metrics.shed.inc()
                return JSONResponse(
                    {"detail": "the model server is busy; retry"},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
            try:
                if await request.is_disconnected():
                    return Response(status_code=499)
                reply = await anyio.to_thread.run_sync(g.handle, name, request.headers, body, limiter=threads)
            finally:
                calls.release()
        else:
            reply = await run_in_threadpool(g.handle, name, request.headers, body)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    # A plain Starlette route: the body is read raw (size-capped) and no parameter parsing runs.
    app.router.add_route("/v1/models/{name}/predict", predict, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        import anyio
        import anyio.to_thread

        # the checks may probe the upstream and the database (blocking I/O, in a thread); a
        # stalled database must not hang the probe (red-team round 26): past the deadline the
        # answer is "not ready", and the thread is left to finish on its own
        with anyio.move_on_after(READY_DEADLINE_S):
            info = await anyio.to_thread.run_sync(g.ready, abandon_on_cancel=True)
            return JSONResponse(info, status_code=200 if info["ready"] else 503)
        reason = f"readiness checks did not finish in {READY_DEADLINE_S:g} s (database or upstream silent)"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Any:
        g.refresh_gauges()
        data, ctype = g.metrics.render()
        return Response(content=data, media_type=ctype)

    return app


def create_bare_app(target: Target, *, name: str = "model") -> Any:
    """The same model behind the same route with no controls (the benchmark's baseline)."""
    from bastion.core.errors import require

    fastapi = require("fastapi", "guard")
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def _answer(body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            x = np.asarray(json.loads(body)["instances"], dtype=np.float32)
            return 200, {"predictions": target.predict_proba(x).tolist()}
        except Exception as exc:
            return 400, {"detail": type(exc).__name__}

    inline = _runs_inline(target)  # the same dispatch as the guard's app (like for like)

    async def predict(request: Request) -> Any:
        if request.path_params["model"] != name:
            return JSONResponse({"detail": "no such model"}, status_code=404)
        raw = await request.body()
        status, body = _answer(raw) if inline else await run_in_threadpool(_answer, raw)
        return JSONResponse(body, status_code=status)

    app.router.add_route("/v1/models/{model}/predict", predict, methods=["POST"])

    return app
