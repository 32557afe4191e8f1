"""The Typer application behind ``bastion``: every command but ``scan``'s own parsing.

Imported only when a command other than ``bastion scan`` runs (or ``bastion --help``), through
:func:`bastion.cli.main.run` or ``bastion.cli.main.app``; ``scan`` here is a passthrough to
:mod:`bastion.cli.scan_cmd`, which holds its one argparse definition.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from bastion import __version__
from bastion.cli import main as entry
from bastion.cli import scan_cmd
from bastion.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_OK,
    BudgetPreset,
    FailOn,
    HistoryFormat,
    ShowFormat,
    allow_option,
    console,
    err,
    fail,
    path_argument,
    path_option,
    state,
    stdout_console,
    write,
)
from bastion.core.errors import BastionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from typer import _click as click

    from bastion import api
    from bastion.core.report import Report
    from bastion.core.settings import Settings


class _LazyGroup(TyperGroup):
    """The ``bastion`` group: builds a command (and imports its module) only when it is used.

    ``bastion scan`` then pays neither for Typer converting every other command's signature nor
    for importing the other commands' modules; ``bastion --help`` still lists every command.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [_command_name(info) for info in _own.registered_commands]
        names += [n for n in entry.LAZY_COMMANDS if n not in names]
        for group in _unlisted_groups():
            names += [n for n in group.commands if n not in names]
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = self.commands.get(cmd_name)
        if cmd is not None:
            return cmd
        for info in _own.registered_commands:
            if _command_name(info) == cmd_name:
                cmd = typer.main.get_command_from_info(
                    info,
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=self.rich_markup_mode,
                )
                break
        else:
            module = entry.LAZY_COMMANDS.get(cmd_name)
            groups = [_module_group(module)] if module in entry.SUBCOMMAND_MODULES else _unlisted_groups()
            cmd = next((g.commands[cmd_name] for g in groups if cmd_name in g.commands), None)
        if cmd is not None:
            clean_help(cmd)
            self.commands[cmd_name] = cmd
        return cmd


#: A line that starts a block of its own in a help text: a list item or an indented line.
_BLOCK_LINE = re.compile(r"^(\s|[-*•] |[0-9]+[.)] )")


def _reflow(text: str) -> str:
    r"""``text`` (a docstring) as the terminal should show it.

    Typer keeps a docstring's single line breaks, so its help broke lines mid-sentence once
    rewrapped to the terminal, and showed reStructuredText's ````literal```` markup raw (trial
    32): each paragraph is joined into one line (a list item or an indented line keeps its own),
    and ````x```` reads ``'x'``. What follows a ``\f`` (Click's cut) is left as it is.
    """
    head, cut, tail = text.partition("\f")
    paragraphs = []
    for para in inspect.cleandoc(head).split("\n\n"):
        lines: list[str] = []
        for line in para.splitlines():
            if lines and not _BLOCK_LINE.match(line):
                lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    out = re.sub(r"``([^`]+)``", r"'\1'", "\n\n".join(paragraphs))
    return out + cut + tail


def clean_help(cmd: click.Command) -> None:
    """Reflow the help of ``cmd`` and, for a group, of every subcommand (:func:`_reflow`)."""
    if cmd.help:
        cmd.help = _reflow(cmd.help)
    for sub in (getattr(cmd, "commands", None) or {}).values():  # a group's (Click's Group)
        clean_help(sub)


def _command_name(info: Any) -> str:
    return str(info.name or typer.main.get_command_name(info.callback.__name__))


_MODULE_GROUPS: dict[str, TyperGroup] = {}


def _module_group(module: str) -> TyperGroup:
    """The commands a subcommand module registers, built on first use (``register(app)`` contract)."""
    if module not in _MODULE_GROUPS:
        sub = typer.Typer(pretty_exceptions_enable=False)
        importlib.import_module(module).register(sub)
        _MODULE_GROUPS[module] = typer.main.get_group(sub)
    return _MODULE_GROUPS[module]


def _unlisted_groups() -> list[TyperGroup]:
    listed = set(entry.LAZY_COMMANDS.values())
    return [_module_group(m) for m in entry.SUBCOMMAND_MODULES if m not in listed]


