"""A PyTorch ``nn.Module`` (eager or TorchScript) as a white-box :class:`Target`.

torch is imported lazily: this module loads without it, and using it without torch
installed raises ``MissingExtraError`` naming ``pip install 'bastion-ml[torch]'``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import io
import logging
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from bastion.core.capability import Capability
from bastion.core.errors import ConfigError, TargetError, require
from bastion.targets._util import as_scores, check_labels, read_model_bytes, softmax
from bastion.targets.base import Target

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_CLASS_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")
#: Keys under which training scripts commonly nest the weights in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def _need_torch() -> None:
    """Raise ``MissingExtraError`` when torch is not installed."""
    require("torch", "torch")


class TorchTarget(Target):
    """A PyTorch classifier in this process: logits, probabilities and loss gradients.

    The module is put in eval mode and queried on CPU; predictions run under
    ``torch.no_grad()`` in batches of ``batch_size`` rows. Attacks that want native torch
    loops can use :attr:`module` directly (that bypasses query accounting).

    Threat model: white-box (the attacker has the weights and gradients).

    Args:
        module: the classifier; maps ``(N, *input_shape)`` float32 to ``(N, num_classes)``
            (or ``(N, 1)`` / ``(N,)`` for a binary model with one output, read as the
            positive-class logit or probability).
        name: asset name.
        input_shape: one sample's shape, e.g. ``(30,)`` or ``(1, 28, 28)``.
        num_classes: number of classes.
        output: what the module returns: ``logits`` (default) or ``probabilities``
            (a softmax already applied; then ``LOGITS`` is not offered).
        batch_size: rows per forward pass.

    Capabilities:
        ``LOGITS`` (when ``output="logits"``), ``PROBABILITIES``, ``LOSS_GRADIENTS``, ``BATCHED``.

    Raises:
        ConfigError: ``output`` or ``batch_size`` is invalid.
    """

    kind: ClassVar[str] = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        output: Literal["logits", "probabilities"] = "logits",
        batch_size: int = 512,
    ) -> None:
        if output not in ("logits", "probabilities"):
            raise ConfigError(f"{name}: output must be 'logits' or 'probabilities', got {output!r}")
        if batch_size < 1:
            raise ConfigError(f"{name}: batch_size must be at least 1, got {batch_size}")
        caps = {Capability.PROBABILITIES, Capability.LOSS_GRADIENTS, Capability.BATCHED}
        if output == "logits":
            caps.add(Capability.LOGITS)
        super().__init__(
            name=name, input_shape=tuple(input_shape), num_classes=num_classes, capabilities=frozenset(caps)
        )
        _need_torch()
        import torch

        self.module: torch.nn.Module = module.to("cpu").eval()
        self.output = output
        self.batch_size = int(batch_size)
        first = next(iter(self.module.parameters()), None)
        self._dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    # -- forward ------------------------------------------------------------------------
    def _forward(self, xb: torch.Tensor) -> torch.Tensor:
        """Module output as ``(n, num_classes)`` scores (binary one-column output widened)."""
        _need_torch()
        import torch

        out = self.module(xb)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TargetError(f"{self.name}: module returned {type(out).__name__}, expected a tensor")
        if out.dim() == 1:
            out = out.unsqueeze(1)
        if out.dim() == 2 and out.shape[1] == 1 and self.num_classes == 2:
            if self.output == "logits":
                out = torch.cat([torch.zeros_like(out), out], dim=1)
            else:
                out = torch.cat([1.0 - out, out], dim=1)
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise TargetError(
                f"{self.name}: module returned shape {tuple(out.shape)}, expected (N, {self.num_classes})"
            )
        return out

    def _scores(self, x: np.ndarray) -> np.ndarray:
        _need_torch()
        import torch

        parts: list[np.ndarray] = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size])).to(self._dtype)
                parts.append(self._forward(xb).detach().to(torch.float64).numpy())
        if not parts:
            return np.zeros((0, self.num_classes), dtype=np.float64)
        return as_scores(
            np.concatenate(parts), kind=self.output, num_classes=self.num_classes, name=self.name
        )

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self._scores(x)

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        s = self._scores(x)
        if self.output == "logits":
            return softmax(s)
        return s

    def _loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row gradient of the cross-entropy of ``y`` w.r.t. ``x`` (summed loss, so rows don't mix)."""
        _need_torch()
        import torch

        y = check_labels(y, len(x), self.num_classes, self.name)
        grads = np.empty_like(x, dtype=np.float32)
        with torch.enable_grad():
            for i in range(0, len(x), self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size])).to(self._dtype)
                xb.requires_grad_(True)
                yb = torch.from_numpy(y[i : i + self.batch_size])
                out = self._forward(xb)
                if self.output == "logits":
                    loss = torch.nn.functional.cross_entropy(out, yb, reduction="sum")
                else:
                    logp = torch.log(out.clamp_min(1e-12))
                    loss = torch.nn.functional.nll_loss(logp, yb, reduction="sum")
                (g,) = torch.autograd.grad(loss, xb)
                grads[i : i + self.batch_size] = g.detach().to(torch.float32).numpy()
        return grads


