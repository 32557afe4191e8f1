"""Unit tests of each control: access, limits, validation, profile artefact, canary, response, anomaly."""

from __future__ import annotations

import hmac
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError, IntegrityError
from bastion.guard.access import AccessControl, hash_key, new_key
from bastion.guard.anomaly import AnomalyMonitor, ks_statistic, psi
from bastion.guard.canary import CanaryWatch, canary_hash
from bastion.guard.config import Canary, ResponseSpec
from bastion.guard.limits import RateLimiter
from bastion.guard.profile import Profile, fit_profile, load_profile, profile_sha256, save_profile
from bastion.guard.response import BreakerState, ResponsePolicy
from bastion.guard.validation import InputRejected, InputValidator


def test_keys_hashed_at_rest_and_scoped() -> None:
    secret, spec = new_key("alice", ["digits"])
    assert secret not in spec.model_dump_json()
    assert spec.hash == hash_key(secret, spec.salt)
    _, spec2 = new_key("bob", ["digits"])
    assert spec.salt != spec2.salt
    ac = AccessControl([spec, spec2])
    assert ac.check({"authorization": f"Bearer {secret}"}, "digits").key_id == "alice"
    assert ac.check({"x-api-key": secret}, "digits").allowed
    assert ac.check({"authorization": f"Bearer {secret}x"}, "digits").status == 401
    assert ac.check({}, "digits").status == 401
    assert ac.check({"authorization": f"Basic {secret}"}, "digits").status == 401
    assert ac.check({"x-api-key": "k" * 10_000}, "digits").status == 401
    d = ac.check({"authorization": f"Bearer {secret}"}, "triage")
    assert d.status == 403 and d.key_id == "alice"


def test_access_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret, spec = new_key("alice")
    ac = AccessControl([spec])

    def boom(*_a: object, **_k: object) -> bool:
        raise RuntimeError("broken")

    monkeypatch.setattr(hmac, "compare_digest", boom)
    d = ac.check({"authorization": f"Bearer {secret}"}, "digits")
    assert d.status == 503 and not d.allowed


def test_token_bucket_retry_after_daily_quota_and_throttle() -> None:
    rl = RateLimiter(rate=2.0, burst=4.0, daily_quota=10)
    assert all(rl.take("k", 1, 100.0).allowed for _ in range(4))
    d = rl.take("k", 1, 100.0)
    assert not d.allowed and d.reason == "rate limit" and d.retry_after == 1
    assert rl.take("k", 1, 100.5).allowed  # refilled 1 token
    assert rl.take("k", 5, 200.0).allowed is False  # more than the burst
    for t in range(5):
        assert rl.take("k", 1, 300.0 + t).allowed
    d = rl.take("k", 1, 400.0)  # 10 used today
    assert not d.allowed and d.reason == "daily query budget spent" and d.retry_after > 3600
    assert rl.take("k", 1, 86_400.0 * 2 + 1).allowed  # next day
    rl.throttle("j", 0.1)
    assert rl.key_rate("j") == pytest.approx(0.2)
    for _ in range(4):
        rl.take("j", 1, 0.0)
    assert rl.take("j", 1, 0.0).retry_after == 5


def test_validation_shape_dtype_range_finite(profile: Profile) -> None:
    v = InputValidator(input_shape=(64,), profile=profile, max_rows=4)
    ok = v.parse({"instances": [[0.5] * 64]})
    assert ok.shape == (1, 64) and ok.dtype == np.float32
    cases = [
        ([], "(body)", "JSON object"),
        ({"instances": []}, "instances", "non-empty"),
        ({"instances": [[0.5] * 63]}, "instances[0]", "expected 64 values"),
        ({"instances": [[0.5] * 64] * 5}, "instances", "at most 4"),
        ({"instances": [[0.5] * 63 + ["a"]]}, "instances[0][63]", "expected a number, got a string"),
        ({"instances": [[0.5] * 63 + [None]]}, "instances[0][63]", "expected a number, got null"),
        ({"instances": [[0.5] * 63 + [True]]}, "instances[0][63]", "expected a number, got a boolean"),
        ({"instances": [[0.5] * 63 + [{}]]}, "instances[0][63]", "expected a number, got an object"),
        ({"instances": [[0.5] * 63 + [float("nan")]]}, "instances[0][63]", "not a finite number"),
        ({"instances": [[0.5] * 10 + [float("inf")] + [0.5] * 53]}, "instances[0][10]", "finite"),
        ({"instances": [[0.5] * 5 + [1.5] + [0.5] * 58]}, "instances[0][5]", "outside the trained range"),
        ({"instances": [[[0.5] * 64]]}, "instances[0]", "expected 64 values"),
    ]
    for body, field, reason in cases:
        with pytest.raises(InputRejected) as ei:
            v.parse(body)
        assert ei.value.field == field, body
        assert reason in ei.value.reason


