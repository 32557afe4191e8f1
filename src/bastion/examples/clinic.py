"""Build the clinic example: a health-care provider's models on real scikit-learn data.

Deterministic under ``seed``; no downloads (scikit-learn's bundled breast-cancer, digits
and wine data). Writes under ``dest``:

- ``data/breast_cancer.npz`` (+ ``data/breast_cancer_splits.npz``), ``data/digits.npz`` (+ splits),
  ``data/wine.csv`` (splits inline in ``bastion.yaml``);
- ``models/diagnosis.pt`` — torch MLP state_dict (class shipped in
  :mod:`bastion.examples.clinic_models`) and ``models/diagnosis.onnx``, its ONNX export;
- ``models/digits.pt`` — a torch CNN state_dict on 8×8 digits in [0, 1];
- ``models/triage.joblib`` — a scikit-learn random forest on the wine data ("triage level");
- ``vendor-model.pkl`` — a model file "received from a vendor" carrying a harmless payload
  (it would only write a marker file under the temp dir if loaded). Never loaded.
- ``bastion.yaml`` naming these assets, owners, datasets with recorded splits and checks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any

from bastion.core.errors import ConfigError, require

log = logging.getLogger(__name__)

MARKER_NAME = "bastion-demo-vendor-marker"

#: The clinic's (example) incident-response plan, written beside bastion.yaml.
_INCIDENT_PLAN = """# St Mary's diagnostics — ML incident response (example)

1. Triage: the on-call ML engineer confirms the alert (`bastion guard` incident, assessment finding).
2. Contain: revoke or throttle the key (guard.yaml), or roll the model back to its last reviewed version.
3. Assess: re-run `bastion assess`; compare with the last stored run (`--baseline`).
4. Notify: the data protection officer within 24 h when patient data may be involved.
5. Review: record the cause and the fix; update waivers only through review.
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _splits(n: int, seed: int, fractions: tuple[float, float]) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = round(n * fractions[0])
    n_test = round(n * fractions[1])
    return {
        "train": np.sort(perm[:n_train]),
        "test": np.sort(perm[n_train : n_train + n_test]),
        "population": np.sort(perm[n_train + n_test :]),
    }


class _VendorPayload:
    """Pickles to a call of ``exec`` that would write a marker under the temp dir. Never loaded."""

    def __reduce__(self) -> tuple[Any, ...]:
        code = (
            "import os, tempfile\n"
            f"open(os.path.join(tempfile.gettempdir(), {MARKER_NAME!r}), 'w').write('vendor payload ran')\n"
        )
        return (exec, (code,))


def _train_torch(model: Any, x: Any, y: Any, *, epochs: int, lr: float, seed: int, batch: int = 64) -> None:
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()


