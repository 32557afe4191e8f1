from __future__ import annotations

from pathlib import Path

import pytest

from bastion.store import Store, StoreError
from bastion.store.provenance import get_version, latest_version, lineage, list_versions, register_version


def test_register_versions_and_lineage(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'b.db'}") as store:
        files = {"t.csv": {"sha256": "ab" * 32, "size": 3, "rows": 1, "row_digests": ["0" * 16]}}
        v1 = register_version(
            store,
            dataset="ds",
            merkle_root="11" * 32,
            files=files,
            source="s3://b",
            licence="CC-BY-4.0",
            owner="o@x",
        )
        v2 = register_version(
            store,
            dataset="ds",
            merkle_root="22" * 32,
            files=files,
            parent_id=v1.id,
            details={"removed_rows": [0]},
        )
        assert (v1.version, v2.version) == (1, 2)
        assert latest_version(store, "ds").id == v2.id
        assert [v.id for v in lineage(store, v2.id)] == [v2.id, v1.id]
        assert get_version(store, v1.id).licence == "CC-BY-4.0"
        assert "row_digests" not in v1.summary()["files"]["t.csv"]
        assert list_versions(store, "other") == []
        with pytest.raises(StoreError, match="not found"):
            register_version(store, dataset="ds", merkle_root="x", files={}, parent_id="nope")