def test_validation_categories() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 3, 200), rng.normal(size=200)], axis=1)
    p = fit_profile(x, num_classes=2)
    assert p.categories == {0: [0.0, 1.0, 2.0]}
    v = InputValidator(input_shape=(2,), profile=p)
    v.parse({"instances": [[1, 0.1]]})
    with pytest.raises(InputRejected, match="categories"):
        v.parse({"instances": [[1.5, 0.1]]})


def test_profile_artefact_roundtrip_and_tamper(profile: Profile, tmp_path: Path) -> None:
    sha = save_profile(profile, tmp_path / "p")
    assert sha == profile_sha256(tmp_path / "p")
    back = load_profile(tmp_path / "p", expected_sha256=sha)
    np.testing.assert_allclose(back.precision, profile.precision)
    assert back.ood_threshold == profile.ood_threshold and back.input_shape == (64,)
    with pytest.raises(IntegrityError):
        load_profile(tmp_path / "p", expected_sha256="0" * 64)
    raw = bytearray((tmp_path / "p/profile.npz").read_bytes())
    raw[-30] ^= 1
    (tmp_path / "p/profile.npz").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"profile\.npz"):
        load_profile(tmp_path / "p", expected_sha256=sha)
    assert b"pickle" not in (tmp_path / "p/profile.json").read_bytes()
    with pytest.raises(ConfigError):
        fit_profile(np.zeros((3, 2)), num_classes=2)


def test_canary_hit_only_on_the_trap(digits: dict[str, np.ndarray]) -> None:
    trap = digits["x_test"][0]
    w = CanaryWatch([Canary(id="patient-0", sha256=canary_hash(trap))])
    assert w.hits(digits["x_test"][:5]) == ["patient-0"]
    assert w.hits(digits["x_test"][1:5]) == []
    assert w.hits((trap + 1e-6)[None]) == ["patient-0"]  # rounding makes JSON round-trips match


def test_trap_batch_hashes_equal_the_per_row_reference() -> None:
    """The batched trap checks hash exactly what ``canary_hash`` / ``honeytoken_hmac`` hash.

    Values on 4-decimal and half-step ties, negative zero, tiny and huge magnitudes (clipped),
    in float32 and float64 rows: every row must find its own canary and its own honeytoken.
    """
    from bastion.guard.canary import HoneytokenWatch, honeytoken_spec

    rng = np.random.default_rng(7)
    ties = np.array([0.00005, 0.00015, 1.23445, -2.50005, -0.0, 0.5, 1.5, 2.5, -0.5, 1e-12, 3e18, -7e19])
    rows = np.concatenate([[np.roll(ties, k) for k in range(4)], rng.normal(0, 10, (60, 12)).round(5)])
    for x in (rows.reshape(-1, 3, 4), rows.astype(np.float32).reshape(-1, 3, 4)):
        canaries = CanaryWatch([Canary(id=f"c{i}", sha256=canary_hash(r)) for i, r in enumerate(x)])
        got = canaries.hit_rows(x)
        assert got == [(i, f"c{i}") for i in range(len(x))]
        for step in (0.5, 1.0, np.linspace(0.25, 3.0, 12)):
            spec = honeytoken_spec(x.reshape(len(x), -1), step=step)
            watch = HoneytokenWatch([spec], n_features=12)
            hits = watch.hits(x)
            ids = {e.id: e.hmac for e in spec.tokens}
            want = {(i, f"ht-{i:04d}") for i in range(len(x))}
            assert want <= set(hits)  # a row may also share a cell with another row's token:
            assert all(ids[t] == ids[f"ht-{i:04d}"] for i, t in hits)  # then the same hash


