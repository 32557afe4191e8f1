"""The guard's controls wired together (``Guard.handle``, simulated clock): fail closed on any
internal error, the graded response end to end, anomaly alerts, audit record content, bounded
detector memory, a profile fitted for another model, runtime evidence in ``bastion assess``."""

from __future__ import annotations

import json
import logging
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config, quiet_guard_logs, request_body

from bastion.core.errors import IntegrityError
from bastion.guard.app import Guard
from bastion.guard.audit import input_sha256
from bastion.guard.canary import canary_hash
from bastion.guard.config import ExtractionSpec, KeySpec
from bastion.guard.extraction import ExtractionDetector
from bastion.guard.profile import Profile
from bastion.guard.response import BreakerState

Keys = dict[str, tuple[str, KeySpec]]


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    quiet_guard_logs(caplog)


_body = request_body


def _hdr(keys: Keys, kid: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[kid][0]}"}


class _Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


# -- fail closed -------------------------------------------------------------------------------------

_BEFORE_MODEL = [
    "access._match",
    "policy.key_gate",  # the key's breaker (key_allowed and in_trial in one call)
    "validator.parse",
    "canaries.hit_rows",
    "limiter.take",
]
_AFTER_MODEL = [
    "extraction.observe",
    "anomaly.ood_mask",
    "policy.on_alert",
    "policy.settle_key",
    "policy.harden",
]


@pytest.mark.parametrize("where", _BEFORE_MODEL + _AFTER_MODEL + ["store.append"])
def test_any_error_in_auth_policy_or_audit_denies_503(
    where: str, keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    cfg = make_config(keys, canaries=[{"id": "c", "sha256": canary_hash(digits["x_test"][0])}])
    sink = MemorySink()  # the request below holds the canary: every alert path runs
    g = Guard(cfg, target=target, store=sink, profile=profile)
    if where == "policy.harden":  # reached only for a flagged key
        g.policy.on_alert("alice", "high", 0.0)
    obj_name, attr = where.split(".")
    obj = sink if obj_name == "store" else getattr(g, obj_name)

    def boom(*_a: object, **_k: object) -> Any:
        raise RuntimeError(f"injected failure in {where}")

    if where == "store.append":
        real = sink.append
        calls = {"n": 0}

        def flaky(**kw: Any) -> int:  # the request's record fails; the error record goes through
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("disk full")
            return real(**kw)

        sink.append = flaky  # type: ignore[method-assign]
    else:
        setattr(obj, attr, boom)
    before = target.queries
    r = g.handle("digits", _hdr(keys, "alice"), _body(digits["x_test"][:2]))
    assert r.status == 503, (where, r.status, r.body)
    assert set(r.body) == {"detail", "request_id"} and isinstance(r.body["detail"], str)
    assert "injected" not in json.dumps(r.body)  # no internals leak
    if where in _BEFORE_MODEL:
        assert target.queries == before, where  # nothing reached the model
    if where != "store.append":
        assert sink.records[-1]["decision"] in ("error", "deny") and sink.records[-1]["status"] == 503


# -- graded response --------------------------------------------------------------------------------


def test_graded_response_harden_throttle_breaker_half_open_closed(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    clock = _Clock()
    cfg = make_config(
        keys, response={"throttle_after": 2, "breaker_after": 3, "breaker_reset_s": 10, "harden": "label"}
    )
    sink = MemorySink()
    g = Guard(cfg, target=target, store=sink, clock=clock)
    body = _body(digits["x_test"][:1])

    def ask(kid: str = "eve") -> Any:
        return g.handle("digits", _hdr(keys, kid), body)

    def strike() -> list[str]:
        with g._lock:
            return g._raise([g._alert("guard.extraction.class-coverage", "eve", {})], clock.t)

    assert ask().body["output"] == "probabilities"  # 0: logged only
    assert strike() == ["harden:eve"]
    r = ask()
    assert r.body["output"] == "label" and sink.records[-1]["decision"] == "harden"
    assert strike() == ["throttle:eve"]
    assert g.limiter.throttled("eve") and g.limiter.key_rate("eve") == pytest.approx(1000 * 0.1)
    assert strike() == ["breaker:eve"]
    r = ask()
    assert r.status == 429 and r.headers["Retry-After"] == "10" and sink.records[-1]["decision"] == "breaker"
    assert ask("bob").status == 200  # other keys unaffected
    clock.t += 10.5  # reset timeout passed: half-open, one trial
    br = g.policy.posture("eve").breaker
    assert br is not None
    r = ask()
    assert r.status == 200 and br.state == BreakerState.CLOSED  # a clean trial closes it
    assert ask().status == 200
    assert [i["rule_id"] for i in sink.incidents] == ["guard.extraction.class-coverage"] * 3


def _gauge(g: Guard, name: str) -> float:
    g.refresh_gauges()  # what ``/metrics`` does before rendering
    text = g.metrics.render()[0].decode()
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(name + " ")))


