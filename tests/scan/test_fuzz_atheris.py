"""Coverage-guided fuzzing (atheris) of the scanner, bounded: ``scripts/fuzz_scan.py`` on the seeds.

The hypothesis tests (``test_fuzz.py``) mutate the seeds blindly; atheris keeps the mutations
that reach new scanner code. Here a short campaign runs in a subprocess (libFuzzer exits non-zero
on the first crash: an exception out of ``scan_file``, an internal error, a hang, or the payload
marker appearing). Longer campaigns: ``python scripts/fuzz_scan.py CORPUS -max_total_time=3600``.
"""

from __future__ import annotations

import importlib.util
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
    suffix = "saved_model.pb" if seed_name == "saved_model.pb" else "x" + Path(seed_name).suffix
    return bytes([NAMES.index(suffix)])


@pytest.fixture()
def atheris_available() -> None:
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI") == "true":  # the dev extra installs it on Linux / CPython < 3.12
            pytest.fail("atheris is not installed (pip install -e '.[dev]')")
        pytest.skip("atheris is not installed")


def test_every_seed_has_a_file_name_of_the_script() -> None:
    assert {_name_byte(n) for n in SEEDS} <= {bytes([i]) for i in range(len(NAMES))}


def test_atheris_campaign_finds_no_crash(atheris_available: None, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in SEEDS.items():
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
