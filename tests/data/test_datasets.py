"""Loading CSV and npz datasets with their recorded splits, and every bad input's error."""

from __future__ import annotations

import csv
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from bastion.core.config import Dataset
from bastion.core.errors import ConfigError
from bastion.data import LoadedDataset, load_dataset


def write_csv(
    path: Path, x: np.ndarray, y: np.ndarray | None, names: list[str], label: str = "label"
) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*names, label] if y is not None else names)
        for i, row in enumerate(x):
            cells = [repr(float(v)) for v in row]
            w.writerow([*cells, str(int(y[i]))] if y is not None else cells)


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, list[str]]:
    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target.astype(np.int64), [str(n) for n in data.feature_names]


@pytest.fixture()
def cancer_csv(tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray, list[str]]) -> Path:
    x, y, names = cancer
    path = tmp_path / "cancer.csv"
    write_csv(path, x, y, names)
    return path


def test_csv_loads_rows_labels_hash_and_splits(
    tmp_path: Path, cancer_csv: Path, cancer: tuple[np.ndarray, np.ndarray, list[str]]
) -> None:
    x, y, names = cancer
    train, test = list(range(0, 400)), list(range(400, 569))
    ds = Dataset(name="cancer", path="cancer.csv", label="label", splits={"train": train, "test": test})
    loaded = load_dataset(ds, base_dir=tmp_path)
    assert isinstance(loaded, LoadedDataset)
    assert loaded.x.dtype == np.float32 and loaded.x.shape == (569, 30)
    assert loaded.y is not None and loaded.y.dtype == np.int64
    np.testing.assert_array_equal(loaded.y, y)
    np.testing.assert_allclose(loaded.x, x, rtol=1e-6)
    assert loaded.feature_names == names
    assert loaded.sha256 == hashlib.sha256(cancer_csv.read_bytes()).hexdigest()
    assert loaded.warnings == []
    tr = loaded.split("train")
    assert tr.x.shape == (400, 30) and tr.index.dtype == np.int64
    np.testing.assert_array_equal(loaded.split("test").index, np.arange(400, 569))
    np.testing.assert_array_equal(loaded.split("test").x, loaded.x[400:])
    whole = loaded.split("all")
    assert whole.index.size == 569
    assert set(loaded.context_data()) == {"train", "test", "all"}
    with pytest.raises(ConfigError, match=r"no split named 'val'.*test, train"):
        loaded.split("val")


def test_csv_feature_subset_and_unlabelled(tmp_path: Path, cancer_csv: Path) -> None:
    ds = Dataset(name="c", path="cancer.csv", label="label", features=["mean radius", "mean texture"])
    loaded = load_dataset(ds, base_dir=tmp_path)
    assert loaded.x.shape == (569, 2)
    assert loaded.feature_names == ["mean radius", "mean texture"]
    unlabelled = load_dataset(Dataset(name="u", path="cancer.csv"), base_dir=tmp_path)
    assert unlabelled.y is None and unlabelled.x.shape == (569, 31)


def test_npz_reshaped_to_input_shape_with_splits_file(tmp_path: Path) -> None:
    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "digits.npz", x=x.astype(np.float32), y=y)
    np.savez(tmp_path / "splits.npz", train=np.arange(0, 1500), test=np.arange(1500, 1797))
    ds = Dataset(name="digits", path="digits.npz", splits_file="splits.npz")
    loaded = load_dataset(ds, base_dir=tmp_path, input_shape=(1, 8, 8))
    assert loaded.x.shape == (1797, 1, 8, 8) and loaded.x.dtype == np.float32
    np.testing.assert_array_equal(loaded.x[5, 0], x[5].reshape(8, 8))
    assert loaded.y is not None and loaded.y.tolist() == y.tolist()
    assert loaded.split("train").x.shape == (1500, 1, 8, 8)
    test_y = loaded.split("test").y
    assert test_y is not None and test_y.tolist() == y[1500:].tolist()
    assert len(loaded.feature_names) == 64


def test_npz_named_arrays_and_optional_label(tmp_path: Path) -> None:
    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "d.npz", inputs=x, target=y)
    loaded = load_dataset(
        Dataset(name="d", path="d.npz", features="inputs", label="target"), base_dir=tmp_path
    )
    assert loaded.x.shape == (1797, 64) and loaded.y is not None
    no_label = load_dataset(Dataset(name="d", path="d.npz", features="inputs"), base_dir=tmp_path)
    assert no_label.y is None


def test_overlapping_train_test_is_kept_with_a_warning(tmp_path: Path, cancer_csv: Path) -> None:
    ds = Dataset(name="c", path="cancer.csv", label="label", splits={"train": [0, 1, 2, 3], "test": [3, 4]})
    loaded = load_dataset(ds, base_dir=tmp_path)
    assert len(loaded.warnings) == 1 and "both train and test" in loaded.warnings[0]
    assert loaded.split("test").index.tolist() == [3, 4]


