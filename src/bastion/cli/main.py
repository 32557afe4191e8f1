"""``bastion`` commands. Machine output goes to stdout or ``--output``; people's output to stderr.

Exit codes (every command): 0 done; 1 findings at or above ``--fail-on``; 2 errors (bad
input, unreadable file, crashed plugin, unreachable database); 3 nothing applicable;
4 usage. 2 wins over 1, and 1 over 3.

This module is the console script's entry point (:func:`run`) and stays light: ``bastion scan``
(also after the global ``--debug``/``--verbose``) goes straight to :mod:`bastion.cli.scan_cmd`
(argparse) without importing Typer; every other command loads the Typer application
(:mod:`bastion.cli._app`), whose names (``app``, the commands) are also reachable here.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from bastion.cli._common import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    err,
    settle,
    state,
)
from bastion.core._log import configure_later
from bastion.core.errors import BastionError
from bastion.core.terminal import SafeStream, terminal_safe

#: Commands of the subcommand modules, name -> module, in ``bastion --help`` order: the CLI lists
#: them without importing the modules and imports a module only when one of its commands runs.
#: A module of :data:`SUBCOMMAND_MODULES` missing here still works (it is imported whenever the
#: command list is needed); add its commands here to make it lazy.
LAZY_COMMANDS: dict[str, str] = {
    "harden": "bastion.cli.harden",
    "sign": "bastion.cli.integrity",
    "verify": "bastion.cli.integrity",
    "bom": "bastion.cli.integrity",
    "guard": "bastion.cli.guard",
    "data": "bastion.cli.data",
}


#: Subcommand modules; each defines ``register(app)`` and must stay light at import.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "bastion.cli.harden",
    "bastion.cli.integrity",
    "bastion.cli.guard",
    "bastion.cli.data",
)

#: The global options ``run`` understands itself before ``scan`` (name -> flag set).
_GLOBAL_FLAGS = {"--debug": "debug", "--verbose": "verbose", "-v": "verbose"}


def configure(*, debug: bool = False, verbose: bool = False, lazy: bool = False) -> None:
    """Apply the global options: tracebacks with ``--debug``, and the log level.

    ``lazy``: ``logging.basicConfig`` is applied when a :func:`bastion.core._log.get_logger`
    logger is first used (at once if ``logging`` is loaded) — for ``bastion scan``, whose
    modules all log through such loggers and import ``logging`` only to log something.
    """
    state["debug"] = debug
    level = 10 if debug else 20 if verbose else 30  # logging.DEBUG, INFO, WARNING
    config: dict[str, Any] = {
        "level": level,
        "format": "%(levelname)s %(name)s: %(message)s",
        "stream": SafeStream(sys.stderr),  # a log record quotes names from files: terminal-safe
    }
    if lazy:
        configure_later(**config)
    else:
        import logging

        logging.basicConfig(**config)
    _safe_warnings()


def _safe_warnings() -> None:
    """Python warnings reach stderr terminal-safe: a warning may quote a model file's text.

    Red-team round 33: scikit-learn's ``InconsistentVersionWarning`` quotes a pickle's
    ``_sklearn_version``, and ``warnings.showwarning`` wrote its escape sequences raw. The text is
    escaped where it is formatted (``warnings.formatwarning``), so whoever shows or records
    warnings (``pytest.warns``, ``catch_warnings(record=True)``) still gets them.
    """
    import warnings

    original = warnings.formatwarning
    if getattr(original, "__module__", None) == __name__:  # already ours
        return

    def formatwarning(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        return terminal_safe(original(message, category, filename, lineno, line))

    warnings.formatwarning = formatwarning


def _scan_request(args: Sequence[str]) -> tuple[dict[str, bool], list[str]] | None:
    """``(global flags, scan arguments)`` if ``args`` is ``[--debug|--verbose|-v ...] scan ...``."""
    flags = {"debug": False, "verbose": False}
    for i, arg in enumerate(args):
        if arg == "scan":
            return flags, list(args[i + 1 :])
        key = _GLOBAL_FLAGS.get(arg)
        if key is None:
            return None
        flags[key] = True
    return None


def _internal_error(exc: Exception) -> int:
    """A bug: one line, the traceback only with ``--debug``.

    Except output that could not be written (a closed or full stdout, a reader that went away:
    ``EPIPE``/``ENOSPC``/``EBADF`` from a command that prints through Rich): an error of the
    command, exit 2, naming the file when there is one.
    """
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ENOSPC, errno.EBADF):
        return _unwritten(exc)
    if state["debug"]:
        err.print_exception()
    text = f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for details)"
    sys.stderr.write(terminal_safe(text) + "\n")
    return EXIT_ERROR


def _unwritten(exc: OSError) -> int:
    """Output that could not be written (``exc``): one error line, exit 2.

    Names the file when there is one, else stdout, which is then pointed at the null device
    (the exit flush must not fail again).
    """
    from bastion.cli._common import drop_stdout

    where = exc.filename or "the output to stdout"  # the wording of ``_common.write``
    if exc.filename is None and sys.stdout is not None:
        drop_stdout(sys.stdout)
    sys.stderr.write(terminal_safe(f"error: cannot write {where}: {exc.strerror or exc}") + "\n")
    return EXIT_ERROR


def _run_scan(flags: dict[str, bool], args: list[str]) -> int:
    """``bastion scan`` without Typer, under the same safety net as every other command."""
    configure(**flags, lazy=True)
    from bastion.cli import scan_cmd

    try:
        return scan_cmd.main(args)
    except KeyboardInterrupt:
        sys.stderr.write("\naborted\n")
        return EXIT_INTERRUPTED
    except BastionError as exc:  # the command catches its own; this is the safety net
        sys.stderr.write(terminal_safe(f"error: {exc}") + "\n")
        return EXIT_ERROR
    except Exception as exc:
        return _internal_error(exc)


def _strip_validator_prefix(exc: BaseException) -> None:
    """Drop pydantic's ``"Value error, "`` from a usage error's message, in place.

    Typer checks option values with pydantic and shows its first error's text as is:
    ``Invalid value for '--budget': Value error, 'fast' is not one of …``.
    """
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        exc.message = message.removeprefix("Value error, ")  # type: ignore[attr-defined]


def _run_typer(argv: list[str] | None) -> int:
    import typer

    from bastion.cli._app import app
    from bastion.cli._common import UsageError

    state["interrupt_said"] = False
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="bastion")
    except UsageError as exc:
        _strip_validator_prefix(exc)
        exc.show(file=sys.stderr)  # type: ignore[attr-defined]
        return EXIT_USAGE
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except BastionError as exc:  # commands catch their own; this is the safety net
        sys.stderr.write(terminal_safe(f"error: {exc}") + "\n")
        return EXIT_ERROR
    except Exception as exc:
        return _internal_error(exc)
    if rv == EXIT_INTERRUPTED and not state["interrupt_said"]:
        # Typer turns Ctrl-C into exit 130 in silence; say it, as `bastion scan` does
        sys.stderr.write("\naborted\n")
    return rv if isinstance(rv, int) else EXIT_OK


def run(argv: list[str] | None = None) -> int:
    """Console-script entry point: maps the CLI framework's usage errors to exit code 4.

    ``bastion [--debug|--verbose] scan …`` runs :func:`bastion.cli.scan_cmd.main` directly (no
    Typer import); anything else goes through the Typer application.
    """
    request = _scan_request(sys.argv[1:] if argv is None else argv)
    state["own_process"] = argv is None
    if argv is None and request is not None:
        # `bastion scan` in its own process: no garbage collection while its modules load (their
        # objects live until exit; a collection there only re-walks them); the scan resumes it,
        # with those objects frozen out of it, before the first file (scan_cmd._resume_gc)
        gc.disable()
        state["gc_paused"] = True
    if argv is None:  # every command: a vanished stderr must not change the exit code
        _guard_stderr()
        _buffer_stdout()  # and no output may be lost without an error
    code: int | None = None
    try:
        code = _run_scan(*request) if request is not None else _run_typer(argv)
        settle()  # the command is done: a Ctrl-C while the process exits changes nothing
    except KeyboardInterrupt:  # one that came as the command returned, past its own handling
        if code is None:
            sys.stderr.write("\naborted\n")
            code = EXIT_INTERRUPTED
        settle()
    if argv is None:
        code = _flush_stdout(code)
        if request is not None:
            _exit_now(code)
        sys.exit(code)
    return code


class _BestEffortStream:
    """A text stream whose write and flush never raise: stderr carries people's output only.

    A closed (``2>&-``), full (``2>/dev/full``) or vanished (``2>&1 | head``) stderr must not
    turn a scan's result into another exit code (an uncaught error there made every scan exit
    1, "findings"). Every other attribute is the wrapped stream's.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _guard_stderr() -> None:
    """Make ``sys.stderr`` best effort (:class:`_BestEffortStream`); a closed one writes nowhere."""
    stream: Any = sys.stderr
    if stream is None:
        import os

        try:
            stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        except OSError:
            return
    if not isinstance(stream, _BestEffortStream):
        sys.stderr = _BestEffortStream(stream)


