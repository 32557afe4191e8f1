"""``bastion scan``: its one command-line definition (standard-library ``argparse``) and its run.

The console script (:func:`bastion.cli.main.run`) sends ``bastion scan …`` here before importing
Typer, so a scan pays only for what it uses (the scanner and one renderer; ``-f json`` renders the
scanner's plain records, so a scan without findings never imports pydantic);
the Typer ``scan`` command is a passthrough to :func:`main`, so ``bastion --help`` still lists it
and ``CliRunner().invoke(app, ["scan", …])`` runs the same code.

Exit codes: 0 clean; 1 findings at or above ``--fail-on``; 2 errors (a file not fully scanned, a
missing path, a bad option file); 3 nothing scannable; 4 usage (``--help``: 0).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bastion.cli._common import (
    ALLOW_HELP,
    ALLOW_METAVAR,
    EXIT_TERMINATED,
    EXIT_USAGE,
    check_output_file,
    cli_path,
    console,
    err,
    print_line,
    settle,
    show_error,
    state,
    stderr_is_terminal,
    write,
)
from bastion.core.errors import BastionError
from bastion.core.severity import FAIL_ON_CHOICES

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: ``bastion scan``'s one-line help (also what ``bastion --help`` lists).
SUMMARY = "Scan model files statically: nothing scanned is imported, unpickled or loaded."

FORMATS = ("table", "json", "sarif")


class _UsageExit(Exception):
    """A usage error (exit 4) or ``--help`` (exit 0) raised out of the parser, code in ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it (``COLUMNS``, stdout, else 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
        if columns > 0:
            return columns
        return os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout with the width given.

    Its default imports ``shutil`` (and the compression modules: ~4 ms) each time a formatter is
    built, as every ``add_argument`` does.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=max(_columns() - 2, 20))


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's exit codes: a usage error exits 4 (argparse's own default is 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"Try '{self.prog} -h' for help.\n\nError: {message}\n")
        raise _UsageExit(EXIT_USAGE)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _UsageExit(status)

    def parse_intermixed_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """argparse's, with an unknown option named as the other commands name it (Click's words).

        Trial 25/30: ``bastion scan --fial-on`` said only "unrecognized arguments: --fial-on";
        ``bastion assess --fial-on`` says "No such option: --fial-on (Possible options: --fail-on)".
        """
        ns, extras = self.parse_known_intermixed_args(args, namespace)
        if extras:
            option = next((a for a in extras if a.startswith("-") and a != "-"), None)
            if option is None:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            import difflib

            name = option.split("=", 1)[0]
            known = sorted(o for o in self._option_string_actions if o.startswith("--"))
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f" (Possible options: {', '.join(close)})" if close else ""
            self.error(f"No such option: {name}{hint}")
        return ns


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not in the range x>=0")
    return value


