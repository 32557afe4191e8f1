"""The built-in scanners, listed in one place (importing a module registers its plugin)."""

from __future__ import annotations

import importlib

__all__ = ["BUILTIN_SCANNERS", "load_builtin_scanners"]

#: Modules holding one built-in scanner plugin each.
BUILTIN_SCANNERS = (
    "bastion.scan.pytorch_scanner",
    "bastion.scan.keras_scanner",
    "bastion.scan.skops_scanner",
    "bastion.scan.safetensors_scanner",
    "bastion.scan.gguf_scanner",
    "bastion.scan.hdf5_scanner",
    "bastion.scan.savedmodel_scanner",
    "bastion.scan.sevenzip_scanner",
    "bastion.scan.numpy_scanner",
    "bastion.scan.joblib_scanner",
    "bastion.scan.onnx_scanner",
    "bastion.scan.archive_scanner",
    "bastion.scan.keras_config_scanner",
    "bastion.scan.pickle_scanner",
)


def load_builtin_scanners() -> None:
    """Import every built-in scanner module (registers them in ``bastion.core.registry.scanners``)."""
    for name in BUILTIN_SCANNERS:
        importlib.import_module(name)
