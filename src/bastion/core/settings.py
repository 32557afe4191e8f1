"""Settings: defaults, merged under the environment and explicit overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import ConfigError
from bastion.core.severity import FAIL_ON_CHOICES

DEFAULT_DB = "sqlite:///.bastion/bastion.db"
#: The default store's folder and files under a project folder (SQLite's journal, WAL and
#: shared-memory files beside the database): none may be a symbolic link (:func:`check_default_store`).
DEFAULT_STORE_PARTS = (
    ".bastion",
    ".bastion/bastion.db",
    ".bastion/bastion.db-journal",
    ".bastion/bastion.db-wal",
    ".bastion/bastion.db-shm",
)


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
    The store is the project's own: a symbolic link among its parts is refused
    (:func:`check_default_store`).

    Raises:
        ConfigError: ``.bastion`` or ``.bastion/bastion.db`` (or a journal beside it) is a symbolic link.
    """
    if os.environ.get("BASTION_DB"):
        return None
    folder = Path(config).parent
    check_default_store(folder)
    return DEFAULT_DB if folder in (Path(), Path(".")) else f"sqlite:///{folder / '.bastion' / 'bastion.db'}"


def check_default_store(folder: str | os.PathLike[str]) -> None:
    """Refuse the default store under ``folder`` when it is reached through a symbolic link.

    ``.bastion/bastion.db`` sits in the project folder, which may be someone else's: a cloned
    repository whose ``.bastion`` (or ``bastion.db``, or its journal) is a symbolic link made
    ``assess`` create or write a database wherever the link pointed, outside the project, or
    read and write another store (red-team round 31, 04). A store given explicitly (``--db``,
    ``BASTION_DB``) is the user's choice and is not checked here.

    Raises:
        ConfigError: one of :data:`DEFAULT_STORE_PARTS` under ``folder`` is a symbolic link
            (named, with its target).
    """
    base = Path(folder)
    for part in DEFAULT_STORE_PARTS:
        path = base / part
        if path.is_symlink():
            try:
                target = f" (to {os.readlink(path)})"
            except OSError:
                target = ""
            raise ConfigError(
                f"{path}: the project's default store is reached through a symbolic link{target}; "
                "Bastion does not follow it (a cloned project could point it anywhere): give the "
                "store explicitly with --db URL or BASTION_DB, or replace the link with a folder or file"
            )


def store_hint(db_url: str | None) -> str:
    """Where the store may be, when a command found nothing in the default one; ``""`` if no hint.

    Trial 32: run from another folder, ``history``, ``show`` and ``data verify`` said nothing
    was stored or registered, with no word that they had read the current folder's
    ``.bastion/bastion.db`` rather than the project's. Only for the default store (no ``--db``,
    no ``BASTION_DB``) in a folder without a ``bastion.yaml``; names a project store found in
    a folder above or just below, if any.
    """
    if db_url or os.environ.get("BASTION_DB"):
        return ""
    cwd = Path.cwd()
    if (cwd / "bastion.yaml").is_file():
        return ""
    try:
        near = [*cwd.parents, *sorted(p.parent for p in cwd.glob("*/bastion.yaml"))]
    except OSError:
        near = []
    found = [p for p in near if (p / "bastion.yaml").is_file() and (p / ".bastion" / "bastion.db").is_file()]
    which = (
        f"--db sqlite:///{found[0] / '.bastion' / 'bastion.db'}"
        if found
        else "--db sqlite:///PROJECT/.bastion/bastion.db"
    )
    return (
        f"there is no bastion.yaml in {cwd}, so this read the store of this folder "
        f"(.bastion/bastion.db), not a project's; run it from the project's folder or give {which}"
    )
