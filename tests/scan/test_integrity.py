"""``bastion sign`` / ``verify`` (OpenSSF model-signing) and ``bastion bom`` (CycloneDX 1.6)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from tests.keys import write_ec_keypair
from typer.testing import CliRunner

from bastion.core.errors import IntegrityError

from ._factories import os_system_payload
from ._formats import good_safetensors

pytest.importorskip("model_signing", reason="signing needs bastion-ml[signing]")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(good_safetensors())
    (d / "config.json").write_text(json.dumps({"architectures": ["TinyNet"], "model_type": "mlp"}))
    (d / "train.csv").write_text("a,b\n1,2\n")
    return d


def _run(*args: str) -> tuple[int, str]:
    from bastion.cli.main import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


@pytest.mark.parametrize("change", ["modify", "add", "remove"])
def test_sign_verify_and_tamper(model_dir: Path, keys: tuple[Path, Path], change: str) -> None:
    key, pub = keys
    assert _run("sign", str(model_dir), "--key", str(key))[0] == 0
    sig = model_dir.with_name("model.sig")
    assert json.loads(sig.read_text())["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert _run("verify", str(model_dir), "--key", str(pub))[0] == 0
    if change == "modify":
        (model_dir / "config.json").write_text("{}")
        name = "config.json"
    elif change == "add":
        (model_dir / "extra.pkl").write_bytes(pickle.dumps(1))
        name = "extra.pkl"
    else:
        (model_dir / "train.csv").unlink()
        name = "train.csv"
    code, out = _run("verify", str(model_dir), "--key", str(pub))
    assert code == 1
    assert name in out.replace("\n", "")
    from bastion.scan.signing import verify_path

    with pytest.raises(IntegrityError, match=name.replace(".", r"\.")):
        verify_path(model_dir, key=pub)


def test_verify_single_file_and_missing_signature(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    f = tmp_path / "w.safetensors"
    f.write_bytes(good_safetensors())
    assert _run("verify", str(f), "--key", str(pub))[0] == 1  # unsigned
    assert _run("sign", str(f), "--key", str(key))[0] == 0
    assert _run("verify", str(f), "--key", str(pub))[0] == 0
    assert _run("verify", str(f), "--key", str(tmp_path / "nokey.pem"))[0] == 2


def _validate(doc: dict) -> None:
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    assert error is None, str(error)


def test_bom_validates_against_cyclonedx_1_6(
    model_dir: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    key, pub = keys
    (model_dir / "evil.pkl").write_bytes(os_system_payload(tmp_path / "never"))
    _run("sign", str(model_dir), "--key", str(key))
    out = tmp_path / "bom.json"
    code, _ = _run("bom", str(model_dir), "--key", str(pub), "-o", str(out))
    assert code == 0
    doc = json.loads(out.read_text())
    _validate(doc)
    models = {c["name"]: c for c in doc["components"] if c["type"] == "machine-learning-model"}
    props = {p["name"]: p["value"] for p in models["evil.pkl"]["properties"]}
    assert props["bastion:scan.verdict"] == "malicious"
    assert props["bastion:signature.status"] == "verified"
    st = models["model.safetensors"]
    assert st["hashes"][0]["alg"] == "SHA-256"
    assert st["modelCard"]["modelParameters"]["modelArchitecture"] == "TinyNet"
    data = [c for c in doc["components"] if c["type"] == "data"]
    assert [c["name"] for c in data] == ["train.csv"]


def test_bom_signature_states(model_dir: Path, keys: tuple[Path, Path]) -> None:
    from bastion.api import model_bom

    doc, _ = model_bom(model_dir)
    _validate(doc)
    root = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert root["bastion:signature.status"] == "unsigned"
    key, pub = keys
    _run("sign", str(model_dir), "--key", str(key))
    doc, _ = model_bom(model_dir)  # signed, no key: not checked (trial 32: it read "error")
    _validate(doc)
    root = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert root["bastion:signature.status"] == "unverified"
    assert root["bastion:signature.reason"].startswith("not checked: ")
    assert {
        {p["name"]: p["value"] for p in c["properties"]}["bastion:signature.status"]
        for c in doc["components"]
        if c["type"] == "machine-learning-model"
    } == {"unverified"}
    sig = model_dir.with_name("model.sig")
    good = sig.read_bytes()
    sig.write_text("not a bundle")  # with a key, a bundle that is not one fails (trial 33, 8)
    doc, _ = model_bom(model_dir, key=pub)
    root = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert root["bastion:signature.status"] == "failed", root
    sig.write_bytes(good)
    (model_dir / "config.json").write_text("{}")
    doc, _ = model_bom(model_dir, key=pub)
    root = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert root["bastion:signature.status"] == "failed"
    # the folder is the signed unit: no file of it is "verified" once it fails (only config.json
    # differs; each model's reason says so, and that its own bytes are the signed ones)
    props = [
        {p["name"]: p["value"] for p in c["properties"]}
        for c in doc["components"]
        if c["type"] == "machine-learning-model"
    ]
    assert props and {p["bastion:signature.status"] for p in props} == {"failed"}, props
    assert all("config.json changed" in p["bastion:signature.reason"] for p in props)
    assert all("itself has its signed bytes" in p["bastion:signature.reason"] for p in props)


def test_bom_of_a_folder_of_files_signed_one_by_one(model_dir: Path, keys: tuple[Path, Path]) -> None:
    from bastion.api import model_bom

    key, pub = keys
    (model_dir / "second.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    models = sorted(p for p in model_dir.iterdir() if p.suffix == ".safetensors")
    for m in models:
        _run("sign", str(m), "--key", str(key))  # <file>.sig beside each, as assess verifies
    models[0].write_bytes(models[0].read_bytes() + b"\0")
    doc, _ = model_bom(model_dir, key=pub)
    _validate(doc)
    statuses = {
        c["name"]: {p["name"]: p["value"] for p in c["properties"]}["bastion:signature.status"]
        for c in doc["components"]
        if c["type"] == "machine-learning-model"
    }
    assert statuses[models[0].name] == "failed"
    assert all(statuses[m.name] == "verified" for m in models[1:])


def test_bom_of_a_project_holding_a_folder_signed_as_a_whole(
    model_dir: Path, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bom .`` of a project: files of ``models/`` (signed as ``models.sig``) are not ``unsigned``."""
    from bastion.api import model_bom

    key, pub = keys
    (model_dir / "deep").mkdir()
    (model_dir / "deep" / "other.pkl").write_bytes(pickle.dumps({"w": 1}))
    (tmp_path / "loose.pkl").write_bytes(pickle.dumps({"w": 2}))
    assert _run("sign", str(model_dir), "--key", str(key))[0] == 0
    monkeypatch.chdir(tmp_path)

    def statuses(key: Path | None) -> dict[str, list[str]]:
        doc, _ = model_bom(".", key=key)
        _validate(doc)
        return {
            c["name"]: [p["value"] for p in c["properties"] if p["name"].startswith("bastion:signature")]
            for c in doc["components"]
            if c["type"] == "machine-learning-model"
        }

    got = statuses(pub)
    assert got["loose.pkl"] == ["unsigned"]
    assert got["model/model.safetensors"] == ["verified", "model.sig"]
    assert got["model/deep/other.pkl"] == ["verified", "model.sig"]
    # trial 32: without --key a signed file is "not checked", not an "error"
    assert statuses(None)["model/deep/other.pkl"] == [
        "unverified",
        "model.sig",
        "not checked: a signature exists but no public key was given (--key)",
    ]
    (model_dir / "deep" / "other.pkl").write_bytes(pickle.dumps({"w": 3}))
    got = statuses(pub)
    assert got["model/deep/other.pkl"][:2] == ["failed", "model.sig"]
    assert "deep/other.pkl changed" in got["model/deep/other.pkl"][2]
    # its folder, signed as a whole, fails: so does every file of it (the reason says which differ)
    assert got["model/model.safetensors"][:2] == ["failed", "model.sig"]
    assert "deep/other.pkl changed" in got["model/model.safetensors"][2]
    assert got["loose.pkl"] == ["unsigned"]


