"""Fixtures shared by every test package.

* ``ci``: whether the tests run under CI (``CI=true``).
* :func:`require_or_skip` (also as the ``require`` fixture): skips a test locally when an
  outside dependency is missing, but fails it under CI, where everything must be installed.
* ``postgres_url``: a throwaway PostgreSQL cluster for the whole session; ``pg_database``: a fresh
  database on it for one test.
* ``chromium_path``: the Chromium binary for browser tests.

Hypothesis runs derandomized (a fixed seed per test) and without deadlines, so runs are
deterministic and a slow 2-core machine does not make them flaky.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Before numpy/torch load anywhere: one thread each, so tests are quick and reproducible on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "bastion",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bastion"))

PG_VERSION = "15"
CHROMIUM = Path("/usr/bin/chromium")


def in_ci() -> bool:
    """Whether the ``CI`` environment variable says we run under CI."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def require_or_skip(condition: object, reason: str) -> None:
    """Skip the calling test when ``condition`` is false; under ``CI=true`` fail it instead.

    Args:
        condition: what the test needs (truthy when available).
        reason: what is missing and how to get it, shown in the skip or failure.
    """
    if condition:
        return
    if in_ci():
        pytest.fail(f"required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ci() -> bool:
    """``True`` under CI (``CI=true``): missing system dependencies then fail tests."""
    return in_ci()


@pytest.fixture(scope="session")
def require() -> Callable[[object, str], None]:
    """:func:`require_or_skip`, for tests that prefer a fixture to an import."""
    return require_or_skip


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    preferred = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
    if (preferred / "initdb").is_file() and (preferred / "pg_ctl").is_file():
        return preferred
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        p = Path(cand)
        if (p / "initdb").is_file() and (p / "pg_ctl").is_file():
            return p
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields ``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres``.

    The server refuses to run as root, so as root it runs as the ``postgres`` user
    (``runuser -u postgres --``). Trust authentication, loopback only, a socket in the data
    folder; stopped (``pg_ctl stop -m fast``) and deleted at the end of the session.
    Skipped locally (failed under CI) when the PostgreSQL binaries are absent.
    """
    bindir = _pg_bindir()
    require_or_skip(bindir, f"PostgreSQL {PG_VERSION} server binaries (apt-get install postgresql)")
    assert bindir is not None
    prefix: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        import pwd

        require_or_skip(shutil.which("runuser"), "runuser (util-linux) to run PostgreSQL as non-root")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = None
        require_or_skip(pw, "a 'postgres' system user (created by apt-get install postgresql)")
        assert pw is not None
        owner = (pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    datadir = tempfile.mkdtemp(prefix="bastion-pg-", dir="/tmp")
    if owner is not None:
        os.chown(datadir, *owner)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args], check=True, capture_output=True, text=True, env=env, timeout=120
        )

    started = False
    try:
        try:
            run(str(bindir / "initdb"), "-D", datadir, "-A", "trust", "-U", "postgres", "-E", "UTF8")
            run(
                str(bindir / "pg_ctl"),
                "-D",
                datadir,
                "-l",
                os.path.join(datadir, "server.log"),
                "-o",
                f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c fsync=off",
                "-w",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            log = Path(datadir, "server.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start: {exc.stderr or exc.stdout}\n{tail}", pytrace=False)
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", datadir, "stop", "-m", "fast"],
                capture_output=True,
                env=env,
                timeout=120,
            )
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server (``postgres_url``); dropped after."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# -- Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the Chromium binary; skipped locally (failed under CI) when it is missing."""
    require_or_skip(CHROMIUM.is_file(), f"{CHROMIUM} (apt-get install chromium chromium-driver)")
    return str(CHROMIUM)


@pytest.fixture()
def wine_project(tmp_path: Path) -> Path:
    """A CSV project like the clinic's triage data: wine written with ``%.6g``, label triage_level."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_wine
    from sklearn.tree import DecisionTreeClassifier

    wn = load_wine()
    (tmp_path / "data").mkdir()
    names = [str(n).replace("/", "_") for n in wn.feature_names]
    with (tmp_path / "data/wine.csv").open("w", encoding="utf-8") as fh:
        fh.write(",".join([*names, "triage_level"]) + "\n")
        for row, label in zip(wn.data, wn.target, strict=True):
            fh.write(",".join(f"{v:.6g}" for v in row) + f",{int(label)}\n")
    x = np.loadtxt(tmp_path / "data/wine.csv", delimiter=",", skiprows=1)[:, :-1]
    clf = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, wn.target)
    joblib.dump(clf, tmp_path / "model.joblib")
    train = list(range(0, len(x), 2))
    (tmp_path / "bastion.yaml").write_text(
        f"""version: 1
assets:
  - {{name: triage, path: model.joblib, framework: sklearn, num_classes: 3, dataset: wine,
     input: {{shape: [13]}}}}
datasets:
  - {{name: wine, path: data/wine.csv, label: triage_level, splits: {{train: {train}}}}}
"""
    )
    return tmp_path