def _path(text: str) -> Path:
    """A path argument or option (:func:`bastion.cli._common.cli_path`: an empty one is a usage error)."""
    try:
        return cli_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str = "bastion scan") -> argparse.ArgumentParser:
    """``bastion scan``'s command line: the one definition of its options, defaults and help."""
    p = _Parser(
        prog=prog,
        usage="%(prog)s [OPTIONS] [--] PATH [PATH ...]",  # PATH is required (checked in parse())
        description=SUMMARY,
        epilog=(
            "Exit codes: 0 clean; 1 findings at or above --fail-on; 2 errors (a file not fully "
            "scanned, a missing path); 3 nothing scannable; 4 usage."
        ),
        allow_abbrev=False,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "paths", nargs="*", type=_path, metavar="PATH", help="Model files or folders (scanned recursively)."
    )
    p.add_argument(
        "-f", "--format", dest="fmt", choices=FORMATS, default="table", help="Output format (default: table)."
    )
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON_CHOICES,
        default="medium",
        help="Exit 1 on findings at or above this (default: medium).",
    )
    p.add_argument(
        "-o", "--output", type=_path, default=None, metavar="FILE", help="Write the output to this file."
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar=ALLOW_METAVAR,
        help=ALLOW_HELP,
    )
    p.add_argument(
        "-c",
        "--config",
        type=_path,
        default=None,
        metavar="FILE",
        help="bastion.yaml whose scan.allow to use (explicit only).",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=0,
        metavar="N",
        help="Worker processes (0: one per CPU for many files; 1: none) (default: 0).",
    )
    p.add_argument(
        "--rules",
        action="append",
        type=_path,
        default=[],
        metavar="FILE",
        help="Extra rule file (TOML, shipped format); repeatable. Deny wins.",
    )
    p.add_argument(
        "--hash",
        dest="digest",
        action="store_true",
        default=False,
        help="Record each file's SHA-256 (reads every byte; `bom`, `sign` and `assess` always hash).",
    )
    p.add_argument("--no-hash", dest="digest", action="store_false", help="Do not (the default; last wins).")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``bastion scan``'s arguments (options and paths in any order).

    Raises:
        _UsageExit: a usage error (code 4) or ``--help`` (code 0), already printed.
    """
    args = list(argv)
    parser = build_parser()
    # Everything after a `--` is a path, even `-weird.pkl` or `--help` (argparse's intermixed
    # parsing would read those as options): parse what comes before, then append the rest.
    tail: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, tail = args[:cut], args[cut + 1 :]
    ns = parser.parse_intermixed_args(args)
    for text in tail:
        try:
            ns.paths.append(cli_path(text))
        except ValueError as exc:
            parser.error(f"argument PATH: {exc}")
    if not ns.paths:
        parser.error("the following arguments are required: PATH")
    return ns


def main(argv: Sequence[str]) -> int:
    """Run ``bastion scan`` with ``argv`` (the arguments after ``scan``); return the exit code.

    Prints the table (and a one-line summary) on stderr, JSON/SARIF on stdout or ``-o``; a folder
    scan on a terminal shows a progress bar. A scan error (missing path, bad option file) is printed
    as one line and returns its code (2); an unwritable ``-o`` raises
    :class:`~bastion.core.errors.BastionError` (the caller's safety net prints it, exit 2).
    """
    try:
        args = parse(argv)
    except _UsageExit as exc:
        return exc.code
    restore = _skip_pydantic_plugins()
    handled = _stop_on_sigterm()
    try:
        return _scan(args)
    except _Terminated:
        print_line("terminated (SIGTERM): bastion scan stopped; its worker processes were stopped")
        return EXIT_TERMINATED
    finally:
        handled()
        restore()


class _Terminated(BaseException):
    """SIGTERM arrived during the scan (see :func:`_stop_on_sigterm`).

    A ``BaseException``, as ``KeyboardInterrupt`` is: a scanner's ``except Exception`` (a file
    it cannot read is an ``error`` verdict) must not swallow it.
    """


#: Set once the scan's output is written: a SIGTERM then changes nothing.
_settled = {"output": False}


def _stop_on_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into :class:`_Terminated` while the scan runs; return what restores the handler.

    The scan stops as it does on Ctrl-C: its worker processes are killed and reaped (the
    scanner's ``finally``), one line is printed and the exit code is 143. Trial 30, L1: the
    default handler killed the process with no message, and a worker outlived it for about a
    second. Only where SIGTERM has its default handler (a program that set its own keeps it) and
    in the main thread; once the output is written (``_settled``), a SIGTERM is ignored.
    """
    import signal

    def on_sigterm(signum: int, frame: object) -> None:
        if not _settled["output"]:
            raise _Terminated

    _settled["output"] = False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return lambda: None
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        return lambda: None

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def _resume_gc() -> None:
    """Resume the garbage collection :func:`bastion.cli.main.run` paused while modules loaded.

    What exists now (modules, rules, scanners) is frozen first: later collections skip it, and
    forked workers do not copy the pages a collection would write (the pattern of
    :func:`gc.freeze`'s documentation). Saves ~10 million instructions of a ``bastion scan``.
    """
    state["gc_paused"] = False
    gc.freeze()
    gc.enable()


