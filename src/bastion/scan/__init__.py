"""Static inspection of model files: it never imports, unpickles or loads what it scans.

Public facade::

    from bastion.scan import scan_paths, scan_file
    result = scan_paths(["models/"], allow=["myproject.models.*"])
    result.exit_code("medium")

Formats are chosen by magic bytes, not extensions: pickle (protocols 0-5), joblib (plain, zlib,
gzip, bz2, xz, lzma, the old ``ZF`` format; raw numpy buffers are skipped by their computed
length), PyTorch (zip, TorchScript, legacy), numpy ``.npy``/``.npz`` (object arrays are
pickles), tar/zip archives and gzip/bz2/xz wrappers (members scanned recursively), and ONNX (with
the ``onnx`` extra). Verdicts (:class:`bastion.core.scanning.Verdict`): ``malicious`` (a
deny-listed callable or a container trick: a high/critical finding), ``suspicious`` (a callable
the allow-list does not know: medium), ``safe``, ``error`` (a model file not fully scanned), and
``skipped`` (not a model file).

Pickle rules are versioned data: ``bastion/scan/rules/pickle_allow.toml`` and
``pickle_deny.toml`` (see :mod:`bastion.scan.policy`). The user's own classes are allowed with
``allow=["module.Name", "module.*"]`` — never from a file in the scanned folder — and nothing can
allow a deny-listed callable.

The pickle emulator (:mod:`bastion.scan.pickle_vm`) is compiled with mypyc at install time where
a C compiler is available; :func:`pickle_vm_compiled` says whether the compiled one runs (it does
not when its source changed since the build, or with ``BASTION_PURE_PYTHON=1``).
"""

from __future__ import annotations

from bastion.scan import _compiled

_compiled.select()  # before any module imports the pickle emulator: compiled, or its source

from bastion.scan.base import ScanLimits  # noqa: E402
from bastion.scan.engine import scan_file, scan_paths  # noqa: E402

__all__ = ["ScanLimits", "pickle_vm_compiled", "pickle_vm_status", "scan_file", "scan_paths"]


def pickle_vm_compiled() -> bool:
    """Whether the pickle emulator in use is the mypyc-compiled one (see :mod:`bastion.scan._compiled`)."""
    return _compiled.compiled()


def pickle_vm_status() -> str:
    """One line: ``compiled (mypyc)``, or ``pure Python (<why>)``."""
    return _compiled.status()
