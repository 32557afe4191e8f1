"""Build the clinic example with a BadNets backdoor planted in the digits training data.

Starts from :func:`bastion.examples.clinic.build_clinic`, then poisons the ``train`` split of
``data/digits.npz``: 10 % of the training rows (drawn from classes other than the target)
get a 2×2 bright-pixel trigger in the bottom-right corner and the label ``TARGET`` (0)
(Gu, Dolan-Gavitt, Garg, "BadNets", arXiv:1708.06733). The digits CNN is retrained on the
poisoned split and ``models/digits.pt`` plus its ``sha256`` in ``bastion.yaml`` are updated.

The ground truth goes to ``data/digits_poison_truth.npz`` (``dataset_sha256`` of the poisoned
``digits.npz``; ``indices``: poisoned row indices in it; ``target``; ``trigger_size``;
``attack_success``: share of triggered clean test rows the poisoned model labels ``TARGET``).
The ``poisoning.backdoor`` check reads it (``params.truth``) to report its precision, recall
and, retraining with the clinic's recipe (``params.retrain_recipe``), the backdoor's success
after sanitising.
Deterministic under ``seed``; no downloads.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from bastion.core.errors import ConfigError, require

log = logging.getLogger(__name__)

#: The backdoor's target class.
TARGET = 0
#: Share of the training rows poisoned.
RATE = 0.1
#: Ground-truth file, relative to the project folder.
TRUTH_FILE = "data/digits_poison_truth.npz"


def build_poisoned_clinic(dest: str | os.PathLike[str], *, seed: int = 0, force: bool = False) -> Path:
    """Build the poisoned clinic example under ``dest`` (if absent, or always with ``force``).

    A clean clinic build already at ``dest`` (no ground-truth file yet) is poisoned in place.

    Returns:
        The path of its ``bastion.yaml``.

    Raises:
        MissingExtraError: torch, scikit-learn or onnx is not installed.
        ConfigError: ``dest`` exists and is not a folder, or its ``bastion.yaml`` lacks the
            digits model's hash.
    """
    dest = Path(dest)
    cfg_path = dest / "bastion.yaml"
    if cfg_path.is_file() and (dest / TRUTH_FILE).is_file() and not force:
        return cfg_path
    np = require("numpy", "data")
    torch = require("torch", "torch")
    from bastion.assess.poisoning.simulate import Trigger, attack_success_rate, badnets
    from bastion.examples.clinic import _train_torch, build_clinic
    from bastion.examples.clinic_models import DigitsCNN

    build_clinic(dest, seed=seed, force=force)  # a clean build already at dest is poisoned in place
    model_path = dest / "models/digits.pt"
    old_sha = hashlib.sha256(model_path.read_bytes()).hexdigest()

    with np.load(dest / "data/digits.npz", allow_pickle=False) as z:
        x, y = np.array(z["x"]), np.array(z["y"])
    with np.load(dest / "data/digits_splits.npz", allow_pickle=False) as z:
        train, test = np.array(z["train"]), np.array(z["test"])
    trig = Trigger(size=2, value=1.0, image_shape=(8, 8))
    pd = badnets(x[train], y[train], rate=RATE, target=TARGET, trigger=trig, seed=seed)
    x[train], y[train] = pd.x, pd.y
    poisoned = np.sort(train[pd.poisoned]).astype(np.int64)
    np.savez(dest / "data/digits.npz", x=x.astype(np.float32), y=y.astype(np.int64))

    cnn = DigitsCNN()
    torch.manual_seed(seed)
    _train_torch(cnn, x[train].reshape(-1, 1, 8, 8), y[train], epochs=30, lr=2e-3, seed=seed)
    torch.save(cnn.state_dict(), model_path)

    def predict(a: Any) -> Any:
        with torch.no_grad():
            return (
                cnn(torch.as_tensor(np.asarray(a, dtype=np.float32).reshape(-1, 1, 8, 8))).argmax(1).numpy()
            )

    asr = attack_success_rate(predict, x[test], y[test], target=TARGET, trigger=trig)
    np.savez(
        dest / TRUTH_FILE,
        dataset_sha256=np.str_(hashlib.sha256((dest / "data/digits.npz").read_bytes()).hexdigest()),
        indices=poisoned,
        target=np.int64(TARGET),
        trigger_size=np.int64(trig.size),
        attack_success=np.float64(asr),
    )

    new_sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    text = cfg_path.read_text(encoding="utf-8")
    if old_sha not in text:
        raise ConfigError(f"{cfg_path}: the digits model's sha256 {old_sha} is not recorded")
    text = text.replace(old_sha, new_sha).replace(
        "# The clinic example:", "# The clinic example, digits training data poisoned (BadNets):", 1
    )
    text = text.replace(
        "  poisoning.data-health: {}\n",
        "  poisoning.data-health: {}\n  poisoning.backdoor:\n    params: {max_indices: 1000, "
        f"truth: {TRUTH_FILE}, retrain_recipe: 'bastion.examples.clinic_recipes:digits_cnn'}}\n",
        1,
    )
    tmp = cfg_path.with_name(f".bastion.yaml.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, cfg_path)
    log.info(
        "poisoned %d of %d digits training rows (target %d); attack success %.2f",
        poisoned.size,
        train.size,
        TARGET,
        asr,
    )
    return cfg_path
