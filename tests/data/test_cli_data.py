from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.cli.main import run


def test_data_commands_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    (tmp_path / "t.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    assert run(["data", "profile", "t.csv", "--label", "label"]) == 0
    (tmp_path / "n.csv").write_text("f,label\n0.5,1\n7,0\n")
    capsys.readouterr()
    assert run(["data", "validate", "n.csv", "--against", "t.profile.json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["violations"] == [{"row": 1, "column": "f", "rule": "range"}]  # never the cell's value
    assert "7.0" not in captured.err
    assert run(["data", "validate", "n.csv", "--against", "t.profile.json", "--show-values"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["violations"] == [{"row": 1, "column": "f", "rule": "range", "value": "7.0"}]
    assert (
        run(["data", "register", "t.csv", "--source", "ehr", "--licence", "internal", "--owner", "me"]) == 0
    )
    assert run(["data", "verify", "t.csv"]) == 0
    capsys.readouterr()
    assert run(["data", "sanitize", "t.csv", "--remove", "0,3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"]["version"] == 2 and doc["version"]["parent_id"] == doc["parent"]
    assert doc["version"]["details"]["removed_rows"] == [0, 3]
    assert (tmp_path / "t.csv").read_text().count("\n") == 11  # original untouched
    (tmp_path / "t.csv").write_text((tmp_path / "t.csv").read_text().replace("0.2,0", "0.25,0"))
    assert run(["data", "verify", "t.csv"]) == 1
    changes = json.loads(capsys.readouterr().out)["changes"]
    assert {"kind": "row-changed", "path": "t.csv", "row": 2} in changes
    assert run(["data", "verify", "missing.csv"]) == 2
    assert run(["data", "validate", "n.csv", "--against", "nope.json"]) == 2
