"""``bastion harden PROCEDURE --asset NAME``: run a defence and record a new model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._common import EXIT_OK, err, fail
from bastion.core.errors import BastionError, ConfigError


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--param {pair!r}: the value is not a YAML scalar or list") from None
    return out


def harden(
    procedure: Annotated[str, typer.Argument(help="Defence id, e.g. pgd-at, trades, dp-train, distill.")],
    asset: Annotated[str, typer.Option("--asset", help="The model asset to harden.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="The project's bastion.yaml.")] = Path(
        "bastion.yaml"
    ),
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Procedure parameter KEY=VALUE; repeatable.")
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Target ε (privacy or perturbation).")
    ] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="Target δ of (ε, δ)-DP.")] = None,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Comma-separated ε values: one version per value.")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store.")] = None,
) -> None:
    """Harden a model (adversarial training, DP-SGD, distillation …) and record it as a new version."""
    from bastion import api
    from bastion.core.settings import load_settings

    try:
        params = _parse_params(param or [])
        if delta is not None:
            params["delta"] = delta
        epsilons: list[float | None] = [epsilon]
        if sweep:
            try:
                epsilons = [float(v) for v in sweep.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"--sweep {sweep!r}: expected comma-separated numbers") from None
            if not epsilons:
                raise ConfigError("--sweep: no value given")
        settings = load_settings(db_url=db)
        curve: list[tuple[float | None, dict[str, Any]]] = []
        for eps in epsilons:
            run_params = dict(params)
            if eps is not None:
                run_params["epsilon"] = eps
            res = api.harden(config, procedure, asset=asset, params=run_params, settings=settings)
            shown = {
                k: v for k, v in res.details.items() if isinstance(v, (int, float, str)) and k != "format"
            }
            err.print(
                f"{res.name}: {res.procedure} → {res.path} (sha256 {res.sha256[:12]}…) {shown}",
                highlight=False,
            )
            curve.append((eps, res.details))
        if sweep:
            _print_curve(curve)
    except BastionError as exc:
        fail(exc)
    err.print(f"assess the new version beside the original with: bastion assess -c {config}", highlight=False)
    raise typer.Exit(EXIT_OK)


def _print_curve(curve: list[tuple[float | None, dict[str, Any]]]) -> None:
    """The privacy/utility curve of a ``--sweep``: per ε, the ε spent and the test accuracy."""
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    table = Table(title="privacy / utility (test accuracy from the hardening run)")
    for col in ("ε target", "ε spent", "δ", "test accuracy", "accuracy cost"):
        table.add_column(col, justify="right")
    original = next(
        (d.get("original_test_accuracy") for _, d in curve if "original_test_accuracy" in d), None
    )
    table.add_row("∞ (original)", "–", "–", fmt(original), "0")
    for eps, d in sorted(curve, key=lambda row: float("inf") if row[0] is None else row[0]):
        table.add_row(
            fmt(eps),
            fmt(d.get("epsilon")),
            fmt(d.get("delta")),
            fmt(d.get("test_accuracy")),
            fmt(d.get("accuracy_cost")),
        )
    err.print(table)


def register(app: typer.Typer) -> None:
    """Add ``bastion harden`` to the CLI."""
    app.command(name="harden")(harden)
