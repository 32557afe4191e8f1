"""Key expiry, the upstream readiness probe behind ``/readyz``, and the cap on an upstream answer."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config, serve

from bastion.guard.access import new_key
from bastion.guard.app import Guard, create_app
from bastion.guard.config import GuardConfig, KeySpec
from bastion.guard.health import UpstreamProbe
from bastion.store.audit import AuditLog

Keys = dict[str, tuple[str, KeySpec]]
T0 = 1_800_000_000.0  # the simulated clock's start (2027-01-15)


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _body(rows: Any) -> bytes:
    return json.dumps({"instances": np.asarray(rows).reshape(len(rows), -1).tolist()}).encode()


def test_a_key_works_until_it_expires_then_is_refused_401_with_its_id_in_the_audit_log(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    expires = dt.datetime.fromtimestamp(T0 + 60, dt.UTC)
    secret, spec = new_key("temp", ["digits"], expires=expires)
    cfg = make_config({**keys, "temp": (secret, spec)})
    clock, sink = _Clock(T0), MemorySink()
    g = Guard(cfg, target=target, store=sink, clock=clock)
    hdr = {"Authorization": f"Bearer {secret}"}
    body = _body(digits["x_test"][:1])
    assert g.handle("digits", hdr, body).status == 200
    clock.t = T0 + 59.9
    assert g.handle("digits", hdr, body).status == 200
    clock.t = T0 + 60  # the expiry instant itself is past
    r = g.handle("digits", hdr, body)
    assert r.status == 401 and r.body["detail"] == "API key expired"
    rec = sink.records[-1]
    assert rec["key_id"] == "temp" and rec["decision"] == "deny" and rec["reason"] == "API key expired"
    # other keys are unaffected
    assert g.handle("digits", {"Authorization": f"Bearer {keys['bob'][0]}"}, body).status == 200
    # a guard started after the expiry says so in its log (the key stays refused)
    with caplog.at_level(logging.WARNING, logger="bastion.guard"):
        Guard(cfg, target=target, store=MemorySink(), clock=_Clock(T0 + 61))
    assert any("guard key temp has expired" in m for m in caplog.messages)


def test_an_expiry_without_a_timezone_is_refused_naming_the_field(keys: Keys) -> None:
    _, spec = keys["bob"]
    entry = {**spec.model_dump(mode="json"), "expires": "2027-03-01T00:00:00"}
    with pytest.raises(ValidationError, match=r"keys\.0\.expires[\s\S]*timezone"):
        GuardConfig.model_validate(
            {
                "name": "digits",
                "upstream": {"url": "http://127.0.0.1:9/x", "input_shape": [2], "num_classes": 2},
                "keys": [entry],
            }
        )
    with pytest.raises(ValueError, match="timezone"):
        new_key("k", expires=dt.datetime(2027, 3, 1))


# -- readiness of the upstream -------------------------------------------------------------------------


def _upstream(state: dict[str, Any], target: SoftmaxTarget) -> Any:
    import fastapi

    app = fastapi.FastAPI()

    @app.get("/health")
    async def health(request: Request) -> Any:
        state["health_calls"] += 1
        state["auth"] = request.headers.get("authorization")
        return JSONResponse({"ok": state["healthy"]}, status_code=200 if state["healthy"] else 503)

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        rows = (await request.json())["instances"]
        p = target.predict_proba(np.asarray(rows, dtype=np.float32)).tolist()
        if state.get("bloat"):  # a broken server answering far more than asked
            return Response(json.dumps({"predictions": p, "junk": "x" * 5000}), media_type="application/json")
        return {"predictions": p}

    return app


def test_readyz_probes_the_upstream_health_url_caches_it_and_turns_503_when_it_fails(
    keys: Keys, target: SoftmaxTarget, audit_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "s3cret-token")
    state: dict[str, Any] = {"healthy": True, "health_calls": 0}
    with serve(_upstream(state, target)) as up:
        cfg = make_config(
            keys,
            upstream={
                "url": f"{up}/predict",
                "input_shape": [64],
                "num_classes": 10,
                "ready_url": f"{up}/health",
                "ready_interval": 0.3,
                "token_env": "UPSTREAM_TOKEN",
            },
        )
        app = create_app(cfg, store=AuditLog.open(audit_db))
        with serve(app) as base, httpx.Client(base_url=base) as c:
            r = c.get("/readyz")
            assert r.status_code == 200 and r.json()["ready"] is True, r.text
            up_info = r.json()["upstream"]
            assert up_info["ok"] is True and up_info["status"] == 200 and "url" not in up_info
            assert state["auth"] == "Bearer s3cret-token"  # the upstream's token goes to its health URL
            for _ in range(5):  # within ready_interval: answered from the last probe
                assert c.get("/readyz").status_code == 200
            assert state["health_calls"] == 1
            state["healthy"] = False
            import time

            time.sleep(0.35)
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["ready"] is False
            assert r.json()["upstream"]["reason"] == "answered HTTP 503"
            assert "s3cret" not in r.text
            assert c.get("/healthz").status_code == 200  # liveness is not readiness
            state["healthy"] = True
            time.sleep(0.35)
            assert c.get("/readyz").status_code == 200


def test_an_unreachable_health_url_is_not_ready_and_never_raises() -> None:
    probe = UpstreamProbe("http://127.0.0.1:9/health", interval=60, timeout=0.5)
    try:
        got = probe.check()
    finally:
        probe.close()
    assert got["ok"] is False and got["status"] is None and got["reason"].startswith("unreachable (")
    assert probe.check()["reason"] == got["reason"] and probe.probes == 1  # cached


def test_an_oversized_upstream_answer_is_a_backend_failure_served_the_fallback(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    from bastion.guard.app import build_guard

    state: dict[str, Any] = {"healthy": True, "health_calls": 0, "bloat": False}
    body = _body(digits["x_test"][:1])
    hdr = {"Authorization": f"Bearer {keys['bob'][0]}"}
    with serve(_upstream(state, target)) as up:
        upstream = {
            "url": f"{up}/predict",
            "input_shape": [64],
            "num_classes": 10,
            "max_response_bytes": 2048,
        }
        g = build_guard(make_config(keys, upstream=upstream), store=MemorySink())
        assert g.handle("digits", hdr, body).status == 200
        state["bloat"] = True
        with caplog.at_level(logging.WARNING, logger="bastion.guard"):
            r = g.handle("digits", hdr, body)
    assert r.status == 200 and r.headers["X-Bastion-Degraded"] == "1"  # the default fallback status
    assert g.store.records[-1]["decision"] == "fallback"  # type: ignore[attr-defined]
    assert any("more than 2048 bytes" in m for m in caplog.messages)
    assert g.metrics.backend_failures._value.get() == 1
