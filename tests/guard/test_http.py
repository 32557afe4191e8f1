"""The guard over real HTTP on 127.0.0.1: bad input, load, webhooks and canaries, backend faults, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from tests.guard.helpers import SoftmaxTarget, free_port, make_config, serve

from bastion.guard.app import create_app, create_bare_app
from bastion.guard.canary import canary_hash
from bastion.guard.profile import Profile
from bastion.store.audit import AuditLog

pytestmark = pytest.mark.e2e


def _hdr(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_bad_input_gets_the_right_4xx_and_never_reaches_the_model(
    keys: dict, target: SoftmaxTarget, profile: Profile, audit_db: str, digits: dict, figures: dict[str, Any]
) -> None:
    cfg = make_config(
        keys, limits={"rate": 1000, "burst": 1000, "daily_quota": 10**6, "max_body_bytes": 20_000}
    )
    store = AuditLog.open(audit_db)
    app = create_app(cfg, store=store, target=target, profile=profile)
    secret = keys["alice"][0]
    url_ok = "/v1/models/digits/predict"
    row = [float(v) for v in digits["x_test"][0]]
    with serve(app) as base, httpx.Client(base_url=base) as c:
        r = c.post(url_ok, json={"instances": [row]}, headers=_hdr(secret))
        assert r.status_code == 200 and r.json()["output"] == "probabilities"
        assert len(r.json()["predictions"][0]) == 10 and r.headers["x-request-id"]
        used = target.queries
        cases: list[tuple[dict[str, Any], int]] = [
            ({"json": {"instances": [row]}}, 401),  # no key
            ({"json": {"instances": [row]}, "headers": _hdr("wrong")}, 401),
            ({"json": {"instances": [row]}, "headers": _hdr(keys["other"][0])}, 403),
            ({"content": b"{not json", "headers": _hdr(secret)}, 400),
            ({"json": {"instances": [row[:10]]}, "headers": _hdr(secret)}, 422),
            ({"content": b'{"instances": [[' + b"NaN," * 63 + b"0]]}", "headers": _hdr(secret)}, 422),
            ({"content": b'{"instances": [[' + b"1e999," * 63 + b"0]]}", "headers": _hdr(secret)}, 422),
            ({"json": {"instances": [[5.0] * 64]}, "headers": _hdr(secret)}, 422),
            ({"json": {"rows": [row]}, "headers": _hdr(secret)}, 422),
            ({"content": b"[" + b"0.5," * 20_000 + b"0]", "headers": _hdr(secret)}, 413),
        ]
        got: list[int] = []
        for kw, status in cases:
            r = c.post(url_ok, **kw)
            got.append(r.status_code)
            assert r.status_code == status, (kw.get("json") or kw.get("content", b"")[:40], r.text)
        r = c.post(url_ok, json={"instances": [row[:10]]}, headers=_hdr(secret))
        assert r.json()["detail"][0]["field"] == "instances[0]"
        assert (
            c.post("/v1/models/nope/predict", json={"instances": [row]}, headers=_hdr(secret)).status_code
            == 404
        )
        assert target.queries == used  # nothing rejected reached the model
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["ready"] is True
        m = c.get("/metrics").text
        assert 'bastion_guard_requests_total{decision="reject"}' in m and "bastion_guard_request_seconds" in m
    res = store.verify()
    assert res.ok and res.records == 1 + len(cases) + 2
    recs = store.records()
    assert all("input" not in r["record"] for r in recs)  # raw inputs never logged
    assert recs[0]["record"]["input_sha256"] and recs[0]["record"]["model"] == "digits"
    figures.update(
        bad_requests=len(cases) + 2,
        statuses=sorted({*got, 404}),
        rows_reaching_model=0,
        crashes=0,
        audit_records=res.records,
        chain_ok=res.ok,
    )


def test_rate_limit_429_with_retry_after(keys: dict, target: SoftmaxTarget, audit_db: str) -> None:
    cfg = make_config(keys, limits={"rate": 1, "burst": 3, "daily_quota": 100})
    app = create_app(cfg, store=AuditLog.open(audit_db), target=target)
    with serve(app) as base, httpx.Client(base_url=base) as c:
        codes = [
            c.post(
                "/v1/models/digits/predict", json={"instances": [[0.1] * 64]}, headers=_hdr(keys["bob"][0])
            )
            for _ in range(5)
        ]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    assert codes[4].status_code == 429 and int(codes[4].headers["retry-after"]) >= 1


def test_load_50_clients_no_5xx_no_lost_record(
    keys: dict, target: SoftmaxTarget, profile: Profile, audit_db: str, digits: dict, figures: dict[str, Any]
) -> None:
    cfg = make_config(keys)
    store = AuditLog.open(audit_db)
    app = create_app(cfg, store=store, target=target, profile=profile)
    ids: list[str] = []
    codes: list[int] = []
    lat: list[float] = []
    lock = threading.Lock()
    rows = digits["x_test"][:50].tolist()

    def client(i: int, base: str) -> None:
        secret = keys[("alice", "bob", "eve")[i % 3]][0]
        with httpx.Client(base_url=base, timeout=30) as c:
            for j in range(6):
                t0 = time.perf_counter()
                r = c.post(
                    "/v1/models/digits/predict",
                    json={"instances": [rows[(i + j) % 50]]},
                    headers=_hdr(secret),
                )
                with lock:
                    lat.append(time.perf_counter() - t0)
                    codes.append(r.status_code)
                    ids.append(r.headers["x-request-id"])

    with serve(app) as base:
        threads = [threading.Thread(target=client, args=(i, base)) for i in range(50)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        wall = time.perf_counter() - t_start
    assert len(codes) == 300 and all(c < 500 for c in codes)
    res = store.verify()
    assert res.ok and res.records == 300
    logged = {r["record"]["request_id"] for r in store.records()}
    assert set(ids) <= logged
    lat.sort()
    figures.update(
        clients=50,
        requests=len(codes),
        status_5xx=sum(c >= 500 for c in codes),
        audit_records=res.records,
        lost_records=len(set(ids) - logged),
        chain_ok=res.ok,
        p50_ms=round(1000 * lat[len(lat) // 2], 1),
        p95_ms=round(1000 * lat[int(len(lat) * 0.95)], 1),
        requests_per_s=round(len(codes) / wall, 1),
    )


def test_canary_alert_webhook_incident_and_breaker(
    keys: dict, target: SoftmaxTarget, profile: Profile, audit_db: str, digits: dict
) -> None:
    got: list[dict[str, Any]] = []
    import fastapi

    recv = fastapi.FastAPI()

    @recv.post("/hook")
    async def hook(request: Request) -> Any:
        got.append(await request.json())
        return {"ok": True}

    trap = digits["x_test"][7]
    with serve(recv) as hook_base:
        cfg = make_config(
            keys,
            canaries=[{"id": "patient-x", "sha256": canary_hash(trap)}],
            alerts={"webhooks": [f"{hook_base}/hook"]},
        )
        store = AuditLog.open(audit_db)
        app = create_app(cfg, store=store, target=target, profile=profile)
        with serve(app) as base, httpx.Client(base_url=base) as c:
            secret = keys["eve"][0]
            r = c.post("/v1/models/digits/predict", json={"instances": [trap.tolist()]}, headers=_hdr(secret))
            assert r.status_code == 200 and r.json()["output"] == "label"  # hardened at once
            r = c.post("/v1/models/digits/predict", json={"instances": [[0.1] * 64]}, headers=_hdr(secret))
            assert r.status_code == 429 and "circuit breaker" in r.json()["detail"]
            ok = c.post(
                "/v1/models/digits/predict", json={"instances": [[0.1] * 64]}, headers=_hdr(keys["bob"][0])
            )
            assert ok.status_code == 200
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
    assert got and got[0]["rule_id"] == "guard.canary.hit" and got[0]["key_id"] == "eve"
    assert got[0]["atlas"] and "breaker" in got[0]["actions"]
    inc = store.incidents(asset="digits")
    assert inc[0]["rule_id"] == "guard.canary.hit" and inc[0]["severity"] == "critical"
    rec = store.records()[0]["record"]
    assert rec["alerts"][0]["rule_id"] == "guard.canary.hit" and rec["alerts"][0]["atlas"]


def test_extraction_thief_hardened_over_http(
    keys: dict, target: SoftmaxTarget, profile: Profile, audit_db: str, digits: dict
) -> None:
    store = AuditLog.open(audit_db)
    app = create_app(make_config(keys), store=store, target=target, profile=profile)
    with serve(app) as base, httpx.Client(base_url=base) as c:
        outs = [
            c.post(
                "/v1/models/digits/predict", json={"instances": [row]}, headers=_hdr(keys["eve"][0])
            ).json()
            for row in digits["x_test"][:120].tolist()
        ]
    assert outs[0]["output"] == "probabilities" and outs[-1]["output"] == "label"
    assert any(i["rule_id"].startswith("guard.extraction.") for i in store.incidents())


def _bare_server(target: SoftmaxTarget, port: int) -> Any:
    return serve(create_bare_app(target, name="digits"), port=port)


_BACKEND = """
import sys
import numpy as np
import uvicorn
from tests.guard.helpers import SoftmaxTarget
from bastion.guard.app import create_bare_app
w = np.load(sys.argv[1])
app = create_bare_app(SoftmaxTarget(w["w"], w["b"]), name="digits")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="error", access_log=False)
"""


def _start_backend(tmp_path: Path, target: SoftmaxTarget, port: int) -> subprocess.Popen[bytes]:
    """The bare model server as its own process (so it can be SIGKILLed)."""
    weights = tmp_path / "w.npz"
    if not weights.exists():
        import numpy as np

        np.savez(weights, w=target.w, b=target.b)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{root}{os.pathsep}{root / 'src'}"}
    p = subprocess.Popen(
        [sys.executable, "-c", _BACKEND, str(weights), str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    body = {"instances": [[0.1] * 64]}
    while time.monotonic() < deadline:
        try:
            if httpx.post(
                f"http://127.0.0.1:{port}/v1/models/digits/predict", json=body, timeout=1
            ).is_success:
                return p
        except httpx.HTTPError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("backend did not start")


def test_backend_killed_mid_load_breaker_opens_fallback_then_recovers(
    keys: dict, target: SoftmaxTarget, audit_db: str, tmp_path: Path, figures: dict[str, Any]
) -> None:
    port = free_port()
    cfg = make_config(
        keys,
        upstream={
            "url": f"http://127.0.0.1:{port}/v1/models/digits/predict",
            "input_shape": [64],
            "num_classes": 10,
            "timeout": 2,
        },
        response={"backend_failures": 2, "backend_reset_s": 0.3},
    )
    store = AuditLog.open(audit_db)
    app = create_app(cfg, store=store)
    body = {"instances": [[0.2] * 64]}
    kinds: list[str] = []  # "model" | "fallback" | "other:<status>" in answer order
    lock = threading.Lock()
    stop = threading.Event()
    backend = _start_backend(tmp_path, target, port)

    def client(base: str, secret: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as c:
            while not stop.is_set():
                r = c.post("/v1/models/digits/predict", json=body, headers=_hdr(secret))
                kind = (
                    "model"
                    if r.status_code == 200 and r.json().get("output") == "probabilities"
                    else "fallback"
                    if r.status_code == 200 and r.json().get("degraded") is True
                    else f"other:{r.status_code}"
                )
                with lock:
                    kinds.append(kind)
                time.sleep(0.005)

    def wait_for(pred: Any, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline:
            time.sleep(0.02)

    try:
        with serve(app) as base, httpx.Client(base_url=base) as c:
            workers = [
                threading.Thread(target=client, args=(base, keys[k][0])) for k in ("alice", "bob", "eve") * 2
            ]
            for w in workers:
                w.start()
            wait_for(lambda: kinds.count("model") >= 30)
            n_before = len(kinds)
            t_kill = time.monotonic()
            backend.send_signal(signal.SIGKILL)  # the model server dies mid-load
            backend.wait(10)
            wait_for(lambda: "fallback" in kinds[n_before:])
            t_fallback = time.monotonic()
            ready_down = c.get("/readyz")
            assert ready_down.status_code == 503 and ready_down.json()["backend"] in ("open", "half_open")
            n_down = len(kinds)
            backend = _start_backend(tmp_path, target, port)  # restarted on the same port
            t_up = time.monotonic()
            wait_for(lambda: kinds[n_down:].count("model") >= 10)
            t_recovered = time.monotonic()
            stop.set()
            for w in workers:
                w.join(15)
            ready_up = c.get("/readyz").json()
            metrics = c.get("/metrics").text
    finally:
        stop.set()
        backend.kill()
        backend.wait(10)
    after_kill = kinds[n_before:]
    assert not [k for k in kinds if k.startswith("other")], sorted(set(kinds))  # no 5xx, nothing else
    assert "fallback" in after_kill and kinds[n_down:].count("model") >= 10
    assert ready_up["backend"] == "closed" and ready_up["ready"] is True  # breaker closed after recovery
    assert "bastion_guard_backend_failures_total" in metrics
    res = store.verify()
    assert res.ok and res.records == len(kinds)  # every answer has its record
    assert any(i["rule_id"] == "guard.backend.down" for i in store.incidents())
    figures.update(
        requests=len(kinds),
        answered_by_model=kinds.count("model"),
        fallback_served=kinds.count("fallback"),
        non_200=0,
        fallback_after_kill_s=round(t_fallback - t_kill, 3),
        recovered_after_restart_s=round(t_recovered - t_up, 3),
        audit_records=res.records,
        chain_ok=res.ok,
    )


def test_guard_sigkill_mid_load_chain_verifies_and_acked_requests_logged(
    keys: dict, target: SoftmaxTarget, tmp_path: Path, figures: dict[str, Any]
) -> None:
    bport, gport = free_port(), free_port()
    db = f"sqlite:///{tmp_path / 'g.db'}"
    cfg: dict[str, Any] = make_config(
        keys,
        upstream={
            "url": f"http://127.0.0.1:{bport}/v1/models/digits/predict",
            "input_shape": [64],
            "num_classes": 10,
        },
        audit={"db": db},
        server={"port": gport},
    ).model_dump(mode="json")
    (tmp_path / "guard.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bastion.cli", "guard", "serve", "-c", str(tmp_path / "guard.yaml")]
    acked: list[str] = []
    statuses: list[int] = []

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{gport}/healthz", timeout=0.5).status_code == 200:
                    return p
            except httpx.HTTPError:
                time.sleep(0.1)
        p.kill()
        raise RuntimeError("guard did not start")

    def load(stop: threading.Event) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{gport}", timeout=5) as c:
            while not stop.is_set():
                try:
                    r = c.post(
                        "/v1/models/digits/predict",
                        json={"instances": [[0.3] * 64]},
                        headers=_hdr(keys["alice"][0]),
                    )
                except httpx.HTTPError:
                    return
                statuses.append(r.status_code)
                if r.status_code == 200:
                    acked.append(r.headers["x-request-id"])

    with _bare_server(target, bport):
        proc = start()
        stop = threading.Event()
        workers = [threading.Thread(target=load, args=(stop,)) for _ in range(4)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 15
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
        assert len(acked) > 10, statuses[:20]
        proc = start()  # restart: the chain continues
        r = httpx.post(
            f"http://127.0.0.1:{gport}/v1/models/digits/predict",
            json={"instances": [[0.3] * 64]},
            headers=_hdr(keys["alice"][0]),
        )
        assert r.status_code == 200
        proc.terminate()
        proc.wait(10)
    log = AuditLog.open(db)
    res = log.verify()
    assert res.ok
    logged = {r["record"]["request_id"] for r in log.records()}
    assert set(acked) <= logged and r.headers["x-request-id"] in logged
    figures.update(
        acknowledged_before_kill=len(acked),
        acknowledged_missing=len(set(acked) - logged),
        audit_records_after_restart=res.records,
        chain_ok=res.ok,
        status_5xx=sum(s >= 500 for s in statuses),
    )


def test_reverse_proxy_to_a_kserve_v2_server_with_its_template(
    keys: dict, target: SoftmaxTarget, profile: Profile, audit_db: str, digits: dict, figures: dict[str, Any]
) -> None:
    import fastapi
    import numpy as np

    seen: list[dict[str, Any]] = []
    upstream = fastapi.FastAPI()

    @upstream.post("/v2/models/digits/infer")
    async def infer(request: Request) -> Any:  # Open Inference Protocol (KServe v2, Triton, MLServer)
        doc = await request.json()
        inp = doc["inputs"][0]
        seen.append({"name": inp["name"], "shape": inp["shape"], "datatype": inp["datatype"]})
        x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
        p = target.predict_proba(x)
        return {
            "outputs": [
                {"name": "probs", "shape": list(p.shape), "datatype": "FP32", "data": p.ravel().tolist()}
            ]
        }

    with serve(upstream) as up:
        cfg = make_config(
            keys,
            upstream={
                "url": f"{up}/v2/models/digits/infer",
                "input_shape": [64],
                "num_classes": 10,
                "wire": "kserve-v2",
                "input_name": "pixels",
            },
        )
        store = AuditLog.open(audit_db)
        app = create_app(cfg, store=store, profile=profile)
        x = digits["x_test"][:4]
        with serve(app) as base, httpx.Client(base_url=base) as c:
            r = c.post(
                "/v1/models/digits/predict", json={"instances": x.tolist()}, headers=_hdr(keys["bob"][0])
            )
            bad = c.post(
                "/v1/models/digits/predict", json={"instances": [[2.0] * 64]}, headers=_hdr(keys["bob"][0])
            )
    assert r.status_code == 200 and r.json()["output"] == "probabilities"
    np.testing.assert_allclose(np.asarray(r.json()["predictions"]), target.predict_proba(x), atol=1e-5)
    assert seen == [{"name": "pixels", "shape": [4, 64], "datatype": "FP32"}]  # one call, the template
    assert bad.status_code == 422 and len(seen) == 1  # rejected at the guard, never proxied
    assert store.verify().ok and store.records()[0]["record"]["model_sha256"]
    figures.update(upstream_wire="kserve-v2", upstream_calls=len(seen), rejected_not_proxied=1)


def test_the_proxy_sheds_requests_that_wait_past_the_timeout_for_a_connection(
    keys: dict, target: SoftmaxTarget, audit_db: str, digits: dict
) -> None:
    # red-team round 26: the queue in front of upstream calls had no bound; hung-up callers kept
    # the guard calling the upstream for 12 s after they left
    import threading
    import time as _time

    import fastapi
    import numpy as np

    upstream = fastapi.FastAPI()

    @upstream.post("/predict")
    async def predict(request: Request) -> Any:
        import asyncio

        doc = await request.json()
        await asyncio.sleep(0.8)
        return {"predictions": target.predict_proba(np.asarray(doc["instances"], dtype=np.float32)).tolist()}

    with serve(upstream) as up:
        cfg = make_config(
            keys,
            upstream={
                "url": f"{up}/predict",
                "input_shape": [64],
                "num_classes": 10,
                "timeout": 1.0,
                "max_connections": 1,
            },
        )
        app = create_app(cfg, store=AuditLog.open(audit_db))
        body = {"instances": digits["x_test"][:1].tolist()}
        statuses: list[int] = []
        with serve(app) as base:

            def call() -> None:
                with httpx.Client(base_url=base, timeout=10) as c:
                    statuses.append(
                        c.post(
                            "/v1/models/digits/predict", json=body, headers=_hdr(keys["bob"][0])
                        ).status_code
                    )

            workers = [threading.Thread(target=call) for _ in range(4)]
            started = _time.monotonic()
            for w in workers:
                w.start()
            for w in workers:
                w.join(10)
            with httpx.Client(base_url=base) as c:
                shed = [
                    ln
                    for ln in c.get("/metrics").text.splitlines()
                    if ln.startswith("bastion_guard_shed_total")
                ]
    assert _time.monotonic() - started < 5.0
    assert 200 in statuses and 503 in statuses, statuses  # one connection, 0.8 s a call, 1 s to wait
    assert shed and float(shed[0].split()[-1]) >= 1
