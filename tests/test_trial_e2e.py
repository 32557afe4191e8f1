"""Regression tests of the end-to-end trial (a new user following the README and its docs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bastion.core.config import load_config
from bastion.core.errors import ConfigError
from bastion.discover import discover, write_starter


def _project(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    np.savez(root / "data" / "bc.npz", x=rng.normal(size=(40, 5)).astype("float32"), y=rng.integers(0, 2, 40))
    np.savez(root / "data" / "bc_splits.npz", train=np.arange(30), test=np.arange(30, 40))


def test_init_wires_a_splits_npz_as_the_datasets_splits_file_not_a_model(tmp_path: Path) -> None:
    """`bastion init`: `<stem>_splits.npz` was listed as a model asset and the dataset had no splits."""
    _project(tmp_path)
    found = discover(tmp_path)
    assert found["models"] == []
    assert [(d["name"], d.get("splits_file")) for d in found["datasets"]] == [("bc", "data/bc_splits.npz")]
    cfg = load_config(write_starter(tmp_path))
    assert [a.name for a in cfg.assets] == []
    assert cfg.datasets[0].splits_file == "data/bc_splits.npz"


def test_init_keeps_an_unrelated_integer_npz_out_of_splits(tmp_path: Path) -> None:
    """Only 1-D integer arrays named train/test make a splits file; a feature matrix does not."""
    np.savez(tmp_path / "w_splits.npz", train=np.ones((3, 2)), test=np.arange(3))
    np.savez(tmp_path / "w.npz", x=np.ones((3, 2)), y=np.arange(3))
    found = discover(tmp_path)
    assert [d.get("splits_file") for d in found["datasets"]] == [None]


def _bastion(args: list[str], stderr: object, tmp_path: Path) -> int:
    code = "import sys; from bastion.cli.main import run; sys.argv = ['bastion', *sys.argv[1:]]; run()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
        env=env,
        timeout=60,
        check=False,
    )
    return proc.returncode


@pytest.mark.parametrize("how", ["full", "closed"])
def test_a_lost_stderr_does_not_change_a_commands_exit_code(tmp_path: Path, how: str) -> None:
    """`bastion history 2>/dev/full` (or `2>&-`, `2>&1 | head`) exited 1, "findings"; it is 3 here."""
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    if how == "full":
        with open("/dev/full", "w") as full:
            rc = _bastion(["history", "--db", db], full, tmp_path)
    else:
        r, w = os.pipe()
        os.close(r)  # the reader went away: every write to stderr is a broken pipe
        try:
            rc = _bastion(["history", "--db", db], w, tmp_path)
        finally:
            os.close(w)
    assert rc == 3


def test_guard_config_yaml_error_is_one_line_naming_file_and_position(tmp_path: Path) -> None:
    """A malformed guard.yaml gave a multi-line PyYAML dump; now one line, as bastion.yaml does."""
    from bastion.guard.config import load_guard_config

    bad = tmp_path / "guard.yaml"
    bad.write_text("version: 1\nname: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_guard_config(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "not valid YAML at line 3, column 1" in msg


def test_stdout_that_cannot_be_written_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    """`bastion version >/dev/full` (Rich printing to stdout) was "internal error: OSError"."""
    code = "import sys; from bastion.cli.main import run; sys.argv = ['bastion', 'version']; run()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            stdout=full,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
            check=False,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "cannot write the output to stdout" in err and "internal error" not in err


def test_init_pairs_each_model_with_the_dataset_it_names(tmp_path: Path) -> None:
    # new-user trial: `init` gave every model the first dataset and its shape
    import pickle

    import numpy as np
    import yaml

    from bastion.discover import write_starter

    np.savez(tmp_path / "digits.npz", x=np.zeros((10, 64), dtype=np.float32), y=np.arange(10) % 10)
    (tmp_path / "wine.csv").write_text("a,b,c,label\n" + "1,2,3,0\n4,5,6,1\n" * 5)
    (tmp_path / "models").mkdir()
    for name in ("wine_tree.pkl", "digits_logreg.pkl", "vendor.pkl"):
        (tmp_path / "models" / name).write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    (tmp_path / "guard-profile").mkdir()  # a guard artefact is not a model
    np.savez(tmp_path / "guard-profile" / "profile.npz", mean=np.zeros(3))
    (tmp_path / "guard-profile" / "profile.json").write_text("{}")
    cfg = yaml.safe_load(write_starter(tmp_path).read_text())
    by = {a["name"]: a for a in cfg["assets"]}
    assert by["wine_tree"]["dataset"] == "wine" and by["wine_tree"]["input"]["shape"] == [3]
    assert by["digits_logreg"]["dataset"] == "digits" and by["digits_logreg"]["input"]["shape"] == [64]
    # no clue which of two datasets: no guess (the REVIEW comment names both)
    assert "dataset" not in by["vendor"] and set(by) == {"wine_tree", "digits_logreg", "vendor"}
