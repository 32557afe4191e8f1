from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError
from bastion.data.provenance import build_manifest, diff_manifests, merkle_root
from bastion.data.sanitize import sanitised_path, write_without_rows


def test_merkle_root_pairs_and_orders() -> None:
    a, b, c = (hashlib.sha256(s).digest() for s in (b"a", b"b", b"c"))
    assert merkle_root([a]) == a.hex()
    assert merkle_root([a, b]) != merkle_root([b, a])
    assert merkle_root([a, b, c]) == merkle_root([a, b, c, c])


def test_diff_names_changed_added_removed_rows_and_files(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    (d / "t.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    np.savez(d / "x.npz", x=np.arange(6).reshape(3, 2))
    (d / "README").write_text("hi")
    old = build_manifest(d)
    assert old.files["t.csv"].rows == 3 and old.files["x.npz"].rows == 3
    assert diff_manifests(old.files_json(), build_manifest(d)) == []

    (d / "t.csv").write_text("a,b\n1,2\n3,9\n5,6\n")
    (d / "README").unlink()
    (d / "new.txt").write_text("x")
    changes = {(c.kind, c.path, c.row) for c in diff_manifests(old.files_json(), build_manifest(d))}
    assert changes == {
        ("file-changed", "t.csv", None),
        ("row-changed", "t.csv", 1),
        ("file-removed", "README", None),
        ("file-added", "new.txt", None),
    }
    (d / "t.csv").write_text("a,b\n1,2\n5,6\n7,8\n9,9\n")
    rows = {(c.kind, c.row) for c in diff_manifests(old.files_json(), build_manifest(d)) if c.path == "t.csv"}
    assert rows == {("file-changed", None), ("row-removed", 1), ("row-added", 2), ("row-added", 3)}
    assert build_manifest(d).merkle_root != old.merkle_root


def test_sanitise_writes_a_copy_and_never_changes_the_original(tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_text("a\n0\n1\n2\n3\n")
    before = src.read_bytes()
    dest = sanitised_path(src)
    assert write_without_rows(src, {1, 3}, dest) == 2
    assert dest.read_text() == "a\n0\n2\n" and src.read_bytes() == before
    with pytest.raises(ConfigError, match="already exists"):
        write_without_rows(src, {0}, dest)
    with pytest.raises(ConfigError, match="out of range"):
        write_without_rows(src, {9}, sanitised_path(src))
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.arange(8).reshape(4, 2), y=np.arange(4))
    out = tmp_path / "d2.npz"
    assert write_without_rows(npz, {0}, out) == 3
    with np.load(out) as z:
        assert z["y"].tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match="not found"):
        build_manifest(tmp_path / "missing")


def test_merkle_builder_streams_the_same_root() -> None:

    from bastion.data.provenance import MerkleBuilder

    for n in range(0, 70):
        leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
        b = MerkleBuilder()
        for lf in leaves:
            b.add(lf)
        assert b.root() == merkle_root(leaves), n


def test_verify_names_a_change_deep_in_a_50k_row_csv(tmp_path: Path) -> None:
    from bastion.cli.main import run

    f = tmp_path / "big.csv"
    lines = ["a,b,label"] + [f"{i},{i * 7 % 1000},{i % 3}" for i in range(50_000)]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert run(["data", "register", str(f), "--db", db, "-o", str(tmp_path / "r.json")]) == 0
    stored = json.loads((tmp_path / "r.json").read_text())
    assert stored["files"]["big.csv"]["rows"] == 50_000
    lines[1 + 43_210] = "43210,999,0"  # data row 43210 changed in place
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(["data", "verify", str(f), "--db", db, "-o", str(tmp_path / "v.json")]) == 1
    changes = json.loads((tmp_path / "v.json").read_text())["changes"]
    assert [(c["kind"], c["row"]) for c in changes] == [("file-changed", None), ("row-changed", 43210)]
    del lines[1 + 49_000]  # and a row removed near the end
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(["data", "verify", str(f), "--db", db, "-o", str(tmp_path / "v.json")]) == 1
    kinds = {(c["kind"], c["row"]) for c in json.loads((tmp_path / "v.json").read_text())["changes"]}
    assert {("row-removed", 43210), ("row-removed", 49000), ("row-added", 43210)} <= kinds


def test_verify_names_a_file_whose_permission_bits_changed(tmp_path: Path) -> None:
    import os

    from bastion.cli.main import run

    f = tmp_path / "d.csv"
    f.write_text("a,label\n1,0\n2,1\n", encoding="utf-8")
    os.chmod(f, 0o644)
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert run(["data", "register", str(f), "--db", db]) == 0
    assert run(["data", "verify", str(f), "--db", db]) == 0
    os.chmod(f, 0o666)  # world-writable: anyone could now swap the training data
    assert run(["data", "verify", str(f), "--db", db, "-o", str(tmp_path / "v.json")]) == 1
    changes = json.loads((tmp_path / "v.json").read_text())["changes"]
    assert changes == [{"kind": "mode-changed", "path": "d.csv", "row": None}]


def test_sanitise_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_text("a,label\n1,0\n2,1\n3,0\n", encoding="utf-8")
    dest = tmp_path / "new" / "deeper" / "clean.csv"
    assert write_without_rows(src, {1}, dest) == 2
    assert dest.read_text() == "a,label\n1,0\n3,0\n"
    assert not list(dest.parent.glob(".*.tmp"))
    arr = tmp_path / "d.npz"
    np.savez(arr, x=np.arange(6).reshape(3, 2), y=np.array([0, 1, 0]))
    out = tmp_path / "more" / "clean.npz"
    assert write_without_rows(arr, {0}, out) == 2
    with np.load(out) as z:
        assert z["y"].tolist() == [1, 0]


def test_verify_reports_a_csv_replaced_by_binary_bytes_as_a_changed_file(tmp_path: Path) -> None:
    from bastion.cli.main import run

    f = tmp_path / "d.csv"
    f.write_text("a,label\n1,0\n2,1\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert run(["data", "register", str(f), "--db", db]) == 0
    f.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    assert run(["data", "verify", str(f), "--db", db, "-o", str(tmp_path / "v.json")]) == 1
    changes = json.loads((tmp_path / "v.json").read_text())["changes"]
    assert changes == [{"kind": "file-changed", "path": "d.csv", "row": None}]
    assert run(["data", "register", str(f), "--db", db]) == 2  # registering it is still an error
