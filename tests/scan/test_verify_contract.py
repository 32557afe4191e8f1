"""``bastion verify``'s contract (trial 33, findings 8 and 15): a verdict (1) or an error (2).

1: what shows the files or their bundle are not what was signed (a changed file, a bundle that is
not one, a folder's bundle given for a file). 2: an input that cannot be had (a model file,
folder, bundle or key that cannot be read). The sandbox runs as root, for whom ``chmod 000``
changes nothing: the unreadable cases run the CLI in a child that has dropped the capabilities
that let root read any file (``setpriv``), and are skipped only where that cannot be done.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.core.errors import IntegrityError

pytest.importorskip("model_signing", reason="signing needs bastion-ml[signing]")

#: A child without root's override of file permissions (empty when not root: chmod is enough).
_NO_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all"]


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """``resnet/`` (two files and a subfolder) signed as a whole into ``resnet.sig``."""
    from bastion.scan.signing import sign_path

    d = tmp_path / "resnet"
    (d / "sub").mkdir(parents=True)
    (d / "clean.pt").write_bytes(b"\x80\x04K\x01.")
    (d / "config.json").write_text('{"a": 1}')
    (d / "sub" / "extra.bin").write_bytes(b"\x00" * 16)
    sign_path(d, key=keys[0])
    return d


def _run(*args: str) -> tuple[int, str]:
    from bastion.cli.main import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def _unprivileged(tmp_path: Path, *locked: Path) -> list[str]:
    """``chmod 000`` each of ``locked``; the command prefix under which they really cannot be read.

    Skips the test when no such child can be made (root without ``setpriv``, or a sandbox that
    refuses to drop capabilities).
    """
    for p in locked:
        p.chmod(0)
    prefix = _NO_OVERRIDE if os.geteuid() == 0 else []
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    probe = [*prefix, sys.executable, "-c", "import sys; open(sys.argv[1], 'rb')", str(tmp_path / "probe")]
    (tmp_path / "probe").write_bytes(b"x")
    (tmp_path / "probe").chmod(0)
    if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        pytest.skip("cannot drop the privilege to read any file here")
    return prefix


def _cli(prefix: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_an_unreadable_file_folder_bundle_or_key_is_an_error_not_a_verdict(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    _, pub = keys
    clean = signed / "clean.pt"
    prefix = _unprivileged(tmp_path, clean)
    res = _cli(prefix, "verify", "resnet", "--key", str(pub), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "cannot read resnet/clean.pt: Permission denied" in res.stderr, res.stderr
    assert "verification failed" not in res.stderr and "Traceback" not in res.stderr

    # the ML-BOM agrees: not checked (error), never failed
    res = _cli(prefix, "bom", "resnet", "--key", str(pub), cwd=tmp_path)
    doc = json.loads(res.stdout)
    root = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert root["bastion:signature.status"] == "error", root
    assert "cannot read resnet/clean.pt" in root["bastion:signature.reason"]
    clean.chmod(0o644)

    # a folder that cannot be listed: its files were called "removed" (the library skips it)
    _unprivileged(tmp_path, signed / "sub")
    res = _cli(prefix, "verify", "resnet", "--key", str(pub), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "cannot read resnet/sub: Permission denied" in res.stderr and "removed" not in res.stderr
    (signed / "sub").chmod(0o755)

    # the bundle and the key: one error line each, not an internal error
    bundle = tmp_path / "resnet.sig"
    _unprivileged(tmp_path, bundle)
    res = _cli(prefix, "verify", "resnet", "--key", str(pub), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "signature bundle resnet.sig: cannot read it: Permission denied" in res.stderr, res.stderr
    bundle.chmod(0o644)
    _unprivileged(tmp_path, pub)
    res = _cli(prefix, "verify", "resnet", "--key", str(pub), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"--key {pub}: cannot read it: Permission denied" in res.stderr, res.stderr
    pub.chmod(0o644)
    assert _cli(prefix, "verify", "resnet", "--key", str(pub), cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    "bad",
    ["garbage", "truncated", "no-media-type", "incomplete"],
)
def test_a_bundle_that_is_not_one_is_a_failed_verification(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path, bad: str
) -> None:
    from bastion.api import model_bom
    from bastion.scan.signing import refuse_failed_signature, verify_path

    _, pub = keys
    bundle = tmp_path / "resnet.sig"
    good = bundle.read_bytes()
    bundle.write_bytes(
        {
            "garbage": b"\x00\xffnot a bundle",
            "truncated": good[: len(good) // 2],
            "no-media-type": b"{}",
            "incomplete": json.dumps({"mediaType": json.loads(good)["mediaType"]}).encode(),
        }[bad]
    )
    code, out = _run("verify", str(signed), "--key", str(pub))
    assert code == 1, out
    assert "verification failed" in out and "resnet.sig" in out
    with pytest.raises(IntegrityError) as info:
        verify_path(signed, key=pub)
    why = {"no-media-type": "not a Sigstore bundle", "incomplete": "not a complete Sigstore bundle"}
    assert why.get(bad, "not a signature bundle (not JSON)") in str(info.value)
    doc, _ = model_bom(signed, key=pub)
    root = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert root["bastion:signature.status"] == "failed", root
    # a file signed on its own, whose bundle is garbage: not loaded, its signature did not verify
    single = tmp_path / "single.pt"
    single.write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "single.pt.sig").write_bytes(bundle.read_bytes())
    with pytest.raises(IntegrityError, match="did not verify"):
        refuse_failed_signature(single, key=pub)


def test_a_folders_bundle_given_for_one_of_its_files_says_so_and_the_reverse(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    from bastion.scan.signing import sign_path

    key, pub = keys
    code, out = _run(
        "verify", str(signed / "clean.pt"), "-s", str(tmp_path / "resnet.sig"), "--key", str(pub)
    )
    out = " ".join(out.split())
    assert code == 1, out
    assert "the bundle signs a folder ('resnet'), not the file 'clean.pt'" in out
    assert "added" not in out and "removed" not in out
    own = sign_path(signed / "clean.pt", key=key, signature=tmp_path / "clean.sig")
    code, out = _run("verify", str(signed), "-s", str(own), "--key", str(pub))
    out = " ".join(out.split())
    assert code == 1, out
    assert "the bundle signs a file ('clean.pt'), not the folder 'resnet'" in out


def test_sign_over_a_users_file_at_the_default_path_names_no_option(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    key, _ = keys
    model = tmp_path / "x.pt"
    model.write_bytes(b"\x80\x04K\x01.")
    mine = tmp_path / "x.pt.sig"
    mine.write_text("my own notes")
    code, out = _run("sign", str(model), "--key", str(key))
    out = " ".join(out.split())
    assert code == 2, out
    assert "--signature" not in out.replace("give --signature another path", "")
    assert f"the signature bundle {mine} (the default, beside {model}): would overwrite x.pt.sig" in out
    assert mine.read_text() == "my own notes"
    code, out = _run("sign", str(model), "--key", str(key), "--signature", str(mine))
    assert code == 2 and f"--signature {mine}: would overwrite" in " ".join(out.split())


def test_a_key_of_another_kind_is_named_with_its_article(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    model = tmp_path / "x.pt"
    model.write_bytes(b"\x80\x04K\x01.")
    for name, key in (
        ("RSA", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("Ed25519", ed25519.Ed25519PrivateKey.generate()),
    ):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        code, out = _run("sign", str(model), "--key", str(path))
        assert code == 2 and f"an {name} key; an elliptic-curve private key is required" in " ".join(
            out.split()
        )


def test_a_symbolic_link_is_refused_in_bastions_words(signed: Path, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    os.symlink("config.json", signed / "link.json")
    code, out = _run("verify", str(signed), "--key", str(pub))
    flat = " ".join(out.split())
    assert code == 1, out
    assert "allow_symlinks" not in flat and "link.json is a symbolic link" in flat
    code, out = _run("sign", str(signed), "--key", str(key))
    flat = " ".join(out.split())
    assert code == 2, out
    assert "allow_symlinks" not in flat and "sign the file it points to" in flat
