"""Fixes from a production-readiness trial of ``bastion guard``: proxy concurrency, readiness of
the audit log, several writers on one chain, value-free audit reasons, start-up failures."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.requests import Request
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config, serve
from tests.keys import write_ec_keypair

from bastion.core.errors import ConfigError
from bastion.guard.app import Guard, create_app
from bastion.guard.config import GuardConfig, KeySpec, load_guard_config
from bastion.guard.profile import Profile
from bastion.store.audit import AuditLog

Keys = dict[str, tuple[str, KeySpec]]


def _hdr(keys: Keys, kid: str = "bob") -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[kid][0]}"}


def _body(rows: Any) -> bytes:
    return json.dumps({"instances": np.asarray(rows).reshape(len(rows), -1).tolist()}).encode()


def test_the_proxy_sends_concurrent_requests_to_the_upstream_at_once(
    keys: Keys, target: SoftmaxTarget, audit_db: str, digits: dict[str, np.ndarray]
) -> None:
    import fastapi

    upstream = fastapi.FastAPI()
    in_flight = {"now": 0, "most": 0}

    @upstream.post("/predict")
    async def predict(request: Request) -> Any:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        rows = (await request.json())["instances"]
        await asyncio.sleep(0.3)  # a slow model server
        in_flight["now"] -= 1
        return {"predictions": target.predict_proba(np.asarray(rows, dtype=np.float32)).tolist()}

    x = digits["x_test"][:8]
    with serve(upstream) as up:
        cfg = make_config(keys, upstream={"url": f"{up}/predict", "input_shape": [64], "num_classes": 10})
        app = create_app(cfg, store=AuditLog.open(audit_db))
        with serve(app) as base:
            statuses: list[int] = []

            def call(i: int) -> None:
                with httpx.Client(base_url=base, timeout=10) as c:
                    r = c.post("/v1/models/digits/predict", content=_body(x[i : i + 1]), headers=_hdr(keys))
                    statuses.append(r.status_code)

            t0 = time.monotonic()
            threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - t0
    assert statuses == [200] * 8
    # one at a time would take 8 x 0.3 s; in parallel they overlap at the upstream
    assert in_flight["most"] >= 4 and took < 1.8, (in_flight, took)


def test_readyz_is_503_while_the_audit_log_cannot_take_a_record(
    keys: Keys, target: SoftmaxTarget, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    AuditLog.open(f"sqlite:///{path}").close()  # created and migrated
    rw = AuditLog.open(f"sqlite:///{path}")
    assert Guard(make_config(keys), target=target, store=rw).ready()["audit"] == {"ok": True}
    ro = AuditLog.open(f"sqlite:///file:{path}?mode=ro&uri=true")
    g = Guard(make_config(keys), target=target, store=ro)
    info = g.ready()
    assert info["ready"] is False and info["audit"]["ok"] is False
    assert "readonly" in info["audit"]["reason"]
    r = g.handle("digits", _hdr(keys), b'{"instances": [[0.0]]}')  # would be 422; the record fails first
    assert r.status == 503 and r.body["detail"] == "audit log unavailable; request denied"
    with serve(create_app(make_config(keys), target=target, store=ro)) as base:
        got = httpx.get(f"{base}/readyz")
    assert got.status_code == 503 and got.json()["audit"]["ok"] is False
    assert path.stat().st_size > 0 and rw.records() == []  # the probes wrote nothing
    for log in (rw, ro):
        log.close()


def test_a_second_guard_on_the_same_chain_keeps_serving_and_the_chain_verifies(
    keys: Keys, target: SoftmaxTarget, audit_db: str, digits: dict[str, np.ndarray]
) -> None:
    # a rolling deploy: the new guard starts while the old one still writes, then the old stops
    old = Guard(make_config(keys), target=target, store=AuditLog.open(audit_db))
    new = Guard(make_config(keys), target=target, store=AuditLog.open(audit_db))
    body = _body(digits["x_test"][:1])
    for g in (old, new, old, new, new):
        assert g.handle("digits", _hdr(keys), body).status == 200
    res = AuditLog.open(audit_db).verify()
    assert res.ok and res.records == 5, res.problems


def test_an_integer_beyond_the_float_range_is_422_and_audited_under_its_key(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    sink = MemorySink()
    g = Guard(make_config(keys), target=target, store=sink, profile=profile)
    row = [0.0] * 64
    text = json.dumps({"instances": [row]}).replace("[0.0,", "[1" + "0" * 309 + ",", 1).encode()
    r = g.handle("digits", _hdr(keys), text)
    assert r.status == 422 and r.body["detail"] == [
        {"field": "instances[0][0]", "reason": "not a finite number"}
    ]
    assert sink.records[-1]["key_id"] == "bob" and sink.records[-1]["decision"] == "reject"


def test_an_internal_error_after_the_key_check_is_recorded_under_the_key(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = MemorySink()
    g = Guard(make_config(keys), target=target, store=sink)

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(g.limiter, "take", boom)
    r = g.handle("digits", _hdr(keys), _body(digits["x_test"][:1]))
    assert r.status == 503 and sink.records[-1]["decision"] == "error" and sink.records[-1]["key_id"] == "bob"


def test_a_rejected_value_is_quoted_to_the_caller_but_never_stored(
    keys: Keys, target: SoftmaxTarget, profile: Profile
) -> None:
    sink = MemorySink()
    g = Guard(make_config(keys), target=target, store=sink, profile=profile)
    row = [0.5] * 64
    row[5] = 987.25
    r = g.handle("digits", _hdr(keys), json.dumps({"instances": [row]}).encode())
    assert r.status == 422 and r.body["detail"][0]["reason"].startswith(
        "value 987.25 outside the trained range"
    )
    # the stored record without its clock and id (a timestamp may hold any digits)
    record = {k: v for k, v in sink.records[-1].items() if k not in ("ts", "request_id", "created")}
    stored = json.dumps(record, default=str)
    assert "987.25" not in json.dumps(sink.records[-1], default=str)
    assert "987" not in stored and "outside the trained range [" in stored


def test_an_upstream_class_count_that_the_profile_contradicts_is_refused_at_start(
    keys: Keys, target: SoftmaxTarget, profile: Profile
) -> None:
    from bastion.guard.app import build_guard

    cfg = make_config(keys, upstream={"url": "http://127.0.0.1:9/p", "input_shape": [64], "num_classes": 3})
    with pytest.raises(
        ConfigError, match=r"profile is for a model of 10 classes; upstream.num_classes says 3"
    ):
        build_guard(cfg, store=MemorySink(), profile=profile)


def test_a_relative_audit_database_is_beside_guard_yaml_whatever_the_working_folder(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "svc"
    folder.mkdir()
    doc = {
        "name": "digits",
        "upstream": {"url": "http://127.0.0.1:9/p", "input_shape": [64], "num_classes": 10},
        "keys": [keys["bob"][1].model_dump(mode="json")],
        "audit": {"db": "sqlite:///.bastion/audit.db"},
    }
    (folder / "guard.yaml").write_text(json.dumps(doc))
    monkeypatch.chdir("/")
    cfg = load_guard_config(folder / "guard.yaml")
    assert cfg.audit.db == f"sqlite:///{folder}/.bastion/audit.db"
    for url in ("sqlite:////abs/a.db", "postgresql+psycopg://u@h/db", "sqlite:///file:x.db?mode=ro&uri=true"):
        (folder / "guard.yaml").write_text(json.dumps({**doc, "audit": {"db": url}}))
        assert load_guard_config(folder / "guard.yaml").audit.db == url


def test_webhooks_must_be_http_urls(keys: Keys) -> None:
    with pytest.raises(ValueError, match=r"alerts\.webhooks\.0"):
        GuardConfig.model_validate(
            {
                "name": "d",
                "upstream": {"url": "http://127.0.0.1:9/p", "input_shape": [2], "num_classes": 2},
                "keys": [keys["bob"][1].model_dump(mode="json")],
                "alerts": {"webhooks": ["not a url"]},
            }
        )


def test_serve_on_a_port_in_use_exits_2_and_prints_no_head(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.guard.helpers import write_guard_yaml

    from bastion import api
    from bastion.cli.main import run

    info = api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "profile")
    write_guard_yaml(project, info["sha256"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = run(["guard", "serve", "-c", str(project / "guard.yaml"), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
    assert "audit head" not in err


def test_a_missing_profile_folder_is_named(keys: Keys, target: SoftmaxTarget, tmp_path: Path) -> None:
    from bastion.guard.profile import verify_profile_signature

    with pytest.raises(ConfigError, match=r"guard profile not found \(profile.path"):
        verify_profile_signature(tmp_path / "nope-profile", public_key=None)


def test_the_guard_does_not_serve_a_model_whose_signature_fails(project: Path) -> None:
    pytest.importorskip("model_signing")
    from bastion import api
    from bastion.core.errors import IntegrityError
    from bastion.guard.app import load_serving_target

    write_ec_keypair(project / "key.pem", None)  # the signer
    write_ec_keypair(None, project / "other.pub")  # another key: the one the project trusts
    api.sign_model(project / "model.joblib", key=project / "key.pem")  # signed, but not by the trusted key
    cfg_path = project / "bastion.yaml"
    cfg_path.write_text(cfg_path.read_text() + "signing: {public_key: other.pub}\n")
    cfg = GuardConfig.model_validate(
        {"name": "digits", "model": {"config": str(cfg_path), "asset": "digits"}, "keys": []}
    )
    with pytest.raises(IntegrityError, match="not loaded: its signature did not verify"):
        load_serving_target(cfg)


def test_a_locked_audit_database_never_stalls_the_event_loop(
    keys: Keys, target: SoftmaxTarget, audit_db: str, digits: dict[str, np.ndarray]
) -> None:
    import sqlite3

    store = AuditLog.open(audit_db)
    app = create_app(make_config(keys), store=store, target=target)
    body = _body(digits["x_test"][:1])
    with serve(app) as base, httpx.Client(base_url=base, timeout=20) as c:
        assert c.post("/v1/models/digits/predict", content=body, headers=_hdr(keys)).status_code == 200
        holder = sqlite3.connect(audit_db.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # a backup, or another writer, holds the lock
        answers: list[int] = []
        t = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{base}/v1/models/digits/predict", content=body, headers=_hdr(keys), timeout=20
                ).status_code
            )
        )
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        assert c.get("/healthz").status_code == 200
        assert time.monotonic() - t0 < 0.5  # the loop is free while the record waits for the lock
        assert answers == []  # the request is not answered before its record is committed
        time.sleep(0.5)
        holder.execute("ROLLBACK")
        holder.close()
        t.join(10)
        assert answers == [200]
        # once the writer thread has drained, records are written on the loop again, in order
        for _ in range(3):
            assert c.post("/v1/models/digits/predict", content=body, headers=_hdr(keys)).status_code == 200
    res = AuditLog.open(audit_db).verify()
    assert res.ok and res.records == 5, res.problems


def test_one_request_of_repeated_traps_raises_one_alert_and_never_degrades_the_service(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    from bastion.guard.canary import canary_hash

    trap = digits["x_test"][0]
    cfg = make_config(
        keys,
        canaries=[{"id": "c1", "sha256": canary_hash(trap)}],
        response={"degraded": {"alerts_per_minute": 5, "duration_s": 60}},
    )
    sink = MemorySink()
    g = Guard(cfg, target=target, store=sink)
    r = g.handle("digits", _hdr(keys, "eve"), _body(np.repeat(trap[None], 60, axis=0)))
    assert [i["rule_id"] for i in sink.incidents] == ["guard.canary.hit"]  # one, not 60
    assert not g.policy.degraded(time.time())
    # other keys are served normally; the trap key's breaker is open
    ok = g.handle("digits", _hdr(keys, "bob"), _body(digits["x_test"][1:2]))
    assert ok.status == 200 and "X-Bastion-Degraded" not in ok.headers
    assert g.handle("digits", _hdr(keys, "eve"), _body(digits["x_test"][1:2])).status == 429
    del r


def test_more_rows_than_the_burst_is_422_and_401_names_the_scheme(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    cfg = make_config(keys, limits={"rate": 10, "burst": 4, "daily_quota": 1000})
    g = Guard(cfg, target=target, store=MemorySink())
    r = g.handle("digits", _hdr(keys), _body(digits["x_test"][:5]))
    assert r.status == 422 and "Retry-After" not in r.headers
    assert r.body["detail"][0]["reason"] == "5 rows; at most 4 per request (limits.burst): split it"
    assert g.handle("digits", _hdr(keys), _body(digits["x_test"][:4])).status == 200
    denied = g.handle("digits", {"Authorization": "Bearer nope"}, _body(digits["x_test"][:1]))
    assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_cross_key_check_runs_when_a_key_steps_over_a_multiple_of_five() -> None:
    from bastion.guard.config import ExtractionSpec
    from bastion.guard.extraction import ExtractionDetector

    det = ExtractionDetector(ExtractionSpec(), num_classes=10, dims=2)
    calls: list[int] = []
    det._cross = lambda now: calls.append(1) or []  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    for size in (1, 5, 5, 5, 5, 5, 5):  # the key's count goes 1, 6, 11, 16 ... never a multiple of 5
        z = rng.normal(size=(size, 2))
        det.observe(
            "k",
            z=z,
            cells=np.arange(size),
            labels=np.zeros(size, dtype=int),
            margins=np.ones(size),
            ood=np.zeros(size, dtype=bool),
            now=0.0,
        )
    assert det.stats["k"].n == 31 and len(calls) >= 3


def test_padding_queries_with_copies_of_one_row_does_not_hide_a_natural_data_thief(
    keys: Keys, target: SoftmaxTarget, profile: Profile, digits: dict[str, np.ndarray]
) -> None:
    cfg = make_config(keys, limits={"rate": 1e6, "burst": 1e6, "daily_quota": 10**9})
    t = [1_700_000_000.0]
    sink = MemorySink()
    g = Guard(cfg, target=target, store=sink, profile=profile, clock=lambda: t[0])
    x = digits["x_test"]
    pad = x[np.argmax(digits["y_test"] == 0)]  # one class-0 row, repeated in every request
    flagged_at = None
    for r in range(100):
        real = x[3 * r : 3 * r + 3]
        rows = np.concatenate([real, np.repeat(pad[None], 7, axis=0)])
        t[0] += 1.0
        reply = g.handle("digits", _hdr(keys, "eve"), _body(rows))
        rules = [a["rule_id"] for a in sink.records[-1].get("alerts", [])]
        if flagged_at is None and "guard.extraction.class-coverage" in rules:
            flagged_at = 3 * (r + 1)
        assert reply.status == 200
    assert flagged_at is not None and flagged_at <= 150, flagged_at  # real rows sent when flagged


def test_an_unknown_key_is_refused_without_trying_every_configured_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bastion.guard.access as access
    from bastion.guard.access import AccessControl, new_key

    made = [new_key(f"k{i}") for i in range(2000)]
    legacy_secret, legacy = new_key("legacy")
    legacy = legacy.model_copy(update={"lookup": None})  # a key made before lookup tags existed
    ac = AccessControl([spec for _, spec in made] + [legacy])
    tried: list[str] = []
    real = access.hash_key
    monkeypatch.setattr(access, "hash_key", lambda key, salt: tried.append(salt) or real(key, salt))
    assert ac.check({"authorization": "Bearer bk_not-a-key"}, "digits").status == 401
    assert len(tried) == 1  # only the untagged legacy key, not 2,001 HMACs
    tried.clear()
    secret, spec = made[1234]
    assert ac.check({"authorization": f"Bearer {secret}"}, "digits").key_id == spec.id
    assert len(tried) <= 3  # its tag's keys (almost always one) and the legacy key
    assert ac.check({"authorization": f"Bearer {legacy_secret}"}, "digits").key_id == "legacy"