# -- loaders -------------------------------------------------------------------------------
def load_torchscript(path: str | Path, *, model_bytes: bytes | None = None) -> torch.nn.Module:
    """Load a TorchScript archive (``torch.jit.save``) on CPU.

    Precondition: the caller has scanned the file (or these bytes) and judged it safe;
    a TorchScript archive carries code that runs when called.

    Args:
        path: the archive; used for messages only when ``model_bytes`` is given.
        model_bytes: the verified bytes to load (avoids re-reading a file that may have
            changed since it was hashed).

    Returns:
        The ``torch.jit.ScriptModule`` in eval mode.

    Raises:
        TargetError: the file is missing or not a TorchScript archive.
        MissingExtraError: torch is not installed.
    """
    _need_torch()
    import torch

    data = read_model_bytes(path, model_bytes)
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; the format stays supported
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError/zip errors
        raise TargetError(
            f"{path}: not a loadable TorchScript archive ({type(exc).__name__}); "
            "for a state_dict set model_class"
        ) from None
    log.debug("loaded TorchScript archive %s", path)
    result: torch.nn.Module = module.eval()
    return result


def model_class_problem(class_ref: str) -> str | None:
    """Why the module of ``model_class`` cannot be imported, found without importing it; None if found.

    Nothing of the user's code runs: only the top-level name is given to
    ``importlib.util.find_spec`` (for a dotted name it would import, and so execute, the parent
    packages); each further part is looked up with ``PathFinder.find_spec`` on its parent's
    search locations, which reads the file system and imports nothing. The module is searched
    on ``sys.path`` as ``import`` would: the folder of ``bastion.yaml`` is not added to it. A
    package whose ``__init__`` changes its ``__path__`` when run is not followed (found at the
    run, by the import itself).
    """
    if not isinstance(class_ref, str) or not _CLASS_REF.match(class_ref):
        return f"model_class {class_ref!r} is not of the form 'package.module:Class'"
    mod_name = class_ref.split(":")[0]
    parts = mod_name.split(".")
    locations: Any = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        if loaded is not None:
            locations = getattr(loaded, "__path__", None)
            continue
        if i and locations is None:
            why = f"{'.'.join(parts[:i])!r} is not a package"
        else:
            try:
                spec = (
                    importlib.util.find_spec(name)
                    if i == 0
                    else importlib.machinery.PathFinder.find_spec(name, list(locations))
                )
            except (ImportError, ValueError) as exc:
                spec, why = None, f"{type(exc).__name__}: {exc}"
            else:
                why = f"no module named {name!r} on sys.path"
            if spec is not None:
                locations = spec.submodule_search_locations
                continue
        return (
            f"model_class module {mod_name!r} not importable ({why}; the folder of bastion.yaml is "
            "not on sys.path: add the module's folder to PYTHONPATH or install it as a package)"
        )
    return None