app = typer.Typer(
    cls=_LazyGroup,
    name="bastion",
    help="Find, fix, guard and prove the security of machine-learning systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


#: The commands defined in this module; converted to Click commands one at a time, on use.
_own = typer.Typer()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Bastion: assess, harden, guard and govern ML systems."""
    entry.configure(debug=debug, verbose=verbose)


@_own.command()
def version() -> None:
    """Print Bastion's version."""
    sys.stdout.write(f"bastion {__version__}\n")


@_own.command(
    help=scan_cmd.SUMMARY,
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def scan(ctx: typer.Context) -> None:
    """A passthrough: ``bastion scan``'s options are defined once, in :mod:`bastion.cli.scan_cmd`."""
    raise typer.Exit(scan_cmd.main(ctx.args))


def _baseline_given(value: str | None) -> str | None:
    """``--baseline ""`` (``--baseline "$BASE_RUN"`` with the variable unset) is a usage error.

    Red-team round 28, F10: it ran without a baseline, silently (every state null).
    """
    if value is not None and not value.strip():
        raise typer.BadParameter("empty; give a run id or 'latest' (or leave --baseline out)")
    return value


@_own.command()
def assess(
    config: Annotated[Path, path_option("--config", "-c", help="The project's bastion.yaml.")] = Path(
        "bastion.yaml"
    ),
    output: Annotated[Path, path_option("--output", "-o", help="Report folder.")] = Path("bastion-report"),
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 on findings at or above this.")
    ] = "medium",  # type: ignore[assignment]
    budget: Annotated[BudgetPreset, typer.Option("--budget", help="Budget preset.")] = BudgetPreset.standard,
    asset: Annotated[str | None, typer.Option("--asset", help="Assess only this asset.")] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this plugin id or prefix; repeatable.")
    ] = None,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="Skip this plugin id or prefix; repeatable.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and what will be skipped; run nothing.")
    ] = False,
    max_time: Annotated[
        float | None, typer.Option("--max-time", help="Seconds for the whole run.", min=1)
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Earlier assess run of this project to compare with: its id, or 'latest' (this "
            "project's newest); a narrowed one (--only/--asset) is compared only within its scope.",
            callback=_baseline_given,
        ),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="SQLAlchemy URL of the store (else BASTION_DB, else SQLite).")
    ] = None,
    allow: Annotated[list[str] | None, allow_option()] = None,
) -> None:
    """Assess every model, dataset and endpoint of a project and write the report."""
    from bastion import api
    from bastion.core.files import check_config_file
    from bastion.core.settings import load_settings, project_db_url

    gate = fail_on.value if isinstance(fail_on, enum.Enum) else str(fail_on)
    paths: dict[str, Path] = {}
    phase: dict[str, bool] = {}
    try:
        # missing, a folder, a FIFO or device, or too large: one clear error before anything runs
        check_config_file(
            config,
            folder_hint=f"give the bastion.yaml file (-c {config / 'bastion.yaml'})",
            missing_hint="use -c PATH, or run `bastion init DIR`",
        )
        err.print(f"using config {config}", highlight=False)
        db = db or project_db_url(config)  # the project's store, wherever the command runs from
        if dry_run:
            db_url = load_settings(db_url=db, budget=budget.value).db_url  # read only: versions to plan
            plan = api.preflight(
                config,
                budget=budget.value,
                asset=asset,
                only=only or [],
                skip=skip or [],
                db_url=db_url,
                allow=allow or [],
            )
            write(json.dumps(plan.to_dict(), indent=2), None)
            _print_plan(plan)
            raise typer.Exit(EXIT_OK if any(i.skip_reason is None for i in plan.items) else EXIT_NOTHING)
        api.check_output_dir(output)
        settings = load_settings(db_url=db, budget=budget.value, max_time=max_time, fail_on=gate)
        report = _run_with_progress(
            config,
            settings,
            asset,
            only or [],
            skip or [],
            baseline,
            _writer(paths, output, gate, config.parent, phase),
            allow or [],
        )
    except BastionError as exc:
        _not_stored(paths, exc)
    except KeyboardInterrupt:
        _interrupted(paths, output, phase, dry_run=dry_run)
    code = _summarise(report, gate)
    _print_baseline(report)
    err.print(
        f"report: {paths['html']} (also report.json, report.sarif, bom.json); run {report.run.id}",
        highlight=False,
    )
    raise typer.Exit(code)


