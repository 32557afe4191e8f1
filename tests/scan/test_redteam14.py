"""Regressions of red-team round 14 (integrity, and the newest scanner code).

O1/I1 an ONNX model whose tensors live in external files (read against the working folder when
loaded from bytes; covered by no hash or signature); I2 a file of a folder signed as a whole
replaced by a link to a file outside; I3 a signature deleted or garbled; I4 another model's
bundle renamed beside this one; I5 a file swapped between the signature's read and the
loader's; I6 a changed file whose name the library's message quotes badly; T1 a tar symlink
made to point outside by a later link.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
from tests.keys import write_ec_keypair
from tests.scan._pickles import tar as _tar

from bastion.core.errors import IntegrityError, TargetError
from bastion.scan import scan_file
from bastion.scan.signing import (
    FolderBundles,
    SignatureStatus,
    bound_signature,
    refuse_failed_signature,
    sign_path,
    verify_path,
)

Keys = tuple[Path, Path]
Patch = pytest.MonkeyPatch


def _onnx(location: str | None) -> bytes:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((1, 2), dtype=np.float32), "w")
    if location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        entry = w.external_data.add()
        entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def test_o1_external_data_is_reported_and_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from bastion.targets.onnx_target import OnnxTarget

    (tmp_path / "secret.bin").write_bytes(b"\x00\x00\x80?\x00\x00\x80?")  # what the cwd would give
    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(_onnx("secret.bin"))
    res = scan_file(model)
    assert [f.rule_id for f in res.findings] == ["scan.onnx.external-data"]
    monkeypatch.chdir(tmp_path)  # onnxruntime from bytes resolved the location here
    with pytest.raises(TargetError, match="external files"):
        OnnxTarget(model, name="m", input_shape=(1,), num_classes=2, output="logits")
    # a self-contained model loads
    model.write_bytes(_onnx(None))
    assert OnnxTarget(model, name="m", input_shape=(1,), num_classes=2, output="logits").num_classes == 2


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    pytest.importorskip("model_signing", reason="signing needs bastion-ml[signing]")
    k, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    write_ec_keypair(k, pub)
    return k, pub


def _folder(tmp_path: Path, names: tuple[str, ...] = ("a.pkl", "b.pkl")) -> Path:
    d = tmp_path / "project" / "models"
    d.mkdir(parents=True)
    for i, n in enumerate(names):
        (d / n).write_bytes(pickle.dumps({"w": [float(i)]}, protocol=2))
    return d


def test_i2_a_signed_folders_file_replaced_by_a_link_outside_fails(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    models = _folder(tmp_path)
    sign_path(models, key=keys[0])
    outside = tmp_path / "evil.pkl"
    outside.write_bytes(pickle.dumps({"w": [9.0]}, protocol=2))
    (models / "a.pkl").unlink()
    os.symlink(outside, models / "a.pkl")
    status, _, bundle = FolderBundles(models.parent, keys[1]).status_of(models / "a.pkl")
    assert status is SignatureStatus.INVALID and bundle is not None
    with pytest.raises(IntegrityError):
        refuse_failed_signature(models / "a.pkl", key=keys[1], root=models.parent)


def test_i3_a_missing_or_garbled_signature_is_refused_with_a_key(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    with pytest.raises(IntegrityError, match="unsigned"):
        refuse_failed_signature(model, key=keys[1], require_signed=True)
    refuse_failed_signature(model, key=keys[1], require_signed=False)  # opted out: loaded
    for garbage in (b"{}", b"not json"):
        (tmp_path / "m.pkl.sig").write_bytes(garbage)
        with pytest.raises(IntegrityError, match="did not verify"):  # not a bundle: failed (trial 33, 8)
            refuse_failed_signature(model, key=keys[1])


def test_i4_another_models_bundle_renamed_beside_this_one_fails(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    old = tmp_path / "old.pkl"
    old.write_bytes(pickle.dumps({"w": [0.0]}, protocol=2))
    sign_path(old, key=keys[0])
    shutil.copy(old, tmp_path / "model.pkl")
    shutil.copy(tmp_path / "old.pkl.sig", tmp_path / "model.pkl.sig")
    with pytest.raises(IntegrityError, match=r"signs 'old\.pkl', not 'model\.pkl'"):
        verify_path(tmp_path / "model.pkl", key=keys[1])
    assert verify_path(old, key=keys[1]).digests  # the original still verifies


def test_i5_the_signature_must_sign_the_bytes_that_are_loaded(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    sign_path(model, key=keys[0])
    good = hashlib.sha256(model.read_bytes()).hexdigest()
    status, _, signed = bound_signature(model, key=keys[1])
    assert status is SignatureStatus.VERIFIED and signed == good
    refuse_failed_signature(model, key=keys[1], sha256=good)
    # the bytes scanned (and to be loaded) were others: a swap between the reads
    swapped = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(IntegrityError, match="signed bytes are not the bytes"):
        refuse_failed_signature(model, key=keys[1], sha256=swapped)


def test_i6_a_changed_file_with_a_quote_in_its_name_fails(tmp_path: Path, keys: Keys) -> None:
    models = _folder(tmp_path, ("bob's.pkl", "other.pkl"))
    sign_path(models, key=keys[0])
    (models / "bob's.pkl").write_bytes(pickle.dumps({"w": [7.0]}, protocol=2))
    bundles = FolderBundles(models.parent, keys[1])
    status, why, _ = bundles.status_of(models / "bob's.pkl")
    assert status is SignatureStatus.INVALID and "itself has its signed bytes" not in (why or "")
    # the folder's unchanged file still has its signed digest (its reason says so), but the
    # folder, signed as a whole, fails: not "verified"
    status, why, _ = bundles.status_of(models / "other.pkl")
    assert status is SignatureStatus.INVALID and "changed" in (why or "")
    assert "other.pkl itself has its signed bytes" in (why or "")


def test_t1_a_link_made_to_leave_by_a_later_link_is_path_traversal(tmp_path: Path) -> None:
    data = _tar(
        [
            ("model.pkl", tarfile.REGTYPE, None, pickle.dumps({"w": [1.0]}, protocol=2)),
            ("config.json", tarfile.SYMTYPE, "b/b/b/../../../secret.txt", None),
            ("b", tarfile.SYMTYPE, ".", None),
        ]
    )
    path = tmp_path / "model.tar"
    path.write_bytes(data)
    res = scan_file(path)
    assert res.verdict.value == "malicious"
    assert any(
        f.rule_id == "scan.archive.path-traversal" and f.evidence["member"] == "config.json"
        for f in res.findings
    )