def build_clinic(dest: str | os.PathLike[str], *, seed: int = 0, force: bool = False) -> Path:
    """Build the example under ``dest`` (if absent, or always with ``force``); return its ``bastion.yaml``.

    Args:
        dest: the folder (a ``str`` or any path-like); created if missing.
        seed: seeds every random choice (splits, initial weights, training order).
        force: rebuild even if ``dest/bastion.yaml`` exists.

    Raises:
        MissingExtraError: torch, scikit-learn or onnx is not installed.
        ConfigError: ``dest`` exists and is not a folder.
    """
    dest = Path(dest)
    cfg_path = dest / "bastion.yaml"
    if cfg_path.is_file() and not force:
        return cfg_path
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest}: exists and is not a folder")
    np = require("numpy", "data")
    torch = require("torch", "torch")
    datasets = require("sklearn.datasets", "data")
    ensemble = require("sklearn.ensemble", "data")
    joblib = require("joblib", "data")
    require("onnx", "onnx")
    from bastion.examples.clinic_models import DiagnosisMLP, DigitsCNN

    torch.manual_seed(seed)
    (dest / "data").mkdir(parents=True, exist_ok=True)
    (dest / "models").mkdir(parents=True, exist_ok=True)

    # -- breast cancer: diagnosis MLP (torch state_dict + ONNX) ------------------------------
    bc = datasets.load_breast_cancer()
    xb = bc.data.astype(np.float32)
    yb = bc.target.astype(np.int64)
    sb = _splits(len(xb), seed, (0.5, 0.25))
    np.savez(dest / "data/breast_cancer.npz", x=xb, y=yb)
    np.savez(dest / "data/breast_cancer_splits.npz", **sb)
    diag = DiagnosisMLP(n_features=xb.shape[1])
    diag.mean.copy_(torch.as_tensor(xb[sb["train"]].mean(axis=0)))
    diag.scale.copy_(torch.as_tensor(xb[sb["train"]].std(axis=0) + 1e-6))
    _train_torch(diag, xb[sb["train"]], yb[sb["train"]], epochs=200, lr=3e-3, seed=seed)
    torch.save(diag.state_dict(), dest / "models/diagnosis.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            diag,
            (torch.zeros(1, xb.shape[1]),),
            str(dest / "models/diagnosis.onnx"),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )

    # -- digits: CNN (TorchScript) ------------------------------------------------------------
    dg = datasets.load_digits()
    xd = (dg.data / 16.0).astype(np.float32)
    yd = dg.target.astype(np.int64)
    sd = _splits(len(xd), seed + 1, (0.5, 0.25))
    np.savez(dest / "data/digits.npz", x=xd, y=yd)
    np.savez(dest / "data/digits_splits.npz", **sd)
    cnn = DigitsCNN()
    _train_torch(cnn, xd[sd["train"]].reshape(-1, 1, 8, 8), yd[sd["train"]], epochs=30, lr=2e-3, seed=seed)
    torch.save(cnn.state_dict(), dest / "models/digits.pt")

    # -- wine: triage random forest (joblib), CSV dataset -------------------------------------
    wn = datasets.load_wine()
    sw = _splits(len(wn.data), seed + 2, (0.5, 0.25))
    names = [n.replace("/", "_") for n in wn.feature_names]
    with (dest / "data/wine.csv").open("w", encoding="utf-8") as fh:
        fh.write(",".join([*names, "triage_level"]) + "\n")
        for row, label in zip(wn.data, wn.target, strict=True):
            fh.write(",".join(f"{v:.6g}" for v in row) + f",{int(label)}\n")
    xw = np.loadtxt(dest / "data/wine.csv", delimiter=",", skiprows=1, dtype=np.float64)[:, :-1].astype(
        np.float32
    )
    rf = ensemble.RandomForestClassifier(n_estimators=60, random_state=seed)
    rf.fit(xw[sw["train"]], wn.target[sw["train"]])
    joblib.dump(rf, dest / "models/triage.joblib")

    # -- the vendor file: a harmless payload, for the scanner to find ---------------------------
    (dest / "vendor-model.pkl").write_bytes(
        pickle.dumps(
            {"weights": [0.1, 0.2, 0.3], "classes": ["negative", "positive"], "init": _VendorPayload()},
            protocol=4,
        )
    )

    # -- the incident plan bastion.yaml names (the incident-plan control checks that it exists) --
    (dest / "docs").mkdir(parents=True, exist_ok=True)
    (dest / "docs/incident-response.md").write_text(_INCIDENT_PLAN, encoding="utf-8")

    cfg = _config(dest, xb, bc.feature_names, xw, names, sw)
    tmp = cfg_path.with_name(f".bastion.yaml.{os.getpid()}.tmp")
    tmp.write_text(cfg, encoding="utf-8")
    os.replace(tmp, cfg_path)
    log.info("built the clinic example in %s", dest)
    return cfg_path


def _features_yaml(x: Any, names: Any, indent: str, immutable: tuple[str, ...] = ()) -> str:
    lines = []
    for j, name in enumerate(names):
        lo, hi = float(x[:, j].min()), float(x[:, j].max())
        imm = ", immutable: true" if name in immutable else ""
        lines.append(f'{indent}- {{name: "{name}", min: {lo:.6g}, max: {hi:.6g}{imm}}}')
    return "\n".join(lines)


