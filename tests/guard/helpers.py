"""Helpers of the guard tests: a tiny numpy model, config builder, a uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.capability import Capability
from bastion.guard.config import GuardConfig, KeySpec
from bastion.targets.base import Target


class SoftmaxTarget(Target):
    """A linear softmax classifier in numpy (fast, no framework)."""

    kind = "numpy"

    def __init__(self, w: np.ndarray, b: np.ndarray, shape: tuple[int, ...] = (64,)) -> None:
        super().__init__(
            name="digits",
            input_shape=shape,
            num_classes=w.shape[1],
            capabilities=frozenset({Capability.PROBABILITIES, Capability.BATCHED}),
        )
        self.w, self.b = w, b
        self.fail = False

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("backend down")
        z = x.reshape(len(x), -1) @ self.w + self.b
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def make_config(keys: dict[str, tuple[str, KeySpec]], **over: Any) -> GuardConfig:
    data: dict[str, Any] = {
        "name": "digits",
        "upstream": {"url": "http://127.0.0.1:9/unused", "input_shape": [64], "num_classes": 10},
        "keys": [spec.model_dump() for _, spec in keys.values()],
        "limits": {"rate": 1000, "burst": 1000, "daily_quota": 1_000_000},
    }
    for k, v in over.items():
        data[k] = v
    return GuardConfig.model_validate(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on 127.0.0.1; yield its base URL."""
    import uvicorn

    port = port or free_port()
    cfg = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    server = uvicorn.Server(cfg)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(10)


class MemorySink:
    """An in-memory audit sink (records and incidents kept in lists)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []

    def append(self, *, key_id: str | None, decision: str, record: dict[str, Any], created: Any) -> int:
        self.records.append({"key_id": key_id, "decision": decision, **record})
        return len(self.records)

    def add_incident(self, **kw: Any) -> str:
        self.incidents.append(kw)
        return str(len(self.incidents))

    @property
    def head(self) -> tuple[int, str]:
        return len(self.records), ""


def load_guard_benchmark() -> Any:
    """``benchmarks/guard.py`` as a module (a site package named ``benchmarks`` shadows the folder)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "guard.py"
    spec = importlib.util.spec_from_file_location("bastion_guard_benchmark", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class InProcess:
    """The ASGI app called without a network, its lifespan run on enter and exit (a sync facade)."""

    def __init__(self, app: Any) -> None:
        import asyncio

        import httpx

        self.app = app
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard")
        self._life: Any = None

    def __enter__(self) -> InProcess:
        self._life = self.app.router.lifespan_context(self.app)
        self._loop.run_until_complete(self._life.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self._life.__aexit__(None, None, None))
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    def post(self, url: str, **kw: Any) -> Any:
        return self._loop.run_until_complete(self._client.post(url, **kw))


def write_guard_yaml(project: Path, profile_sha256: str) -> tuple[str, str]:
    """Write ``project/guard.yaml`` serving the clinic ``digits`` asset with key ``alice``.

    Returns:
        ``(alice's secret, the audit database URL)``.
    """
    from bastion.guard.access import new_key

    secret, spec = new_key("alice", ["digits"])
    db = f"sqlite:///{project / 'g.db'}"
    (project / "guard.yaml").write_text(
        json.dumps(
            {
                "version": 1,
                "name": "digits",
                "model": {"config": "bastion.yaml", "asset": "digits"},
                "profile": {"path": "profile", "sha256": profile_sha256},
                "keys": [spec.model_dump()],
                "audit": {"db": db},
            }
        )
    )
    return secret, db


def request_body(rows: Any) -> bytes:
    """A predict request's JSON body for ``rows`` (each flattened)."""
    return json.dumps({"instances": np.asarray(rows).reshape(len(rows), -1).tolist()}).encode()


def quiet_guard_logs(caplog: Any) -> None:
    """Silence the guard's expected alert and error logs in a test."""
    import logging

    caplog.set_level(logging.CRITICAL, logger="bastion.guard")


def wait_until_serving(proc: Any, url: str, timeout: float = 30.0) -> None:
    """Wait for ``GET url/healthz`` to answer 200 from the guard subprocess ``proc`` (fail if it exits)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "guard did not start"
        time.sleep(0.1)


def stop_audit_backends(pg_url: str, chain: str = "guard") -> list[int]:
    """SIGSTOP the PostgreSQL backends of a guard's audit connections (``bastion-audit-<chain>``).

    Stalls that guard's database alone (the other sessions of the shared test server go on);
    returns the pids, to be resumed with ``SIGCONT``.
    """
    import os
    import signal

    import psycopg

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"bastion-audit-{chain}",)
        ).fetchall()
    pids = [int(r[0]) for r in rows]
    assert pids, "no audit connection of the guard"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids
