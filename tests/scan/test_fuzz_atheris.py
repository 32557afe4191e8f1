"""Coverage-guided fuzzing (atheris) of the scanner, bounded: ``scripts/fuzz_scan.py`` on the seeds.

The hypothesis tests (``test_fuzz.py``) mutate the seeds blindly; atheris keeps the mutations
that reach new scanner code. Here a short campaign runs in a subprocess (libFuzzer exits non-zero
on the first crash: an exception out of ``scan_file``, an internal error, a hang, or the payload
marker appearing). Longer campaigns: ``python scripts/fuzz_scan.py CORPUS -max_total_time=3600``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .test_fuzz import SEEDS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_scan.py"
MARKER = Path(tempfile.gettempdir()) / "bastion-fuzz-canary"


def _script_names() -> tuple[str, ...]:
    """``NAMES`` of scripts/fuzz_scan.py (read from its source: importing it needs atheris)."""
    import ast

    for node in ast.parse(SCRIPT.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "NAMES":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("NAMES not found in scripts/fuzz_scan.py")


NAMES = _script_names()


def _name_byte(seed_name: str) -> bytes:
    name = seed_name if seed_name.startswith("saved_model.") else "x" + Path(seed_name).suffix
    return bytes([NAMES.index(name) if name in NAMES else NAMES.index("x")])


def _onnx_model(location: str, domain: str) -> bytes:
    """An ONNX model whose initializer reads external data at ``location`` through an op of ``domain``.

    Raises:
        ImportError: the ``onnx`` extra is missing.
    """
    import numpy as np
    import onnx
    from onnx import helper

    w = helper.make_tensor("w", onnx.TensorProto.FLOAT, [2], np.ones(2, dtype=np.float32).tolist())
    w.data_location = onnx.TensorProto.EXTERNAL
    del w.float_data[:]
    w.external_data.add(key="location", value=location)
    node = helper.make_node("Custom", ["x", "w"], ["y"], domain=domain)
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    return bytes(
        helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=[w])).SerializeToString()
    )


def _more_seeds() -> dict[str, bytes]:
    """Seeds of the formats ``test_fuzz.SEEDS`` lacks (archives, npz, joblib, ONNX, HDF5, skops, 7z)."""
    import io
    import pickle
    import tarfile
    import zipfile

    from ._factories import joblib_bytes, npy_object, os_system_payload

    evil = os_system_payload(MARKER)
    seeds: dict[str, bytes] = {
        "o.npy": npy_object({"k": 1}),
        "m.joblib": joblib_bytes({"a": [1, 2]}, compress=3),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", npy_object([1, 2]))
        zf.writestr("b.npy", evil)
    seeds["m.npz"] = buf.getvalue()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("model/data.pkl")
        info.size = len(evil)
        tf.addfile(info, io.BytesIO(evil))
    seeds["m.tar"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # a skops file: schema.json beside .npy members
        schema = {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {}}
        zf.writestr("schema.json", json.dumps({**schema, "protocol": 1}))
        zf.writestr("a.npy", npy_object([1]))
    seeds["m.skops"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # TorchScript-like: code member and constants
        zf.writestr("m/code/__torch__.py", "import os\ndef forward(self, x):\n    os.system('true')\n")
        zf.writestr("m/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        zf.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
    seeds["ts.pt"] = buf.getvalue()
    seeds["saved_model.pbtxt"] = (
        b'node { name: "r" op: "ReadFile" }\nlibrary { function { node_def { op: "PyFunc" } } }\n'
    )
    with contextlib.suppress(ImportError):
        seeds["m.onnx"] = _onnx_model("../../etc/passwd", "evil.ops")
    with contextlib.suppress(ImportError):
        import h5py

        bio = io.BytesIO()
        with h5py.File(bio, "w") as h5:
            h5.attrs["model_config"] = json.dumps(
                {"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {}}]}}
            )
        seeds["m.h5"] = bio.getvalue()
    with contextlib.suppress(ImportError):
        import py7zr

        bio = io.BytesIO()
        with py7zr.SevenZipFile(bio, "w") as z:
            z.writestr(evil, "data.pkl")
        seeds["m.7z"] = bio.getvalue()
    return seeds


@pytest.fixture()
def atheris_available() -> None:
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI") == "true":  # the dev extra installs it on Linux / CPython < 3.12
            pytest.fail("atheris is not installed (pip install -e '.[dev]')")
        pytest.skip("atheris is not installed")


def test_every_seed_has_a_file_name_of_the_script() -> None:
    seeds = {**SEEDS, **_more_seeds()}
    assert len(seeds) >= 18
    assert {_name_byte(n) for n in seeds} <= {bytes([i]) for i in range(len(NAMES))}
    assert {NAMES[_name_byte(n)[0]] for n in seeds} >= {"x.npz", "x.tar", "x.skops", "saved_model.pbtxt"}


def test_atheris_campaign_finds_no_crash(atheris_available: None, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in {**SEEDS, **_more_seeds()}.items():
        (corpus / name.replace("/", "_")).write_bytes(_name_byte(name) + data)
    MARKER.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(corpus), "-runs=20000", "-max_total_time=30", "-seed=7"],
        cwd=tmp_path,  # libFuzzer writes crash-* files into the working folder
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "Done" in tail, tail
    assert not list(tmp_path.glob("crash-*")), tail
    assert not MARKER.exists()


@pytest.mark.parametrize("name", ["x.npz", "x.zip", "x.pt"])
def test_zip_member_with_an_empty_name_is_scanned_not_an_internal_error(tmp_path: Path, name: str) -> None:
    """Found by the atheris campaign: ``ZipInfo.is_dir()`` raises IndexError on an empty name."""
    import io
    import zipfile

    from bastion.core.scanning import Verdict
    from bastion.scan import scan_file

    from ._factories import os_system_payload

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(""), os_system_payload(MARKER))
        zf.writestr("a.npy", b"")
    p = tmp_path / name
    p.write_bytes(buf.getvalue())
    fr = scan_file(p)
    assert "internal" not in (fr.reason or ""), fr.reason
    assert fr.verdict in (Verdict.MALICIOUS, Verdict.ERROR)
    assert not MARKER.exists()


#: A 5 KB mutated HDF5 file on which the HDF5 library never returned (atheris timeout, zlib + base64).
_LOOPING_H5 = (
    "eNrr9HBx4+WS4mIAAQ4OBhYGAQZk8B8KOoRR+TD5BCjNCKU7oPQKJpg4M1hOAiouADVfgRnCz4CKhwS5uiKbj27PKBgg8G1w"
    "OMPD1TEAREdA+RxQ+gQTqjpYOgygkr2C0PSKnq55GDyg9vEyiABdk5ufkpoTn5yfl5aZDhKXZGQE6xSAu4kDxX0xIDOZEW52"
    "d/b3YWSAakBTBwLVSsk5icVQjnVxfF5ibqqSlYJScGphaWpeSWZijpKOghLEfqB4tVJOYmVqUTGQGQ3RitDik5iblJKIqry2"
    "Nra2FtnfDfyjSX8UjIJRMApGwSgYBaNgFIyCUTAKRsEooBUAAFvnUmM="
)


def test_an_hdf5_file_that_makes_the_library_loop_is_an_error_within_the_time_limit(tmp_path: Path) -> None:
    """The HDF5 C library runs in a child process the scanner kills at the file's time limit."""
    import base64
    import time
    import zlib

    pytest.importorskip("h5py")
    from bastion.core.scanning import Verdict
    from bastion.scan import ScanLimits, scan_file

    p = tmp_path / "m.h5"
    p.write_bytes(zlib.decompress(base64.b64decode("".join(_LOOPING_H5))))
    t0 = time.monotonic()
    fr = scan_file(p, limits=ScanLimits(max_seconds=3))
    assert time.monotonic() - t0 < 30  # a hang guard: the limit is 3 s plus the child's start
    assert fr.verdict is Verdict.ERROR
    assert "HDF5" in (fr.reason or "") and "within" in (fr.reason or "")


def test_onnx_strings_that_are_not_utf8_are_checked_not_an_internal_error(tmp_path: Path) -> None:
    """Found by the atheris campaign: protobuf hands ``bytes`` for a non-UTF-8 string field."""
    pytest.importorskip("onnx")

    from bastion.core.scanning import Verdict
    from bastion.report.json_out import scan_to_json
    from bastion.report.sarif import scan_to_sarif
    from bastion.scan import scan_file, scan_paths

    data = _onnx_model("QQQQQQQQQQ", "DDDDDDDD")
    data = data.replace(b"QQQQQQQQQQ", b"../\xff\xfe/etc/").replace(b"DDDDDDDD", b"evil\xff\xfe.o")
    p = tmp_path / "m.onnx"
    p.write_bytes(data)
    fr = scan_file(p)
    assert "internal" not in (fr.reason or ""), fr.reason
    assert fr.verdict is Verdict.MALICIOUS
    assert {"scan.onnx.external-data-escape", "scan.onnx.custom-domain"} <= {f.rule_id for f in fr.findings}
    result = scan_paths([p])
    json.loads(scan_to_json(result))  # the report renders (surrogates escaped)
    json.loads(scan_to_sarif(result))