def _scan(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths
    bar: Progress | None = None
    task: TaskID | None = None

    def tick(done: int, total: int, _path: str) -> None:
        # The bar (and its refresh thread) starts with the first result, after any worker
        # processes have been forked.
        nonlocal bar, task
        if bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(
                TextColumn("scanning"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console(),
            )
            bar.start()
            task = bar.add_task("scan", total=total)
        assert task is not None
        bar.update(task, completed=done)

    from bastion import api

    show_bar = any(p.is_dir() for p in paths) and stderr_is_terminal()
    try:
        if args.output is not None:  # before the scan: a long scan must not end in "cannot write"
            check_output_file(args.output)
            api.check_report_output(args.output, paths)
        result = api.scan_models(
            paths,
            allow=args.allow,
            config=args.config,
            rules=args.rules,
            jobs=args.jobs,
            digest=args.digest,
            progress=tick if show_bar else None,
            records=True,  # plain records: JSON renders without importing pydantic
            on_ready=_resume_gc if state["gc_paused"] else None,
        )
    except BastionError as exc:
        return show_error(exc)
    finally:
        if bar is not None:
            bar.stop()
    from bastion import report as rep  # each renderer's module loads on first use

    output: Path | None = args.output
    if args.fmt == "json":
        write(rep.scan_to_json(result), output)
    elif args.fmt == "sarif":
        write(rep.scan_to_sarif(result.to_result(), root=os.getcwd()), output)  # relative to the cwd
    elif output is not None:
        write(rep.scan_to_json(result), output)
    _settled["output"] = True  # the result is written: from here no signal changes the outcome
    settle()
    if args.fmt == "table" and result.files:  # no file: no empty table, the count line says so
        err.print(rep.scan_table(result.to_result()))
    by_verdict: dict[Any, int] = {}  # by verdict, then by its value (an enum's .value is slow)
    for fr in result.files:
        by_verdict[fr.verdict] = by_verdict.get(fr.verdict, 0) + 1
    counts: dict[str, int] = {}
    for verdict, n in by_verdict.items():
        counts[verdict.value] = counts.get(verdict.value, 0) + n
    tally = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "nothing to scan"
    print_line(f"{len(result.files)} file(s): {tally}")
    return result.exit_code(args.fail_on)


def _skip_pydantic_plugins() -> Callable[[], None]:
    """Skip pydantic's plugin discovery for the command (~10-20 ms of start-up).

    Discovery is an entry-point scan, and the import of ``importlib.metadata`` it needs.
    ``bastion scan`` uses pydantic models only as data holders. Sets ``PYDANTIC_DISABLE_PLUGINS``
    (pydantic's own switch) and, while it is set and pydantic's plugin loader has not been
    imported yet, stands in for that loader (:func:`_plugin_loader_stand_in`), whose module-level
    ``importlib.metadata`` import is the costly part. An explicit ``PYDANTIC_DISABLE_PLUGINS``
    (any value, e.g. ``none``) is respected and nothing is touched. Returns the function that
    restores the environment and removes the stand-in (run when the command ends).
    """
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        return lambda: None
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    stand_in = None
    if _PLUGIN_LOADER not in sys.modules:
        stand_in = _plugin_loader_stand_in()
        sys.modules[_PLUGIN_LOADER] = stand_in

    def restore() -> None:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        if stand_in is not None and sys.modules.get(_PLUGIN_LOADER) is stand_in:
            del sys.modules[_PLUGIN_LOADER]

    return restore


#: pydantic's plugin loader (``get_plugins()``, read each time a model's validator is built).
_PLUGIN_LOADER = "pydantic.plugin._loader"


def _plugin_loader_stand_in() -> types.ModuleType:
    """A stand-in for pydantic's plugin loader: no plugins while they are disabled.

    ``get_plugins()`` answers ``()`` while ``PYDANTIC_DISABLE_PLUGINS`` disables every plugin (as
    the real one does); otherwise, and for any other name, it hands over to the real loader
    (imported then, in its place).
    """
    mod = types.ModuleType(_PLUGIN_LOADER, "bastion scan's stand-in for pydantic's plugin loader")

    def real() -> types.ModuleType:
        if sys.modules.get(_PLUGIN_LOADER) is mod:
            del sys.modules[_PLUGIN_LOADER]
        return importlib.import_module(_PLUGIN_LOADER)

    def get_plugins() -> Any:
        if os.environ.get("PYDANTIC_DISABLE_PLUGINS") in ("__all__", "1", "true"):
            return ()
        return real().get_plugins()

    def __getattr__(name: str) -> Any:  # a module's attribute hook (PEP 562)
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    mod.get_plugins = get_plugins  # type: ignore[attr-defined]
    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod
