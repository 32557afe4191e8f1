"""One way to call any model: torch, scikit-learn, ONNX and HTTP targets, with query accounting.

Importing this package is light: the target classes and loaders load on first access,
and each imports its framework (torch, scikit-learn/joblib, onnxruntime, httpx) only
when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core._lazy import lazy_names
from bastion.targets.base import Target

if TYPE_CHECKING:
    from bastion.targets.ensemble import EnsembleTarget
    from bastion.targets.hardened import HardenedTarget, harden_output
    from bastion.targets.http_target import HttpTarget
    from bastion.targets.loader import build_target
    from bastion.targets.onnx_target import OnnxTarget
    from bastion.targets.sklearn_target import SklearnTarget, load_joblib_verified
    from bastion.targets.torch_target import TorchTarget, load_state_dict_model, load_torchscript

_LAZY = {
    "TorchTarget": "bastion.targets.torch_target",
    "load_torchscript": "bastion.targets.torch_target",
    "load_state_dict_model": "bastion.targets.torch_target",
    "SklearnTarget": "bastion.targets.sklearn_target",
    "load_joblib_verified": "bastion.targets.sklearn_target",
    "OnnxTarget": "bastion.targets.onnx_target",
    "HttpTarget": "bastion.targets.http_target",
    "build_target": "bastion.targets.loader",
    "EnsembleTarget": "bastion.targets.ensemble",
    "HardenedTarget": "bastion.targets.hardened",
    "harden_output": "bastion.targets.hardened",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "EnsembleTarget",
    "HardenedTarget",
    "HttpTarget",
    "OnnxTarget",
    "SklearnTarget",
    "Target",
    "TorchTarget",
    "build_target",
    "harden_output",
    "load_joblib_verified",
    "load_state_dict_model",
    "load_torchscript",
]
