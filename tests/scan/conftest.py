"""Fixtures for the scanner tests: a marker that payloads would create, and real harmless models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A path every command payload would ``touch``; it must still be absent after the test."""
    path = tmp_path / "pwned-marker"
    yield path
    assert not path.exists(), "scanning executed a payload"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A P-256 signing key and its public key (PEM files), as ``openssl ecparam``/``ec`` write them."""
    from tests.keys import write_ec_keypair

    k, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    write_ec_keypair(k, pub)
    return k, pub


@pytest.fixture(scope="session")
def real_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Harmless real models written by their own libraries: scikit-learn (joblib), torch, numpy."""
    import warnings

    pytest.importorskip("sklearn", reason="the real-model fixtures need scikit-learn (bastion-ml[data])")
    import joblib
    import numpy as np

    out = tmp_path_factory.mktemp("real-models")
    models: dict[str, Path] = {}
    from sklearn.datasets import load_iris
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    estimators = {
        "logreg": LogisticRegression(max_iter=500),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0),
        "boosting": GradientBoostingClassifier(n_estimators=3, random_state=0),
        "mlp": MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
        "pipeline": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, est in estimators.items():
            est.fit(x, y)
            joblib.dump(est, out / f"{name}.joblib")
            if name in ("logreg", "forest"):
                joblib.dump(est, out / f"{name}-z3.joblib", compress=3)
    for name in ("logreg", "forest", "boosting", "mlp", "pipeline"):
        models[f"sklearn-{name}"] = out / f"{name}.joblib"
    models["sklearn-logreg-compress3"] = out / "logreg-z3.joblib"
    models["sklearn-forest-compress3"] = out / "forest-z3.joblib"

    np.save(out / "weights.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez(out / "arrays.npz", a=np.arange(5), b=np.eye(3))
    np.savez_compressed(out / "arrays-compressed.npz", a=np.zeros(1000))
    models["npy"] = out / "weights.npy"
    models["npz"] = out / "arrays.npz"
    models["npz-compressed"] = out / "arrays-compressed.npz"

    try:
        import torch
    except ImportError:  # pragma: no cover - torch is part of the dev environment
        return models
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.save(net.state_dict(), out / "state_dict.pt")
    torch.save(net.state_dict(), out / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(net, out / "full_model.pt")
    opt = torch.optim.Adam(net.parameters())
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, out / "checkpoint.pth")
    models["torch-state-dict"] = out / "state_dict.pt"
    models["torch-legacy"] = out / "legacy.pt"
    models["torch-full-model"] = out / "full_model.pt"
    models["torch-checkpoint"] = out / "checkpoint.pth"
    return models
