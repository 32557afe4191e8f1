"""``store.versions``: recording hardened model versions and finding an identical one."""

from __future__ import annotations

from bastion.store import Store
from bastion.store.versions import add_version, find_version, latest_version, list_versions

SHA_A, SHA_B, PARENT, OTHER_PARENT = "a" * 64, "b" * 64, "1" * 64, "2" * 64


def _add(store: Store, sha: str, parent_sha: str = PARENT, asset: str = "m") -> int:
    v = add_version(
        store,
        asset=asset,
        path=f".bastion/models/{asset}-{sha[:12]}.pt",
        sha256=sha,
        procedure="defend.pgd-at",
        details={"epsilon": 0.1, "parent_sha256": parent_sha},
        datasets=["digits"],
    )
    return v.version


def test_versions_are_numbered_per_asset_from_two(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as st:
        assert [_add(st, SHA_A), _add(st, SHA_B), _add(st, SHA_A, asset="n")] == [2, 3, 2]
        assert [v.version for v in list_versions(st, "m")] == [2, 3]
        latest = latest_version(st, "m")
        assert latest is not None and latest.sha256 == SHA_B and latest.datasets == ["digits"]
        assert latest_version(st, "absent") is None


def test_find_version_matches_asset_bytes_and_parent(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as st:
        _add(st, SHA_A)
        _add(st, SHA_A, parent_sha=OTHER_PARENT)  # same bytes from another original: its own row
        found = find_version(st, asset="m", sha256=SHA_A, parent_sha256=PARENT)
        assert found is not None and found.version == 2
        other = find_version(st, asset="m", sha256=SHA_A, parent_sha256=OTHER_PARENT)
        assert other is not None and other.version == 3
        assert find_version(st, asset="m", sha256=SHA_B, parent_sha256=PARENT) is None  # other bytes
        assert find_version(st, asset="n", sha256=SHA_A, parent_sha256=PARENT) is None  # other asset
        # a recorded parent version id must match too (the rows above derive from the original)
        assert find_version(st, asset="m", sha256=SHA_A, parent_id="someid", parent_sha256=PARENT) is None
        # without a parent hash only the id is compared: the oldest row wins
        any_parent = find_version(st, asset="m", sha256=SHA_A)
        assert any_parent is not None and any_parent.version == 2