def _print_baseline(report: Report) -> None:
    """Name the run this one was compared with: its id, time and scope, and what was compared.

    New-user trial: ``--baseline latest`` after a run narrowed to ``--only evasion --asset
    digits`` marked every finding "new" and never said which run the baseline was.
    """
    b = report.baseline_run
    if b is None:
        return
    import datetime as dt

    started = b.started if b.started.tzinfo else b.started.replace(tzinfo=dt.UTC)
    when = started.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    scope = f"narrowed: {b.scope.describe()}" if b.scope is not None else "a full run"
    text = f"baseline: run {b.id} of {when}, project {b.project} ({scope})"
    if b.scope != report.run.scope:
        outside = sum(1 for f in report.findings if f.state == "not-in-baseline")
        mine = report.run.scope.describe() if report.run.scope is not None else "a full run"
        text += (
            f"; this run's scope differs ({mine}): findings are compared only where both runs "
            f"checked — {outside} finding(s) outside the baseline's scope are 'not-in-baseline', not 'new'"
        )
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def _print_plan(plan: api.Plan) -> None:
    from rich.table import Table

    table = Table(title=f"plan: {plan.config.project.name} ({plan.budget} budget)")
    for col in ("asset", "check", "will run"):
        table.add_column(col)
    for i in plan.items:
        table.add_row(i.asset, i.check_id, "yes" if i.skip_reason is None else f"skip: {i.skip_reason}")
    # an auditor sees what the project file, and apart from it the command line, let the
    # scanner accept
    captions = []
    allow = plan.config.scan.allow
    if allow:
        captions.append(
            f"scan.allow from the project file: {', '.join(allow)} (your own code only; each "
            "global it lets through is reported as scan.pickle.project-allowed)"
        )
    if plan.scan_allow_cli:
        captions.append(
            f"--allow from the command line: {', '.join(plan.scan_allow_cli)} (not limited to your "
            "own code, the deny-list still wins; each global it lets through is reported as "
            "scan.pickle.user-allowed)"
        )
    if captions:
        table.caption = "\n".join(captions)
    err.print(table)


def _writer(
    paths: dict[str, Path],
    out: Path,
    gate: str,
    project_dir: Path,
    phase: dict[str, bool] | None = None,
) -> Callable[[Report], None]:
    """A ``before_store`` hook: write the report files (into ``paths``) before the run is stored.

    ``phase["writing"]`` is set when the writing starts (so an interruption can say what it left).
    """
    from bastion import api

    def write_files(report: Report) -> None:
        if phase is not None:
            phase["writing"] = True
        paths.update(api.write_outputs(report, out, fail_on=gate, project_dir=project_dir))

    return write_files


def _interrupted(paths: dict[str, Path], out: Path, phase: dict[str, bool], *, dry_run: bool) -> NoReturn:
    """Ctrl-C during ``assess``: one line saying what was interrupted and what it left; exit 130.

    New-user trial: ``assess`` exited 130 silently (``scan`` says "aborted"). The run is stored
    only after the report files are written, so before that nothing changed: no run was stored
    and the report folder is as it was.
    """
    if dry_run:
        text = "interrupted: bastion assess --dry-run stopped; nothing was run or written"
    elif paths:
        text = (
            f"interrupted: bastion assess stopped while storing the run; the report is in {out}/ "
            "but the run may not be stored (`bastion history` lists the stored runs)"
        )
    elif phase.get("writing"):
        text = (
            f"interrupted: bastion assess stopped while writing the report to {out}/ (it may be "
            "incomplete); the run was not stored"
        )
    else:
        text = (
            "interrupted: bastion assess stopped before the run finished; the store (no run "
            f"recorded) and any previous report in {out}/ are untouched"
        )
    err.print(text, highlight=False, markup=False, soft_wrap=True)
    state["interrupt_said"] = True
    raise typer.Exit(EXIT_INTERRUPTED) from None


def _not_stored(paths: dict[str, Path], exc: BastionError) -> NoReturn:
    """Fail with ``exc``; first say where the report files are when they were written (a store error)."""
    if paths:
        also = "also report.json, report.sarif, bom.json"
        err.print(f"report: {paths['html']} ({also}); the run was not stored", highlight=False)
    fail(exc)


