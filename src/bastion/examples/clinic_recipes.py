"""Training recipes of the clinic example, for reference models (LiRA, RMIA) and the targets.

Each recipe trains ``K`` models at once the way :mod:`bastion.examples.clinic` trains the
clinic's models (Adam, batch 64, same epochs and learning rate), vectorised with
``torch.func.functional_call`` + ``vmap`` over stacked parameters, and returns their class
probabilities on the query records. Named in ``bastion.yaml`` as
``bastion.examples.clinic_recipes:digits_cnn`` (see
:mod:`bastion.assess.membership.reference` for the recipe contract). Importing this module
imports nothing heavy; torch loads when a recipe runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from bastion.core.errors import require


def train_stacked(
    factory: Callable[[], Any],
    x: np.ndarray,
    y: np.ndarray,
    masks: np.ndarray,
    seeds: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch: int = 64,
    standardise: bool = False,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train ``K`` copies of ``factory()`` on ``x[masks[k]]`` together; return ``(base, params, buffers)``.

    Each model is initialised under ``torch.manual_seed(seeds[k])`` and draws its own batch
    order from ``numpy.random.default_rng(seeds[k])``; a step feeds every model ``batch`` of its
    own records (models with fewer records cycle through theirs again). Because Adam is
    element-wise, one Adam over the stacked parameters with the summed per-model losses is
    ``K`` independent Adams.

    Args:
        factory: builds one untrained ``nn.Module``.
        x: ``(N, *input_shape)`` float32.
        y: ``(N,)`` int labels.
        masks: ``(K, N)`` bool.
        seeds: ``(K,)`` ints.
        epochs: passes over the largest model's records.
        lr: Adam learning rate.
        batch: records per model per step.
        standardise: set each model's ``mean``/``scale`` buffers from its own records.

    Returns:
        ``(base, params, buffers)``: a meta-device module and stacked ``(K, ...)`` tensors.
    """
    torch = require("torch", "torch")
    from torch.func import functional_call, stack_module_state, vmap

    masks = np.asarray(masks, dtype=bool)
    k_models = len(masks)
    models = []
    for k in range(k_models):
        torch.manual_seed(int(seeds[k]))
        m = factory()
        if standardise:
            sub = x[masks[k]].reshape(int(masks[k].sum()), -1)
            m.mean.copy_(torch.as_tensor(sub.mean(axis=0)))
            m.scale.copy_(torch.as_tensor(sub.std(axis=0) + 1e-6))
        models.append(m)
    params, buffers = stack_module_state(models)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def one(p: dict[str, Any], b: dict[str, Any], xb: Any) -> Any:
        return functional_call(base, (p, b), (xb,))

    fwd = vmap(one, in_dims=(0, 0, 0))
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    rows = [np.flatnonzero(m) for m in masks]
    longest = max(len(r) for r in rows)
    steps = max(1, -(-longest // batch))
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    for _ in range(epochs):
        order = []
        for r, rng in zip(rows, rngs, strict=True):
            need = steps * batch
            reps = [rng.permutation(r) for _ in range(-(-need // len(r)))]
            order.append(np.concatenate(reps)[:need])
        idx = torch.as_tensor(np.stack(order))  # (K, steps*batch)
        for s in range(steps):
            bi = idx[:, s * batch : (s + 1) * batch]
            logits = fwd(params, buffers, xt[bi])  # (K, B, C)
            loss = (
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), yt[bi].reshape(-1), reduction="sum"
                )
                / bi.shape[1]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    return base, {n: p.detach() for n, p in params.items()}, buffers


def predict_stacked(
    base: Any, params: dict[str, Any], buffers: dict[str, Any], query: np.ndarray
) -> np.ndarray:
    """``(K, Q, C)`` float64 probabilities of the stacked models on ``query``."""
    torch = require("torch", "torch")
    from torch.func import functional_call, vmap

    def one(p: dict[str, Any], b: dict[str, Any], xb: Any) -> Any:
        return functional_call(base, (p, b), (xb,))

    q = torch.as_tensor(np.asarray(query, dtype=np.float32))
    outs = []
    with torch.no_grad():
        for i in range(0, len(q), 1024):
            logits = vmap(one, in_dims=(0, 0, None))(params, buffers, q[i : i + 1024])
            outs.append(torch.softmax(logits.double(), dim=-1).numpy())
    return np.concatenate(outs, axis=1) if outs else np.zeros((len(next(iter(params.values()))), 0, 0))


def unstack(factory: Callable[[], Any], params: dict[str, Any], buffers: dict[str, Any], k: int) -> Any:
    """Model ``k`` of a stacked set as an ordinary eval-mode ``nn.Module``."""
    m = factory()
    m.load_state_dict({**{n: p[k] for n, p in params.items()}, **{n: b[k] for n, b in buffers.items()}})
    return m.eval()


def _digits_cnn() -> Any:
    from bastion.examples.clinic_models import DigitsCNN

    return DigitsCNN()


def _digits_mlp() -> Any:
    from bastion.examples.clinic_models import DiagnosisMLP

    return DiagnosisMLP(n_features=64, hidden=128, n_classes=10)


def _diagnosis_mlp() -> Any:
    from bastion.examples.clinic_models import DiagnosisMLP

    return DiagnosisMLP(n_features=30)


#: recipe name → (factory, input shape, epochs, learning rate, standardise)
SETUPS: dict[str, tuple[Callable[[], Any], tuple[int, ...], int, float, bool]] = {
    "digits_cnn": (_digits_cnn, (1, 8, 8), 30, 2e-3, False),
    "digits_mlp": (_digits_mlp, (64,), 60, 2e-3, False),
    "diagnosis_mlp": (_diagnosis_mlp, (30,), 200, 3e-3, True),
}


def train_model(name: str, x: np.ndarray, y: np.ndarray, *, seed: int) -> Any:
    """Train one model of setup ``name`` on all of ``x`` (the same code path as the references)."""
    factory, shape, epochs, lr, std = SETUPS[name]
    xs = np.asarray(x, dtype=np.float32).reshape(len(x), *shape)
    _base, p, b = train_stacked(
        factory,
        xs,
        y,
        np.ones((1, len(x)), dtype=bool),
        np.array([seed]),
        epochs=epochs,
        lr=lr,
        standardise=std,
    )
    return unstack(factory, p, b, 0)


def _recipe(
    name: str, x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    factory, shape, epochs, lr, std = SETUPS[name]
    xs = np.asarray(x, dtype=np.float32).reshape(len(x), *shape)
    qs = np.asarray(query, dtype=np.float32).reshape(len(query), *shape)
    base, p, b = train_stacked(factory, xs, y, masks, seeds, epochs=epochs, lr=lr, standardise=std)
    return predict_stacked(base, p, b, qs)


def digits_cnn(
    x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, *, seeds: np.ndarray
) -> np.ndarray:
    """Recipe: the clinic's digits CNN (30 epochs, Adam 2e-3, batch 64); ``(K, Q, 10)`` probabilities."""
    return _recipe("digits_cnn", x, y, masks, query, seeds)


def digits_mlp(
    x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, *, seeds: np.ndarray
) -> np.ndarray:
    """Recipe: a 64-128-128-10 MLP on digits (60 epochs, Adam 2e-3, batch 64); ``(K, Q, 10)``."""
    return _recipe("digits_mlp", x, y, masks, query, seeds)


def diagnosis_mlp(
    x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, *, seeds: np.ndarray
) -> np.ndarray:
    """Recipe: the clinic's diagnosis MLP (200 epochs, Adam 3e-3, standardised per model); ``(K, Q, 2)``."""
    return _recipe("diagnosis_mlp", x, y, masks, query, seeds)
