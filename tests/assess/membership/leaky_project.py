"""A project whose digits MLP over-fits 200 training records (it leaks membership), built in code."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

RECIPE = "bastion.examples.clinic_recipes:digits_mlp"


def build_leaky_digits(dest: Path, *, seed: int = 0, n_train: int = 200, n_test: int = 400) -> Path:
    """Write data, the trained model and ``bastion.yaml`` under ``dest``; return the config path.

    Every membership check scores all ``min(n_train, n_test)`` members and as many non-members
    (``budget.samples`` overrides the quick preset's 100), so the AUCs' sampling error is small.
    """
    import torch
    from sklearn.datasets import load_digits

    from bastion.examples.clinic_recipes import train_model

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    # Stratified training split (n_train // 10 per digit, the remainder from the shuffled rest): a
    # random split's class histogram alone gives a membership "signal" (AUC 0.53 for seed 0)
    # that no training procedure can remove, and would blur the DP headline.
    per_class = n_train // 10
    strat = np.concatenate([perm[y[perm] == c][:per_class] for c in range(10)])
    rest = perm[~np.isin(perm, strat)]
    order = np.concatenate([strat, rest])
    splits = {
        "train": np.sort(order[:n_train]),
        "test": np.sort(order[n_train : n_train + n_test]),
        "population": np.sort(order[n_train + n_test :]),
    }
    (dest / "data").mkdir(parents=True, exist_ok=True)
    (dest / "models").mkdir(parents=True, exist_ok=True)
    np.savez(dest / "data/digits.npz", x=x, y=y)
    np.savez(dest / "data/splits.npz", **splits)
    model = train_model("digits_mlp", x[splits["train"]], y[splits["train"]], seed=seed)
    torch.save(model.state_dict(), dest / "models/digits.pt")
    sha = hashlib.sha256((dest / "models/digits.pt").read_bytes()).hexdigest()
    ref = f"{{recipe: '{RECIPE}', n_references: 8}}"
    cfg = dest / "bastion.yaml"
    cfg.write_text(
        f"""version: 1
project: {{name: leaky, owner: privacy@example.org}}
seed: {seed}
assets:
  - name: digits
    kind: model
    path: models/digits.pt
    format: torch
    framework: torch
    model_class: "bastion.examples.clinic_models:DiagnosisMLP"
    model_kwargs: {{n_features: 64, hidden: 128, n_classes: 10}}
    num_classes: 10
    dataset: digit-images
    sha256: {sha}
    input: {{shape: [64], range: [0.0, 1.0], eps_unit: absolute}}
datasets:
  - name: digit-images
    path: data/digits.npz
    features: x
    label: y
    splits_file: data/splits.npz
checks:
  membership.threshold: {{budget: {{samples: {n_train}}}}}
  membership.label-only: {{budget: {{samples: {n_train}, queries: {130 * n_train}}}}}
  membership.lira: {{params: {ref}, budget: {{samples: {n_train}}}}}
  membership.rmia: {{params: {ref}, budget: {{samples: {n_train}}}}}
""",
        encoding="utf-8",
    )
    return cfg