def test_breaker_open_half_open_closed_and_graded_actions() -> None:
    pol = ResponsePolicy(ResponseSpec(throttle_after=2, breaker_after=3, breaker_reset_s=10))
    assert pol.on_alert("k", "medium", 0.0) == []  # below harden_at: logged and alerted only
    assert pol.on_alert("k", "high", 1.0) == ["harden"]
    assert pol.on_alert("k", "high", 2.0) == ["throttle"]
    assert pol.on_alert("k", "high", 3.0) == ["breaker"]
    br = pol.posture("k").breaker
    assert br is not None and br.state == BreakerState.OPEN
    assert pol.key_allowed("k", 5.0) == (False, pytest.approx(8.0))
    assert pol.key_allowed("k", 13.5)[0]  # half-open trial
    assert br.state == BreakerState.HALF_OPEN
    assert not pol.key_allowed("k", 13.6)[0]  # one trial at a time
    pol.key_clean("k")
    assert br.state == BreakerState.CLOSED
    pol.on_alert("k", "high", 20.0)  # a new alert re-opens (strikes >= breaker_after)
    assert br.state == BreakerState.OPEN
    # canary forces the breaker at once
    assert "breaker" in pol.on_alert("c", "critical", 0.0, force_breaker=True)


def test_backend_breaker_and_alert_spike_degraded() -> None:
    spec = ResponseSpec(backend_failures=2, backend_reset_s=5)
    spec.degraded.alerts_per_minute = 3
    pol = ResponsePolicy(spec)
    assert pol.backend_allowed(0.0) and not pol.backend_failed(0.0)
    assert pol.backend_failed(0.1) and pol.degraded(0.2)
    assert not pol.backend_allowed(1.0)
    assert pol.backend_allowed(6.0)  # half-open trial
    pol.backend_ok()
    assert not pol.degraded(6.1)
    acts = [pol.on_alert(k, "medium", t) for k, t in (("a", 10.0), (None, 11.0), ("b", 12.0))]
    assert acts[-1] == ["degraded"] and pol.degraded(13.0) and not pol.degraded(12.0 + 61)


def test_degraded_mode_counts_keys_not_alerts() -> None:
    # red-team round 21: 12 burned keys, each raising its extraction rules (and the key-less
    # ood-rate / output-drift they drive), put every client on the fallback
    spec = ResponseSpec()
    spec.degraded.alerts_per_minute = 5
    pol = ResponsePolicy(spec)
    t = 100.0
    for _ in range(10):
        for key in ("m1", "m2", "m3", None):
            t += 0.1
            assert "degraded" not in pol.on_alert(key, "high", t)
    assert not pol.degraded(t)
    assert pol.on_alert("m4", "high", t + 1)[0] == "degraded"  # the fifth alerting key in a minute
    # keys silent for a minute drop out of the count
    later = t + 200
    assert "degraded" not in pol.on_alert("m1", "high", later) and len(pol._recent) == 1


def test_output_drift_psi_ks(profile: Profile) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    assert psi(a, rng.normal(size=2000)) < 0.05 and psi(a, rng.normal(1.0, size=2000)) > 0.25
    assert ks_statistic(a, a) == 0.0 and ks_statistic(a, a + 5) > 0.9
    mon = AnomalyMonitor(profile, window=100)
    assert mon.observe_outputs(profile.ref_conf[:100]) is None
    drift = mon.observe_outputs(np.full(100, 0.3))
    assert drift is not None and drift["ks"] > 0.5


def test_the_default_clock_ignores_steps_of_the_system_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # red-team round 24: a step back across midnight gave a key a second day's quota; a step
    # forward reopened a breaker early. The guard's default clock follows time.monotonic().
    import time as _time

    from bastion.guard.app import steady_clock

    clock = steady_clock()
    t0 = clock()
    real = _time.time
    monkeypatch.setattr(_time, "time", lambda: real() - 86_400)  # the system clock steps back a day
    assert abs(clock() - t0) < 1.0
    monkeypatch.setattr(_time, "time", lambda: real() + 86_400)  # ... and forward a day
    assert abs(clock() - t0) < 1.0
