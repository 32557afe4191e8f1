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
    (tmp_path / "x.csv").write_text("f,extra\n0.5,1\n")  # a column the profile does not know, no label
    capsys.readouterr()
    assert run(["data", "validate", "x.csv", "--against", "t.profile.json"]) == 2
    captured = capsys.readouterr()
    rules = {(v["column"], v["rule"]) for v in json.loads(captured.out)["violations"]}
    assert {("extra", "column-unknown"), ("label", "label-missing")} <= rules  # still every violation
    assert "x.csv: column 'extra': not a column of the profile t.profile.json" in captured.err


def test_bad_input_exits_2_naming_file_row_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Corrupt file, missing label column, unreadable npz: exit 2, the file (and row/column) named."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    (tmp_path / "bad.csv").write_bytes(b"f,label\n0.1,0\n\xff\xfe,1\n")
    assert run(["data", "profile", "bad.csv"]) == 2
    assert "bad.csv" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    assert run(["data", "profile", "t.csv", "--label", "nope"]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err and "nope" in err
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert run(["data", "profile", "x.npz"]) == 2
    assert "x.npz" in capsys.readouterr().err
    # a non-numeric cell when flagged rows are computed: row and column named, original untouched
    (tmp_path / "c.csv").write_text("f,label\n0.1,0\n0.2,1\noops,0\n")
    before = (tmp_path / "c.csv").read_bytes()
    assert run(["data", "sanitize", "c.csv", "--remove", "flagged", "--label", "label"]) == 2
    err = capsys.readouterr().err
    assert "c.csv" in err and "row 2" in err and "'f'" in err
    assert (tmp_path / "c.csv").read_bytes() == before
    assert not list(tmp_path.glob("c.sanitised-*"))
