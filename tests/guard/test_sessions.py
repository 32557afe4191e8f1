"""Measured session defences: real HopSkipJump runs flagged before they converge; output hardening
cuts a label-only thief's clone fidelity."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
from tests.guard.helpers import MemorySink, SoftmaxTarget, load_guard_benchmark, make_config

from bastion.guard.app import Guard
from bastion.guard.config import KeySpec
from bastion.guard.profile import Profile


@pytest.fixture(autouse=True)
def _quiet_alerts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="bastion.guard")


def _guard(keys: dict[str, tuple[str, KeySpec]], target: SoftmaxTarget, profile: Profile) -> Guard:
    t = [1_700_000_000.0]

    def clock() -> float:
        t[0] += 2.0
        return t[0]

    g = Guard(make_config(keys), target=target, store=MemorySink(), profile=profile, clock=clock)
    g.policy.secret = b"\x07" * 32  # deterministic hardening for the test
    return g


def test_hopskipjump_sessions_flagged_before_convergence(
    keys: dict[str, tuple[str, KeySpec]], target: SoftmaxTarget, profile: Profile, digits: dict[str, Any]
) -> None:
    bench = load_guard_benchmark()
    hdr = {"Authorization": f"Bearer {keys['eve'][0]}"}
    runs = []
    for run in range(10):
        g = _guard(keys, target, profile)

        def send(xb: np.ndarray, g: Guard = g) -> bool:
            body = json.dumps({"instances": xb.reshape(len(xb), -1).tolist()}).encode()
            r = g.handle("digits", hdr, body)
            p = g.policy.keys.get("eve")
            return bool(p and p.strikes > 0) or r.status == 429

        x0 = digits["x_test"][run]
        y0 = int(target.predict_label(x0[None])[0])
        res = bench.hsj_session(send, target.predict_label, x0, y0, seed=run, max_queries=1000)
        assert res["converged_at"] is not None and 200 < res["queries"] <= 1000  # ran, within its cap
        res["rules"] = sorted(g.extraction.stats["eve"].flagged) if g.extraction else []
        runs.append(res)
    flagged_before = sum(r["flagged_before"] for r in runs)
    assert flagged_before >= 9, runs
    assert all("probing-session" in r["rules"] for r in runs if r["flagged_before"])


def test_hardening_cuts_label_only_thief_fidelity(
    keys: dict[str, tuple[str, KeySpec]], target: SoftmaxTarget, profile: Profile, digits: dict[str, Any]
) -> None:
    bench = load_guard_benchmark()
    pool, ev = digits["x_test"][:600], digits["x_test"][600:]
    ev_true = target.predict_label(ev)
    q, lab = bench.label_thief(
        lambda r: target.predict_label(r[None])[0], pool, 1500, np.random.default_rng(1)
    )
    bare = bench.surrogate_fidelity(q, lab, ev, ev_true)
    g = _guard(keys, target, profile)
    hdr = {"Authorization": f"Bearer {keys['eve'][0]}"}

    def ask(r: np.ndarray) -> int:
        resp = g.handle("digits", hdr, json.dumps({"instances": [r.tolist()]}).encode())
        assert resp.status == 200, resp.body
        p = resp.body["predictions"][0]
        return int(p) if resp.body["output"] == "label" else int(np.argmax(p))

    q, lab = bench.label_thief(ask, pool, 1500, np.random.default_rng(1))
    hard = bench.surrogate_fidelity(q, lab, ev, ev_true)
    assert g.policy.posture("eve").hardened
    assert min(bare.values()) >= 0.93, bare
    assert max(hard.values()) <= 0.80, (bare, hard)
    # the answers never say which labels are wrong; a flagged key's answers are stable
    a1 = g.handle("digits", hdr, json.dumps({"instances": [pool[0].tolist()]}).encode())
    a2 = g.handle("digits", hdr, json.dumps({"instances": [pool[0].tolist()]}).encode())
    assert a1.body["output"] == "label" and a1.body["predictions"] == a2.body["predictions"]


def test_noisy_label_map_is_a_secret_merge_per_key() -> None:
    from bastion.guard.config import ResponseSpec
    from bastion.guard.response import ResponsePolicy

    pol = ResponsePolicy(ResponseSpec(flip_fraction=0.3))
    m = pol._flip_map("eve", 10)
    # three classes answered as one other: a thief holding labelled rows cannot undo it
    assert len(m) == 3 and len(set(m.values())) == 1 and not set(m.values()) & set(m)
    assert pol._flip_map("eve", 10) == m
    other = ResponsePolicy(ResponseSpec(flip_fraction=0.3))
    assert any(other._flip_map(f"k{i}", 10) != pol._flip_map(f"k{i}", 10) for i in range(5))
    probs = np.eye(10)
    labels, kind = pol.harden(probs, key_id="eve")
    assert kind == "label" and sum(int(a != b) for a, b in zip(labels, range(10), strict=True)) == 3
    plain = ResponsePolicy(ResponseSpec(harden="label"))
    assert plain.harden(probs, key_id="eve") == (list(range(10)), "label")


def test_deeply_nested_json_is_rejected_as_malformed(
    keys: dict[str, tuple[str, KeySpec]], target: SoftmaxTarget, profile: Profile
) -> None:
    g = _guard(keys, target, profile)
    hdr = {"Authorization": f"Bearer {keys['eve'][0]}"}
    r = g.handle("digits", hdr, b"[" * 200_000 + b"]" * 200_000)
    assert r.status == 400  # not a 503 "guard error": nesting must not count as a guard failure
