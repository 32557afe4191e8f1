"""``bastion data register FOLDER``: one dataset of every file, and it says what it grouped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bastion.cli.main import run


def _csv(path: Path, rows: int = 6) -> None:
    path.write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(rows)))


def test_a_folder_is_one_dataset_and_register_says_what_it_grouped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # trial 30, L3: `data register data` registered iris.csv, cancer.npz, the splits file, the
    # data profiles and the sanitised copies together as one dataset named "data", with no word
    # said; `assess` then found neither iris nor cancer registered
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    data = tmp_path / "data"
    data.mkdir()
    _csv(data / "iris.csv")
    np.savez(data / "cancer.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    np.savez(data / "iris_splits.npz", train=np.arange(4), test=np.arange(4, 6))
    assert run(["data", "profile", "data/iris.csv", "--label", "label"]) == 0
    assert run(["data", "sanitize", "data/iris.csv", "--remove", "0"]) == 0
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="bastion.api._data"):
        assert run(["data", "register", "data"]) == 0
    captured = capsys.readouterr()
    files = sorted(json.loads(captured.out)["files"])
    own = ["iris.profile.json", "iris.profile.v1.json", "iris.sanitised-1.csv"]
    assert files == ["cancer.npz", "iris.csv", *own, "iris_splits.npz"]  # every file, hashed
    assert f"registered data v1 ({len(files)} files, merkle root " in captured.err
    warned = [r.getMessage() for r in caplog.records if r.name == "bastion.api._data"]
    assert warned == [
        "data: registered as ONE dataset, 'data', of its 6 files, 2 of them data files (cancer.npz, "
        "iris.csv); `bastion assess` finds a dataset's registration by its own file or name, so "
        "register each file bastion.yaml lists as a dataset on its own (bastion data register "
        "data/cancer.npz), unless the folder is one dataset",
        "data: 3 of its files are Bastion's own outputs (data profiles: iris.profile.json, "
        "iris.profile.v1.json; sanitised copies: iris.sanitised-1.csv), registered as part of "
        "dataset 'data': a later `bastion data profile` or `data sanitize` in the folder is a "
        "change `data verify` reports; register the data file itself to leave them out",
    ]
    # a folder of one dataset's shards says nothing; neither does a file
    caplog.clear()
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(3):
        _csv(shards / f"part-{k}.csv")
    with caplog.at_level(logging.WARNING, logger="bastion.api._data"):
        assert run(["data", "register", "shards", "--name", "train"]) == 0
        assert run(["data", "register", "data/iris.csv"]) == 0
    assert not [r for r in caplog.records if r.name == "bastion.api._data"]
    err = capsys.readouterr().err
    assert "registered train v1 (3 files, merkle root " in err
    # the original, unchanged since `sanitize` registered it (v1) beside its copy (v2): reused
    assert "identical to the recorded version iris v1 " in err
