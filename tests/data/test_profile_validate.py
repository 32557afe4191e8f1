from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError
from bastion.data.profile import load_profile, profile_dataset, save_profile
from bastion.data.validate import validate_dataset


def write_csv(path: Path, rows: list[str], header: str = "age,ward,score,label") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def train(tmp_path: Path) -> Path:
    rows = [f"{20 + i % 50},{'abc'[i % 3]},{(i % 10) / 10:.1f},{i % 2}" for i in range(120)]
    return write_csv(tmp_path / "train.csv", rows)


def test_profile_streams_chunks_and_learns_types(train: Path) -> None:
    whole = profile_dataset(train, label="label")
    chunked = profile_dataset(train, label="label", chunksize=7)
    for a, b in zip(whole.columns, chunked.columns, strict=True):
        assert a.model_dump(exclude={"mean", "std"}) == b.model_dump(exclude={"mean", "std"})
        assert a.mean == pytest.approx(b.mean) and a.std == pytest.approx(b.std)
    assert whole.rows == 120
    age, ward, score, _ = whole.columns
    assert age.kind == "integer" and age.min == 20 and age.max == 69
    assert ward.kind == "category" and ward.categories == ["a", "b", "c"]
    assert score.kind == "number" and score.max == pytest.approx(0.9)
    assert whole.class_balance == {"0": 0.5, "1": 0.5}


def test_validate_lists_every_violation(train: Path, tmp_path: Path) -> None:
    prof = profile_dataset(train, label="label")
    new = write_csv(
        tmp_path / "new.csv",
        ["30,a,0.5,1", "300,a,0.5,1", "x,b,0.1,0", "25,z,,1", "25,a,0.2,7"],
        header="age,ward,score,label,extra",
    )
    new.write_text(new.read_text().replace("\n", ",1\n").replace("extra,1", "extra"), encoding="utf-8")
    got = {(v.row, v.column, v.rule) for v in validate_dataset(new, prof, chunksize=2)}
    assert got == {
        (None, "extra", "column-unknown"),
        (1, "age", "range"),
        (2, "age", "type:number"),
        (3, "ward", "category"),
        (3, "score", "not-null"),
        (4, "label", "category"),
    }


def test_missing_label_column_and_corrupt_file(train: Path, tmp_path: Path) -> None:
    prof = profile_dataset(train, label="label")
    no_label = write_csv(tmp_path / "nl.csv", ["30,a,0.5"], header="age,ward,score")
    assert (None, "label", "label-missing") in {
        (v.row, v.column, v.rule) for v in validate_dataset(no_label, prof)
    }
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(ConfigError, match=r"bad\.csv"):
        profile_dataset(bad)
    with pytest.raises(ConfigError, match="label column 'nope'"):
        profile_dataset(train, label="nope")


def test_profile_npz_image_shape_and_range(tmp_path: Path) -> None:
    p = tmp_path / "img.npz"
    imgs = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    imgs[0, 0, 0, :2] = (0.0, 1.0)
    np.savez(p, x=imgs, y=np.arange(10) % 3)
    prof = profile_dataset(p, label="y")
    x = next(a for a in prof.arrays if a.name == "x")
    assert x.row_shape == [1, 8, 8] and 0 <= x.min <= x.max <= 1
    q = tmp_path / "new.npz"
    xs = np.zeros((4, 1, 8, 8), np.float32)
    xs[2, 0, 0, 0] = 5.0
    np.savez(q, x=xs, y=np.array([0, 1, 2, 9]))
    got = {(v.row, v.column, v.rule) for v in validate_dataset(q, prof)}
    assert got == {(2, "x", "range"), (3, "y", "category")}


def test_profiles_are_versioned_json(train: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    first = save_profile(profile_dataset(train), out)
    second = save_profile(profile_dataset(train), out)
    assert (first.version, second.version) == (1, 2)
    assert json.loads((tmp_path / "p.v1.json").read_text())["version"] == 1
    assert load_profile(out).version == 2
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"junk\.json"):
        load_profile(tmp_path / "junk.json")


