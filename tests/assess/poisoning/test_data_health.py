"""The training-data health check on a clean and a deliberately dirtied breast-cancer dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from bastion.assess.poisoning import DataHealthCheck, DataHealthParams
from bastion.assess.poisoning.data_health import _wilson
from bastion.core.budget import Budget
from bastion.core.check import CheckContext, Split
from bastion.core.config import Asset, Dataset, ProjectConfig
from bastion.core.findings import Threat
from bastion.core.registry import checks
from bastion.core.severity import Severity
from bastion.data import load_dataset

DISTINCT = 98765.4321
N_BASE = 569
N_DUP = 12
N_FAR = 40


def _ctx(
    tmp_path: Path, x: np.ndarray, y: np.ndarray | None, splits: dict[str, list[int]], **params: object
) -> CheckContext:
    arrays = {"x": x.astype(np.float32)}
    if y is not None:
        arrays["y"] = y
    np.savez(tmp_path / "d.npz", **arrays)  # type: ignore[arg-type]
    ds = Dataset(name="d", path="d.npz", splits=splits)
    cfg = ProjectConfig(version=1, assets=[Asset(name="d", kind="dataset", path="d.npz")], datasets=[ds])
    loaded = load_dataset(ds, base_dir=tmp_path)
    return CheckContext(
        asset=cfg.assets[0],
        config=cfg,
        base_dir=tmp_path,
        budget=Budget(),
        params=DataHealthParams.model_validate(params),
        thresholds=list(DataHealthCheck.default_thresholds),
        seed=0,
        data=loaded.context_data(),
    )


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def dirty(cancer: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    x, y = cancer
    rng = np.random.default_rng(0)
    x, y = x.copy(), y.copy()
    flip = np.sort(rng.choice(np.arange(5, 400), size=int(0.05 * N_BASE), replace=False))
    y[flip] = 1 - y[flip]
    x[400:405] = x[0:5]  # five test rows copied from train: leakage (and exact duplicates)
    y[400:405] = y[0:5]
    dup_src = rng.choice(np.arange(5, 400), size=N_DUP, replace=False)
    far = x.mean(0) + 15 * x.std(0) * rng.choice([-1.0, 1.0], size=(N_FAR, x.shape[1]))
    far[:, 0] = DISTINCT
    xd = np.concatenate([x, x[dup_src], far])
    yd = np.concatenate([y, y[dup_src], rng.integers(0, 2, N_FAR)])
    return {"x": xd, "y": yd, "flip": flip, "dup_src": dup_src}


def test_registered_with_metadata() -> None:
    assert checks.get("poisoning.data-health") is DataHealthCheck
    assert DataHealthCheck.threat is Threat.POISONING
    assert DataHealthCheck.applies_to == frozenset({"dataset"})
    assert DataHealthCheck.atlas == ("AML.T0020", "AML.T0059")
    assert any("1911.00068" in r for r in DataHealthCheck.references)
    assert any("2201.00382" in r for r in DataHealthCheck.references)


def test_clean_dataset_has_no_findings(tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = cancer
    ctx = _ctx(tmp_path, x, y, {"train": list(range(400)), "test": list(range(400, N_BASE))})
    assert DataHealthCheck().applicable(ctx) is None
    res = DataHealthCheck().run(ctx)
    assert res.status == "ok" and res.findings == []
    m = res.metrics
    assert m["rows_examined"] == N_BASE
    assert m["exact_duplicate_rate"] == 0 and m["near_duplicate_rate"] == 0
    assert m["train_test_overlap"] == 0
    assert m["label_issue_rate"] is not None and m["label_issue_rate"] <= 0.02
    assert m["outlier_rate"] is not None and m["outlier_rate"] <= 0.05
    for rate in ("label_issue_rate", "exact_duplicate_rate", "outlier_rate", "train_test_overlap_rate"):
        lo, hi = res.intervals[rate]
        assert lo <= (m[rate] or 0.0) <= hi


def test_dirty_dataset_findings_cite_indices_only(tmp_path: Path, dirty: dict[str, np.ndarray]) -> None:
    n = len(dirty["x"])
    train = list(range(400)) + list(range(N_BASE, n))
    ctx = _ctx(tmp_path, dirty["x"], dirty["y"], {"train": train, "test": list(range(400, N_BASE))})
    res = DataHealthCheck().run(ctx)
    by_rule = {f.rule_id: f for f in res.findings}
    assert set(by_rule) == {
        "poisoning.data-health.label-issues",
        "poisoning.data-health.train-test-leakage",
        "poisoning.data-health.duplicates",
        "poisoning.data-health.outliers",
    }
    for f in res.findings:
        ev = f.evidence
        assert {"count", "rate", "indices", "total"} <= set(ev)
        assert ev["indices"] == sorted(ev["indices"]) and len(ev["indices"]) == min(50, ev["count"])
        assert f.location.index == ev["indices"][0]
        assert f.location.path == "d.npz" and f.asset == "d"

    leak = by_rule["poisoning.data-health.train-test-leakage"]
    assert leak.severity is Severity.MEDIUM
    assert leak.evidence["indices"] == [400, 401, 402, 403, 404] and leak.evidence["total"] == N_BASE - 400
    assert leak.evidence["pairs"] == [[400 + i, i] for i in range(5)]
    assert res.metrics["train_test_overlap"] == 5

    dups = by_rule["poisoning.data-health.duplicates"]
    assert dups.severity is Severity.LOW
    assert dups.evidence["indices"] == [400, 401, 402, 403, 404, *range(N_BASE, N_BASE + N_DUP)]
    assert dups.evidence["total"] == n

    out = by_rule["poisoning.data-health.outliers"]
    far = set(range(N_BASE + N_DUP, n))
    assert far <= set(out.evidence["indices"]) or out.evidence["count"] > 50
    assert len(far & set(out.evidence["indices"])) >= min(N_FAR, 50) - 12

    labels = by_rule["poisoning.data-health.label-issues"]
    assert labels.severity is Severity.MEDIUM
    flagged = set(labels.evidence["indices"])
    assert labels.evidence["count"] <= 50 or labels.evidence["indices_truncated"]
    assert len(flagged & set(dirty["flip"].tolist())) >= 0.5 * min(len(flagged), len(dirty["flip"]))

    dumped = res.model_dump_json()
    json.loads(dumped)
    assert "98765" not in dumped
    row = dirty["x"][int(dirty["flip"][0])]
    for v in row[:5]:
        assert repr(float(np.float32(v))) not in dumped


def test_unlabelled_and_unsplit_dataset_skips_those_parts(
    tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = cancer
    ctx = _ctx(tmp_path, x, None, {})
    res = DataHealthCheck().run(ctx)
    assert res.metrics["label_issue_rate"] is None
    assert "no labels" in res.notes["label_issue_rate"]
    assert res.metrics["train_test_overlap"] is None
    assert "needs splits 'train' and 'test'" in res.notes["train_test_overlap"]
    assert res.metrics["exact_duplicate_rate"] == 0


def test_max_rows_caps_the_rows_examined(tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = cancer
    ctx = _ctx(tmp_path, x, y, {}, max_rows=200)
    res = DataHealthCheck().run(ctx)
    assert res.metrics["rows_examined"] == 200
    assert "200 of 569" in res.notes["rows"]
    assert res.budget_used is not None and res.budget_used.samples == 200


def test_without_all_key_uses_union_of_splits(tmp_path: Path, dirty: dict[str, np.ndarray]) -> None:
    ctx = _ctx(
        tmp_path, dirty["x"], dirty["y"], {"train": list(range(300)), "test": list(range(400, N_BASE))}
    )
    ctx.data = {k: v for k, v in ctx.data.items() if k != "all"}
    res = DataHealthCheck().run(ctx)
    assert res.metrics["rows_examined"] == 300 + (N_BASE - 400)
    assert res.metrics["train_test_overlap"] == 5


def test_user_threshold_on_another_metric_and_none_configured(
    tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray]
) -> None:
    from bastion.core.config import Threshold

    x, y = cancer
    ctx = _ctx(tmp_path, x, y, {})
    ctx.thresholds = [Threshold(metric="rows_examined", op="gt", value=10, severity=Severity.INFO)]
    res = DataHealthCheck().run(ctx)
    assert [f.rule_id for f in res.findings] == ["poisoning.data-health.rows-examined-gt"]


def test_not_applicable_without_rows(tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = cancer
    ctx = _ctx(tmp_path, x[:20], y[:20], {})
    ctx.data = {}
    assert DataHealthCheck().applicable(ctx) == "no rows of the dataset were loaded"


def test_split_without_labels_union() -> None:
    s = Split(x=np.zeros((2, 2), dtype=np.float32), y=None, index=np.array([0, 1]))
    from bastion.assess.poisoning.data_health import _rows

    merged = _rows({"a": s, "b": Split(x=s.x, y=None, index=np.array([1, 2]))})
    assert merged.index.tolist() == [0, 1, 2] and merged.y is None


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (1, 1000), (0, 0)])
def test_wilson_interval(k: int, n: int) -> None:
    lo, hi = _wilson(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= k / n <= hi
    assert _wilson(5, 10)[0] == pytest.approx(0.2366, abs=1e-3)


def test_empty_test_split_skips_leakage(tmp_path: Path, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = cancer
    ctx = _ctx(tmp_path, x, y, {"train": list(range(100)), "test": []})
    res = DataHealthCheck().run(ctx)
    assert res.metrics["train_test_overlap"] is None and "is empty" in res.notes["train_test_overlap"]


def test_class_outliers_are_opt_in_and_find_rows_odd_for_their_class(tmp_path: Path) -> None:
    """Rows whose feature is ordinary overall but extraordinary within their label are cited."""
    rng = np.random.default_rng(3)
    n = 300
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, 4))
    x[:, 0] += np.where(y == 0, -10.0, 10.0)  # feature 0 separates the classes
    poison = np.array([7, 31, 88, 120])
    x[poison, 0] = 10.0  # a class-1 value on class-0 rows: common in the data, odd for the label
    splits = {"train": list(range(n))}
    off = DataHealthCheck().run(_ctx(tmp_path, x, y, splits))
    assert "class_outlier_rate" not in off.metrics  # off by default
    res = DataHealthCheck().run(_ctx(tmp_path, x, y, splits, class_outlier_z=5.0))
    assert res.metrics["class_outlier_rate"] == pytest.approx(len(poison) / n)
    found = [f for f in res.findings if f.rule_id.endswith("class-outliers")]
    assert len(found) == 1 and found[0].severity == Severity.LOW
    assert found[0].evidence["indices"] == poison.tolist()
    assert "column 0" in res.notes["class_outlier_rate"]
    # the global outlier model does not see them: the values are ordinary in the data set
    assert res.metrics["outlier_rate"] is not None and res.metrics["outlier_rate"] < len(poison) / n
    unlabelled = DataHealthCheck().run(_ctx(tmp_path, x, None, splits, class_outlier_z=5.0))
    assert unlabelled.metrics["class_outlier_rate"] is None
