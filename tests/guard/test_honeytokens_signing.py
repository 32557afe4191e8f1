"""Honeytoken records, the signed guard artefact, and the audit head logged on shutdown."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from tests.guard.helpers import InProcess, MemorySink, SoftmaxTarget, make_config
from tests.keys import write_ec_keypair

from bastion import api
from bastion.cli.main import run
from bastion.core import atlas
from bastion.core.errors import ConfigError, IntegrityError
from bastion.guard.access import new_key
from bastion.guard.app import create_app
from bastion.guard.canary import (
    HoneytokenWatch,
    data_step,
    honeytoken_spec,
    make_honeytokens,
)
from bastion.guard.config import KeySpec
from bastion.guard.profile import Profile
from bastion.store.audit import AuditLog

URL = "/v1/models/digits/predict"


def _hdr(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def tokens(digits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    return make_honeytokens(
        digits["x_train"], digits["y_train"], n=6, step=0.0625, lo=np.zeros(64), hi=np.ones(64),
        rng=np.random.default_rng(1),
    )  # fmt: skip


def test_honeytokens_plausible_distinct_and_matched_within_tolerance(
    digits: dict[str, np.ndarray], tokens: tuple[np.ndarray, np.ndarray | None]
) -> None:
    x, y = tokens
    assert data_step(digits["x_train"]) == 0.0625  # digits / 16 sit on a 1/16 grid
    assert x.shape == (6, 64) and y is not None and len(y) == 6
    assert np.all((x >= 0) & (x <= 1)) and np.allclose(x * 16, np.round(x * 16))  # on the data's grid
    real = np.concatenate([digits["x_train"], digits["x_test"]]).astype(np.float64)
    assert np.min(np.max(np.abs(real[:, None, :] - x[None]), axis=2)) > 0.0625  # no real row within tolerance
    spec = honeytoken_spec(x.astype(np.float32), step=0.0625)
    dumped = spec.model_dump()
    assert (
        set(dumped) == {"salt", "step", "tokens", "pepper_env"}
        and dumped["pepper_env"] is None
        and all(set(t) == {"id", "hmac"} for t in dumped["tokens"])
    )
    watch = HoneytokenWatch([spec])
    assert [tid for _, tid in watch.hits(x.astype(np.float32))] == [e.id for e in spec.tokens]
    noisy = x + np.random.default_rng(0).uniform(-0.03, 0.03, x.shape)  # within step / 2
    assert len(watch.hits(noisy)) == 6
    off = x.copy()
    off[:, 5] += 0.04  # one feature past the tolerance
    assert watch.hits(off) == []
    assert watch.hits(real) == []  # real data never matches
    other = honeytoken_spec(x, step=0.0625)  # a fresh salt: unrelated hashes for the same rows
    assert not {e.hmac for e in other.tokens} & {e.hmac for e in spec.tokens}


def test_honeytoken_hit_alerts_hardens_breaks_and_becomes_incident(
    keys: dict[str, tuple[str, KeySpec]],
    target: SoftmaxTarget,
    profile: Profile,
    digits: dict[str, np.ndarray],
    tokens: tuple[np.ndarray, np.ndarray | None],
    audit_db: str,
) -> None:
    x, _ = tokens
    spec = honeytoken_spec(x.astype(np.float32), step=0.0625)
    cfg = make_config(keys, honeytokens=spec.model_dump(), log_inputs=True)
    store = AuditLog.open(audit_db)
    app = create_app(cfg, store=store, target=target, profile=profile)
    # a thief replays stolen training data: real rows, then one planted record
    replay = np.concatenate([digits["x_train"][:3], x[2:3]]).astype(np.float32)
    with InProcess(app) as c:
        ok = c.post(URL, json={"instances": digits["x_train"][:3].tolist()}, headers=_hdr(keys["eve"][0]))
        assert ok.status_code == 200 and ok.json()["output"] == "probabilities"
        r = c.post(URL, json={"instances": replay.tolist()}, headers=_hdr(keys["eve"][0]))
        assert r.status_code == 200 and r.json()["output"] == "label"  # hardened at once
        r = c.post(URL, json={"instances": digits["x_test"][:1].tolist()}, headers=_hdr(keys["eve"][0]))
        assert r.status_code == 429 and "circuit breaker" in r.json()["detail"]
        other = c.post(URL, json={"instances": digits["x_test"][:1].tolist()}, headers=_hdr(keys["bob"][0]))
        assert other.status_code == 200
    inc = store.incidents(asset="digits")
    hit = [i for i in inc if i["rule_id"] == "guard.honeytoken.hit"]
    assert len(hit) == 1 and hit[0]["severity"] == "critical" and hit[0]["key_id"] == "eve"
    assert atlas.INFER_MEMBERSHIP in hit[0]["atlas"] and atlas.EXTRACT_MODEL in hit[0]["atlas"]
    ev = hit[0]["details"]["evidence"]
    assert ev == {"honeytoken": spec.tokens[2].id, "row": 3, "matches": 1}
    assert "breaker" in hit[0]["details"]["actions"] and "harden" in hit[0]["details"]["actions"]
    rec = store.records()[1]["record"]
    assert rec["alerts"][0]["rule_id"] == "guard.honeytoken.hit"
    assert rec["input"][3] is None and rec["input"][0] is not None  # the token's values are never logged
    assert store.verify().ok


def test_honeytoken_hit_alerts_even_when_rate_limited(
    keys: dict[str, tuple[str, KeySpec]], target: SoftmaxTarget, tokens: tuple[np.ndarray, np.ndarray | None]
) -> None:
    x, _ = tokens
    spec = honeytoken_spec(x.astype(np.float32), step=0.0625)
    cfg = make_config(keys, honeytokens=spec.model_dump(), limits={"rate": 0.001, "burst": 1})
    sink = MemorySink()
    with InProcess(create_app(cfg, store=sink, target=target)) as c:
        assert c.post(URL, json={"instances": [[0.0] * 64]}, headers=_hdr(keys["eve"][0])).status_code == 200
        r = c.post(URL, json={"instances": x[:1].tolist()}, headers=_hdr(keys["eve"][0]))
        assert r.status_code == 429
    assert [i["rule_id"] for i in sink.incidents] == ["guard.honeytoken.hit"]
    assert sink.records[-1]["decision"] == "limit" and sink.records[-1]["alerts"]


def _ec_keys(folder: Path) -> tuple[Path, Path]:
    k, pub = folder / "signer.pem", folder / "signer.pub"
    write_ec_keypair(k, pub)
    return k, pub


def test_fit_plants_honeytokens_signs_and_serve_verifies(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, _pub = _ec_keys(project)
    ht = project / "secret" / "honeytokens.npz"
    argv = ["guard", "fit", "-c", str(project / "bastion.yaml"), "--asset", "digits", "-o"]
    argv += [str(project / "profile"), "--honeytokens", "5", "--honeytokens-out", str(ht)]
    assert run([*argv, "--sign-key", str(priv)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["honeytokens"]["count"] == 5 and Path(info["signature"]) == project / "profile.sig"
    assert stat.S_IMODE(os.stat(ht).st_mode) == 0o600
    with np.load(ht) as z:
        planted, labels = z["x"], z["y"]
    assert planted.shape == (5, 64) and labels.shape == (5,)
    # the profile holds keyed hashes only, never a token's values (checked as the row's JSON
    # spelling: one number alone could match a timestamp's digits)
    text = (project / "profile/profile.json").read_text()
    for row in planted:
        vals = [float(v) for v in row]
        for spelled in (json.dumps(vals), json.dumps(vals, separators=(",", ":"))):
            assert spelled[1:40] not in text

    secret, spec = new_key("thief", ["digits"])
    base = {
        "version": 1,
        "name": "digits",
        "model": {"config": "bastion.yaml", "asset": "digits"},
        "keys": [spec.model_dump()],
        "audit": {"db": f"sqlite:///{project / 'g.db'}"},
    }
    pinned = {"path": "profile", "sha256": info["sha256"]}
    gy = project / "guard.yaml"
    gy.write_text(json.dumps({**base, "profile": {**pinned, "public_key": "signer.pub"}}))
    app = api.guard_app(gy)  # good signature: serves
    with InProcess(app) as c:
        r = c.post(URL, json={"instances": planted[:1].tolist()}, headers=_hdr(secret))
        assert r.status_code == 200 and r.json()["output"] == "label"
    g = app.state.guard
    assert [i["rule_id"] for i in g.store.incidents(asset="digits")] == ["guard.honeytoken.hit"]
    g.store.close()

    # an unsigned key mismatch: signature present, no key named -> refused
    gy.write_text(json.dumps({**base, "profile": pinned}))
    with pytest.raises(IntegrityError, match=r"profile\.sig.*no profile\.public_key"):
        api.guard_app(gy)
    # a modified artefact -> refused, the file named, exit 2
    gy.write_text(json.dumps({**base, "profile": {"path": "profile", "public_key": "signer.pub"}}))
    npz = project / "profile/profile.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(IntegrityError, match=r"profile\.npz"):
        api.guard_app(gy)
    capsys.readouterr()
    assert run(["guard", "serve", "-c", str(gy)]) == 2
    assert "profile.npz" in capsys.readouterr().err.replace("\n", "")
    npz.write_bytes(good)
    # a key is required but the signature is gone -> refused
    (project / "profile.sig").unlink()
    with pytest.raises(IntegrityError, match=r"signature .*profile\.sig is missing"):
        api.guard_app(gy)


def test_honeytokens_command_writes_rows_and_guard_yaml_block(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, tuple[str, KeySpec]],
    target: SoftmaxTarget,
) -> None:
    out = project / "ht.csv"
    argv = ["guard", "honeytokens", "-c", str(project / "bastion.yaml"), "--asset", "digits"]
    assert run([*argv, "-n", "4", "--out", str(out)]) == 0
    block = json.loads(capsys.readouterr().out)["honeytokens"]
    assert block["step"] == 0.0625 and len(block["tokens"]) == 4
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[-1] == "label" and len(lines) == 5
    rows = np.array([[float(v) for v in ln.split(",")[:-1]] for ln in lines[1:]])
    sink = MemorySink()
    cfg = make_config(keys, honeytokens=block)
    with InProcess(create_app(cfg, store=sink, target=target)) as c:
        c.post(URL, json={"instances": rows.tolist()}, headers=_hdr(keys["alice"][0]))
    assert sorted(i["details"]["evidence"]["honeytoken"] for i in sink.incidents) == sorted(
        t["id"] for t in block["tokens"]
    )
    assert run([*argv, "--out", str(project / "ht.txt")]) == 2  # only .npz / .csv
    assert run(["guard", "fit", "-c", str(project / "bastion.yaml"), "--asset", "digits", "-o",
                str(project / "p2"), "--honeytokens", "3"]) == 2  # rows would be lost: refused  # fmt: skip


def test_shutdown_logs_audit_head_and_expect_head_detects_truncation(
    keys: dict[str, tuple[str, KeySpec]],
    target: SoftmaxTarget,
    audit_db: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = make_config(keys)
    store = AuditLog.open(audit_db)
    with (
        caplog.at_level(logging.INFO, logger="bastion.guard.app"),
        InProcess(create_app(cfg, store=store, target=target)) as c,
    ):
        for _ in range(3):
            assert (
                c.post(URL, json={"instances": [[0.1] * 64]}, headers=_hdr(keys["bob"][0])).status_code == 200
            )
    stopped = [json.loads(r.getMessage()) for r in caplog.records if "guard-stopped" in r.getMessage()]
    assert len(stopped) == 1 and caplog.records[-1].levelno == logging.INFO
    head = stopped[0]["audit_head"]
    assert head == {"seq": 2, "hash": store.head[1]}
    with InProcess(create_app(cfg, store=store, target=target)) as c:  # the guard restarts, appends more
        c.post(URL, json={"instances": [[0.1] * 64]}, headers=_hdr(keys["bob"][0]))
    store.close()
    recorded = f"{head['seq']}:{head['hash']}"
    assert run(["guard", "verify-log", "--db", audit_db, "--expect-head", recorded]) == 0
    assert run(["guard", "verify-log", "--db", audit_db, "--expect-head", head["hash"]]) == 0
    eng = create_engine(audit_db)
    with eng.begin() as conn:  # cut the tail from the recorded head on: the rest still chains
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 2"))
    eng.dispose()
    assert run(["guard", "verify-log", "--db", audit_db]) == 0  # invisible without the head
    capsys.readouterr()
    assert run(["guard", "verify-log", "--db", audit_db, "--expect-head", recorded]) == 1
    out = json.loads(capsys.readouterr().out)
    assert any("truncated" in p for p in out["problems"])
    assert run(["guard", "verify-log", "--db", audit_db, "--expect-head", head["hash"]]) == 1
    assert run(["guard", "verify-log", "--db", audit_db, "--expect-head", "2:nothex"]) == 2


def test_pepper_from_environment_hides_tokens_from_artefact_holders(
    monkeypatch: pytest.MonkeyPatch,
    keys: dict[str, tuple[str, KeySpec]],
    target: SoftmaxTarget,
    tokens: tuple[np.ndarray, np.ndarray | None],
) -> None:
    from bastion.core.errors import ConfigError
    from bastion.guard.app import Guard

    x = tokens[0].astype(np.float32)
    monkeypatch.setenv("HT_PEPPER", "s3cret-pepper")
    spec = honeytoken_spec(x, step=0.0625, pepper_env="HT_PEPPER")
    dumped = json.dumps(spec.model_dump())
    assert spec.pepper_env == "HT_PEPPER" and "s3cret" not in dumped  # only the name is kept
    # a holder of the block and the data, without the pepper, finds nothing by hashing rows
    no_pepper = HoneytokenWatch([spec.model_copy(update={"pepper_env": None})])
    assert no_pepper.hits(x) == []
    assert len(HoneytokenWatch([spec]).hits(x)) == len(x)
    sink = MemorySink()
    g = Guard(make_config(keys, honeytokens=spec.model_dump()), target=target, store=sink)
    g.handle("digits", _hdr(keys["eve"][0]), json.dumps({"instances": x[:1].tolist()}).encode())
    assert [i["rule_id"] for i in sink.incidents] == ["guard.honeytoken.hit"]
    monkeypatch.setenv("HT_PEPPER", "another")
    assert HoneytokenWatch([spec]).hits(x) == []  # the wrong pepper matches nothing
    monkeypatch.delenv("HT_PEPPER")
    with pytest.raises(ConfigError, match="HT_PEPPER"):  # no pepper: the guard refuses to start
        Guard(make_config(keys, honeytokens=spec.model_dump()), target=target, store=MemorySink())


def test_per_feature_grid_for_large_valued_features() -> None:
    from bastion.core.errors import ConfigError
    from bastion.guard.canary import data_steps

    rng = np.random.default_rng(4)
    n = 400
    income = np.round(rng.normal(52_000, 9_000, n), 2)  # cents
    age = rng.integers(18, 90, n).astype(np.float64)
    ratio = rng.uniform(0, 1, n)
    x = np.stack([income, age, ratio], axis=1)
    steps = data_steps(x)
    assert isinstance(steps, np.ndarray) and steps[1] == 1.0 and steps[2] == pytest.approx(1e-4)
    assert steps[0] >= 0.01  # not a 1e-4 grid that float32 cannot hold at 52,000
    toks, _ = make_honeytokens(x, None, n=5, step=steps, rng=np.random.default_rng(0))
    spec = honeytoken_spec(toks.astype(np.float32), step=steps)
    assert isinstance(spec.step, list) and len(spec.step) == 3
    watch = HoneytokenWatch([spec], n_features=3)
    x32 = toks.astype(np.float32)
    assert len(watch.hits(x32)) == 5  # exact replays after float32 validation match
    nudged = x32 + np.asarray(steps, dtype=np.float32) * 0.4  # within step / 2 in every feature
    assert len(watch.hits(nudged)) == 5
    assert watch.hits(x.astype(np.float32)) == []  # real rows never match
    assert data_steps(np.arange(64.0).reshape(8, 8) / 16) == 0.0625  # one common lattice: one step
    with pytest.raises(ConfigError, match="grid steps"):
        HoneytokenWatch([spec], n_features=4)


def test_cli_pepper_env_is_required_and_only_its_name_is_printed(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["guard", "honeytokens", "-c", str(project / "bastion.yaml"), "--asset", "digits", "-n", "3"]
    argv += ["--out", str(project / "ht.npz"), "--pepper-env", "HT_PEPPER"]
    monkeypatch.delenv("HT_PEPPER", raising=False)
    assert run(argv) == 2 and not (project / "ht.npz").exists()  # refused before writing anything
    monkeypatch.setenv("HT_PEPPER", "pepper-value")
    capsys.readouterr()
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["honeytokens"]["pepper_env"] == "HT_PEPPER" and "pepper-value" not in out


def test_a_refit_without_a_key_removes_the_earlier_signature(project: Path) -> None:
    # new-user trial: the old profile.sig stayed beside the new, unsigned profile, and guard serve
    # then refused to start
    priv, _pub = _ec_keys(project)
    out = project / "profile"
    api.guard_fit(project / "bastion.yaml", asset="digits", out=out, sign_key=priv)
    assert (project / "profile.sig").is_file()
    with pytest.raises(ConfigError, match="holds a guard artefact; pass --force"):
        api.guard_fit(project / "bastion.yaml", asset="digits", out=out)  # never replaced silently
    assert (project / "profile.sig").is_file()
    info = api.guard_fit(project / "bastion.yaml", asset="digits", out=out, force=True)
    assert not (project / "profile.sig").exists() and info["removed_stale_signature"].endswith("profile.sig")


def test_fit_never_replaces_an_artefact_or_other_files_without_force(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # new-user trial 30: a second fit into the live artefact's folder replaced it (its 20
    # honeytokens lost) and deleted its signature, exit 0; a folder of other files the same
    out = project / "profile"
    api.guard_fit(
        project / "bastion.yaml", asset="digits", out=out, honeytokens=20, honeytokens_out=project / "ht.npz"
    )
    before = (out / "profile.json").read_bytes()
    with pytest.raises(ConfigError, match=r"its 20 honeytokens"):
        api.guard_fit(project / "bastion.yaml", asset="digits", out=out)
    assert (out / "profile.json").read_bytes() == before
    with caplog.at_level("WARNING"):
        api.guard_fit(project / "bastion.yaml", asset="digits", out=out, force=True)
    assert "held 20 honeytokens and the new artefact holds none" in caplog.text
    victim = project / "victim"
    victim.mkdir()
    (victim / "profile.json").write_text('{"mine": 1}')
    (project / "victim.sig").write_text("x")
    for force in (False, True):
        with pytest.raises(ConfigError, match="not a guard artefact"):
            api.guard_fit(project / "bastion.yaml", asset="digits", out=victim, force=force)
    assert (victim / "profile.json").read_text() == '{"mine": 1}' and (project / "victim.sig").exists()
    (project / "afile").write_text("x")
    with pytest.raises(ConfigError, match="a file is in the way"):
        api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "afile")
