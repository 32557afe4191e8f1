"""Internal representations of a torch model at a chosen layer, read with forward hooks.

Backdoor detectors work on what a trained model computes inside, not on its inputs: poisoned
samples that carry a trigger form their own cluster in a hidden layer even when they look like
their source class at the input. :func:`extract_representations` runs the model once over the
rows (no gradients, eval mode, batches) and returns the chosen layer's output (or input),
flattened to ``(N, D)``. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from bastion.core.errors import ConfigError, require


def layer_names(model: Any) -> list[str]:
    """Dotted names of every sub-module of ``model`` (``named_modules``), the root excluded."""
    return [name for name, _ in model.named_modules() if name]


def default_layer(model: Any) -> str:
    """The layer read when none is named (always read at its input).

    The first ``torch.nn.Linear`` that has a parameterised layer before it (a CNN's classifier
    head: the convolutional features it receives); for a plain MLP, whose first Linear reads the
    raw input, the last Linear (the penultimate representation).

    Raises:
        ConfigError: the model has no Linear layer (name one with ``layer=``).
    """
    torch = require("torch", "torch")
    linears: list[str] = []
    first_after_features: str | None = None
    seen_params = False
    for name, mod in model.named_modules():
        if not name:
            continue
        if isinstance(mod, torch.nn.Linear):
            linears.append(name)
            if seen_params and first_after_features is None and len(linears) == 1:
                first_after_features = name
        if any(True for _ in mod.parameters(recurse=False)):
            seen_params = True
    if not linears:
        raise ConfigError("model has no torch.nn.Linear layer; name the layer to read with layer=")
    return first_after_features or linears[-1]


def extract_representations(
    model: Any,
    x: np.ndarray,
    *,
    layer: str | None = None,
    read: Literal["output", "input"] | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """What ``model`` computes at ``layer`` for every row of ``x``.

    Args:
        model: a ``torch.nn.Module`` taking float32 ``(N, *input_shape)``.
        x: rows ``(N, *input_shape)``.
        layer: a dotted module name (see :func:`layer_names`); ``None`` reads the input of the
            last Linear layer (the penultimate representation).
        read: ``"output"`` (default for a named layer) or ``"input"`` (default for ``None``) of it.
        batch_size: rows per forward pass.

    Returns:
        float64 ``(N, D)``: the layer's activations flattened per row.

    Raises:
        ConfigError: no such layer (the message lists some known ones), or the forward pass fails.
        MissingExtraError: torch is not installed.
    """
    torch = require("torch", "torch")
    if layer is None:
        layer = default_layer(model)
        read = read or "input"
    read = read or "output"
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        known = ", ".join(layer_names(model)[:20])
        raise ConfigError(f"model has no layer {layer!r}; layers: {known}")
    captured: list[np.ndarray] = []

    def hook(_mod: Any, inputs: tuple[Any, ...], output: Any) -> None:
        t = inputs[0] if read == "input" else output
        if isinstance(t, tuple):
            t = t[0]
        captured.append(t.detach().reshape(t.shape[0], -1).to(torch.float64).cpu().numpy())

    was_training = bool(model.training)
    model.eval()
    handle = modules[layer].register_forward_hook(hook)
    xs = np.asarray(x, dtype=np.float32)
    try:
        with torch.no_grad():
            for i in range(0, xs.shape[0], max(1, int(batch_size))):
                model(torch.as_tensor(xs[i : i + batch_size]))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"forward pass failed while reading layer {layer!r}: {exc}") from None
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise ConfigError(f"layer {layer!r} was not reached by the forward pass")
    return np.concatenate(captured, axis=0)