def test_a_profile_version_is_a_new_file_and_an_interrupted_save_leaves_none(
    train: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red-team round 28, F2: the version file was written with write_text (through any link there);
    it is created new (never followed), numbered past the versions kept, and removed when the save
    stops half-way (Ctrl-C too)."""
    out = tmp_path / "p.json"
    (tmp_path / "p.v1.json").symlink_to(tmp_path / "elsewhere.json")  # dangling
    assert save_profile(profile_dataset(train), out).version == 2
    assert not (tmp_path / "elsewhere.json").exists() and (tmp_path / "p.v1.json").is_symlink()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("bastion.core.files.replace_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_profile(profile_dataset(train), out)
    assert not (tmp_path / "p.v3.json").exists() and load_profile(out).version == 2


def test_a_text_label_validates_against_its_classes(tmp_path: Path) -> None:
    """A label column of strings (``a``/``b``) is profiled as categories and validated as text."""
    src = tmp_path / "base.csv"
    src.write_text("x,label\n" + "".join(f"{i / 10},{'ab'[i % 2]}\n" for i in range(20)))
    prof = profile_dataset(src, label="label")
    assert validate_dataset(src, prof) == []  # the data it was learnt from: no violation
    bad = tmp_path / "bad.csv"
    bad.write_text("x,label\n0.1,a\n0.2,c\n0.3,b\n")
    got = [(v.row, v.column, v.rule, v.value) for v in validate_dataset(bad, prof)]
    assert got == [(1, "label", "category", "c")]


def test_a_hand_edited_profile_with_min_above_max_is_refused_on_load(train: Path, tmp_path: Path) -> None:
    prof = profile_dataset(train)
    out = tmp_path / "p.json"
    save_profile(prof, out)
    data = json.loads(out.read_text())
    col = next(c for c in data["columns"] if c.get("min") is not None)
    col["min"], col["max"] = col["max"] + 1, col["min"]
    data["rows"] = -5
    out.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as ei:
        load_profile(out)
    text = str(ei.value)
    assert "is above max" in text and "rows" in text


def test_a_file_split_by_another_delimiter_is_named_as_such(train: Path, tmp_path: Path) -> None:
    prof = profile_dataset(train)
    semi = tmp_path / "semi.csv"
    semi.write_text(train.read_text().replace(",", ";"))
    with pytest.raises(ConfigError, match="split by ';', not by commas"):
        validate_dataset(semi, prof)


def test_profiling_a_tab_separated_file_names_the_delimiter(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("a\tb\tlabel\n1\t2\t0\n3\t4\t1\n")
    with pytest.raises(ConfigError, match="split by a tab"):
        profile_dataset(f)


def test_a_malformed_csv_is_named_by_its_1_based_file_line(train: Path, tmp_path: Path) -> None:
    """Trial 32: an extra field on line 152 was reported as "malformed CSV near row 0"."""
    prof = profile_dataset(train, label="label")
    rows = [f"{20 + i % 50},a,0.5,{i % 2}" for i in range(300)]
    rows[150] += ",9"  # data row 150: line 152 of the file (the header is line 1)
    bad = write_csv(tmp_path / "bad.csv", rows)
    assert bad.read_text().splitlines()[151].endswith(",9")
    for call in (
        lambda: validate_dataset(bad, prof, chunksize=50),
        lambda: profile_dataset(bad, chunksize=50),
    ):
        with pytest.raises(ConfigError) as ei:
            call()
        text = str(ei.value)
        assert "bad.csv: malformed CSV at line 152 (1-based line of the file" in text, text
        assert "5 fields, the header has 4" in text and "row 0" not in text
    # a quoted cell holding a newline is one record but two lines: the line is the file's
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('age,ward,score,label\n30,"a\nb",0.5,1\n\n31,a,0.5,1,extra\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"malformed CSV at line 5 \("):
        validate_dataset(quoted, prof)


def test_validate_reports_the_cell_as_written(train: Path, tmp_path: Path) -> None:
    """Trial 32: ``--show-values`` printed a label written ``7`` as ``7.0``."""
    from bastion.data.validate import _cell

    prof = profile_dataset(train, label="label")
    new = write_csv(tmp_path / "new.csv", ["30,a,0.5,7", "300,a,0.5,1", "30,a,2,1"])
    got = {(v.row, v.column, v.rule, v.value) for v in validate_dataset(new, prof)}
    assert got == {(0, "label", "category", "7"), (1, "age", "range", "300"), (2, "score", "range", "2")}
    # without the raw cell, a whole number of an integral column still prints as one
    known = {c.name: c for c in prof.columns}
    import pandas as pd

    empty = pd.DataFrame({"age": []})
    assert _cell(empty, 0, "label", 7.0, known) == "7"
    assert _cell(empty, 0, "age", 300.0, known) == "300"
    assert _cell(empty, 0, "score", 2.0, known) == "2.0"
