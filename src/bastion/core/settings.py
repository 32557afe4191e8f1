"""Settings: defaults, merged under the environment and explicit overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.severity import FAIL_ON_CHOICES

DEFAULT_DB = "sqlite:///.bastion/bastion.db"


class Settings(BaseModel):
    """Run-wide settings.

    Attributes:
        db_url: SQLAlchemy URL of the store; ``--db``, else ``BASTION_DB``, else SQLite at
            ``.bastion/bastion.db`` in the project's folder (the one holding ``bastion.yaml``,
            see :func:`project_db_url`) or, for commands without a project, the current folder.
        report_dir: where reports are written.
        fail_on: the exit-code gate (a severity, or ``none``).
        budget: the budget preset (``quick``, ``standard``, ``thorough``).
        max_time: seconds for the whole run (``None``: unlimited).
    """

    model_config = ConfigDict(extra="forbid")

    db_url: str = DEFAULT_DB
    report_dir: Path = Path("bastion-report")
    fail_on: str = Field(default="medium", pattern="^(" + "|".join(FAIL_ON_CHOICES) + ")$")
    budget: str = Field(default="standard", pattern="^(quick|standard|thorough)$")
    max_time: float | None = Field(default=None, gt=0)


def load_settings(**overrides: Any) -> Settings:
    """Defaults, then the environment (``BASTION_DB``), then ``overrides`` that are not ``None``."""
    data: dict[str, Any] = {}
    env_db = os.environ.get("BASTION_DB")
    if env_db:
        data["db_url"] = env_db
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**data)


def project_db_url(config: str | os.PathLike[str]) -> str | None:
    """The default store of the project whose ``bastion.yaml`` is ``config`` (``None``: ``BASTION_DB``).

    ``.bastion/bastion.db`` beside the config.
    So a command given ``-c proj/bastion.yaml`` from another folder records in the project's store,
    beside the files it writes under the project (a hardened model in ``proj/.bastion/models``
    was recorded in the working folder's store before: new-user trial).
    """
    if os.environ.get("BASTION_DB"):
        return None
    folder = Path(config).parent
    return DEFAULT_DB if folder in (Path(), Path(".")) else f"sqlite:///{folder / '.bastion' / 'bastion.db'}"
