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
    assert out["violations"] == [{"row": 1, "column": "f", "rule": "range", "value": "7"}]  # as written
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


def _csv(path: Path, rows: int = 10) -> Path:
    path.write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(rows)))
    return path


def test_verify_reports_a_deleted_registered_file_as_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue: a deleted registered file said "is not registered" (exit 2); it is a change (exit 1)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    _csv(tmp_path / "t.csv")
    assert run(["data", "register", "t.csv"]) == 0
    (tmp_path / "t.csv").unlink()
    capsys.readouterr()
    assert run(["data", "verify", "t.csv"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["dataset"] == "t" and doc["ok"] is False
    assert doc["changes"] == [{"kind": "file-removed", "path": "t.csv", "row": None}]
    assert "file-removed: t.csv" in captured.err and "not registered" not in captured.err
    # by name as well, from another folder (the path no longer matches)
    other = tmp_path / "sub"
    other.mkdir()
    monkeypatch.chdir(other)
    assert run(["data", "verify", "t.csv", "--name", "t"]) == 1
    assert json.loads(capsys.readouterr().out)["changes"][0]["kind"] == "file-removed"
    # a folder dataset that was deleted: every file it recorded
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    _csv(tmp_path / "folder" / "a.csv")
    _csv(tmp_path / "folder" / "b.csv", 4)
    assert run(["data", "register", "folder"]) == 0
    for f in (tmp_path / "folder").iterdir():
        f.unlink()
    (tmp_path / "folder").rmdir()
    capsys.readouterr()
    assert run(["data", "verify", "folder"]) == 1
    kinds = [(c["kind"], c["path"]) for c in json.loads(capsys.readouterr().out)["changes"]]
    assert kinds == [("file-removed", "a.csv"), ("file-removed", "b.csv")]
    # never registered and missing: still an error naming it
    assert run(["data", "verify", "never.csv"]) == 2
    err = capsys.readouterr().err
    assert "'never.csv'" in err and "is not registered" in err


def test_empty_and_foreign_inputs_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue: a header-only CSV validated/profiled quietly; a foreign --against listed nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    _csv(tmp_path / "t.csv")
    assert run(["data", "profile", "t.csv", "--label", "label"]) == 0
    (tmp_path / "h.csv").write_text("f,label\n")
    capsys.readouterr()
    assert run(["data", "validate", "h.csv", "--against", "t.profile.json"]) == 2
    assert "h.csv: no data rows (a header only); nothing to validate" in capsys.readouterr().err
    assert run(["data", "profile", "h.csv"]) == 2
    assert "h.csv: no data rows (a header only); nothing to profile" in capsys.readouterr().err
    assert not (tmp_path / "h.profile.json").exists()  # nothing saved
    import numpy as np

    # a dataset version of nothing is refused, nothing stored
    (tmp_path / "empty.csv").write_bytes(b"")
    for name in ("h.csv", "empty.csv"):
        assert run(["data", "register", name]) == 2
        assert f"{name}: no data rows (the file is empty or a header only); nothing registered" in (
            capsys.readouterr().err
        )
    (tmp_path / "hollow").mkdir()
    (tmp_path / "hollow" / "a.csv").write_text("f,label\n")
    (tmp_path / "hollow" / "b.csv").write_bytes(b"")
    assert run(["data", "register", "hollow"]) == 2
    assert "files are all empty or headers only" in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists() or run(["data", "verify", "h.csv"]) == 2
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    assert run(["data", "profile", "e.npz"]) == 2
    assert "e.npz: no data rows" in capsys.readouterr().err
    # a JSON file that is not a profile: every problem listed, one line each with its field path
    (tmp_path / "other.json").write_text(json.dumps({"name": "x", "format": "parquet", "rows": "many"}))
    assert run(["data", "validate", "t.csv", "--against", "other.json"]) == 2
    err = capsys.readouterr().err
    assert "other.json: not a Bastion data profile" in err
    lines = [ln.strip() for ln in err.splitlines()]
    for expected in (
        "- dataset: Field required",
        "- format: Input should be 'csv' or 'npz'",
        "- rows: Input",
    ):
        assert any(ln.startswith(expected) for ln in lines), (expected, err)
    assert any(ln.startswith("- name: Extra inputs") for ln in lines), err
    (tmp_path / "junk.json").write_text("{not json")
    assert run(["data", "validate", "t.csv", "--against", "junk.json"]) == 2
    assert "junk.json: not a Bastion data profile: not JSON" in capsys.readouterr().err


def _report_for(data: Path, rule: str, indices: list[int]) -> dict[str, object]:
    """A minimal Bastion JSON report on ``data`` with one poisoning finding listing ``indices``."""
    import datetime as dt

    from bastion.core.hashing import file_sha256
    from bastion.core.report import AssetRecord, Report, RunInfo

    sha = file_sha256(data)
    rep = Report(
        bastion_version="0",
        run=RunInfo(id="r1", status="ok", started=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), seconds=1),
        assets=[AssetRecord(name="t", kind="dataset", path=data.name, sha256=sha)],
    )
    doc: dict[str, object] = json.loads(rep.model_dump_json())
    finding = {
        "rule_id": rule,
        "severity": "low",
        "threat": "poisoning",
        "title": "dupes",
        "asset": "t",
        "location": {"path": data.name},
        "evidence": {"indices": indices, "dataset_sha256": sha},
        "fingerprint": "f1",
    }
    doc["findings"] = [finding]
    return doc


def test_sanitize_with_nothing_to_remove_writes_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue: --from-report with no matching finding wrote an identical new version (exit 0)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    data = _csv(tmp_path / "t.csv")
    (tmp_path / "rep.json").write_text(json.dumps(_report_for(data, "poisoning.duplicates.exact", [1, 2])))
    assert run(["data", "register", "t.csv"]) == 0
    capsys.readouterr()
    args = ["data", "sanitize", "t.csv", "--remove", "flagged", "--from-report", "rep.json"]
    assert run([*args, "--rule", "poisoning.backdoor"]) == 0
    captured = capsys.readouterr()
    assert "nothing to remove" in captured.err and "no version written" in captured.err
    assert "poisoning.backdoor" in captured.err
    doc = json.loads(captured.out)
    assert doc["path"] is None and doc["version"] is None and doc["removed"] == 0 and doc["parent"]
    assert not list(tmp_path.glob("t.sanitised-*"))
    assert run(["data", "verify", "t.csv"]) == 0
    assert '"version": 1' in capsys.readouterr().out  # still v1: no v2 was registered
    # nothing to remove from an unregistered file: nothing registered either
    _csv(tmp_path / "u.csv")
    assert run(["data", "sanitize", "u.csv", "--remove", ""]) == 0
    assert json.loads(capsys.readouterr().out)["parent"] is None
    assert run(["data", "verify", "u.csv"]) == 2
    # the matching rule still removes the rows
    capsys.readouterr()
    assert run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"]["details"]["removed_rows"] == [1, 2] and doc["version"]["version"] == 2


def test_sanitize_from_a_report_that_never_assessed_the_dataset_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # new-user trial 30, L2: a report of another dataset said "not for this version of iris.csv"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    other = _csv(tmp_path / "t.csv")
    (tmp_path / "rep.json").write_text(json.dumps(_report_for(other, "poisoning.duplicates.exact", [1])))
    _csv(tmp_path / "iris.csv", rows=12)  # another file: another sha256
    args = ["data", "sanitize", "iris.csv", "--remove", "flagged", "--from-report", "rep.json"]
    assert run(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "does not cover dataset 'iris'" in err and "it assessed dataset(s) t" in err
    assert "not for this version" not in err
    # a report of the same dataset at another version still says so
    (tmp_path / "iris.csv").write_text("a,b,label\n9,9,0\n8,8,1\n7,7,0\n")
    (tmp_path / "t.csv").write_text("a,b,label\n5,5,0\n")
    assert run(["data", "sanitize", "t.csv", "--remove", "flagged", "--from-report", "rep.json"]) == 2
    assert "not for this version" in " ".join(capsys.readouterr().err.split())


def test_profile_whose_output_fails_saves_no_version(tmp_path: Path) -> None:
    """New-user trial: `bastion data profile t.csv > /dev/full` exited 2 and still saved profile v1."""
    import os
    import subprocess
    import sys

    (tmp_path / "t.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    code = "import sys; from bastion.cli.main import run; sys.argv[0] = 'bastion'; run()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}

    def profile(stdout: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-c", code, "data", "profile", "t.csv", "--label", "label"],
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env,
            timeout=60,
            check=False,
        )

    with open("/dev/full", "w") as full:
        proc = profile(full)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "cannot write the output to stdout" in err and "saved" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no profile, no version file
    # written: then saved as v1, and the output says so
    proc = profile(subprocess.PIPE)
    assert proc.returncode == 0 and json.loads(proc.stdout)["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.profile.json", "t.profile.v1.json"]
    # a failed output after that leaves v1 as it was: no v2
    with open("/dev/full", "w") as full:
        assert profile(full).returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.profile.json", "t.profile.v1.json"]
    assert json.loads((tmp_path / "t.profile.json").read_text())["version"] == 1


def test_profile_never_replaces_the_dataset_a_version_or_a_file_that_is_not_a_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 28, F1: `data profile d.csv --save d.csv` (or `-o d.csv`) replaced the
    dataset with its own profile, exit 0. Refused before profiling (exit 2), nothing written."""
    monkeypatch.chdir(tmp_path)
    data = "f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10))
    (tmp_path / "d.csv").write_text(data)
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    cases = [
        (["--save", "d.csv"], "d.csv: is the dataset being profiled"),
        (["--save", "./d.csv"], "d.csv: is the dataset being profiled"),
        (["-o", "d.csv"], "--output d.csv: is the dataset being profiled"),
        (["--save", "notes.json"], "notes.json: exists and is not a Bastion data profile"),
    ]
    for args, said in cases:
        capsys.readouterr()
        assert run(["data", "profile", "d.csv", *args]) == 2, args
        assert said in capsys.readouterr().err, args
    assert (tmp_path / "d.csv").read_text() == data and (tmp_path / "notes.json").read_text() == '{"mine": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "notes.json"]  # no profile, no version
    assert run(["data", "profile", "d.csv", "-o", "out.json"]) == 0
    v1 = (tmp_path / "d.profile.v1.json").read_text()
    capsys.readouterr()
    assert run(["data", "profile", "d.csv", "-o", "d.profile.v1.json"]) == 2  # an older version
    assert "is a saved version of the profile d.profile.json" in capsys.readouterr().err
    assert (tmp_path / "d.profile.v1.json").read_text() == v1 and not (
        tmp_path / "d.profile.v2.json"
    ).exists()
    assert run(["data", "profile", "d.csv", "-o", "d.profile.json"]) == 0  # the profile itself: fine
    assert json.loads((tmp_path / "d.profile.json").read_text())["version"] == 2


def test_profile_versions_never_follow_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 28, F2: `<stem>.profile.v<N>.json` was written with write_text, through a link a
    dataset folder shipped (`wine.profile.v1.json -> ~/anything`), or created outside through a
    dangling one. A version file is a new file; the versions already there (links too) are skipped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds/wine.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "ds/wine.profile.v1.json").symlink_to(victim)
    (tmp_path / "ds/wine.profile.v2.json").symlink_to(tmp_path / "outside.txt")  # dangling
    assert run(["data", "profile", "ds/wine.csv"]) == 0
    assert run(["data", "profile", "ds/wine.csv"]) == 0
    assert victim.read_text() == "precious" and not (tmp_path / "outside.txt").exists()
    assert (tmp_path / "ds/wine.profile.v1.json").is_symlink() and (
        tmp_path / "ds/wine.profile.v2.json"
    ).is_symlink()
    versions = [json.loads((tmp_path / f"ds/wine.profile.v{n}.json").read_text())["version"] for n in (3, 4)]
    assert versions == [3, 4] and json.loads((tmp_path / "ds/wine.profile.json").read_text())["version"] == 4
    # the profile itself a link: refused, the link and its target as they were
    (tmp_path / "ds/other.json").symlink_to(victim)
    capsys.readouterr()
    assert run(["data", "profile", "ds/wine.csv", "--save", "ds/other.json"]) == 2
    assert "ds/other.json: is a symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious" and not list((tmp_path / "ds").glob("other.v*.json"))


def test_profile_whose_save_fails_leaves_the_output_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 28, F8: `-o out.json --save <unsavable>` wrote out.json ("version": 1), then
    failed to save: exit 2 with an output naming a version that does not exist. The save's folder
    is checked before profiling; a save failing later leaves -o as it was."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    (tmp_path / "blocker").write_text("a file, not a folder")
    assert run(["data", "profile", "d.csv", "-o", "out.json", "--save", "blocker/p.json"]) == 2
    assert "blocker/p.json: cannot save the profile there" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
    (tmp_path / "out.json").write_text("before")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bastion.core.files.replace_file", full)  # the save fails after the output
    assert run(["data", "profile", "d.csv", "-o", "out.json", "--save", "p.json"]) == 2
    assert "p.json: cannot save the profile: No space left on device" in capsys.readouterr().err
    assert (tmp_path / "out.json").read_text() == "before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "d.csv", "out.json"]


def test_sanitize_that_cannot_write_its_copy_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    """Red-team round 28, F5: on a full disk (here a file-size limit) `data sanitize` said `internal
    error: OSError: [Errno 27] File too large`, naming no file, and left a hidden partial copy; the
    reuse check on a second run wrote (and leaked) a probe copy the same way."""
    import os
    import resource
    import subprocess
    import sys

    with (tmp_path / "big.csv").open("w") as fh:
        fh.write("a,b,label\n" + "".join(f"{i},{i * 3},{i % 2}\n" for i in range(120_000)))
    code = "import sys; from bastion.cli.main import run; sys.argv[0] = 'bastion'; run()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    args = [sys.executable, "-c", code, "data", "sanitize", "big.csv", "--remove", "3,17"]
    args += ["--db", f"sqlite:///{tmp_path / 's.db'}"]

    def small_files() -> None:  # as a full disk: a file written past 1 MiB fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    def sanitize(limit: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            preexec_fn=small_files if limit else None,
        )

    def hidden() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))

    proc = sanitize(limit=True)
    assert proc.returncode == 2, proc.stderr
    assert (
        f"error: {tmp_path / 'big.sanitised-1.csv'}: cannot write the sanitised copy: File too large"
        in proc.stderr
    )
    assert "internal error" not in proc.stderr and hidden() == []
    assert not (tmp_path / "big.sanitised-1.csv").exists()
    assert sanitize(limit=False).returncode == 0  # the copy, registered as v2
    again = sanitize(limit=True)  # the same command: reused, checked without writing a probe copy
    assert again.returncode == 0 and "reused it" in again.stderr, again.stderr
    assert hidden() == [] and not (tmp_path / "big.sanitised-2.csv").exists()


def test_sanitize_interrupted_while_copying_leaves_no_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F5: Ctrl-C half-way through the copy removes the hidden temporary file."""
    from bastion.data import sanitize

    src = tmp_path / "d.csv"
    src.write_text("f,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))

    def interrupted(self: object) -> object:
        yield b"f,label\n"
        raise KeyboardInterrupt

    monkeypatch.setattr(sanitize._WithoutRows, "_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sanitize.write_without_rows(src, {1}, tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_sanitize_run_again_reuses_the_identical_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """New-user trial: the same sanitize twice wrote identical `-1` and `-2` files as two versions."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    (tmp_path / "t.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    args = ["data", "sanitize", "t.csv", "--remove", "0,3"]
    assert run(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["reused"] is False and first["version"]["version"] == 2
    assert run(args) == 0
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert again["reused"] is True and again["path"] == first["path"]
    assert again["version"]["id"] == first["version"]["id"] and again["parent"] == first["parent"]
    assert "identical to the recorded version t v2" in captured.err and "reused it" in captured.err
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["t.csv", "t.sanitised-1.csv"]
    assert not list(tmp_path.glob(".t.sanitised*"))  # the comparison copy is gone
    assert run(["data", "sanitize", "t.csv", "--remove", "0,3", "--to", "t.sanitised-1.csv"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] is True  # --to naming that very file
    # other rows, or the recorded copy changed since: a new version, as before
    assert run(["data", "sanitize", "t.csv", "--remove", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["version"]["version"] == 3
    (tmp_path / "t.sanitised-1.csv").write_text("f,label\n9,9\n")
    assert run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reused"] is False and doc["version"]["version"] == 4
    assert doc["path"].endswith("t.sanitised-3.csv")


def test_register_reuses_the_identical_latest_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trial 30, L3: `data register` of an unchanged file recorded a new version every run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_DB", f"sqlite:///{tmp_path / 'b.db'}")
    (tmp_path / "t.csv").write_text("f,label\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    assert run(["data", "register", "t.csv", "--source", "ehr"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["version"] == 1 and first["reused"] is False
    assert run(["data", "register", "t.csv"]) == 0  # unchanged, no new metadata
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert again["reused"] is True and again["id"] == first["id"] and again["source"] == "ehr"
    assert "identical to the recorded version t v1" in captured.err and "reused it" in captured.err
    assert run(["data", "register", "t.csv", "--owner", "me"]) == 0  # new metadata: a new version
    assert json.loads(capsys.readouterr().out)["version"] == 2
    (tmp_path / "t.csv").chmod(0o600)  # permission bits are part of what `verify` checks
    assert run(["data", "register", "t.csv"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 3
    (tmp_path / "t.csv").write_text("f,label\n9,1\n")
    assert run(["data", "register", "t.csv"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 4 and doc["reused"] is False


def test_validate_sends_no_control_characters_from_the_incoming_file_to_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 31, 01: an incoming CSV's header (a column the profile does not know) and
    its cell values (``--show-values``) reached the terminal raw: window title, erased lines."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(12)))
    assert run(["data", "profile", "t.csv", "--label", "label"]) == 0
    hostile = "b\x1b]0;PWNED\x1b\\\x1b[1A\x1b[2K\u202e"
    (tmp_path / "n.csv").write_bytes(f"a,{hostile},label\n1\x1b[8m,2,0\n".encode())
    capsys.readouterr()
    assert run(["data", "validate", "n.csv", "--against", "t.profile.json", "--show-values"]) == 2
    captured = capsys.readouterr()
    assert not any(c in captured.err for c in "\x1b\x07\r\u202e"), repr(captured.err)
    assert "b\\x1b]0;PWNED\\x1b\\\\x1b[1A\\x1b[2K\\u202e" in captured.err
    columns = {v["column"] for v in json.loads(captured.out)["violations"]}
    assert hostile in columns  # the JSON keeps the exact value (JSON escapes it itself)