# -- bad inputs ------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"file not found: .*nowhere\.csv"):
        load_dataset(Dataset(name="x", path="nowhere.csv"), base_dir=tmp_path)


def test_missing_splits_file_names_it(tmp_path: Path, cancer_csv: Path) -> None:
    ds = Dataset(name="c", path="cancer.csv", label="label", splits_file="gone.npz")
    with pytest.raises(ConfigError, match=r"splits file.*gone\.npz"):
        load_dataset(ds, base_dir=tmp_path)


def test_object_npz_is_rejected_without_unpickling(tmp_path: Path) -> None:
    obj = np.array([{"a": 1}, {"b": 2}], dtype=object)
    np.savez(tmp_path / "obj.npz", x=obj)
    with pytest.raises(ConfigError, match=r"obj\.npz.*'x' is an object array"):
        load_dataset(Dataset(name="o", path="obj.npz"), base_dir=tmp_path)


def test_pickle_disguised_as_npz_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "evil.npz").write_bytes(pickle.dumps({"x": [1, 2]}))
    with pytest.raises(ConfigError, match=r"evil\.npz: not an npz"):
        load_dataset(Dataset(name="e", path="evil.npz"), base_dir=tmp_path)


def test_non_numeric_csv_cell_names_row_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    pattern = r"bad\.csv: row 1 \(line 3\), column 'b': not a number \(4 characters\)"
    with pytest.raises(ConfigError, match=pattern) as info:
        load_dataset(Dataset(name="b", path="bad.csv", label="label"), base_dir=tmp_path)
    assert "oops" not in str(info.value)  # cell values may be patient data: never echoed


def test_empty_and_nan_cells_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("a,b\n1,\n")
    with pytest.raises(ConfigError, match=r"row 0 \(line 2\), column 'b'"):
        load_dataset(Dataset(name="e", path="e.csv"), base_dir=tmp_path)
    (tmp_path / "n.csv").write_text("a,b\n1,nan\n")
    with pytest.raises(ConfigError, match="non-finite"):
        load_dataset(Dataset(name="n", path="n.csv"), base_dir=tmp_path)


def test_non_integer_label_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("a,label\n1,0\n2,M\n")
    with pytest.raises(ConfigError, match=r"row 1 \(line 3\), label column 'label': not an integer"):
        load_dataset(Dataset(name="l", path="l.csv", label="label"), base_dir=tmp_path)


def test_missing_columns_and_arrays_are_named(tmp_path: Path, cancer_csv: Path) -> None:
    with pytest.raises(ConfigError, match="label column 'target' not found"):
        load_dataset(Dataset(name="c", path="cancer.csv", label="target"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"feature column.*'nope'"):
        load_dataset(Dataset(name="c", path="cancer.csv", features=["nope"]), base_dir=tmp_path)
    np.savez(tmp_path / "a.npz", inputs=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match=r"no array 'x' \(features\); arrays: inputs"):
        load_dataset(Dataset(name="a", path="a.npz"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"no array 'lbl' \(label\)"):
        load_dataset(Dataset(name="a", path="a.npz", features="inputs", label="lbl"), base_dir=tmp_path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match=r"unsupported format '\.parquet'"):
        load_dataset(Dataset(name="p", path="d.parquet"), base_dir=tmp_path)


def test_split_index_out_of_range_names_split_and_index(tmp_path: Path, cancer_csv: Path) -> None:
    ds = Dataset(name="c", path="cancer.csv", label="label", splits={"train": [0, 1], "test": [2, 569]})
    with pytest.raises(ConfigError, match=r"split 'test': row index 569 is out of range.*569 rows"):
        load_dataset(ds, base_dir=tmp_path)
    np.savez(tmp_path / "s.npz", train=np.array([0, 1000]), test=np.array([2]))
    ds2 = Dataset(name="c", path="cancer.csv", label="label", splits_file="s.npz")
    with pytest.raises(ConfigError, match="split 'train': row index 1000 is out of range"):
        load_dataset(ds2, base_dir=tmp_path)


def test_splits_file_must_hold_integer_arrays(tmp_path: Path, cancer_csv: Path) -> None:
    np.savez(tmp_path / "s.npz", train=np.array([0.5, 1.0]))
    ds = Dataset(name="c", path="cancer.csv", label="label", splits_file="s.npz")
    with pytest.raises(ConfigError, match="split 'train' has dtype float64, expected integers"):
        load_dataset(ds, base_dir=tmp_path)


def test_shape_mismatch_names_dataset_file_and_both_shapes(tmp_path: Path, cancer_csv: Path) -> None:
    ds = Dataset(name="cancer", path="cancer.csv", label="label")
    with pytest.raises(ConfigError) as info:
        load_dataset(ds, base_dir=tmp_path, input_shape=(1, 8, 8))
    msg = str(info.value)
    assert "'cancer'" in msg and "cancer.csv" in msg and "(30,)" in msg and "(1, 8, 8)" in msg


def test_load_dataset_does_not_import_heavy_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bastion.data; "
        "print(','.join(m for m in ('torch','sklearn','pandas','cleanlab') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
