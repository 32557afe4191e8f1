"""``bastion guard``: serve a model behind the guard, fit its artefact, verify its audit log, make keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import EXIT_FINDINGS, EXIT_NOTHING, EXIT_OK, err, fail, write
from bastion.core.errors import BastionError, ConfigError

guard_app = typer.Typer(
    name="guard",
    help="Run the runtime guard in front of a model.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@guard_app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="guard.yaml.")],
    host: Annotated[str | None, typer.Option("--host", help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Port (default from guard.yaml, 8080).")
    ] = None,
) -> None:
    """Serve the model behind every control (uvicorn, loopback by default)."""
    from bastion import api

    try:
        app = api.guard_app(config)
        h, p = api.guard_server_address(config)
    except BastionError as exc:
        fail(exc)
    import uvicorn

    h, p = host or h, port if port is not None else p
    err.print(f"bastion guard: serving on http://{h}:{p} (config {config})", highlight=False)
    try:
        uvicorn.run(app, host=h, port=p, log_level="warning", access_log=False)
    except (OSError, OverflowError) as exc:
        fail(BastionError(f"cannot listen on {h}:{p}: {exc}"))


@guard_app.command("fit")
def fit(
    asset: Annotated[str, typer.Option("--asset", help="The model asset the guard will serve.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the artefact.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="The project's bastion.yaml.")] = Path(
        "bastion.yaml"
    ),
    split: Annotated[str, typer.Option("--split", help="Dataset split to learn from.")] = "train",
) -> None:
    """Learn the input profile and detectors from training data; print the artefact's SHA-256."""
    from bastion import api

    try:
        info = api.guard_fit(config, asset=asset, out=output, split=split)
    except BastionError as exc:
        fail(exc)
    write(json.dumps(info, indent=2), None)
    err.print(f"pin it in guard.yaml: profile: {{path: {output}, sha256: {info['sha256']}}}", highlight=False)
    raise typer.Exit(EXIT_OK)


@guard_app.command("verify-log")
def verify_log(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="guard.yaml (audit.db, chain).")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store.")] = None,
    chain: Annotated[str | None, typer.Option("--chain", help="Chain name (default guard).")] = None,
    head: Annotated[
        str | None, typer.Option("--head", help="Recorded head SEQ:HASH; a shorter chain was truncated.")
    ] = None,
) -> None:
    """Verify the hash-chained audit log: exit 1 if any record was edited, inserted or deleted."""
    from bastion import api

    try:
        expected = None
        if head:
            seq, sep, h = head.partition(":")
            if not sep or not seq.strip().lstrip("-").isdigit():
                raise ConfigError(f"--head {head!r}: expected SEQ:HASH")
            expected = (int(seq), h.strip())
        res = api.guard_verify_log(config, db=db, chain=chain, expected_head=expected)
    except BastionError as exc:
        fail(exc)
    write(json.dumps(res.to_dict(), indent=2), None)
    if res.ok and res.records == 0 and expected is None:
        # an empty or misnamed chain proves nothing: never report it as a pass
        err.print(f"no audit records in chain {chain or '(from config)'}: nothing verified", highlight=False)
        raise typer.Exit(EXIT_NOTHING)
    if res.ok:
        err.print(f"audit chain verified: {res.records} record(s)", highlight=False)
        raise typer.Exit(EXIT_OK)
    err.print(f"audit chain BROKEN: {len(res.problems)} problem(s)", highlight=False)
    for p in res.problems[:10]:
        err.print(f"  {p}", highlight=False, markup=False)
    raise typer.Exit(EXIT_FINDINGS)


@guard_app.command("new-key")
def new_key(
    key_id: Annotated[str, typer.Argument(help="The key's public id.")],
    model: Annotated[list[str] | None, typer.Option("--model", help="Model it may call; repeatable.")] = None,
) -> None:
    """Make an API key: the secret goes to stderr once; stdout gets the guard.yaml entry (salt + hash)."""
    from bastion import api

    try:
        secret, spec = api.guard_new_key(key_id, model or ["*"])
    except (BastionError, ValueError) as exc:
        fail(exc)
    err.print(f"secret for {key_id} (shown once): {secret}", highlight=False)
    write(json.dumps(spec), None)


def register(app: typer.Typer) -> None:
    """Add ``bastion guard`` to the main CLI."""
    app.add_typer(guard_app, name="guard")
