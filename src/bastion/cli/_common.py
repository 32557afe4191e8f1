"""Shared pieces of the CLI commands: consoles, exit codes, option enums, error and output helpers.

Subcommand modules (``bastion.cli.<topic>``) import from here, never from ``bastion.cli.main``.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bastion.core.errors import BastionError
from bastion.core.severity import FAIL_ON_CHOICES

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2, 3, 4

# Typer vendors its own Click; its usage-error base class is reached through BadParameter.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

# Logs in CI are read in full: outside a terminal, use a wide console rather than Rich's 80 columns.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
state = {"debug": False}


class ScanFormat(str, enum.Enum):
    """Output formats of ``bastion scan``."""

    table = "table"
    json = "json"
    sarif = "sarif"


class ShowFormat(str, enum.Enum):
    """Output formats of ``bastion show``."""

    table = "table"
    json = "json"
    sarif = "sarif"
    html = "html"
    markdown = "markdown"


class BudgetPreset(str, enum.Enum):
    """Budget presets of ``bastion assess``."""

    quick = "quick"
    standard = "standard"
    thorough = "thorough"


FailOn = enum.Enum("FailOn", {v: v for v in FAIL_ON_CHOICES}, type=str)  # type: ignore[misc]


def fail(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one clear error (traceback only with ``--debug``) and exit with its code (2)."""
    if state["debug"]:
        err.print_exception()
    first, *rest = str(exc).splitlines() or [type(exc).__name__]
    err.print(f"[bold red]error:[/] {escape(first)}", highlight=False, markup=True, soft_wrap=True)
    for line in rest:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    code = getattr(exc, "exit_code", EXIT_ERROR)
    raise typer.Exit(code if isinstance(code, int) else EXIT_ERROR)


def write(text: str, output: Path | None) -> None:
    """Write machine output to stdout, or to ``output``.

    A regular file (or a new one) is written atomically (temporary file + rename) so a reader
    never sees half a report; a special file that exists (``/dev/null``, a FIFO, a terminal) is
    written in place and never replaced.

    Raises:
        BastionError: ``output`` is a folder, or its folder cannot be created or written.
    """
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    if output.is_dir():
        raise BastionError(f"{output}: is a folder; give a file path for --output")
    if output.exists() and not output.is_file():
        try:
            with output.open("w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise BastionError(f"{output}: cannot write: {exc.strerror or exc}") from None
        return
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        raise BastionError(f"{output}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
