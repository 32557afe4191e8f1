"""The contract of a defence: what ``bastion harden`` hands it and what it returns.

A defence never writes files or touches the store: it returns the new model's bytes
(a torch ``state_dict`` saved with ``torch.save``, loadable with ``weights_only=True``, or a
scikit-learn model saved with skops) and what it did; :func:`bastion.api.harden` writes the
file atomically, hashes it and records the version with its lineage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from bastion.core.check import Split
from bastion.core.config import Asset, ProjectConfig
from bastion.core.registry import Plugin


@dataclass
class HardenContext:
    """Everything a defence needs.

    Attributes:
        asset: the model asset being hardened.
        config: the project config.
        base_dir: the folder of ``bastion.yaml``.
        target: the loaded original (a ``bastion.targets.Target``; torch targets expose ``.module``,
            scikit-learn targets ``.estimator``), loaded only after the scanner judged the file safe.
        data: the named splits of the asset's dataset (``train``, ``test``, ``population`` …).
        params: the defence's validated ``Params``.
        seed: the project seed.
        progress: callback taking a fraction in ``[0, 1]``.
    """

    asset: Asset
    config: ProjectConfig
    base_dir: Path
    target: Any
    data: dict[str, Split]
    params: BaseModel
    seed: int = 0
    progress: Callable[[float], None] | None = None

    def report_progress(self, fraction: float) -> None:
        """Tell the front end how far along the procedure is (0..1)."""
        if self.progress is not None:
            self.progress(max(0.0, min(1.0, fraction)))


@dataclass
class Hardened:
    """A hardened model, not yet written.

    Attributes:
        payload: the new model file's bytes.
        format: ``torch`` (a state_dict for ``model_class``) or ``skops`` (scikit-learn).
        extension: file extension including the dot (``.pt``, ``.skops``).
        model_class: for torch, the class (``package.module:Class``) that loads the state_dict;
            the asset's own unless the procedure changed the architecture (a distilled student).
        model_kwargs: keyword arguments for ``model_class``.
        details: what was done and measured during the procedure, JSON-able (parameters,
            epochs, train/test accuracy, (ε, δ) spent …); recorded with the version.
    """

    payload: bytes
    format: Literal["torch", "skops"]
    extension: str
    model_class: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Defence(Plugin):
    """A procedure that returns a hardened copy of a model.

    Subclasses set ``id`` (``defend.pgd-at``), ``title``, ``frameworks`` (``torch``, ``sklearn``),
    ``Params``, ``references`` and implement :meth:`harden`.
    """

    frameworks: ClassVar[frozenset[str]] = frozenset({"torch"})
    applies_to: ClassVar[frozenset[str]] = frozenset({"model"})

    def preflight(self, ctx: HardenContext) -> list[str]:
        """Every problem that would make :meth:`harden` fail, found before training starts."""
        problems = []
        if ctx.asset.framework not in self.frameworks:
            problems.append(
                f"{self.id} hardens {', '.join(sorted(self.frameworks))} models; "
                f"{ctx.asset.name} is {ctx.asset.framework}"
            )
        train = ctx.data.get("train")
        if train is None or train.y is None:
            problems.append(f"{self.id} needs a labelled train split of {ctx.asset.name}'s dataset")
        return problems

    def harden(self, ctx: HardenContext) -> Hardened:  # pragma: no cover - abstract
        """Train or transform and return the new model."""
        raise NotImplementedError