def import_class(class_ref: str) -> type:
    """Import the user's class named ``package.module:Class``.

    Raises:
        ConfigError: the reference is malformed, the module or the attribute is missing,
            or it is not a class.
    """
    if not isinstance(class_ref, str) or not _CLASS_REF.match(class_ref):
        raise ConfigError(f"model_class {class_ref!r} is not of the form 'package.module:Class'")
    from bastion.core.project_trust import model_class_problem as stdlib_problem

    if problem := stdlib_problem(class_ref):  # the config refuses it too; never imported here
        raise ConfigError(f"model_class {problem}")
    mod_name, attr = class_ref.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"model_class {class_ref!r}: cannot import module {mod_name!r} ({exc})") from None
    except (Exception, SystemExit) as exc:  # a module that exits when imported must not end the run
        raise ConfigError(
            f"model_class {class_ref!r}: importing module {mod_name!r} failed ({type(exc).__name__}: {exc})"
        ) from None
    obj = getattr(mod, attr, None)
    if obj is None:
        raise ConfigError(f"model_class {class_ref!r}: module {mod_name!r} has no attribute {attr!r}")
    if not isinstance(obj, type):
        raise ConfigError(f"model_class {class_ref!r}: {attr!r} is a {type(obj).__name__}, not a class")
    return obj


def _extract_state_dict(obj: Any, path: str | Path) -> Mapping[str, Any]:
    _need_torch()
    import torch

    if not isinstance(obj, Mapping):
        raise TargetError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a mapping of tensors)")
    if obj and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return obj


def _fmt_keys(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_model(
    path: str | Path,
    class_ref: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    model_bytes: bytes | None = None,
) -> torch.nn.Module:
    """Build the user's ``nn.Module`` and load a state_dict into it.

    The weights are read with ``torch.load(..., map_location="cpu", weights_only=True)``,
    which refuses any pickled global outside torch's tensor allow-list: safe by design.
    The class is the user's own code, named in ``bastion.yaml`` (``model_class``). A
    checkpoint dict that nests the weights under ``state_dict``/``model_state_dict``/``model``
    is unwrapped.

    Args:
        path: the ``torch.save`` file; used for messages only when ``model_bytes`` is given.
        class_ref: ``package.module:Class``, an ``nn.Module`` subclass.
        kwargs: keyword arguments for the class.
        model_bytes: the verified bytes to load instead of reading ``path``.

    Returns:
        The module with the weights loaded, in eval mode.

    Raises:
        ConfigError: ``class_ref`` is malformed, cannot be imported, is not an ``nn.Module``
            class, or rejects ``kwargs``.
        TargetError: the file is missing, not a weights-only torch file, or its keys or
            shapes do not fit the class (the message names the missing/unexpected keys).
        MissingExtraError: torch is not installed.
    """
    _need_torch()
    import torch

    cls = import_class(class_ref)
    if not issubclass(cls, torch.nn.Module):
        raise ConfigError(f"model_class {class_ref!r} is not a torch.nn.Module subclass")
    try:
        model = cls(**dict(kwargs or {}))
    except TypeError as exc:
        raise ConfigError(f"model_class {class_ref!r}: cannot build it with model_kwargs: {exc}") from None
    data = read_model_bytes(path, model_bytes)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused globals, RuntimeError for bad files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise TargetError(
            f"{path}: not a weights-only torch state_dict ({type(exc).__name__}: {first})"
        ) from None
    state = _extract_state_dict(obj, path)
    expected = list(model.state_dict().keys())
    got = [str(k) for k in state]
    missing = [k for k in expected if k not in set(got)]
    unexpected = [k for k in got if k not in set(expected)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt_keys(unexpected)}")
        raise TargetError(f"{path}: state_dict does not fit {class_ref}; " + "; ".join(parts))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        detail = "; ".join(lines[:5]) or str(exc).splitlines()[0]
        raise TargetError(f"{path}: state_dict does not fit {class_ref}: {detail}") from None
    log.debug("loaded state_dict %s into %s", path, class_ref)
    result: torch.nn.Module = model.eval()
    return result