def _run_with_progress(
    config: Path,
    settings: Settings,
    asset: str | None,
    only: list[str],
    skip: list[str],
    baseline: str | None,
    before_store: Callable[[Report], None] | None = None,
    allow: list[str] | None = None,
) -> Report:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bastion import api

    with Progress(
        TextColumn("{task.description}", markup=False),  # an asset name is text, not markup
        BarColumn(),
        TimeElapsedColumn(),
        console=console(),
        transient=True,
        disable=not err.is_terminal,
    ) as prog:
        tasks: dict[str, object] = {}

        def on_progress(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = prog.add_task(label, total=1.0)
            prog.update(tasks[label], completed=fraction)  # type: ignore[arg-type]

        return api.assess(
            config,
            settings=settings,
            asset=asset,
            only=only,
            skip=skip,
            baseline=baseline,
            progress=on_progress,
            before_store=before_store,
            allow=allow or [],
        )


#: ``history -n``'s upper bound: ``bastion.store.repository.MAX_LIST_LIMIT`` (not imported here:
#: SQLAlchemy loads only when a command needs the store).
MAX_HISTORY_LIMIT = 1_000_000


@_own.command()
def history(
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store.")] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, max=MAX_HISTORY_LIMIT, help="How many runs (at most 1000000)."),
    ] = 20,
    fmt: Annotated[
        HistoryFormat, typer.Option("--format", "-f", case_sensitive=False, help="Output format.")
    ] = HistoryFormat.table,
) -> None:
    """List stored runs, newest first."""
    from bastion import api

    try:
        runs = api.history(db_url=db, limit=limit)
    except BastionError as exc:
        fail(exc)
    if not runs:  # exit 3 below; say where nothing was found (a typo'd --db looks the same)
        from sqlalchemy.engine import make_url

        from bastion.core.redact import redact_url
        from bastion.core.settings import load_settings, store_hint

        url = make_url(load_settings(db_url=db).db_url)
        where = redact_url(url.render_as_string(hide_password=True))
        db_file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
        missing = bool(db_file) and not Path(str(db_file)).is_file()
        text = (
            f"no runs stored: no database file at {url.database}" if missing else f"no runs stored in {where}"
        )
        hint = store_hint(db)
        err.print(text + (f"; {hint}" if hint else ""), highlight=False, markup=False)
    if fmt == HistoryFormat.json:
        write(json.dumps([r.model_dump(mode="json") for r in runs], indent=2), None)
        raise typer.Exit(EXIT_OK)
    from rich.table import Table

    table = Table(title="runs")
    for col in ("run", "started", "project", "status", "seconds", "max severity"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r.id[:12],
            r.started.strftime("%Y-%m-%d %H:%M:%S"),
            r.project or "",
            r.status,
            f"{r.seconds:.1f}",
            r.max_severity.value if r.max_severity else "-",
        )
    stdout_console().print(table)
    raise typer.Exit(EXIT_OK if runs else EXIT_NOTHING)


