"""``import bastion.targets`` stays light; its names resolve lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnxruntime", "onnx", "httpx", "sklearn", "joblib", "fastapi", "sqlalchemy")


def _loaded_after(code: str) -> list[str]:
    tops = "{m.split('.')[0] for m in sys.modules}"
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted({tops} & set({HEAVY!r}))))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_loads_no_framework() -> None:
    code = (
        "import bastion.targets as t\n"
        "from bastion.targets import Target, TorchTarget, SklearnTarget, OnnxTarget, HttpTarget\n"
        "from bastion.targets import build_target, load_joblib_verified, load_torchscript\n"
        "import bastion.targets.loader, bastion.targets.torch_target, bastion.targets.sklearn_target\n"
        "import bastion.targets.onnx_target, bastion.targets.http_target\n"
    )
    assert _loaded_after(code) == []


def test_probe_can_fail() -> None:
    assert "httpx" in _loaded_after("import httpx")


def test_lazy_names() -> None:
    import bastion.targets as t
    from bastion.targets.base import Target
    from bastion.targets.torch_target import TorchTarget

    assert t.Target is Target
    assert t.TorchTarget is TorchTarget
    assert issubclass(t.HttpTarget, Target) and issubclass(t.OnnxTarget, Target)
    assert issubclass(t.SklearnTarget, Target) and callable(t.build_target)
    assert set(t.__all__) <= set(dir(t))
    with pytest.raises(AttributeError):
        t.NoSuchThing  # noqa: B018
