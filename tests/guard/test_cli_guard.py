"""``bastion guard fit / verify-log / new-key`` and a guard serving a scanned in-process model."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from tests.guard.helpers import serve, write_guard_yaml

from bastion import api
from bastion.cli.main import run
from bastion.core.errors import IntegrityError
from bastion.guard.app import create_app
from bastion.guard.config import load_guard_config


def test_fit_serve_verify(project: Path, capsys: pytest.CaptureFixture[str], digits: dict) -> None:
    assert (
        run(
            [
                "guard",
                "fit",
                "-c",
                str(project / "bastion.yaml"),
                "--asset",
                "digits",
                "-o",
                str(project / "profile"),
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 900 and len(info["sha256"]) == 64
    secret, db = write_guard_yaml(project, info["sha256"])
    cfg = load_guard_config(project / "guard.yaml")
    app = create_app(cfg)
    with serve(app) as base:
        r = httpx.post(
            f"{base}/v1/models/digits/predict",
            json={"instances": digits["x_test"][:3].tolist()},
            headers={"X-API-Key": secret},
        )
        assert r.status_code == 200 and np.asarray(r.json()["predictions"]).shape == (3, 10)
        assert httpx.get(f"{base}/readyz").json()["model_sha256"]
    capsys.readouterr()
    assert run(["guard", "verify-log", "-c", str(project / "guard.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["records"] == 1
    head = f"{out['head']['seq']}:{out['head']['hash']}"
    eng = create_engine(db)
    with eng.begin() as conn:
        conn.execute(text("UPDATE audit_log SET decision = 'deny'"))
    eng.dispose()
    assert run(["guard", "verify-log", "--db", db, "--head", head]) == 1
    assert not json.loads(capsys.readouterr().out)["ok"]


def test_tampered_profile_or_unsafe_model_is_not_served(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "profile")
    base = {
        "version": 1,
        "name": "digits",
        "model": {"config": "bastion.yaml", "asset": "digits"},
        "audit": {"db": f"sqlite:///{project / 'g.db'}"},
    }
    (project / "guard.yaml").write_text(
        json.dumps({**base, "profile": {"path": "profile", "sha256": "0" * 64}})
    )
    with pytest.raises(IntegrityError):
        api.guard_app(project / "guard.yaml")
    assert run(["guard", "serve", "-c", str(project / "guard.yaml")]) == 2
    (project / "guard.yaml").write_text(
        json.dumps({**base, "profile": {"path": "profile", "sha256": info["sha256"]}})
    )

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (exec, ("raise SystemExit('loaded!')",))

    (project / "model.joblib").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(IntegrityError, match=r"malicious|suspicious"):
        api.guard_app(project / "guard.yaml")


def test_new_key_prints_entry_not_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["guard", "new-key", "alice", "--model", "digits"]) == 0
    cap = capsys.readouterr()
    entry = json.loads(cap.out)
    assert entry["id"] == "alice" and entry["models"] == ["digits"] and "bk_" not in cap.out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_new_key_shows_the_secret_only_after_the_entry_was_written() -> None:
    # new-user trial 30, L8: `guard new-key k > /dev/full` showed the secret "(shown once)",
    # then failed to write the entry: a secret of a key that was never stored
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "bastion", "guard", "new-key", "k"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    assert "cannot write the output" in proc.stderr
    assert "shown once" not in proc.stderr and "bk_" not in proc.stderr


def test_new_key_expires_takes_a_time_with_a_timezone_or_days_and_refuses_anything_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import datetime as dt

    from bastion.guard.config import KeySpec

    assert run(["guard", "new-key", "ci", "--expires", "2027-03-01T00:00:00+02:00"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert KeySpec.model_validate(entry).expires == dt.datetime(2027, 2, 28, 22, tzinfo=dt.UTC)
    assert run(["guard", "new-key", "ci", "--expires", "90d"]) == 0
    left = KeySpec.model_validate(json.loads(capsys.readouterr().out)).expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=89, hours=23) < left <= dt.timedelta(days=90)
    for bad, why in [
        ("2027-03-01", "has no timezone"),
        ("soon", "neither an ISO 8601 time"),
        ("0d", "neither"),
    ]:
        assert run(["guard", "new-key", "ci", "--expires", bad]) == 4
        cap = capsys.readouterr()
        assert why in cap.err and "--expires" in cap.err and "bk_" not in cap.out + cap.err


def test_verify_log_never_passes_on_a_missing_database_or_empty_chain(tmp_path: Path) -> None:
    from bastion.cli.main import run

    missing = tmp_path / "nope" / "x.db"
    assert run(["guard", "verify-log", "--db", f"sqlite:///{missing}"]) == 2
    assert not missing.parent.exists()
    from bastion.store import Store

    db = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(db).close()
    assert run(["guard", "verify-log", "--db", db, "--chain", "no-such-chain"]) == 3
