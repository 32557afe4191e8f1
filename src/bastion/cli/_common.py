"""Shared pieces of the CLI commands: consoles, exit codes, option enums, error and output helpers.

Subcommand modules (``bastion.cli.<topic>``) import from here, never from ``bastion.cli.main``.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from bastion.core.errors import BastionError, ConfigError
from bastion.core.severity import FAIL_ON_CHOICES

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2, 3, 4
#: Interrupted by Ctrl-C (SIGINT), as a shell reports it (128 + 2).
EXIT_INTERRUPTED = 130
#: Stopped by SIGTERM, as a shell reports it (128 + 15).
EXIT_TERMINATED = 143

if TYPE_CHECKING:
    from rich.console import Console

    #: The CLI framework's usage-error base class (Typer vendors its own Click).
    UsageError: type[Exception]


def __getattr__(name: str) -> Any:
    """``UsageError``, resolved (and Typer imported, ~30 ms) on first use.

    This module stays free of Typer so that ``bastion scan`` (argparse, :mod:`bastion.cli.scan_cmd`)
    never imports it.
    """
    if name == "UsageError":
        import typer

        # Typer vendors its own Click; its usage-error base class is reached through BadParameter.
        cls = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
        globals()["UsageError"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _LazyConsole:
    r"""Rich's stderr console, built (and Rich imported, ~25 ms) on first use.

    ``bastion scan -f json`` then never imports Rich: it prints no table, no markup and, off a
    terminal, no progress bar. Every attribute is the real console's (see :func:`console`).

    The console is a :class:`bastion.cli._console.SafeConsole`: every character it prints from
    data is terminal-safe (an ``ESC`` in a name is shown as ``\x1b``), and markup is off unless
    a print passes ``markup=True`` (with its data escaped by ``rich.markup.escape``).
    """

    _real: Console | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(console(), name)


def console() -> Console:
    """The stderr console itself (for APIs that need a real ``Console``, e.g. a progress bar)."""
    if _LazyConsole._real is None:
        from bastion.cli._console import SafeConsole

        # Logs in CI are read in full: outside a terminal, use a wide console rather than Rich's 80 columns.
        _LazyConsole._real = SafeConsole(stderr=True, width=None if sys.stderr.isatty() else 160)
    return _LazyConsole._real


def stdout_console() -> Console:
    """A console on stdout, for a command whose table is its output (``bastion history``).

    As safe as :func:`console`.
    """
    from bastion.cli._console import SafeConsole

    return SafeConsole()


err = cast("Console", _LazyConsole())


def stderr_is_terminal() -> bool:
    """``err.is_terminal``, without importing Rich when stderr cannot be a terminal.

    Rich treats stderr as a terminal only if ``TTY_COMPATIBLE``/``FORCE_COLOR`` say so or it is a
    tty; when none holds, the answer is ``False`` without building the console.
    """
    if _LazyConsole._real is None and not {"TTY_COMPATIBLE", "FORCE_COLOR"} & os.environ.keys():
        try:
            if not sys.stderr.isatty():
                return False
        except (AttributeError, ValueError, OSError):
            return False
    return bool(err.is_terminal)


def print_line(text: str) -> None:
    """Print one plain line to stderr (no markup, no highlighting), as ``err.print`` would.

    Writes directly while Rich's console has not been built, so a scan that prints nothing else
    does not import Rich; once it has, goes through it (output stays in order). Terminal-safe
    either way (:func:`bastion.core.terminal.terminal_safe`).
    """
    if _LazyConsole._real is None and "\n" not in text and len(text) < 80:
        from bastion.core.terminal import terminal_safe

        sys.stderr.write(terminal_safe(text) + "\n")
        return
    err.print(text, highlight=False, markup=False)


#: ``debug``: ``--debug`` given; ``interrupt_said``: a command already said what Ctrl-C interrupted
#: (else :func:`bastion.cli.main.run` prints "aborted" for its exit 130); ``own_process``: the CLI
#: is the process (the console script), so it may change how signals are handled (:func:`settle`).
state = {"debug": False, "interrupt_said": False, "own_process": False, "gc_paused": False}


def settle() -> None:
    """The command's outcome is decided: its output is written; from here Ctrl-C changes nothing.

    SIGINT is ignored until the process exits, so the outcome the command prints (``signed …``,
    ``ML-BOM: …``) is the one it exits with. Trial 30, L1: a Ctrl-C after ``bom`` had written
    its BOM killed the process during shutdown (no message, no 130), and one after ``sign`` had
    written the signature printed ``signed …`` then ``aborted`` (130): a script could not tell
    whether to trust the signature. Only when the CLI is its own process (the console script):
    a program that calls :func:`bastion.cli.main.run` keeps its own handler.
    """
    if not state["own_process"]:
        return
    import contextlib
    import signal

    with contextlib.suppress(ValueError):  # not the main thread: nothing to settle there
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class ScanFormat(str, enum.Enum):
    """Output formats of ``bastion scan``."""

    table = "table"
    json = "json"
    sarif = "sarif"


class HistoryFormat(str, enum.Enum):
    """Output formats of ``bastion history``."""

    table = "table"
    json = "json"


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

#: ``--allow``'s help and metavar, the same in ``bastion scan`` and in every command that scans
#: a model before loading it (``assess``, ``harden``, ``guard fit``/``serve``: :func:`allow_option`).
ALLOW_HELP = "Allow your own class (module.Class); repeatable."
ALLOW_METAVAR = "MODULE.CLASS"


def allow_option() -> Any:
    """The Typer ``--allow`` option of the commands that scan a model before loading it.

    Typed by the user, as ``bastion scan --allow``: not limited to their own code as a project
    file's ``scan.allow`` is (the deny-list still wins); checked by the API (a malformed entry
    exits 2), shown apart from the project file's entries in the plan and the report.
    """
    import typer

    return typer.Option("--allow", help=ALLOW_HELP, metavar=ALLOW_METAVAR)


#: Why an empty path is refused, after the name of its argument or option (a usage error, 4).
EMPTY_PATH = "empty; give a path ('.' for the current folder)"


def cli_path(value: str | os.PathLike[str]) -> Path:
    """A path given on the command line; an empty one is a usage error.

    ``Path("")`` is the current folder: ``bastion sign "$MODEL"`` with the variable unset signed
    the whole current folder into a bundle outside it, and ``scan``, ``bom`` and ``verify`` ran on
    it (new-user trial), as ``--baseline ""`` ran without a baseline. The one check of every path
    argument and option: ``bastion scan``'s argparse ``type`` (:mod:`bastion.cli.scan_cmd`) and
    the Typer commands' ``parser`` (:func:`path_argument`, :func:`path_option`). A default value
    (already a ``Path``) passes as is.

    Raises:
        ValueError: ``value`` is the empty string (:data:`EMPTY_PATH`); the CLI framework shows it
            as a usage error naming the argument or option.
    """
    if isinstance(value, Path):
        return value
    if not os.fspath(value):
        raise ValueError(EMPTY_PATH)
    return Path(value)


def path_argument(**kwargs: Any) -> Any:
    """A Typer path argument checked by :func:`cli_path`; ``kwargs`` as ``typer.Argument``."""
    import typer

    return typer.Argument(parser=cli_path, **kwargs)


def path_option(*names: str, **kwargs: Any) -> Any:
    """A Typer path option checked by :func:`cli_path`; ``names`` and ``kwargs`` as ``typer.Option``."""
    import typer

    return typer.Option(*names, parser=cli_path, **kwargs)


def show_error(exc: BaseException) -> int:
    """Print ``exc`` as one clear error (traceback only with ``--debug``); return its exit code (2)."""
    from rich.markup import escape

    if state["debug"]:
        err.print_exception()
    first, *rest = str(exc).splitlines() or [type(exc).__name__]
    err.print(f"[bold red]error:[/] {escape(first)}", highlight=False, markup=True, soft_wrap=True)
    for line in rest:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    code = getattr(exc, "exit_code", EXIT_ERROR)
    return code if isinstance(code, int) else EXIT_ERROR


def fail(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one clear error (traceback only with ``--debug``) and exit with its code (2)."""
    import typer

    raise typer.Exit(show_error(exc))


def check_output_file(output: Path) -> None:
    """Preflight of ``--output`` before expensive work: :func:`write` will be able to write it.

    Creates nothing that stays (a probe file in the nearest existing folder is removed at once);
    a special file that exists (``/dev/null``) passes, as :func:`write` writes it in place.

    Raises:
        ConfigError: a folder is in the way, or nothing can be created there (named, with why).
    """
    if output.is_dir():
        raise ConfigError(f"--output {output}: is a folder; give a file path")
    if output.exists() and not output.is_file():
        return
    parent = output.parent
    while not parent.exists():
        parent = parent.parent
    probe = parent / f".bastion-probe-{os.getpid()}-{id(output):x}"
    try:  # a probe file created and removed at once (no tempfile import: ~5 ms of a scan's start)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--output {output}: cannot write there: {exc.strerror or exc}") from None


def write(text: str, output: Path | None) -> None:
    """Write machine output to stdout, or to ``output``.

    A regular file (or a new one) is written atomically (temporary file + rename) so a reader
    never sees half a report; a special file that exists (``/dev/null``, a FIFO, a terminal) is
    written in place and never replaced.

    Stdout is flushed here, so that a closed stdout (``>&-``), a reader that went away (``| head``:
    broken pipe) or a full device is an error of the command (exit 2, one line), never an
    internal error nor a failure at exit; after a failed write, stdout is pointed at the null
    device so the unwritten rest is dropped quietly.

    Raises:
        BastionError: ``output`` is a folder, or its folder cannot be created or written; or
            stdout cannot be written.
    """
    if output is None:
        out = sys.stdout
        if out is None:
            raise BastionError("cannot write the output: stdout is closed (give -o FILE)")
        try:
            out.write(text if text.endswith("\n") else text + "\n")
            out.flush()
        except (OSError, ValueError) as exc:
            drop_stdout(out)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BastionError(f"cannot write the output to stdout: {why}") from None
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
    from bastion.core.files import replace_file

    try:
        replace_file(output, text.encode("utf-8"))
    except OSError as exc:
        raise BastionError(f"{output}: cannot write: {exc.strerror or exc}") from None


def drop_stdout(out: Any) -> None:
    """Point ``out``'s descriptor at the null device (best effort), so its buffer flushes there."""
    try:
        fd = out.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)
