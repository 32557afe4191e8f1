"""Regression tests of defects a code review of the day's changes reproduced."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bastion.core.scanning import Verdict
from bastion.scan import scan_file, scan_paths

from ._formats import cve_2024_3660_config, keras_config, keras_layer


def test_hdf5_verdict_is_of_the_bytes_hashed_even_if_the_path_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small ``.h5`` is read into memory and hashed; the HDF5 child reopened the *path*, so a
    file swapped in between got the clean file's verdict beside the malicious file's SHA-256."""
    h5py = pytest.importorskip("h5py")
    import bastion.scan.hdf5_scanner as hs

    evil, good, target = tmp_path / "evil.h5", tmp_path / "good.h5", tmp_path / "model.h5"
    for path, cfg in ((evil, cve_2024_3660_config()), (good, keras_config(keras_layer("Dense", units=2)))):
        with h5py.File(path, "w") as f:
            f.attrs["model_config"] = json.dumps(cfg)
    target.write_bytes(evil.read_bytes())
    real = hs.read_root_attrs

    def swapped(artifact: object, keys: tuple[str, ...]) -> dict[str, object]:
        os.replace(good, target)  # after the engine read and hashed the malicious bytes
        return real(artifact, keys)  # type: ignore[arg-type]

    monkeypatch.setattr(hs, "read_root_attrs", swapped)
    fr = scan_paths([target]).files[0]
    assert fr.sha256 == hashlib.sha256(evil.read_bytes()).hexdigest()
    assert fr.verdict is Verdict.MALICIOUS


def test_mareconstruct_builds_its_subtype_so_only_the_base_class_is_a_plain_reference(tmp_path: Path) -> None:
    """``_mareconstruct(subtype, baseclass, …)`` calls ``subtype.__new__``: a reference-only class
    there is built; as ``baseclass`` (a masked memmap, pickled by numpy) it is not."""
    data = (
        b"\x80\x02cnumpy.ma.core\n_mareconstruct\n(cnumpy\nmemmap\ncnumpy\nndarray\n"
        + pickle.dumps((0,), protocol=2)[2:-1]
        + pickle.dumps(b"b", protocol=2)[2:-1]
        + b"tR."
    )
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(data)
    fr = scan_file(evil)
    assert fr.verdict is Verdict.MALICIOUS
    assert [f.rule_id for f in fr.findings] == ["scan.pickle.reference-only-called"]
    mm = np.memmap(tmp_path / "a.dat", dtype="float32", mode="w+", shape=(4,))
    legit = tmp_path / "masked.pkl"
    for protocol in (0, 2, 5):  # numpy pickles a masked array under numpy.ma, allowed like numpy.ma.core
        legit.write_bytes(pickle.dumps(np.ma.masked_array(mm, mask=[0, 1, 0, 0]), protocol=protocol))
        assert scan_file(legit).verdict is Verdict.SAFE, protocol


def test_the_guard_imports_where_os_has_no_register_at_fork() -> None:
    # as on Windows: no fork, no register_at_fork (the standard library checks for fork first)
    code = "import os; del os.fork, os.register_at_fork; import bastion.guard.app; print('ok')"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
