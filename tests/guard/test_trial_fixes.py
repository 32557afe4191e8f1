"""Fixes from the new-user trial of ``bastion guard``: honeytoken tells, shutdown head, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.guard.helpers import free_port, wait_until_serving, write_guard_yaml
from tests.keys import write_ec_keypair

from bastion import api
from bastion.cli.main import run
from bastion.core.errors import ConfigError
from bastion.guard.canary import (
    MAX_HONEYTOKENS,
    HoneytokenWatch,
    data_steps,
    decimals_of,
    make_honeytokens,
)
from bastion.guard.config import HoneytokenSpec


def _negzero(a: np.ndarray) -> int:
    a = np.asarray(a)
    return int(np.sum(np.signbit(a) & (a == 0)))


# -- 1. no negative zero: tokens are indistinguishable from real rows on that axis ------------------


def test_tokens_hold_no_negative_zero_and_keep_the_data_dtype(project: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(0, 1, (300, 6)), 2)  # centred data: blends round to -0.0 often
    x[:, 0] = 0.0
    x += 0.0
    assert _negzero(x) == 0
    toks, _ = make_honeytokens(x, None, n=40, step=0.01, lo=x.min(0) - 0.1, hi=x.max(0), rng=rng)
    assert _negzero(toks) == 0 and toks.shape == (40, 6)
    out = project / "ht.npz"
    api.guard_honeytokens(project / "bastion.yaml", asset="digits", out=out, n=30, seed=1)
    with np.load(out) as z, np.load(project / "data/digits.npz") as src:
        assert _negzero(z["x"]) == 0 and _negzero(src["x"]) == 0
        assert z["x"].dtype == src["x"].dtype and z["y"].dtype == src["y"].dtype
    api.guard_honeytokens(project / "bastion.yaml", asset="digits", out=project / "ht.csv", n=30, seed=1)
    assert "-0" not in (project / "ht.csv").read_text().replace("\n-", "\n")  # no "-0.0" cell


# -- 2. CSV tokens sit on the data's own decimal grid, and the file appends to the dataset ---------


def test_steps_come_from_the_decimal_representation() -> None:
    assert decimals_of(np.array([14.23, 13.2, 1065.0], dtype=np.float32)) == 2
    assert decimals_of(np.array([1.0, 2.0])) == 0
    assert decimals_of(np.random.default_rng(0).uniform(size=50)) is None
    from sklearn.datasets import load_wine

    wn = load_wine()
    x32 = np.array([[float(f"{v:.6g}") for v in r] for r in wn.data], dtype=np.float32)
    steps = data_steps(x32)
    assert isinstance(steps, np.ndarray)
    names = list(wn.feature_names)
    assert steps[names.index("alcohol")] == 0.01 and steps[names.index("proline")] == 1.0
    assert steps[names.index("magnesium")] == 1.0
    # exact decimal steps, no float32 artefacts (0.009999990463256836)
    assert all(float(f"{s:.6g}") == s for s in steps)


def test_wine_csv_tokens_are_on_the_grid_and_append_to_the_file(wine_project: Path) -> None:
    src = wine_project / "data/wine.csv"
    out = wine_project / "ht.csv"
    info = api.guard_honeytokens(wine_project / "bastion.yaml", asset="triage", out=out, n=12, seed=3)
    with src.open() as fh:
        real = list(csv.reader(fh))
    with out.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == real[0]  # same header: feature names and the label's real name
    assert len(rows) == 13 and all(len(r) == len(real[0]) for r in rows)
    cells = [c for r in rows[1:] for c in r]
    assert not any("e" in c or "-0" in c for c in cells)
    alcohol = [r[0] for r in rows[1:]]
    assert all(len(c.split(".")[1]) <= 2 for c in alcohol if "." in c)  # wine's 2 decimals
    assert all("." not in r[real[0].index("proline")] for r in rows[1:])  # integers stay integers
    step = info["honeytokens"]["step"]
    assert step[0] == 0.01 and step[real[0].index("proline")] == 1.0
    # appended as-is, the dataset still loads; the guard's hashes match the rows read back
    merged = wine_project / "data/merged.csv"
    merged.write_text(src.read_text() + "".join(ln + "\n" for ln in out.read_text().splitlines()[1:]))
    x_tok = np.array([[float(c) for c in r[:-1]] for r in rows[1:]], dtype=np.float32)
    watch = HoneytokenWatch([HoneytokenSpec.model_validate(info["honeytokens"])], n_features=13)
    assert len(watch.hits(x_tok)) == 12
    x_real = np.array([[float(c) for c in r[:-1]] for r in real[1:]], dtype=np.float32)
    assert watch.hits(x_real) == []


# -- 3. SIGTERM: the audit head is printed on a graceful stop ---------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_print_the_audit_head_on_one_line(project: Path, sig: int, code: int) -> None:
    info = api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "profile")
    secret, db = write_guard_yaml(project, info["sha256"])
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bastion", "guard", "serve", "-c", "guard.yaml", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}")
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/digits/predict",
            json={"instances": np.zeros((1, 64)).tolist()},
            headers={"X-API-Key": secret},
        )
        assert r.status_code == 200
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code
    # one line, never wrapped (stderr is a file here): the suggested command can be pasted or grepped
    m = re.search(
        r"stopped; audit head (\d+):([0-9a-f]{64}) \(record it; later: (bastion guard verify-log .*)\)\n", err
    )
    assert m is not None, err
    head = f"{m.group(1)}:{m.group(2)}"
    assert run(["guard", "verify-log", "--db", db, "--expect-head", head]) == 0


# -- 4. an empty --expect-head is an input error -----------------------------------------------------


def test_empty_expect_head_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.store import Store

    db = f"sqlite:///{tmp_path / 'a.db'}"
    Store.open(db).close()
    for value in ("", "  "):
        assert run(["guard", "verify-log", "--db", db, "--expect-head", value]) == 2
        assert "--expect-head is empty" in capsys.readouterr().err.replace("\n", " ")


# -- 5. a corrupted, unpinned profile gives one clear error --------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: [], "JSON object"),
        (lambda d: {**d, "honeytokens": "oops"}, "honeytokens"),
        (lambda d: {**d, "honeytokens": {"salt": "zz", "step": 1, "tokens": []}}, "honeytokens.salt"),
        (lambda d: {**d, "input_shape": "64"}, "input_shape"),
        (lambda d: {**d, "categories": [1]}, "categories"),
        (lambda d: {**d, "num_classes": "ten"}, "num_classes"),
    ],
)
def test_corrupted_unpinned_profile_is_a_clear_error(
    project: Path, capsys: pytest.CaptureFixture[str], mutate: object, field: str
) -> None:
    api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "gp2")
    pj = project / "gp2/profile.json"
    pj.write_text(json.dumps(mutate(json.loads(pj.read_text()))))  # type: ignore[operator]
    (project / "guard.yaml").write_text(
        json.dumps(
            {
                "version": 1,
                "name": "digits",
                "model": {"config": "bastion.yaml", "asset": "digits"},
                "profile": {"path": "gp2"},
                "audit": {"db": f"sqlite:///{project / 'g.db'}"},
            }
        )
    )
    with pytest.raises(ConfigError, match=field):
        api.guard_app(project / "guard.yaml")
    assert run(["guard", "serve", "-c", str(project / "guard.yaml")]) == 2
    msg = capsys.readouterr().err.replace("\n", "")
    assert "profile.json" in msg and field in msg and "internal error" not in msg


# -- 6. n is capped; generation is linear --------------------------------------------------------------


def test_honeytoken_count_is_capped(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["guard", "honeytokens", "-c", str(project / "bastion.yaml"), "--asset", "digits"]
    t0 = time.monotonic()
    assert run([*argv, "-n", "100000", "--out", str(project / "h.npz")]) == 2
    assert time.monotonic() - t0 < 10
    assert "at most 900" in capsys.readouterr().err.replace("\n", " ")
    assert not (project / "h.npz").exists()
    with pytest.raises(ConfigError, match="10,000"):
        make_honeytokens(np.zeros((3, 2)), None, n=MAX_HONEYTOKENS + 1, step=0.1)


def test_many_tokens_are_made_quickly(digits: dict[str, np.ndarray]) -> None:
    t0 = time.monotonic()
    toks, labels = make_honeytokens(
        digits["x_train"], digits["y_train"], n=600, step=0.0625, lo=np.zeros(64), hi=np.ones(64),
        rng=np.random.default_rng(0),
    )  # fmt: skip
    assert time.monotonic() - t0 < 10
    assert toks.shape == (600, 64) and labels is not None and len(labels) == 600
    cells = {np.rint(t / 0.0625).astype(np.int64).tobytes() for t in toks}
    assert len(cells) == 600  # distinct grid cells: distinct hashes


# -- 7. a tampered signed artefact names the file, without raw digests ---------------------------------


def test_tampered_artefact_message_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("model_signing")
    from bastion.core.errors import IntegrityError
    from bastion.scan.signing import sign_path, verify_path

    write_ec_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    art = tmp_path / "art"
    art.mkdir()
    (art / "profile.json").write_text("{}")
    (art / "profile.npz").write_bytes(b"npz")
    sign_path(art, key=tmp_path / "k.pem")
    (art / "profile.json").write_text('{"x": 1}')
    (art / "new.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError) as ei:
        verify_path(art, key=tmp_path / "k.pub")
    msg = str(ei.value)
    assert "profile.json changed" in msg and "new.bin added" in msg
    assert "Digest(" not in msg and "digest_value" not in msg and "\\x" not in msg