def _buffer_stdout() -> None:
    """Give an unbuffered stdout (``python -u``, ``PYTHONUNBUFFERED``) a buffered binary layer.

    Unbuffered, ``sys.stdout`` hands each write straight to the file descriptor and ignores
    how much of it the system took: a reader that goes away while a large output is written
    (``bastion scan DIR -f json | head -c 5``) accepts the first 64 KiB of it, the rest is
    dropped, and the command exited 0 (new-user trial). A buffered writer writes until every
    byte is taken or the system says why not (``BrokenPipeError``), which the command then
    reports as output that could not be written (exit 2). Text goes to that writer as it is
    written (``write_through``) and out with each line (``line_buffering``; the commands write
    whole lines and flush what they write). Only in the console script's own process (``run()``
    without ``argv``).
    """
    import io
    import os

    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper) or not isinstance(getattr(out, "buffer", None), io.RawIOBase):
        return
    try:
        raw = io.FileIO(out.fileno(), "w", closefd=False)
    except (OSError, ValueError):
        return
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=out.encoding,
        errors=out.errors,
        newline=None if os.name == "nt" else "\n",  # as Python opens its standard streams
        line_buffering=True,
        write_through=True,
    )


def _flush_stdout(code: int) -> int:
    """Flush stdout before the process exits; return the exit code.

    What is left unwritten there (a reader that went away, a full device) is one error line and
    exit 2 (:func:`_unwritten`), as a failed write is, over a 0, 1 or 3; Python's own exit flush
    would print a traceback and exit 120.
    """
    out = sys.stdout
    try:
        if out is not None and not out.closed:
            out.flush()
    except OSError as exc:
        _unwritten(exc)
        if code in (EXIT_OK, EXIT_FINDINGS, EXIT_NOTHING):
            return EXIT_ERROR
    except (ValueError, AttributeError):  # closed meanwhile, or no stream: nothing to flush
        pass
    return code


def _exit_now(code: int) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without the interpreter's teardown.

    What a normal exit does that anyone could observe is kept, in the same order: waiting for
    non-daemon threads, the ``atexit`` handlers (logging's flush, ``weakref.finalize``, coverage),
    flushing stdout and stderr (a failed flush exits 120, as Python does). What is skipped is
    freeing every module and object one by one (~10 ms after a scan of 1,000 files). Used after
    ``bastion scan`` only, when ``run`` is the console script (never when ``argv`` is given).
    """
    import atexit
    import os

    threading = sys.modules.get("threading")
    if threading is not None:
        main = threading.main_thread()
        for t in threading.enumerate():
            if t is not main and not t.daemon:
                t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = 120  # what Python's own exit does when a standard stream cannot be flushed
    os._exit(code)


def __getattr__(name: str) -> Any:
    """The Typer application's names (``app``, commands, helpers), loaded on first use."""
    if name == "_skip_pydantic_plugins":
        from bastion.cli.scan_cmd import _skip_pydantic_plugins

        return _skip_pydantic_plugins
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("bastion.cli._app"), name)


if __name__ == "__main__":  # pragma: no cover
    run()