@_own.command()
def show(
    run: Annotated[str, typer.Argument(help="Run id, unique prefix, or 'latest'.")],
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store.")] = None,
    fmt: Annotated[
        ShowFormat, typer.Option("--format", "-f", case_sensitive=False, help="Output format.")
    ] = ShowFormat.table,
    output: Annotated[
        Path | None, path_option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    fail_on: Annotated[
        FailOn | None,
        typer.Option(
            "--fail-on",
            help="The gate to state (default: the one the run was made with; medium for a run "
            "stored before Bastion recorded it).",
        ),
    ] = None,
) -> None:
    """Re-render a stored report.

    The gate line (table, HTML, Markdown) uses the run's own --fail-on unless --fail-on is given.
    -f table prints the summary to stderr, or writes it as plain text with -o FILE.
    """
    from bastion import api
    from bastion import report as rep

    try:
        report = api.show(run, db_url=db)
    except BastionError as exc:
        fail(exc)
    if fail_on is not None:
        gate = fail_on.value if isinstance(fail_on, enum.Enum) else str(fail_on)
    else:
        gate = report.run.fail_on or "medium"
    if fmt == ShowFormat.table:
        if output is None:
            _summarise(report, gate)
        else:
            write(_summary_text(report, gate), output)
    else:
        renderers = {
            ShowFormat.json: rep.report_to_json,
            ShowFormat.sarif: rep.report_to_sarif,
            ShowFormat.html: lambda r: rep.report_to_html(r, fail_on=gate),
            ShowFormat.markdown: lambda r: rep.report_to_markdown(r, fail_on=gate),
        }
        write(renderers[fmt](report), output)
    raise typer.Exit(EXIT_OK)


def _summary_text(report: Report, gate: str) -> str:
    """The terminal summary of ``report`` (and its errors) as plain text, for ``show -f table -o``."""
    import io

    from rich.console import Console

    from bastion.report import assessment_summary

    buf = io.StringIO()
    out = Console(file=buf, width=120, no_color=True, color_system=None, highlight=False, emoji=False)
    for renderable in assessment_summary(report, fail_on=gate):
        out.print(renderable)
    for e in report.errors:
        where = f" on {e.asset}" if e.asset else ""
        out.print(f"error: {e.check}{where}: {e.error}: {e.message}", markup=False)
    return buf.getvalue()


@_own.command()
def init(
    directory: Annotated[
        Path, path_argument(help="Project folder to discover models and datasets in.")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing bastion.yaml.")] = False,
) -> None:
    """Write a starter bastion.yaml by discovering model files and datasets."""
    from bastion import api

    try:
        path = api.init_project(directory, force=force)
    except BastionError as exc:
        fail(exc)
    # run from the project folder: the store (.bastion/) and the report folder are made in the
    # working folder, as the README says (new-user trial: the hint led out of it)
    import shlex

    here = path.parent.resolve() == Path.cwd().resolve()  # trial 32: "cd . && bastion assess"
    step = "bastion assess" if here else f"cd {shlex.quote(str(path.parent))} && bastion assess"
    err.print(
        f"wrote {path}; review owners, input specs and splits, then run: {step}",
        highlight=False,
        markup=False,
    )


@_own.command()
def demo(
    directory: Annotated[
        Path | None,
        path_argument(
            help="Where to build the example project.",
            # a "[default: …]" in the help text itself is Rich markup (a tag): it was dropped,
            # leaving "project ." (trial 25/30); Typer prints show_default as the other defaults
            show_default="examples/clinic, or examples/clinic-poisoned with --poisoned",
        ),
    ] = None,
    run_assess: Annotated[
        bool, typer.Option("--assess/--no-assess", help="Run the assessment after building.")
    ] = True,
    budget: Annotated[BudgetPreset, typer.Option("--budget", help="Budget preset.")] = BudgetPreset.standard,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store.")] = None,
    poisoned: Annotated[
        bool,
        typer.Option("--poisoned", help="Plant a BadNets backdoor in the digits training data and retrain."),
    ] = False,
) -> None:
    """Build the clinic example (if absent) and assess it with --fail-on none."""
    from bastion import api

    try:
        cfg = api.build_demo(directory, force=force, poisoned=poisoned)
    except BastionError as exc:
        fail(exc)
    err.print(f"example project: {cfg}", highlight=False)
    if not run_assess:
        raise typer.Exit(EXIT_OK)
    from bastion.core.settings import load_settings, project_db_url

    out = cfg.parent / "bastion-report"
    paths: dict[str, Path] = {}
    try:
        settings = load_settings(db_url=db or project_db_url(cfg), budget=budget.value, fail_on="none")
        report = _run_with_progress(
            cfg, settings, None, [], [], None, _writer(paths, out, "none", cfg.parent)
        )
    except BastionError as exc:
        _not_stored(paths, exc)
    code = _summarise(report, "none")
    err.print(f"report: {paths['html']}", highlight=False)
    raise typer.Exit(code)


def _summarise(report: Report, gate: str) -> int:
    """Print the summary and every error of a run to stderr; return its exit code."""
    from rich.markup import escape

    from bastion import api
    from bastion.report import assessment_summary

    for renderable in assessment_summary(report, fail_on=gate):
        err.print(renderable)
    for e in report.errors:
        where = f" on {e.asset}" if e.asset else ""
        err.print(
            f"[red]error[/]: {escape(e.check)}{escape(where)}: {escape(e.error)}: {escape(e.message)}",
            markup=True,
        )
    return api.exit_code(report, gate)