def test_state_gauges_are_current_when_scraped_breaker_open_then_closed_by_time(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    clock = _Clock()
    cfg = make_config(keys, response={"breaker_after": 1, "breaker_reset_s": 10})
    g = Guard(cfg, target=target, store=MemorySink(), clock=clock)
    assert _gauge(g, "bastion_guard_open_breakers") == 0.0
    with g._lock:
        g._raise([g._alert("guard.extraction.class-coverage", "eve", {})], clock.t)
    assert _gauge(g, "bastion_guard_open_breakers") == 1.0
    body = _body(digits["x_test"][:1])
    clock.t += 10.5  # no alert since: the half-open trial below closes it
    assert g.handle("digits", _hdr(keys, "eve"), body).status == 200
    assert _gauge(g, "bastion_guard_open_breakers") == 0.0
    assert _gauge(g, "bastion_guard_degraded") == 0.0


def test_alert_spike_degrades_to_configured_fallback_then_recovers(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    clock = _Clock()
    fallback = {"predictions": None, "degraded": True, "detail": "service degraded", "contact": "oncall"}
    cfg = make_config(
        keys, response={"degraded": {"alerts_per_minute": 3, "duration_s": 30, "fallback": fallback}}
    )
    g = Guard(cfg, target=target, store=MemorySink(), clock=clock)
    body = _body(digits["x_test"][:1])
    with g._lock:  # three keys alerting in a minute (degraded mode counts keys, not alerts)
        acts = [
            g._raise([g._alert("guard.extraction.exploration", k, {})], clock.t + i)
            for i, k in enumerate(("alice", None, "eve"))
        ]
    assert acts[-1][0] == "degraded:eve"  # entered on eve's alert
    clock.t += 3
    r = g.handle("digits", _hdr(keys, "bob"), body)
    assert r.status == 200 and r.headers["X-Bastion-Degraded"] == "1"
    assert {k: v for k, v in r.body.items() if k != "request_id"} == fallback
    assert g.ready()["ready"] is False and g.store.records[-1]["decision"] == "fallback"  # type: ignore[attr-defined]
    assert _gauge(g, "bastion_guard_degraded") == 1.0
    clock.t += 31
    assert g.handle("digits", _hdr(keys, "bob"), body).body["output"] == "probabilities"
    assert g.ready()["ready"] is True and _gauge(g, "bastion_guard_degraded") == 0.0


# -- anomaly --------------------------------------------------------------------------------------


def test_ood_inputs_and_output_drift_raise_alerts(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    cfg = make_config(keys, anomaly={"window": 100, "ood_rate_alert": 0.2}, extraction={"enabled": False})
    natural = Guard(cfg, target=target, store=MemorySink(), profile=profile)
    for i in range(0, 300, 50):
        natural.handle("digits", _hdr(keys, "alice"), _body(digits["x_test"][i : i + 50]))
    assert "guard.anomaly.ood-rate" not in natural.alert_counts
    assert "guard.anomaly.output-drift" not in natural.alert_counts

    g = Guard(cfg, target=target, store=MemorySink(), profile=profile)
    noise = np.random.default_rng(0).uniform(0, 1, size=(100, 64))
    g.handle("digits", _hdr(keys, "alice"), _body(noise))
    assert g.alert_counts.get("guard.anomaly.ood-rate") == 1
    assert g.alert_counts.get("guard.anomaly.output-drift") == 1
    assert g.anomaly is not None and g.anomaly.last_ks > 0.2
    inc = {i["rule_id"]: i for i in g.store.incidents}  # type: ignore[attr-defined]
    assert inc["guard.anomaly.ood-rate"]["details"]["evidence"]["ood_rate"] > 0.5
    assert all(a.startswith("AML.") for a in inc["guard.anomaly.ood-rate"]["atlas"])


# -- audit record content ---------------------------------------------------------------------------


def test_audit_record_holds_key_model_input_hash_output_summary_alerts_never_raw_inputs(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    trap = digits["x_test"][3]
    cfg = make_config(keys, canaries=[{"id": "trap", "sha256": canary_hash(trap)}])
    sink = MemorySink()
    g = Guard(cfg, target=target, store=sink, profile=profile, model_sha256="ab" * 32)
    x = digits["x_test"][:3]
    g.handle("digits", _hdr(keys, "alice"), _body(x))
    g.handle("digits", _hdr(keys, "eve"), _body(trap[None]))
    g.handle("digits", _hdr(keys, "alice"), b"{broken")
    ok, trapped, bad = sink.records
    assert ok["key_id"] == "alice" and ok["decision"] == "allow" and ok["model_sha256"] == "ab" * 32
    assert ok["input_sha256"] == input_sha256(x.astype(np.float32)) and ok["rows"] == 3
    assert ok["output"]["labels"] == [int(v) for v in target.predict_label(x)]
    assert 0 < ok["output"]["mean_confidence"] <= 1 and ok["alerts"] == []
    assert trapped["alerts"][0]["rule_id"] == "guard.canary.hit"
    assert trapped["alerts"][0]["atlas"] and all(a.startswith("AML.") for a in trapped["alerts"][0]["atlas"])
    assert bad["decision"] == "reject" and bad["status"] == 400 and bad["key_id"] == "alice"
    blob = json.dumps(sink.records)
    assert all("input" not in r for r in sink.records)
    # no row's values, in any JSON spelling (a lone number could collide with ``ts`` or a confidence)
    for row in (*x, trap):
        vals = [float(v) for v in np.ravel(row)]
        for spelled in (json.dumps(vals), json.dumps(vals, separators=(",", ":"))):
            assert spelled[1:40] not in blob


# -- extraction memory ------------------------------------------------------------------------------


def test_extraction_memory_per_key_stops_growing(profile: Profile) -> None:
    spec = ExtractionSpec(cell_cap=256, ring=16)
    det = ExtractionDetector(spec, num_classes=10, dims=profile.components.shape[0])
    rng = np.random.default_rng(5)

    def feed(n: int, key: str) -> None:
        for _ in range(n // 500):
            x = rng.uniform(0, 1, size=(500, 64))
            z = profile.project(x)
            det.observe(
                key,
                z=z,
                cells=profile.cells(z),
                labels=rng.integers(0, 10, 500),
                margins=rng.uniform(0, 1, 500),
                ood=rng.random(500) < 0.5,
                now=0.0,
            )

    feed(1000, "k")  # past the cell cap
    tracemalloc.start()
    try:
        base = tracemalloc.take_snapshot()
        feed(10_000, "k")  # ten times more queries from the same key
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(base, "filename") if "extraction" in str(s.traceback))
    assert det.stats["k"].n == 11_000 and len(det.stats["k"].cells) == 256
    assert grown < 4096, grown  # the key's state does not grow with its queries
    assert det.memory_bound_bytes() < 64 * 1024


# -- artefact fitted for another model ----------------------------------------------------------


def test_profile_fitted_for_another_model_is_refused(project: Path, digits: dict[str, np.ndarray]) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    from bastion import api

    info = api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "profile")
    gy = project / "guard.yaml"
    gy.write_text(
        json.dumps(
            {
                "name": "digits",
                "model": {"config": "bastion.yaml", "asset": "digits"},
                "profile": {"path": "profile", "sha256": info["sha256"]},
                "audit": {"db": f"sqlite:///{project / 'g.db'}"},
            }
        )
    )
    app = api.guard_app(gy)
    app.state.guard.store.close()
    clf = LogisticRegression(max_iter=50, C=0.1).fit(digits["x_train"], digits["y_train"])
    joblib.dump(clf, project / "model.joblib")  # retrained, safe, but not the model the profile knows
    with pytest.raises(IntegrityError, match="re-run bastion guard fit"):
        api.guard_app(gy)


# -- runtime evidence in bastion assess ----------------------------------------------------------


def test_guard_incidents_show_in_bastion_assess(
    project: Path, keys: Keys, digits: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion import api
    from bastion.cli.main import run

    db = f"sqlite:///{project / 'store.db'}"
    trap = digits["x_test"][5]
    (project / "guard.yaml").write_text(
        json.dumps(
            {
                "name": "digits",
                "model": {"config": "bastion.yaml", "asset": "digits"},
                "keys": [keys["eve"][1].model_dump()],
                "canaries": [{"id": "patient-7", "sha256": canary_hash(trap)}],
                "audit": {"db": db},
            }
        )
    )
    app = api.guard_app(project / "guard.yaml")
    g = app.state.guard
    assert g.handle("digits", _hdr(keys, "eve"), _body(trap[None])).status == 200
    g.store.close()
    capsys.readouterr()
    argv = [
        "assess",
        "-c",
        str(project / "bastion.yaml"),
        "--asset",
        "digits",
        "--only",
        "governance.runtime",
    ]
    # the critical canary hit trips the gate and is listed (only such findings are: trial 33, 14)
    assert run([*argv, "--db", db, "--fail-on", "critical", "-o", str(project / "report")]) == 1
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert "governance.runtime.guard.canary.hit" in out.replace("\n", "").replace("│", "").replace(" ", "")


def test_model_names_cannot_be_probed_without_a_valid_key(keys: Keys, target: SoftmaxTarget) -> None:
    sink = MemorySink()
    g = Guard(make_config(keys), target=target, store=sink)
    body = _body(np.zeros((1, 64)))
    assert g.handle("nope", {}, body).status == 401  # as for the real model: nothing learnt
    assert g.handle("digits", {}, body).status == 401
    assert g.handle("nope", {"Authorization": "Bearer wrong"}, body).status == 401
    assert g.handle("nope", _hdr(keys, "other"), body).status == 403  # a key for another model
    r = g.handle("nope", _hdr(keys, "alice"), body)
    assert r.status == 404 and "nope" in r.body["detail"]
    assert sink.records[-1]["key_id"] == "alice" and sink.records[-1]["decision"] == "reject"


def test_an_extraction_exempt_key_is_not_judged_by_the_extraction_detectors_only(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    """A trusted batch evaluator querying every class at machine rate looks like a natural-data
    thief; ``extraction_exempt`` on its key stops the extraction alerts for it, and nothing else."""
    clock = _Clock()
    specs = [spec.model_copy(update={"extraction_exempt": kid == "bob"}) for kid, (_, spec) in keys.items()]
    trap = digits["x_test"][7]
    cfg = make_config(keys, canaries=[{"id": "trap", "sha256": canary_hash(trap)}])
    cfg = cfg.model_copy(update={"keys": specs})
    sink = MemorySink()
    g = Guard(cfg, target=target, store=sink, profile=profile, clock=clock)
    rows = digits["x_test"][np.random.default_rng(0).permutation(len(digits["x_test"]))[:120]]

    def sweep(kid: str) -> list[str]:
        rules: list[str] = []
        for r in rows:
            clock.t += 0.05
            g.handle("digits", _hdr(keys, kid), _body(r[None]))
            rules += [a["rule_id"] for a in sink.records[-1].get("alerts", [])]
        return rules

    assert "guard.extraction.class-coverage" in sweep("alice")  # the same traffic, an ordinary key
    assert not [r for r in sweep("bob") if r.startswith("guard.extraction.")]
    assert "bob" not in (g.extraction.stats if g.extraction else {})
    g.handle("digits", _hdr(keys, "bob"), _body(trap[None]))  # the traps still apply to it
    assert [a["rule_id"] for a in sink.records[-1]["alerts"]] == ["guard.canary.hit"]


def test_a_failed_backend_call_gets_the_fallback_with_the_configured_status_and_a_logged_reason(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    body = _body(digits["x_test"][:1])
    for status in (200, 503):
        cfg = make_config(keys, response={"degraded": {"status": status}})
        sink = MemorySink()
        g = Guard(cfg, target=target, store=sink)
        target.fail = True
        try:
            with caplog.at_level(logging.WARNING, logger="bastion.guard"):
                r = g.handle("digits", _hdr(keys, "alice"), body)
        finally:
            target.fail = False
        assert r.status == status and r.headers["X-Bastion-Degraded"] == "1"
        assert r.body["detail"] == "service degraded" and "backend down" not in json.dumps(r.body)
        assert sink.records[-1]["decision"] == "fallback"
        assert any("backend failed: RuntimeError: backend down" in m for m in caplog.messages)
        caplog.clear()


def test_a_key_flagged_only_as_a_group_member_keeps_true_labels(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    # red-team round 21: two tenants asking about their own classes, one distinct row at a time,
    # plus one attacker request of every class, were all flagged `distributed` and the tenants
    # then got noisy (wrong) labels. Group members are hardened truthfully.
    clock = _Clock()
    # `distributed` is an alert (medium) by default; with harden_at: medium it hardens, truthfully
    cfg = make_config(keys, response={"harden_at": "medium"})
    g = Guard(cfg, target=target, store=MemorySink(), profile=profile, clock=clock)
    xs, ys = digits["x_test"], digits["y_test"]
    tenants = {"alice": (0, 1), "bob": (2, 3)}
    for kid, classes in tenants.items():
        for row in xs[np.isin(ys, classes)][:25]:
            clock.t += 5
            assert g.handle("digits", _hdr(keys, kid), _body(row[None])).status == 200
    pick = np.concatenate([xs[ys == c][5:7] for c in range(10)])
    g.handle("digits", _hdr(keys, "eve"), _body(pick))
    flagged = {k for k, s in g.extraction.stats.items() if "distributed" in s.flagged}  # type: ignore[union-attr]
    assert {"alice", "bob"} <= flagged, flagged
    for kid, classes in tenants.items():
        rows = xs[np.isin(ys, classes)][25:65]
        r = g.handle("digits", _hdr(keys, kid), _body(rows))
        assert r.body["output"] == "label"
        assert r.body["predictions"] == target.predict_proba(rows).argmax(1).tolist()  # the true labels
    # a key's own alert (a trap, a single-key rule) still gets the configured deception
    assert g.policy.posture("alice").deceive is False
    g.policy.on_alert("alice", "high", clock.t)
    assert g.policy.posture("alice").deceive is True


def test_rows_are_logged_only_for_requests_that_reach_the_model(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    # red-team round 21: a key past its quota (or the burst) had 66 kB of raw rows written per
    # denied request, at request rate
    cfg = make_config(keys, log_inputs=True, limits={"rate": 1000, "burst": 5, "daily_quota": 3})
    g = Guard(cfg, target=target, store=MemorySink())
    rows = digits["x_test"][:5]
    assert g.handle("digits", _hdr(keys, "alice"), _body(rows[:3])).status == 200
    assert g.handle("digits", _hdr(keys, "alice"), _body(rows[:1])).status == 429  # quota spent
    assert g.handle("digits", _hdr(keys, "alice"), _body(digits["x_test"][:6])).status == 422  # > burst
    recs = g.store.records  # type: ignore[attr-defined]
    assert [r["decision"] for r in recs] == ["allow", "limit", "reject"]
    assert len(recs[0]["input"]) == 3 and "input" not in recs[1] and "input" not in recs[2]


def test_synthetic_queries_fire_with_the_anomaly_alerts_off(
    keys: Keys, target: SoftmaxTarget, profile: Profile
) -> None:
    # red-team round 21: `anomaly.enabled: false` also zeroed the OOD flags extraction counts
    cfg = make_config(keys, anomaly={"enabled": False}, extraction={"exploration_cells": 5000})
    g = Guard(cfg, target=target, store=MemorySink(), profile=profile)
    noise = np.random.default_rng(5).uniform(0, 1, size=(60, 64))
    for i in range(0, 60, 10):
        g.handle("digits", _hdr(keys, "alice"), _body(noise[i : i + 10]))
    assert g.anomaly is None and "synthetic-queries" in g.extraction.stats["alice"].flagged  # type: ignore[union-attr]


def test_a_distributed_verdict_alerts_without_penalty_and_counts_once_for_degraded_mode(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    # red-team round 24: benign tenants drawn into a group verdict were hardened, and 52 of them
    # counted as 52 alerting keys put every client on the fallback
    clock = _Clock()
    cfg = make_config(keys, response={"degraded": {"alerts_per_minute": 2}})
    g = Guard(cfg, target=target, store=MemorySink(), profile=profile, clock=clock)
    xs, ys = digits["x_test"], digits["y_test"]
    for kid, classes in {"alice": (0, 1), "bob": (2, 3)}.items():
        for row in xs[np.isin(ys, classes)][:25]:
            clock.t += 5
            g.handle("digits", _hdr(keys, kid), _body(row[None]))
    g.handle("digits", _hdr(keys, "eve"), _body(np.concatenate([xs[ys == c][5:7] for c in range(10)])))
    assert g.alert_counts.get("guard.extraction.distributed", 0) >= 3
    assert not g.policy.degraded(clock.t)  # one group verdict: one alerting party of the two allowed
    r = g.handle("digits", _hdr(keys, "alice"), _body(xs[:3]))
    assert r.body["output"] == "probabilities" and not g.policy.posture("alice").hardened


def test_a_half_open_backend_breaker_lets_one_trial_through(
    keys: Keys, digits: dict[str, np.ndarray]
) -> None:
    # red-team round 24: with the backend breaker half-open, 30 of 30 concurrent requests reached
    # a still-failing upstream
    import threading

    class Slow(SoftmaxTarget):
        calls = 0
        gate = threading.Event()

        def _predict_proba(self, x: np.ndarray) -> np.ndarray:
            Slow.calls += 1
            Slow.gate.wait(5)
            return super()._predict_proba(x)

    clock = _Clock()
    t = Slow(digits["w"], digits["b"])
    cfg = make_config(keys, response={"backend_failures": 1, "backend_reset_s": 5})
    g = Guard(cfg, target=t, store=MemorySink(), clock=clock)
    body = _body(digits["x_test"][:1])
    t.fail = True
    Slow.gate.set()
    assert g.handle("digits", _hdr(keys, "alice"), body).headers.get("X-Bastion-Degraded") == "1"
    t.fail, Slow.calls = False, 0
    Slow.gate.clear()
    clock.t += 6  # past the reset: the next request is the trial
    trial = threading.Thread(target=g.handle, args=("digits", _hdr(keys, "alice"), body))
    trial.start()
    while Slow.calls == 0:
        time.sleep(0.01)
    others = [g.handle("digits", _hdr(keys, "bob"), body) for _ in range(5)]
    Slow.gate.set()
    trial.join(5)
    assert Slow.calls == 1 and all(r.headers.get("X-Bastion-Degraded") == "1" for r in others)
    assert g.handle("digits", _hdr(keys, "bob"), body).body["output"] == "probabilities"  # closed again


def test_a_guard_without_a_profile_says_which_controls_are_off(
    keys: Keys, target: SoftmaxTarget, caplog: pytest.LogCaptureFixture
) -> None:
    # red-team round 21: leaving profile: out silently turned off ranges, anomaly and extraction
    caplog.set_level(logging.ERROR, logger="bastion.guard")
    g = Guard(make_config(keys), target=target, store=MemorySink())
    assert "extraction" in g.controls_off and "input ranges" in g.controls_off
    assert any("runs without a profile" in r.getMessage() for r in caplog.records)
    assert g.ready()["controls_off"] == g.controls_off
