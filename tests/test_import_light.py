"""``import bastion`` (and its vocabulary, ``bastion.core``) must stay light: no heavy framework loads."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "fastapi", "sqlalchemy", "sklearn", "onnxruntime", "matplotlib")

_PROBE = """
import json, sys
import bastion
import bastion.core
import bastion.core.config, bastion.core.report, bastion.core.scanning, bastion.core.check
import bastion.core.atlas, bastion.core.settings
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))
"""


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_bastion_loads_no_heavy_framework() -> None:
    loaded = _loaded_after(_PROBE % (HEAVY,))
    assert loaded == [], f"import bastion / bastion.core pulled in: {loaded}"


def test_probe_detects_a_heavy_import() -> None:
    # The probe itself must be able to fail: importing one of them shows up.
    loaded = _loaded_after("import matplotlib\n" + _PROBE % (HEAVY,))
    assert "matplotlib" in loaded