def _props(comp: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in comp.get("properties", [])}


def test_bom_signature_named_decides_for_the_path_and_every_file_in_it(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial finding 3: ``-s`` was used for the top level only, another bundle for the files."""
    torch = pytest.importorskip("torch")
    from bastion.api import model_bom
    from bastion.core.errors import ConfigError

    key, pub = keys
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(2)}, "single.pt")
    Path("resnet").mkdir()
    torch.save({"w": torch.ones(2)}, "resnet/a.pt")
    assert _run("sign", "single.pt", "--key", str(key))[0] == 0
    assert _run("sign", "resnet/a.pt", "--key", str(key))[0] == 0  # a.pt.sig: verifies on its own
    assert _run("sign", "resnet", "--key", str(key))[0] == 0

    def bom(*args: str) -> dict:
        Path("bom.json").unlink(missing_ok=True)
        code, out = _run("bom", *args, "--key", str(pub), "-o", "bom.json")
        assert code == 0, out
        doc = json.loads(Path("bom.json").read_text())
        _validate(doc)
        return doc

    doc = bom("single.pt", "-s", "resnet.sig")  # another model's bundle
    root = _props(doc["metadata"]["component"])
    assert root["bastion:signature.status"] == "failed"
    # a folder's bundle given for a file says so (trial 33, 15), not ". added; ... removed"
    assert (
        "the bundle signs a folder ('resnet'), not the file 'single.pt'" in root["bastion:signature.reason"]
    )
    (comp,) = doc["components"]
    assert _props(comp)["bastion:signature.status"] == "failed"  # not verified by single.pt.sig
    assert _props(comp)["bastion:signature.bundle"] == "resnet.sig"
    (comp,) = bom("single.pt")["components"]  # its own bundle, named as the one that decided
    assert _props(comp)["bastion:signature.status"] == "verified"
    assert _props(comp)["bastion:signature.bundle"] == "single.pt.sig"
    # a folder's named bundle decides for every file in it, over each file's own <file>.sig
    doc = bom("resnet", "-s", "single.pt.sig")
    assert _props(doc["metadata"]["component"])["bastion:signature.status"] == "failed"
    got = {c["name"]: _props(c) for c in doc["components"] if c["type"] == "machine-learning-model"}
    assert got["a.pt"]["bastion:signature.status"] == "failed"
    assert got["a.pt"]["bastion:signature.bundle"] == "single.pt.sig"
    doc = bom("resnet")  # resnet.sig, the default
    (comp,) = [c for c in doc["components"] if c["type"] == "machine-learning-model"]
    assert _props(comp)["bastion:signature.status"] == "verified"
    assert _props(comp)["bastion:signature.bundle"] == "resnet.sig"
    # a named bundle that is not there: no BOM, never another bundle's "verified" in its place
    Path("bom.json").unlink()
    code, out = _run("bom", "resnet", "--key", str(pub), "-s", "nonexist.sig", "-o", "bom.json")
    assert code == 2 and "nonexist.sig: no such signature bundle" in out.replace("\n", "")
    assert not Path("bom.json").exists()
    assert _run("verify", "resnet", "--key", str(pub), "-s", "nonexist.sig")[0] == 1  # as verify
    code, out = _run("bom", "resnet", "-s", "resnet")  # a folder is not a bundle
    assert code == 2 and "is a folder" in out
    with pytest.raises(ConfigError, match="no such signature bundle"):
        model_bom("resnet", key=pub, signature="nonexist.sig")


def test_bom_of_a_project_whose_signed_folder_lost_a_file(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial finding 4: a model removed from ``models/`` (``models.sig``) showed nowhere in ``bom .``."""
    torch = pytest.importorskip("torch")
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    key, pub = keys
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).random((20, 3))
    y = (x[:, 0] > 0.5).astype(int)
    Path("models/sub").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, "models/clean.pt")
    joblib.dump(LogisticRegression().fit(x, y), "models/lr.joblib")
    joblib.dump(LogisticRegression(C=2.0).fit(x, y), "models/sub/lr_z.joblib")
    joblib.dump(LogisticRegression(C=3.0).fit(x, y), "loose.joblib")
    assert _run("sign", "models", "--key", str(key))[0] == 0
    assert _run("sign", "loose.joblib", "--key", str(key))[0] == 0
    Path("models/lr.joblib").unlink()
    code, out = _run("verify", "models", "--key", str(pub))
    assert code == 1 and "lr.joblib removed" in out

    def bom(path: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        Path("bom.json").unlink(missing_ok=True)
        code, out = _run("bom", path, "--key", str(pub), "-o", "bom.json")
        assert code == 0, out
        doc = json.loads(Path("bom.json").read_text())
        _validate(doc)
        comps = {c["name"]: _props(c) for c in doc["components"] if c["type"] == "machine-learning-model"}
        return _props(doc["metadata"]["component"]), comps

    root, comps = bom(".")
    assert set(comps) == {"models/clean.pt", "models/sub/lr_z.joblib", "loose.joblib"}
    for name in ("models/clean.pt", "models/sub/lr_z.joblib"):
        assert comps[name]["bastion:signature.status"] == "failed", comps[name]
        assert comps[name]["bastion:signature.bundle"] == "models.sig"
        reason = comps[name]["bastion:signature.reason"]
        assert "lr.joblib removed (signed, now missing)" in reason and "itself has its signed bytes" in reason
        assert str(tmp_path) not in reason  # paths as the user wrote them
    assert comps["loose.joblib"]["bastion:signature.status"] == "verified"  # its own bundle holds
    # the project folder has no bundle of its own; the failure of the one inside it shows at the top
    assert root["bastion:signature.status"] == "unsigned"
    assert "lr.joblib removed" in root["bastion:signature.failure"]
    root, comps = bom("models")  # the folder's own bundle: failed at the top, and for each file
    assert root["bastion:signature.status"] == "failed" and "bastion:signature.failure" not in root
    assert {c["bastion:signature.status"] for c in comps.values()} == {"failed"}


def test_bom_of_a_project_lists_its_declared_data_sets_as_data(tmp_path: Path) -> None:
    """An ``.npz`` data set (and its splits file) named in bastion.yaml is data, not a model."""
    import numpy as np

    from bastion.api import model_bom

    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "d.npz", x=np.zeros((4, 2)), y=np.arange(4))
    np.savez(tmp_path / "data" / "d_splits.npz", train=np.arange(2), test=np.arange(2, 4))
    np.savez(tmp_path / "weights.npz", w=np.ones(3))  # not declared: a model file
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nproject: {name: p}\ndatasets:\n"
        "  - {name: d, path: data/d.npz, label: y, features: x, splits_file: data/d_splits.npz}\n"
    )
    doc, _ = model_bom(tmp_path)
    _validate(doc)
    kinds = {c["name"]: c["type"] for c in doc["components"]}
    assert kinds == {
        "data/d.npz": "data",
        "data/d_splits.npz": "data",
        "weights.npz": "machine-learning-model",
    }, kinds
    data = next(c for c in doc["components"] if c["name"] == "data/d.npz")
    assert {p["name"]: p["value"] for p in data["properties"]}["bastion:scan.verdict"] == "safe"
    (tmp_path / "bastion.yaml").write_text("version: [\n")  # unreadable: warned, BOM still made
    doc, _ = model_bom(tmp_path)
    kinds = {c["name"]: c["type"] for c in doc["components"]}
    # then the content decides (trial 32, M2): arrays named x/y are data, one named w is weights
    assert kinds["data/d.npz"] == "data" and kinds["weights.npz"] == "machine-learning-model"


