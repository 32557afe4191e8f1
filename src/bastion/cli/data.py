"""``bastion data``: profile, validate, register, verify and sanitise datasets (issue 8).

Machine output (JSON) goes to stdout or ``--output``; the human summary to stderr. Exit codes:
0 done; 1 violations or changes found (``validate``, ``verify``); 2 errors (unreadable file,
unknown dataset, store unreachable, and a file whose columns do not match the profile: a column the
profile does not know, a missing column or label column — every violation is still listed — a
file with no data row, and a ``--against`` file that is not a profile). ``verify`` of a registered
file that was deleted exits 1 (``file-removed``); ``sanitize`` with nothing to remove writes no
version and exits 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._common import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_OK,
    check_output_file,
    err,
    fail,
    path_argument,
    path_option,
    write,
)
from bastion.core.files import same_file, stage_file

data_app = typer.Typer(
    help="Profile, validate, register, verify and sanitise datasets.", no_args_is_help=True
)

Db = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL of the store (else BASTION_DB, else SQLite).")
]
Output = Annotated[Path | None, path_option("--output", "-o", help="Write the JSON output to this file.")]


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


@data_app.command("profile")
def profile_cmd(
    dataset: Annotated[Path, path_argument(help="A .csv or .npz dataset file.")],
    label: Annotated[str | None, typer.Option("--label", help="The label column (class balance).")] = None,
    save: Annotated[
        Path | None, path_option("--save", help="Store the profile here as JSON (next version).")
    ] = None,
    output: Output = None,
) -> None:
    """Learn the dataset's schema and profile (types, ranges, categories, missing, class balance).

    The profile is printed (stdout or --output) first, then saved as the next version; if the
    output cannot be written, nothing is saved (exit 2). A --output file is put in place only
    once the version is saved: a save that fails leaves it as it was.
    """
    from bastion import api
    from bastion.core.errors import BastionError, ConfigError

    where = save or dataset.with_suffix(".profile.json")
    staged: list[Path] = []
    try:
        if output is not None:
            check_output_file(output)  # before profiling: a bad -o must not cost a pass over the data
            if same_file(output, dataset):  # red-team round 28, F1: -o d.csv replaced the dataset
                raise ConfigError(f"--output {output}: is the dataset being profiled; give another file")
            if _is_version_file(output, where):
                raise ConfigError(
                    f"--output {output}: is a saved version of the profile {where}; versions are never "
                    "overwritten (give another file)"
                )

        def emit(p: Any) -> None:
            text = p.model_dump_json(indent=1)
            if output is None or (output.exists() and not output.is_file()):
                write(text, output)  # stdout, /dev/null: written now, as ever
            else:
                staged.append(_stage(text, output))

        # the output first, then the profile is saved: an output that fails (a full disk, a
        # closed stdout) is exit 2 with no new profile version (new-user trial: `> /dev/full`
        # exited 2 and still saved one); an -o file is staged and put in place after the save
        # (red-team round 28, F8: a save that failed left an -o naming a version never saved)
        prof = api.data_profile(dataset, label=label, output=where, emit=emit)
        if staged and output is not None:
            _commit(staged.pop(), output)
    except BastionError as exc:
        fail(exc)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    err.print(
        f"profiled {prof.rows} rows of {dataset}; profile v{prof.version} saved to {where}", highlight=False
    )


def _is_version_file(output: Path, where: Path) -> bool:
    """Whether ``output`` is (or would be) a kept version ``<stem>.v<N>.json`` of the profile ``where``."""
    import re

    if not re.fullmatch(re.escape(where.stem) + r"\.v[0-9]+\.json", output.name):
        return False
    return same_file(output.parent, where.parent) or output.parent.resolve() == where.parent.resolve()


def _stage(text: str, output: Path) -> Path:
    """``text`` written to a new temporary file beside ``output`` (put in place by :func:`_commit`).

    Raises:
        BastionError: the folder or the file cannot be written (nothing is left).
    """
    from bastion.core.errors import BastionError

    try:  # not replace_file's temporary name
        return stage_file(output, text.encode("utf-8"), tag="staged.tmp")
    except OSError as exc:
        raise BastionError(f"{output}: cannot write: {exc.strerror or exc}") from None


def _commit(tmp: Path, output: Path) -> None:
    """Rename the staged ``tmp`` over ``output`` (a symlink there is replaced, never followed).

    Raises:
        BastionError: the rename failed (``tmp`` is removed).
    """
    from bastion.core.errors import BastionError

    try:
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BastionError(f"{output}: cannot write: {exc.strerror or exc}") from None


@data_app.command("validate")
def validate_cmd(
    dataset: Annotated[Path, path_argument(help="The new .csv or .npz file.")],
    against: Annotated[Path, path_option("--against", help="The profile JSON to validate against.")],
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Widen ranges by this share of the span.")
    ] = 0.0,
    output: Output = None,
    show_values: Annotated[
        bool,
        typer.Option("--show-values", help="Also print the offending cell values (may be personal data)."),
    ] = False,
) -> None:
    """List every violation (row, column, rule) of the profile; exit 1 when there is any.

    A file whose columns do not match the profile (``column-unknown``, ``column-missing``,
    ``label-missing``) is bad input: every violation is still listed, then exit 2.
    """
    from bastion import api
    from bastion.core.errors import BastionError

    try:
        violations = api.data_validate(dataset, against, tolerance=tolerance)
    except BastionError as exc:
        fail(exc)
    # cell values may be patient records: only row, column and rule unless asked for
    rows = [{k: val for k, val in v.as_dict().items() if show_values or k != "value"} for v in violations]
    write(_dump({"dataset": str(dataset), "violations": rows}), output)
    for v in violations[:20]:
        row = "-" if v.row is None else str(v.row)
        shown = f"  value {v.value}" if show_values and v.value is not None else ""
        err.print(f"row {row}  column {v.column}  rule {v.rule}{shown}", highlight=False, markup=False)
    err.print(f"{len(violations)} violation(s)", highlight=False)
    structural = [v for v in violations if v.rule in _STRUCTURAL_RULES]
    for v in structural:
        err.print(
            f"error: {dataset}: column {v.column!r}: " + _STRUCTURAL_RULES[v.rule].format(profile=against),
            highlight=False,
            markup=False,
        )
    if structural:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if violations else EXIT_OK)


#: Violations that mean the file does not have the profile's columns (bad input, exit 2).
_STRUCTURAL_RULES = {
    "column-unknown": "not a column of the profile {profile}",
    "column-missing": "missing (the profile {profile} has it)",
    "label-missing": "the label column is missing (the profile {profile} has it)",
}


@data_app.command("register")
def register_cmd(
    dataset: Annotated[Path, path_argument(help="A dataset file or folder.")],
    source: Annotated[str | None, typer.Option("--source", help="Where the data came from.")] = None,
    licence: Annotated[str | None, typer.Option("--licence", "--license", help="Its licence.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Who answers for it.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: file stem).")] = None,
    db: Db = None,
    output: Output = None,
) -> None:
    """Record a content hash of every file, a Merkle root over rows, source, licence and owner.

    Run again on unchanged files, it reuses the latest recorded version and records nothing new.
    """
    from bastion import api
    from bastion.core.errors import BastionError

    try:
        v = api.data_register(dataset, name=name, source=source, licence=licence, owner=owner, db=db)
    except BastionError as exc:
        fail(exc)
    write(_dump({**v.summary(), "reused": v.reused}), output)
    if v.reused:  # the same file again: as `data sanitize` and `harden`, the identical recorded version
        err.print(
            f"identical to the recorded version {v.dataset} v{v.version} "
            f"(merkle root {v.merkle_root[:16]}…): reused it, no new version written",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    files = f"{len(v.files)} files, " if dataset.is_dir() else ""  # a folder: one dataset of them all
    err.print(
        f"registered {v.dataset} v{v.version} ({files}merkle root {v.merkle_root[:16]}…)", highlight=False
    )


@data_app.command("verify")
def verify_cmd(
    dataset: Annotated[Path, path_argument(help="A registered dataset file or folder.")],
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: file stem).")] = None,
    db: Db = None,
    output: Output = None,
) -> None:
    """Name every changed, added or removed file or row since registration; exit 1 on any."""
    from bastion import api
    from bastion.core.errors import BastionError

    try:
        version, changes = api.data_verify(dataset, name=name, db=db)
    except BastionError as exc:
        fail(exc)
    doc = {
        "dataset": version.dataset,
        "version": version.version,
        "id": version.id,
        "ok": not changes,
        "changes": [c.as_dict() for c in changes],
    }
    write(_dump(doc), output)
    for c in changes[:20]:
        err.print(f"{c.kind}: {c.path}" + ("" if c.row is None else f" row {c.row}"), highlight=False)
    err.print(
        f"{version.dataset} v{version.version}: "
        + ("unchanged" if not changes else f"{len(changes)} change(s)"),
        highlight=False,
    )
    raise typer.Exit(EXIT_FINDINGS if changes else EXIT_OK)


@data_app.command("sanitize")
def sanitize_cmd(
    dataset: Annotated[Path, path_argument(help="A .csv or .npz dataset file.")],
    remove: Annotated[
        str, typer.Option("--remove", help="'flagged', row indices (1,5,9) or a .json file of indices.")
    ],
    label: Annotated[str | None, typer.Option("--label", help="Label column (for --remove flagged).")] = None,
    from_report: Annotated[
        Path | None,
        path_option(
            "--from-report",
            help="With --remove flagged: remove the rows the poisoning findings of this Bastion JSON "
            "report list (the report must be for this dataset version).",
        ),
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option("--rule", help="With --from-report: rule-id prefixes to take (default 'poisoning.')."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: file stem).")] = None,
    to: Annotated[Path | None, path_option("--to", help="Where to write the new file.")] = None,
    db: Db = None,
    output: Output = None,
) -> None:
    """Write a new dataset version without the named rows, with lineage to the original.

    Run again with the same rows on the same version, it reuses the identical recorded version
    (its file unchanged) and writes nothing new.
    """
    from bastion import api
    from bastion.core.errors import BastionError

    try:
        dest, new, parent = api.data_sanitize(
            dataset,
            remove=remove,
            label=label,
            name=name,
            output=to,
            db=db,
            from_report=from_report,
            rules=tuple(rule or ("poisoning.",)),
        )
    except BastionError as exc:
        fail(exc)
    if dest is None:  # nothing to remove: no file written, nothing registered
        write(
            _dump(
                {
                    "path": None,
                    "version": None,
                    "parent": parent.id if parent else None,
                    "removed": 0,
                    "reused": False,
                }
            ),
            output,
        )
        why = f" (no {' or '.join(rule or ('poisoning.',))} finding of {from_report} lists a row)"
        err.print(
            f"{dataset}: nothing to remove{why if from_report else ''}, no version written",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_OK)
    doc = {"path": str(dest), "version": new.summary(), "parent": parent.id, "reused": new.reused}
    write(_dump(doc), output)
    removed = len(new.details.get("removed_rows", []))
    if new.reused:  # the same command again: as `harden`, the identical recorded version
        err.print(
            f"identical to the recorded version {new.dataset} v{new.version} ({dest}: the same "
            f"{removed} row(s) removed from v{parent.version}): reused it, no new file or version written",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    err.print(
        f"wrote {dest} ({removed} row(s) removed) as {new.dataset} v{new.version}, parent v{parent.version}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``bastion data …`` to the main app."""
    app.add_typer(data_app, name="data")
