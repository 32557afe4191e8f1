"""``bastion guard``: serve a model behind the guard, fit its artefact, verify its audit log, make keys."""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import (
    EXIT_FINDINGS,
    EXIT_NOTHING,
    EXIT_OK,
    allow_option,
    err,
    fail,
    path_option,
    write,
)
from bastion.core.errors import BastionError, ConfigError

guard_app = typer.Typer(
    name="guard",
    help="Run the runtime guard in front of a model.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def exposure_warning(host: str) -> str | None:
    """What listening on ``host`` exposes, for any address but loopback; ``None`` on loopback.

    Trial 32: ``--host 0.0.0.0`` said nothing, though the guard speaks plain HTTP and every
    client sends its API key with every request.
    """
    import ipaddress

    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return None
    try:
        if ipaddress.ip_address(name).is_loopback:
            return None
    except ValueError:
        pass  # a host name: it may resolve to any interface
    where = "every interface" if name in ("0.0.0.0", "::", "") else f"{host}, off this machine"
    return (
        f"listening on {where} over plain HTTP: API keys (Authorization: Bearer) and requests "
        "travel in clear; put a TLS-terminating proxy (nginx, Caddy, a load balancer) in front "
        "and let it reach the guard on loopback (docs/guard.md)"
    )


@guard_app.command("serve")
def serve(
    config: Annotated[Path, path_option("--config", "-c", help="guard.yaml.")],
    host: Annotated[str | None, typer.Option("--host", help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Port (default from guard.yaml, 8080).")
    ] = None,
    allow: Annotated[list[str] | None, allow_option()] = None,
) -> None:
    """Serve the model behind every control (uvicorn, loopback by default)."""
    from bastion import api

    try:
        app = api.guard_app(config, allow=allow or [])
        h, p = api.guard_server_address(config)
    except BastionError as exc:
        fail(exc)
    import uvicorn

    h, p = host or h, port if port is not None else p
    err.print(f"bastion guard: starting on http://{h}:{p} (config {config})", highlight=False)
    if (warning := exposure_warning(h)) is not None:
        err.print(f"bastion guard: warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if allow:  # what the command line let the model scan accept (not limited to your own code)
        err.print(
            f"bastion guard: the model scan used --allow {', '.join(allow)} from the command line",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    # uvicorn shuts down gracefully on SIGTERM (kill, Docker, Kubernetes) and SIGINT (Ctrl-C),
    # then re-raises the signal under the previous handler: this one turns it into
    # SystemExit(128 + signal), 143 or 130 as a shell reports them, so the finally block below
    # still prints the audit head and a supervisor can tell a stop by signal from a clean exit.
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in stops}
    for s in stops:
        signal.signal(s, _exit_on_signal)
    # requests in flight get half of server.shutdown_timeout to finish; a stalled audit database
    # held them, and the stop, for as long as it stalled (red-team round 27)
    grace = max(1, round(app.state.guard.config.server.shutdown_timeout / 2))
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=h, port=p, log_level="warning", access_log=False, timeout_graceful_shutdown=grace
        )
    )
    try:
        server.run()
    except (OSError, OverflowError) as exc:
        server.started = False
        fail(BastionError(f"cannot listen on {h}:{p}: {exc}"))
    except SystemExit as exc:  # uvicorn exits when it cannot bind; a signal raises 130 / 143
        if server.started or exc.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server.started:  # a head to record only when something was served
            _print_head(app.state.guard.store, config)
        else:
            _close(app.state.guard.store)
    if not server.started:  # uvicorn logged why (address in use, bad host) and returned
        fail(BastionError(f"cannot listen on {h}:{p} (see the error above); nothing was served"))


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _print_head(store: object, config: Path) -> None:
    """Print the audit head on shutdown (whatever stopped the server), then close the store."""
    try:
        seq, head_hash = store.head  # type: ignore[attr-defined]
        err.print(
            f"bastion guard: stopped; audit head {seq}:{head_hash} "
            f"(record it; later: bastion guard verify-log -c {config} --expect-head {seq}:{head_hash})",
            highlight=False,
            markup=False,
            soft_wrap=True,  # one line even in a narrow terminal or a log file: it is pasted and grepped
        )
    finally:
        _close(store)


def _close(store: object) -> None:
    close = getattr(store, "close", None)
    if callable(close):
        close()


@guard_app.command("fit")
def fit(
    asset: Annotated[str, typer.Option("--asset", help="The model asset the guard will serve.")],
    output: Annotated[Path, path_option("--output", "-o", help="Folder for the artefact.")],
    config: Annotated[Path, path_option("--config", "-c", help="The project's bastion.yaml.")] = Path(
        "bastion.yaml"
    ),
    split: Annotated[str, typer.Option("--split", help="Dataset split to learn from.")] = "train",
    honeytokens: Annotated[int, typer.Option("--honeytokens", min=0, help="Honeytoken records to make.")] = 0,
    honeytokens_out: Annotated[
        Path | None, path_option("--honeytokens-out", help="File (.npz/.csv) for the rows to plant.")
    ] = None,
    honeytoken_step: Annotated[
        float | None, typer.Option("--honeytoken-step", help="Value grid (default: the data's).")
    ] = None,
    sign_key: Annotated[
        Path | None, path_option("--sign-key", help="PEM EC private key: sign the artefact into OUTPUT.sig.")
    ] = None,
    pepper_env: Annotated[
        str | None,
        typer.Option(
            "--honeytoken-pepper-env", help="Env variable with a secret pepper for the honeytoken hashes."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing guard artefact in --output and an existing --honeytokens-out file "
            "(never a dataset's).",
        ),
    ] = False,
    allow: Annotated[list[str] | None, allow_option()] = None,
    range_margin: Annotated[
        float,
        typer.Option(
            "--range-margin",
            min=0,
            help="Widen each feature's training [min, max] by this fraction of max - min on each "
            "side; a request with any value outside is refused (422, the field named). Ignored "
            "where bastion.yaml declares input.range.",
        ),
    ] = 0.25,
) -> None:
    """Learn the input profile and detectors from training data; print the artefact's SHA-256."""
    from bastion import api

    try:
        info = api.guard_fit(
            config,
            asset=asset,
            out=output,
            split=split,
            honeytokens=honeytokens,
            honeytokens_out=honeytokens_out,
            honeytoken_step=honeytoken_step,
            sign_key=sign_key,
            honeytoken_pepper_env=pepper_env,
            force=force,
            allow=allow or [],
            range_margin=range_margin,
        )
    except BastionError as exc:
        fail(exc)
    write(json.dumps(info, indent=2), None)
    pin = f"path: {output}, sha256: {info['sha256']}" + (", public_key: <your .pub>" if sign_key else "")
    err.print(f"pin it in guard.yaml: profile: {{{pin}}}", highlight=False, markup=False)
    if honeytokens:
        err.print(
            f"plant the {honeytokens} rows of {honeytokens_out} in the training data; keep that file secret",
            highlight=False,
            markup=False,
        )
    raise typer.Exit(EXIT_OK)


@guard_app.command("honeytokens")
def honeytokens_cmd(
    asset: Annotated[str, typer.Option("--asset", help="The asset whose dataset gets the honeytokens.")],
    out: Annotated[Path, path_option("--out", "-o", help="File (.npz or .csv) for the rows to plant.")],
    config: Annotated[Path, path_option("--config", "-c", help="The project's bastion.yaml.")] = Path(
        "bastion.yaml"
    ),
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many records.")] = 20,
    split: Annotated[str, typer.Option("--split", help="Dataset split they imitate.")] = "train",
    step: Annotated[
        float | None, typer.Option("--step", help="Value grid (default: the data's); tolerance is half.")
    ] = None,
    pepper_env: Annotated[
        str | None, typer.Option("--pepper-env", help="Env variable with a secret pepper for the hashes.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing OUT file (never a dataset's own file).")
    ] = False,
) -> None:
    """Make honeytoken records: rows to plant in the data (OUT), and the guard.yaml block (stdout)."""
    from bastion import api

    try:
        info = api.guard_honeytokens(
            config, asset=asset, out=out, n=count, split=split, step=step, pepper_env=pepper_env, force=force
        )
    except BastionError as exc:
        fail(exc)
    write(json.dumps({"honeytokens": info["honeytokens"]}, indent=2), None)
    err.print(
        f"wrote {info['count']} honeytoken rows to {out}: add them to the training data, keep the file "
        "secret, and put the block above under honeytokens: in guard.yaml",
        highlight=False,
        markup=False,
    )
    raise typer.Exit(EXIT_OK)


@guard_app.command("verify-log")
def verify_log(
    config: Annotated[
        Path | None, path_option("--config", "-c", help="guard.yaml (audit.db, chain).")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store.")] = None,
    chain: Annotated[str | None, typer.Option("--chain", help="Chain name (default guard).")] = None,
    head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            "--head",
            help="A head logged earlier (SEQ:HASH or HASH): fail if it is gone (truncated).",
        ),
    ] = None,
    key_env: Annotated[
        str | None,
        typer.Option(
            "--key-env", help="Env variable with a keyed chain's HMAC key (default: audit.key_env)."
        ),
    ] = None,
) -> None:
    """Verify the hash-chained audit log: exit 1 if any record was edited, inserted or deleted."""
    from bastion import api

    try:
        expected: tuple[int | None, str] | None = None
        if head is not None:
            if not head.strip():
                raise ConfigError(
                    "--expect-head is empty (an unset variable?): give the SEQ:HASH or HASH recorded "
                    "at shutdown, or leave the option out"
                )
            seq, sep, h = head.strip().rpartition(":")
            h = h.strip().lower()
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
                raise ConfigError(f"--expect-head {head!r}: expected SEQ:HASH or HASH (64 hex digits)")
            if sep and not seq.strip().lstrip("-").isdigit():
                raise ConfigError(f"--expect-head {head!r}: SEQ must be an integer")
            expected = (int(seq) if sep else None, h)
        res = api.guard_verify_log(config, db=db, chain=chain, expected_head=expected, key_env=key_env)
    except BastionError as exc:
        fail(exc)
    write(json.dumps(res.to_dict(), indent=2), None)
    if res.ok and res.records == 0 and expected is None:
        # an empty or misnamed chain proves nothing: never report it as a pass
        err.print(f"no audit records in chain {chain or '(from config)'}: nothing verified", highlight=False)
        raise typer.Exit(EXIT_NOTHING)
    if res.ok:
        err.print(f"audit chain verified: {res.records} record(s)", highlight=False)
        if expected is None:  # keyed or not, the newest records can be cut off unseen
            what = (
                "records deleted from the end of the chain are not detected"
                if res.keyed
                else "the chain is not keyed (audit.key_env): whoever can write the database can "
                "recompute the whole chain after an edit, and cut records off its end"
            )
            err.print(
                f"note: no --expect-head was given: {what}; pass the head the guard logs at shutdown",
                highlight=False,
            )
        raise typer.Exit(EXIT_OK)
    err.print(f"audit chain BROKEN: {len(res.problems)} problem(s)", highlight=False)
    for p in res.problems[:10]:
        err.print(f"  {p}", highlight=False, markup=False)
    raise typer.Exit(EXIT_FINDINGS)