@pytest.mark.parametrize("bad", ["missing.pem", "garbage.pem", "private"])
def test_bom_with_a_key_that_cannot_verify_is_exit_2(
    model_dir: Path, keys: tuple[Path, Path], tmp_path: Path, bad: str
) -> None:
    key, _ = keys
    path = key if bad == "private" else tmp_path / bad
    if bad == "garbage.pem":
        path.write_text("not a key")
    code, err = _run("bom", str(model_dir), "--key", str(path))
    assert code == 2, err


def test_sign_refuses_a_signature_path_over_the_model_and_handles_dot(
    model_dir: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pub = keys
    victim = model_dir / "model.safetensors"
    before = victim.read_bytes()
    code, err = _run("sign", str(victim), "--key", str(key), "--signature", str(victim))
    assert code == 2 and "would overwrite the model" in err and victim.read_bytes() == before
    code, err = _run("sign", str(model_dir), "--key", str(key), "--signature", str(victim))
    assert code == 2 and "not a signature bundle" in err and victim.read_bytes() == before
    monkeypatch.chdir(model_dir)
    code, err = _run("sign", ".", "--key", str(key))
    assert code == 0, err
    assert (model_dir.parent / f"{model_dir.name}.sig").is_file()  # beside the folder, not in it
    assert _run("verify", ".", "--key", str(pub))[0] == 0


def test_bad_keys_and_bundles_are_input_errors_not_verdicts(
    model_dir: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bastion.cli.main import run

    key, pub = keys
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert run(["sign", str(model_dir), "--key", str(rsa_key)]) == 2  # a clear error, not an internal one
    assert run(["sign", str(model_dir), "--key", str(key)]) == 0
    assert run(["verify", str(model_dir), "--key", str(key)]) == 2  # a private key where a public one goes
    garbage = tmp_path / "garbage.sig"
    garbage.write_text("not a bundle")  # a verdict, as a bad signature (trial 33, 8)
    assert run(["verify", str(model_dir), "--key", str(pub), "--signature", str(garbage)]) == 1
    assert run(["verify", str(model_dir), "--key", str(pub)]) == 0


def test_a_bundle_kept_inside_the_signed_folder_is_not_part_of_the_model(
    model_dir: Path, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.scan.signing import sign_path, verify_path

    key, pub = keys
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    rel = Path("model")
    sign_path(rel, key=key, signature=rel / "model.sig")
    assert verify_path(rel, key=pub, signature=rel / "model.sig").path == rel
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"config\.json changed") as ei:
        verify_path(rel, key=pub, signature=rel / "model.sig")
    assert "added" not in str(ei.value)  # the bundle itself is never an added file


def test_a_changed_single_file_is_named_and_an_altered_bundle_says_why(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    import base64

    from bastion.scan.signing import sign_path, verify_path

    key, pub = keys
    f = tmp_path / "model.safetensors"
    f.write_bytes(good_safetensors())
    sig = sign_path(f, key=key)
    f.write_bytes(good_safetensors() + b" ")
    with pytest.raises(IntegrityError, match=r"differ from the signed ones: model\.safetensors changed"):
        verify_path(f, key=pub)
    f.write_bytes(good_safetensors())
    doc = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[10] ^= 1  # one bit of the signature
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match=r"failed: \w+: the signature does not match this key"):
        verify_path(f, key=pub)


def test_an_encrypted_key_signs_with_its_password_from_the_environment(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc, pub = tmp_path / "enc.pem", tmp_path / "encpub.pem"
    write_ec_keypair(enc, pub, password=b"s3cret")
    code, err = _run("sign", str(model_dir), "--key", str(enc))
    assert code == 2 and "an encrypted private key; no password given" in err
    monkeypatch.setenv("KEY_PASSWORD", "wrong")
    code, err = _run("sign", str(model_dir), "--key", str(enc), "--password-env", "KEY_PASSWORD")
    assert code == 2 and "the password is wrong" in err and "wrong" not in err.replace("is wrong", "")
    monkeypatch.setenv("KEY_PASSWORD", "s3cret")
    code, err = _run("sign", str(model_dir), "--key", str(enc), "--password-env", "KEY_PASSWORD")
    assert code == 0, err
    assert _run("verify", str(model_dir), "--key", str(pub))[0] == 0
    assert _run("sign", str(model_dir), "--key", str(enc), "--password-env", "UNSET_VAR_X")[0] == 2


def test_signing_a_file_that_scans_as_malicious_warns_but_signs(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """A signature attests bytes, not safety: `sign` says so when what it signed scans as unsafe."""
    key, pub = keys
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(os_system_payload(tmp_path / "never"))
    code, out = _run("sign", str(evil), "--key", str(key))
    assert code == 0 and "warning: signed file(s) that scan as unsafe" in out and "malicious" in out
    assert _run("verify", str(evil), "--key", str(pub))[0] == 0  # the signature itself stands
    clean = tmp_path / "w.safetensors"
    clean.write_bytes(good_safetensors())
    code, out = _run("sign", str(clean), "--key", str(key))
    assert code == 0 and "warning" not in out
    assert not (tmp_path / "never").exists()