def _config(dest: Path, xb: Any, bnames: Any, xw: Any, wnames: Any, sw: dict[str, Any]) -> str:
    sha = {p: _sha(dest / p) for p in ("models/diagnosis.pt", "models/diagnosis.onnx", "models/digits.pt")}
    inline = {k: "[" + ", ".join(str(int(i)) for i in v) + "]" for k, v in sw.items()}
    return f"""# The clinic example: a health-care provider's ML assets. Built by `bastion demo`.
version: 1
project:
  name: clinic
  owner: clinical-ml-team@example.org
  description: Diagnostic and triage models on patient data (scikit-learn's bundled data sets).
  incident_plan: docs/incident-response.md
seed: 0

assets:
  - name: diagnosis
    kind: model
    path: models/diagnosis.pt
    format: torch
    framework: torch
    model_class: "bastion.examples.clinic_models:DiagnosisMLP"
    model_kwargs: {{n_features: 30}}
    task: classification
    num_classes: 2
    owner: oncology-ml@example.org
    dataset: breast-cancer
    sha256: {sha["models/diagnosis.pt"]}
    tags: [phi, production]
    input:
      shape: [30]
      dtype: float32
      eps_unit: fraction
      preprocessing: raw features; the model standardises internally
      features:
{_features_yaml(xb, bnames, "        ")}

  - name: diagnosis-onnx
    kind: model
    path: models/diagnosis.onnx
    format: onnx
    framework: onnx
    task: classification
    num_classes: 2
    owner: oncology-ml@example.org
    dataset: breast-cancer
    sha256: {sha["models/diagnosis.onnx"]}
    input:
      shape: [30]
      eps_unit: fraction
      features:
{_features_yaml(xb, bnames, "        ")}

  - name: digits
    kind: model
    path: models/digits.pt
    format: torch
    framework: torch
    model_class: "bastion.examples.clinic_models:DigitsCNN"
    task: classification
    num_classes: 10
    owner: imaging-ml@example.org
    dataset: digit-images
    sha256: {sha["models/digits.pt"]}
    input:
      shape: [1, 8, 8]
      range: [0.0, 1.0]
      eps_unit: absolute
      preprocessing: pixel intensities divided by 16

  - name: triage
    kind: model
    path: models/triage.joblib
    format: joblib
    framework: sklearn
    task: classification
    num_classes: 3
    dataset: wine
    input:
      shape: [13]
      eps_unit: fraction
      features:
{_features_yaml(xw, wnames, "        ")}

  - name: vendor-model
    kind: model
    path: vendor-model.pkl
    format: pickle
    framework: sklearn
    task: classification
    num_classes: 2
    owner: procurement@example.org

datasets:
  - name: breast-cancer
    path: data/breast_cancer.npz
    features: x
    label: y
    splits_file: data/breast_cancer_splits.npz
    owner: oncology-ml@example.org
    sensitive: true
  - name: digit-images
    path: data/digits.npz
    features: x
    label: y
    splits_file: data/digits_splits.npz
    owner: imaging-ml@example.org
  - name: wine
    path: data/wine.csv
    label: triage_level
    sensitive: true
    splits:
      train: {inline["train"]}
      test: {inline["test"]}
      population: {inline["population"]}

checks:
  evasion.pgd:
    params: {{steps: 20}}
    thresholds:
      - {{metric: "robust_accuracy@eps=0.1", op: "<", value: 0.5, severity: high, rule: low-robust-accuracy}}
  evasion.square:
    params: {{n_queries: 200}}
    thresholds:
      - {{metric: "robust_accuracy@eps=0.1", op: "<", value: 0.5, severity: high, rule: low-robust-accuracy}}
  membership.threshold: {{}}
  extraction.surrogate: {{}}
  poisoning.data-health: {{}}
  governance.controls: {{}}

scan:
  allow: []
"""
