"""The per-request shortcuts of the guard's hot path give what the paths they replace gave."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

import numpy as np
import pytest
from starlette.datastructures import Headers
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config

from bastion.guard.access import AccessControl, new_key
from bastion.guard.app import Guard
from bastion.guard.canary import CanaryWatch, _canonical, _canonical64, canary_hash
from bastion.guard.config import Canary
from bastion.guard.extraction import _rounded_at_least
from bastion.guard.limits import RateLimiter
from bastion.guard.validation import InputRejected, _numbers_only
from bastion.store.audit import _sqlite_time


def test_rounded_at_least_is_round_then_compare() -> None:
    rng = np.random.default_rng(0)
    bounds = [0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0, 0.12345, 0.00005]
    values = list(rng.uniform(0, 1, 3000)) + [
        b + d for b in bounds for d in (-2e-4, -1e-4, -6e-5, -5e-5, 0.0, 5e-5)
    ]
    values += [k / n for n in (1, 3, 7, 200, 9999, 10_000, 20_000) for k in range(0, n + 1, max(1, n // 97))]
    for v in values:
        for b in [*bounds, math.nan]:
            assert _rounded_at_least(v, b) == (round(v, 4) >= b), (v, b)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"instances": [[1, 2.5e-3]]}',
        b'{"instances": [true]}',
        b'{"instances": [null]}',
        b'{"x": false}',
        b'{"instances": [1], "u": 1}',
        b'{"f": [1]}',
        b'{"instances": [Infinity]}',
        b"tru",
        b"",
    ],
)
def test_numbers_only_as_the_three_searches(raw: bytes) -> None:
    assert _numbers_only(raw) == (b"true" not in raw and b"false" not in raw and b"null" not in raw)


def test_canonical_from_float64_rows_is_the_same_array() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(5, 1, 8, 8)).astype(np.float32)
    x[0, 0, 0, :4] = [0.12345, -0.0, -0.00004, 1e-9]  # ties, negative zero, a value rounding to -0
    x64 = x.astype(np.float64)
    a, b = _canonical(x), _canonical64(x64)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert b.flags.c_contiguous
    assert np.array_equal(x64, x.astype(np.float64))  # the caller's array is not changed


def test_canary_hits_with_and_without_float64_rows() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=(4, 64)).astype(np.float32)
    watch = CanaryWatch(
        [Canary(id="c1", sha256=canary_hash(x[2])), Canary(id="c2", sha256=canary_hash(x[0]))]
    )
    assert watch.hit_rows(x, x64=x.astype(np.float64)) == watch.hit_rows(x) == [(0, "c2"), (2, "c1")]
    # rows that are not float32 (or a float64 copy of another shape) take the plain path
    x64 = x.astype(np.float64)
    assert watch.hit_rows(x64, x64=x64) == watch.hit_rows(x64)
    assert watch.hit_rows(x, x64=x64[:2]) == watch.hit_rows(x)


def test_sqlite_time_fast_path_matches_the_conversion() -> None:
    for ts in (0.0, 1.5, 1_700_000_000.0, 1_700_000_000.123456, 1_764_496_800.999999):
        t = dt.datetime.fromtimestamp(ts, dt.UTC)
        want = t.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        assert _sqlite_time(t) == want
        # another zone, and an equal instant written with a different UTC object, take the slow path
        other = t.astimezone(dt.timezone(dt.timedelta(hours=5)))
        assert _sqlite_time(other) == want
        assert _sqlite_time(t.replace(tzinfo=dt.timezone(dt.timedelta(0)))) == want


def test_access_allowed_decision_is_shared_and_denials_still_apply() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    a_secret, a_spec = new_key("a", ["digits"], expires=now + dt.timedelta(hours=1))
    b_secret, b_spec = new_key("b")
    acc = AccessControl([a_spec, b_spec])
    hdr = {"authorization": f"Bearer {a_secret}"}
    first = acc.check(hdr, "digits", now.timestamp())
    assert first.allowed and first.key_id == "a" and first.reason == "ok"
    assert acc.check(hdr, "digits", now.timestamp()) is first
    assert acc.check({"x-api-key": b_secret}, "digits").key_id == "b"
    # the cached decision never outlives the key: expiry and model scope are checked every time
    late = acc.check(hdr, "digits", now.timestamp() + 3600)
    assert (late.status, late.key_id, late.reason) == (401, "a", "API key expired")
    assert acc.check(hdr, "other", now.timestamp()).status == 403
    assert acc.check({"authorization": f"Bearer {a_secret}x"}, "digits").status == 401


def test_limiter_allowed_decision_and_refusals() -> None:
    lim = RateLimiter(rate=1.0, burst=2.0, daily_quota=3)
    d1, d2 = lim.take("k", 1, 0.0), lim.take("k", 1, 0.0)
    assert d1.allowed and d2.allowed and d1.reason == "ok" and d1.retry_after == 0
    assert not lim.take("k", 1, 0.0).allowed  # bucket empty
    assert lim.take("k", 1, 1.0).allowed
    assert lim.take("k", 1, 10.0).reason == "daily query budget spent"


def test_starlette_headers_only_key_headers_read_last_one_wins() -> None:
    """The guard reads the key from ASGI headers as ``dict(headers.items())`` did (last repeat wins)."""
    keys = {"alice": new_key("alice", ["digits"]), "bob": new_key("bob", ["digits"])}
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(64, 10)), rng.normal(size=10)
    sink = MemorySink()
    g = Guard(make_config(keys), target=SoftmaxTarget(w, b), store=sink)
    body = b'{"instances": [' + b",".join([b"[" + b",".join([b"0.5"] * 64) + b"]"]) + b"]}"
    raw = [
        (b"host", b"x"),
        (b"authorization", f"Bearer {keys['bob'][0]}".encode()),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {keys['alice'][0]}".encode()),
    ]
    r = g.handle("digits", Headers(raw=raw), body)
    assert r.status == 200
    assert sink.records[-1]["key_id"] == "alice"
    r = g.handle("digits", Headers(raw=[(b"x-api-key", keys["bob"][0].encode())]), body)
    assert r.status == 200 and sink.records[-1]["key_id"] == "bob"
    r = g.handle("digits", Headers(raw=[(b"host", b"x")]), body)
    assert r.status == 401


def test_input_sha256_fast_path_as_the_contiguous_copy() -> None:
    from bastion.guard.audit import input_sha256

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    want = hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()
    assert input_sha256(x) == want
    xt = np.asfortranarray(x)  # another layout: the same C-order bytes
    assert input_sha256(xt) == want
    assert input_sha256(x.astype(np.float64)) == want  # other dtypes are converted first


@pytest.mark.parametrize("step", [0.0625, [0.0625] * 32 + [1e-3] * 32])
def test_honeytoken_hits_with_a_bound_as_without(step: Any) -> None:
    from bastion.guard.canary import HoneytokenWatch, honeytoken_spec

    rng = np.random.default_rng(5)
    tokens = np.round(rng.uniform(0, 1, size=(6, 64)) * 16) / 16
    watch = HoneytokenWatch(
        [honeytoken_spec(tokens, step=np.asarray(step) if isinstance(step, list) else step)]
    )
    rows = np.concatenate([tokens[[1, 4]], rng.uniform(0, 1, size=(3, 64)), tokens[[1]] + 0.01])
    x = rows.astype(np.float32).astype(np.float64).reshape(len(rows), 1, 8, 8)
    want = watch.hits(x)
    assert [t for _, t in want][:2] == ["ht-0001", "ht-0004"]  # (the near-copy only on the coarse grid)
    assert watch.hits(x, bound=1.0) == want
    # a bound too large for the shortcut (or none) clips as before: huge values stay in range
    big = x.copy()
    big[0, 0, 0, 0] = 1e30
    assert watch.hits(big, bound=1e30) == watch.hits(big) == want[1:]


def test_validator_abs_bound() -> None:
    from bastion.guard.profile import Profile
    from bastion.guard.validation import InputValidator

    def prof(lo: float, hi: float) -> Profile:
        f = 4
        return Profile(
            input_shape=(f,),
            num_classes=2,
            lo=np.full(f, lo),
            hi=np.array([hi, hi / 2, 0.0, hi]),
            mean=np.zeros(f),
            precision=np.eye(f),
            ood_threshold=1.0,
            proj_mean=np.zeros(f),
            components=np.eye(2, f),
            comp_scale=np.ones(2),
            bin_edges=np.zeros((2, 3)),
            ref_conf=np.zeros(0),
        )

    assert InputValidator(input_shape=(4,)).abs_bound is None
    assert InputValidator(input_shape=(4,), profile=prof(-3.0, 2.0)).abs_bound == 3.0
    assert InputValidator(input_shape=(4,), profile=prof(-1.0, 5.0)).abs_bound == 5.0
    assert InputValidator(input_shape=(4,), profile=prof(-np.inf, 5.0)).abs_bound is None
    v = InputValidator(input_shape=(4,), profile=prof(-1.0, 5.0))
    with pytest.raises(InputRejected):
        v.parse({"instances": [[0.0, 0.0, 0.0, 5.5]]})


def test_metrics_fast_paths_render_as_the_public_api() -> None:
    from bastion.guard.metrics import GuardMetrics

    fast, slow = GuardMetrics(), GuardMetrics()
    assert fast._latency_parts is not None  # the fast path is taken with this prometheus_client
    seconds = [
        0.0,
        0.0004,
        0.0005,
        0.00051,
        0.001,
        0.003,
        0.0099,
        0.1,
        0.25,
        1.0,
        1.5,
        30.0,
        -1.0,
        float("nan"),
    ]
    for i, s in enumerate(seconds):
        decision = ("allow", "deny", "allow", "reject")[i % 4]
        fast.request(decision)
        fast.add_rows(i)
        fast.observe_latency(s)
        slow.requests.labels(decision=decision).inc()
        slow.rows.inc(i)
        slow.latency.observe(s)

    def text(m: GuardMetrics) -> list[str]:
        return [ln for ln in m.render()[0].decode().splitlines() if "_created" not in ln]

    assert text(fast) == text(slow)
    assert any(ln.startswith('bastion_guard_request_seconds_bucket{le="0.0005"} 4.0') for ln in text(fast))


def test_canonical_as_json_dumps_with_its_options() -> None:
    import json

    from bastion.store.audit import canonical

    def dumps(o: Any) -> bytes:
        return json.dumps(
            o, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode()

    objs: list[Any] = [
        {"ts": 1796034741.785375, "b": [1, 2.5, None, True, False], "a": {"z": 'é\u2028\x00"\\', "y": []}},
        {"alerts": [], "output": {"labels": [3], "mean_confidence": 0.9998}, "rows": 1, "status": 200},
        "text",
        1e308,
        [],
        {},
        {"2": "str key", "10": 1},
        -0.0,
        10**30,
    ]
    for o in objs:
        assert canonical(o) == dumps(o)
    for bad, err in (
        (float("nan"), ValueError),
        ({"x": float("inf")}, ValueError),
        ({"x": object()}, TypeError),
    ):
        with pytest.raises(err):
            canonical(bad)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        canonical({"x": loop})
    # a failed call leaves nothing behind: the same objects encode afterwards
    shared = {"k": [1, 2]}
    with pytest.raises(TypeError):
        canonical({"a": shared, "b": object()})
    assert canonical({"a": shared}) == dumps({"a": shared})


def test_honeytoken_hits_as_honeytoken_hmac_of_each_row() -> None:
    import hmac

    from bastion.guard.canary import HoneytokenWatch, _hmac_state, honeytoken_hmac, honeytoken_spec

    rng = np.random.default_rng(6)
    tokens = np.round(rng.uniform(0, 1, size=(5, 64)) * 16) / 16
    spec = honeytoken_spec(tokens, step=0.0625)
    rows = np.concatenate([rng.uniform(0, 1, size=(2, 64)), tokens[[3]], tokens[[0]] + 0.01, tokens[[3]]])
    x = rows.astype(np.float32).astype(np.float64).reshape(len(rows), 1, 8, 8)
    table = {e.hmac: e.id for e in spec.tokens}
    want = [
        (i, table[h])
        for i, r in enumerate(x)
        if (h := honeytoken_hmac(r, salt=spec.salt, step=0.0625)) in table
    ]
    assert want == [(2, "ht-0003"), (3, "ht-0000"), (4, "ht-0003")]
    assert HoneytokenWatch([spec]).hits(x) == want
    # the OpenSSL object behind hmac.HMAC, or the object itself: the same digests
    base = hmac.new(b"k", b"64", hashlib.sha256)
    inner = _hmac_state(base)
    for state in (inner, base):
        h = state.copy()
        h.update(b"row bytes")
        assert h.digest() == hmac.new(b"k", b"64row bytes", hashlib.sha256).digest()

    class NoInner:  # an hmac without the OpenSSL object keeps its public methods
        _hmac = None

    plain = NoInner()
    assert _hmac_state(plain) is plain  # type: ignore[arg-type]


def test_audit_hashed_bytes_as_the_canonical_body() -> None:
    from bastion.store.audit import (
        GENESIS,
        _hash_hex,
        _hashed_bytes,
        canonical,
        canonical_text,
        record_hash,
    )

    rec = {"ts": 1796034741.785375, "request_id": "ab" * 16, "output": {"labels": [3]}, "alerts": []}
    text = canonical_text(rec)
    assert text.encode() == canonical(rec)
    for chain in ("guard", 'odd "chain" é\u2028'):
        chain_json = canonical(chain).decode()
        for key_id in (None, "k0", "kéy\n\"'\\", "\U0001f511"):
            for decision in ("allow", "deny", 'x"\x00'):
                for seq in (0, 7, 10**12):
                    for prev in (GENESIS, "f" * 64):
                        body = {"chain": chain, "seq": seq, "key_id": key_id, "decision": decision}
                        body["record"] = rec
                        got = _hashed_bytes(prev, chain_json, seq, key_id, decision, text)
                        assert got == prev.encode() + canonical(body)
                        for key in (None, b"secret"):
                            want = record_hash(prev, chain, seq, key_id, decision, rec, key=key)
                            assert _hash_hex(got, key) == want


@pytest.mark.parametrize("key", [None, b"chain key"])
def test_audit_sqlite_fast_path_and_sqlalchemy_path_write_the_same_chain(tmp_path: Any, key: Any) -> None:
    from bastion.store.audit import AuditEntry, AuditLog

    t = dt.datetime(2026, 11, 30, 11, 18, 13, 754379, tzinfo=dt.UTC)
    entries = [
        AuditEntry(
            key_id=k,
            decision=d,
            record={"ts": t.timestamp() + i, "i": i, "output": {"mean_confidence": 0.1 * i}},
            created=t + dt.timedelta(seconds=i),
        )
        for i, (k, d) in enumerate([("k0", "allow"), (None, "deny"), ("kéy", "reject"), ("k0", "allow")])
    ]
    logs = []
    for name, fast in (("fast", True), ("sqlalchemy", False)):
        log = AuditLog.open(f"sqlite:///{tmp_path / name}.db", key=key)
        if not fast:
            log._sqlite_path = None  # as a server database: SQLAlchemy's insert
        assert log.append_many(entries[:1]) == [0]
        assert log.append_many(entries[1:]) == [1, 2, 3]
        res = log.verify()
        assert res.ok and res.records == 4, res.problems
        logs.append(log)
    fast_rows, slow_rows = (log.records() for log in logs)
    drop = {"id"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in fast_rows] == [
        {k: v for k, v in r.items() if k not in drop} for r in slow_rows
    ]
    assert logs[0].head == logs[1].head
    for log in logs:
        log.close()


def test_breaker_state_names_are_the_members() -> None:
    from bastion.guard import response

    assert response._CLOSED is response.BreakerState.CLOSED
    assert response._OPEN is response.BreakerState.OPEN
    assert response._HALF_OPEN is response.BreakerState.HALF_OPEN
    b = response.CircuitBreaker(5.0)
    assert b.state is response.BreakerState.CLOSED and b.allow(0.0) == (True, 0.0)
    b.trip(0.0)
    assert b.allow(1.0) == (False, 4.0)
    assert b.allow(6.0) == (True, 0.0) and b.state is response.BreakerState.HALF_OPEN
    b.success()
    assert b.state is response.BreakerState.CLOSED


def test_canary_rows_of_other_layouts_and_byte_orders() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(4, 2, 3)).astype(np.float32)
    canaries = [Canary(id=f"c{i}", sha256=canary_hash(x[i])) for i in (0, 3)]
    watch = CanaryWatch(canaries)
    want = [(0, "c0"), (3, "c3")]
    assert watch.hit_rows(x) == watch.hit_rows(x, x64=x.astype(np.float64)) == want
    swapped = x.astype(">f4")  # not the float32 dtype: the general path, the same rows
    assert watch.hit_rows(swapped, x64=swapped.astype(np.float64)) == want
    assert watch.hit_rows(np.asfortranarray(x), x64=np.asfortranarray(x).astype(np.float64)) == want


def test_extraction_rules_raised_when_their_tests_first_hold_in_order() -> None:
    from bastion.guard.config import ExtractionSpec
    from bastion.guard.extraction import ExtractionDetector

    order = ["class-coverage", "synthetic-queries", "boundary-probing", "probing-session", "exploration"]
    spec = ExtractionSpec(min_queries=5, exploration_cells=20, cross_key=False, ring=4, probe_radius=3.0)
    rng = np.random.default_rng(8)
    for trial in range(20):
        det = ExtractionDetector(spec, num_classes=4, dims=2)
        raised: list[str] = []
        for _ in range(60):
            n = int(rng.integers(1, 4))
            z = rng.normal(size=(n, 2)) * (0.3 if trial % 2 else 2.0)
            cells = rng.integers(0, 8 + 4 * trial, size=n)
            labels = rng.integers(0, 1 + trial % 4, size=n)
            margins = rng.uniform(0, 0.4, size=n)
            ood = rng.uniform(size=n) < 0.2 * (trial % 3)
            alerts = det.observe("k", z=z, cells=cells, labels=labels, margins=margins, ood=ood, now=0.0)
            st = det.stats["k"]
            # what the rules' tests give after this request (each rule once per key)
            m = max(st.n, 1)
            tests = {
                "class-coverage": det.coverage_rules
                and round(st.effective_classes() / 4, 4) >= spec.class_coverage,
                "synthetic-queries": round(st.ood / m, 4) >= spec.ood_fraction,
                "boundary-probing": round(st.low_margin / m, 4) >= spec.boundary_fraction,
                "probing-session": round(max(st.probes / m, st.recent_rate()), 4) >= spec.probe_fraction,
                "exploration": st.new_cells >= spec.exploration_cells,
            }
            want = [r for r in order if st.n >= spec.min_queries and tests[r] and r not in raised]
            assert [a.rule for a in alerts] == want
            if alerts:  # one evidence for the request's alerts: the key's signals now
                assert all(a.evidence is alerts[0].evidence for a in alerts)
                assert alerts[0].evidence == det.evidence(st)
            raised += want
            assert st.flagged == set(raised)


def _dumps_canonical(o: Any) -> str:
    import json

    return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _as_the_encoder(o: Any) -> None:
    from bastion.store.audit import canonical, canonical_text

    try:
        want = _dumps_canonical(o)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            canonical_text(o)
        return
    assert canonical_text(o) == want
    assert canonical(o) == want.encode()


def _guard_record(**changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "ts": 1796037493.7543788,
        "request_id": "e420aae2f613465387f978a8fb4d5451",
        "model": "digits",
        "model_sha256": "229ef9e5ddd130eec60b9723ecb57dacb4ca2b14c163d382d7c45f71c745df88",
        "input_sha256": "a89e3f5c2b946943d0f68a416249e8731b4966bbceeb53afebcf7abcbf0a32a8",
        "rows": 1,
        "output": {"labels": [8], "mean_confidence": 0.9211},
        "alerts": [],
        "status": 200,
    }
    rec.update(changes)
    return rec


def test_guard_record_text_as_the_encoder() -> None:
    import enum

    from bastion.store.audit import _guard_record_text

    class S(str):
        def __lt__(self, other: object) -> bool:  # an order of its own: left to the encoder
            return not str.__lt__(self, str(other))

    class IE(enum.IntEnum):
        A = 1

    class F(float):
        pass

    assert _guard_record_text(_guard_record()) == _dumps_canonical(_guard_record())
    rng = np.random.default_rng(9)
    for _ in range(300):  # the values the guard writes, over their ranges
        labels = [int(v) for v in rng.integers(0, 10, size=int(rng.integers(0, 33)))]
        rec = _guard_record(
            ts=float(rng.uniform(0, 4e9)),
            rows=int(rng.integers(1, 257)),
            status=int(rng.choice([200, 422, 429])),
            output={"labels": labels, "mean_confidence": round(float(rng.uniform(0, 1)), 4)},
            model=str(rng.choice(["digits", "é-model", 'q"uote\\', "line\u2028sep"])),
            request_id=rng.bytes(16).hex(),
        )
        assert _guard_record_text(rec) == _dumps_canonical(rec)
        _as_the_encoder(rec)
    odd: list[dict[str, Any]] = [
        _guard_record(ts=float("nan")),
        _guard_record(ts=float("inf")),
        _guard_record(ts=F(1.5)),
        _guard_record(ts=-0.0),
        _guard_record(ts=5e-324),
        _guard_record(ts=1e22),
        _guard_record(ts=12),
        _guard_record(rows=True),
        _guard_record(rows=IE.A),
        _guard_record(rows=10**5000),
        _guard_record(status=-(10**30)),
        _guard_record(request_id=S("x")),
        _guard_record(model=None),
        _guard_record(alerts=[{"rule_id": "r", "severity": "high", "atlas": ["AML.T0024"]}]),
        _guard_record(alerts=()),
        _guard_record(output={"labels": [], "mean_confidence": 0.5}),
        _guard_record(output={"labels": [1, True], "mean_confidence": 0.5}),
        _guard_record(output={"labels": [IE.A], "mean_confidence": 0.5}),
        _guard_record(output={"labels": (1,), "mean_confidence": 0.5}),
        _guard_record(output={"labels": [1], "mean_confidence": float("nan")}),
        _guard_record(output={"labels": [1], "mean_confidence": 1}),
        _guard_record(output={"labels": [1], "mean_confidence": 0.5, "hardened": "label"}),
        _guard_record(output={"mean_confidence": 0.5, "labels": [1]}),
        _guard_record(output={S("labels"): [1], "mean_confidence": 0.5}),
        _guard_record(output=[]),
        {S(k) if k == "rows" else k: v for k, v in _guard_record().items()},
        {k: _guard_record()[k] for k in reversed(list(_guard_record()))},
        {**_guard_record(), "reason": "x"},
        {},
        {"a": float("nan")},
        {"a": object()},
    ]
    loop = _guard_record()
    loop["output"] = {"labels": [1], "mean_confidence": 0.5}
    loop["alerts"] = [loop]
    odd.append(loop)
    for o in odd:
        _as_the_encoder(o)


def test_read_body_reads_the_first_content_length_as_starlette_headers() -> None:
    import asyncio

    from starlette.requests import Request

    from bastion.guard.app import _read_body

    def request(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> Request:
        msgs = [
            {"type": "http.request", "body": c, "more_body": i + 1 < len(chunks)}
            for i, c in enumerate(chunks)
        ]

        async def receive() -> dict[str, Any]:
            return msgs.pop(0)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
        return Request(scope, receive)

    for headers, chunks, limit in [
        ([(b"content-length", b"20")], [b"x" * 5], 10),  # declared over the limit: not read
        ([(b"content-length", b"5"), (b"content-length", b"20")], [b"x" * 5], 10),  # the first counts
        ([(b"content-length", b"20"), (b"content-length", b"5")], [b"x" * 5], 10),
        ([(b"content-length", b"abc")], [b"x" * 5], 10),
        ([(b"host", b"h")], [b"ab", b"cd"], 10),
        ([], [b"x" * 6, b"x" * 6], 10),  # over the limit while reading
        ([(b"content-length", b"4")], [b"x" * 6, b"x" * 6], 10),
    ]:
        declared = request(headers, chunks).headers.get("content-length")
        want: bytes | None = b"".join(chunks)
        if (declared is not None and declared.isdigit() and int(declared) > limit) or len(
            b"".join(chunks)
        ) > limit:
            want = None
        assert asyncio.run(_read_body(request(headers, chunks), limit)) == want


def test_validation_all_is_ndarray_all() -> None:
    from bastion.guard.validation import _all

    rng = np.random.default_rng(10)
    for shape in [(1, 64), (3, 5), (0, 4), (2, 0)]:
        for p in (0.0, 0.5, 0.99, 1.0):
            a = rng.uniform(size=shape) < p
            assert _all(a, axis=None) == a.all() and type(_all(a, axis=None)) is type(a.all())


def test_metrics_answered_as_request_and_observe_latency() -> None:
    from bastion.guard.metrics import GuardMetrics

    one, two = GuardMetrics(), GuardMetrics()
    for i, s in enumerate([0.0, 0.0005, 0.003, 1.5, 30.0, -1.0, float("nan"), 0.02]):
        decision = ("allow", "deny", "harden", "error")[i % 4]
        one.answered(decision, s)
        two.request(decision)
        two.observe_latency(s)

    def text(m: GuardMetrics) -> list[str]:
        return [ln for ln in m.render()[0].decode().splitlines() if "_created" not in ln]

    assert text(one) == text(two)


def _policy_pair() -> tuple[Any, Any]:
    from bastion.guard.config import ResponseSpec
    from bastion.guard.response import ResponsePolicy

    spec = ResponseSpec(breaker_reset_s=10.0)
    return ResponsePolicy(spec), ResponsePolicy(spec)


def _policy_state(p: Any) -> Any:
    keys = {
        k: (v.strikes, v.hardened, v.deceive, v.throttled, v.breaker and vars(v.breaker).copy())
        for k, v in p.keys.items()
    }
    return keys, vars(p.backend).copy(), p.degraded_until


def test_policy_key_gate_and_settle_key_as_the_calls_they_join() -> None:
    fast, slow = _policy_pair()
    # a key never seen, a clean one, one whose breaker opens and goes half-open, the group
    script: list[tuple[str, str, float]] = [
        ("gate", "k0", 0.0),
        ("settle", "k0", 0.0),
        ("alert", "k1", 1.0),
        ("gate", "k1", 2.0),
        ("settle", "k1", 2.0),
        ("gate", "k1", 12.0),  # half-open: this request is the trial
        ("gate", "k1", 12.5),  # a second one waits for it
        ("settle-dirty", "k1", 12.5),
        ("gate", "k1", 13.0),
        ("settle", "k1", 13.0),  # the trial went well: closed
        ("gate", "k1", 13.5),
        ("degrade", "", 14.0),
        ("settle", "k2", 14.0),
        ("gate", "k2", 14.5),
    ]
    for what, key, now in script:
        if what == "gate":
            ok, wait = slow.key_allowed(key, now)
            want = (ok, wait, ok and slow.in_trial(key))
            assert fast.key_gate(key, now) == want, (what, key, now)
        elif what.startswith("settle"):
            clean = what == "settle"
            posture = slow.posture(key)
            if clean:
                slow.key_clean(key)
            want_deg = slow.degraded(now)
            got_posture, got_deg = fast.settle_key(key, clean, now)
            assert got_deg == want_deg and vars(got_posture).keys() == vars(posture).keys()
        elif what == "alert":
            for p in (fast, slow):
                p.on_alert(key, "critical", now, force_breaker=True)
        else:
            for p in (fast, slow):
                p.degraded_until = now + 5.0
        assert _policy_state(fast) == _policy_state(slow), (what, key, now)
