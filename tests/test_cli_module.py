"""``python -m bastion`` and ``python -m bastion.cli`` run the same command line, exit codes included."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["bastion", "bastion.cli"])
def test_python_dash_m(module: str) -> None:
    ok = subprocess.run([sys.executable, "-m", module, "version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("bastion ")
    bad = subprocess.run(
        [sys.executable, "-m", module, "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 4 and "no-such-command" in bad.stderr
