"""Starting a project: init and the demo."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def init_project(directory: str | Path, *, force: bool = False) -> Path:
    """Write a starter ``bastion.yaml`` by discovering model files and datasets in ``directory``.

    Model files are recognised by the scanner's magic-byte sniffing (nothing is loaded);
    CSV and npz files become datasets. The result validates against the config model.

    Raises:
        ConfigError: ``directory`` is not a folder, or ``bastion.yaml`` exists (without ``force``).
    """
    from bastion.discover import write_starter

    return write_starter(Path(directory), force=force)


def build_demo(
    directory: str | Path | None = None, *, seed: int = 0, force: bool = False, poisoned: bool = False
) -> Path:
    """Build the clinic example project (deterministic under ``seed``) and return its ``bastion.yaml``.

    ``poisoned``: plant a BadNets backdoor in the digits training data and retrain that model
    (:mod:`bastion.examples.clinic_poisoned`); the default folder is then ``examples/clinic-poisoned``
    (else ``examples/clinic``).
    """
    if poisoned:
        from bastion.examples.clinic_poisoned import build_poisoned_clinic

        return build_poisoned_clinic(Path(directory or "examples/clinic-poisoned"), seed=seed, force=force)
    from bastion.examples.clinic import build_clinic

    return build_clinic(Path(directory or "examples/clinic"), seed=seed, force=force)