@guard_app.command("new-key")
def new_key(
    key_id: Annotated[str, typer.Argument(help="The key's public id.")],
    model: Annotated[list[str] | None, typer.Option("--model", help="Model it may call; repeatable.")] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="When the key stops working: ISO 8601 with a timezone (2027-03-01T00:00:00Z) "
            "or a lifetime in days from now (90d).",
        ),
    ] = None,
) -> None:
    """Make an API key: the secret goes to stderr once; stdout gets the guard.yaml entry (salt + hash)."""
    from bastion import api

    try:
        until = _expiry(expires) if expires is not None else None
        secret, spec = api.guard_new_key(key_id, model or ["*"], expires=until)
    except (BastionError, ValueError) as exc:
        fail(exc)
    if until is not None and until <= dt.datetime.now(dt.UTC):
        err.print(
            f"warning: --expires {expires} is in the past: this key is refused from the start",
            highlight=False,
        )
    # the entry first: a secret shown for a line that could not be written (stdout full or
    # closed) is a key that was never stored (new-user trial 30, L8)
    try:
        write(json.dumps(spec), None)
    except BastionError as exc:
        fail(exc)
    err.print(f"secret for {key_id} (shown once): {secret}", highlight=False)


def _expiry(text: str) -> dt.datetime:
    """``--expires``: an ISO 8601 time with a timezone, or ``<N>d`` days from now (UTC).

    Raises:
        typer.BadParameter: anything else, or a time without a timezone (usage error, exit 4).
    """
    t = text.strip()
    if t.endswith("d") and t[:-1].isdigit() and int(t[:-1]) > 0:
        try:
            return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=int(t[:-1]))
        except OverflowError:
            raise typer.BadParameter(f"{text!r} is past the year 9999", param_hint="--expires") from None
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO 8601 time nor a number of days like 90d", param_hint="--expires"
        ) from None
    if when.tzinfo is None:
        hint = "add one, e.g. Z or +02:00"
        raise typer.BadParameter(f"{text!r} has no timezone; {hint}", param_hint="--expires")
    return when


def register(app: typer.Typer) -> None:
    """Add ``bastion guard`` to the main CLI."""
    app.add_typer(guard_app, name="guard")
