"""The error tree every Bastion package raises.

Each error maps to a documented exit code (see ``docs/exit-codes.md``): every
``BastionError`` is exit code 2 (the result is incomplete) unless stated.
"""

from __future__ import annotations

from typing import Any


class BastionError(Exception):
    """Base class of every error Bastion raises on purpose.

    Attributes:
        exit_code: the CLI exit code this error maps to (2: errors, result incomplete).
    """

    exit_code: int = 2


class ConfigError(BastionError, ValueError):
    """Bad configuration or bad input: a ``bastion.yaml`` field, a CLI option, a dataset.

    Args:
        message: one line naming what and where.
        problems: every problem found, each ``"field.path: reason"``; the message lists them all.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class OptionError(ConfigError):
    """An option names what Bastion does not have: a usage error (exit 4), as an unknown option is.

    An unknown plugin id in ``--only``/``--skip``, an unknown hardening procedure: a typo in a
    word of Bastion's own vocabulary, checked before anything runs (trial 30, L5: these exited
    2 while ``--budget fast`` exited 4). A name the project defines (``--asset``, a run id) is
    input, not usage: :class:`ConfigError` (2).
    """

    exit_code = 4


class TargetError(BastionError):
    """A model or endpoint could not be loaded or called (missing file, bad shape, HTTP failure)."""


class PluginError(BastionError):
    """A plugin is unknown, misconfigured or crashed."""


class ScanError(BastionError):
    """A file could not be fully scanned (unreadable, truncated, unsupported container)."""


class IntegrityError(BastionError):
    """A tampered artefact or a bad signature: a verdict, never a plain ``ValueError``."""


class NotFittedError(BastionError):
    """A detector or defence was used before ``fit``."""


class BudgetExhausted(BastionError):
    """An attack asked for more queries, samples or seconds than its ``Budget`` allows.

    Attacks catch it, stop, and report what they reached with the budget used.
    """


class MissingExtraError(BastionError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` that fixes it.

    Args:
        package: the import name that failed (``torch``).
        extra: the Bastion extra that provides it (``torch`` → ``pip install 'bastion-ml[torch]'``).
    """

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{package} is not installed; install it with: pip install 'bastion-ml[{extra}]'")


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise ``MissingExtraError`` naming the extra that provides it.

    Args:
        module: dotted import name, e.g. ``"torch"`` or ``"sklearn.linear_model"``.
        extra: Bastion extra that installs it.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: when the import fails.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatched tests
        raise MissingExtraError(module.split(".")[0], extra) from exc
