"""``bastion sign``, ``bastion verify`` and ``bastion bom``: model integrity and the ML-BOM.

Exit codes: ``sign`` 0 signed, 2 error; ``verify`` 0 verified, 1 verification failed (a finding:
a changed, added or removed file, a bad or missing signature, a bundle that is not a bundle or
signs a folder where a file is verified), 2 error (missing path or key, a bad key, a model file,
folder, bundle or key that cannot be read, missing extra); ``bom`` 0 written, 2 a model file
could not be scanned, 3 no model file (nothing written: no BOM on stdout or at ``--output``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import (
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_OK,
    check_output_file,
    err,
    fail,
    path_argument,
    path_option,
    settle,
    state,
    write,
)
from bastion.core.errors import BastionError, ConfigError, IntegrityError

_KEY_HELP = "Private key (PEM, elliptic curve) to sign with."
_SIG_HELP = "Signature bundle path (default: PATH.sig beside the file or folder)."


def sign(
    path: Annotated[Path, path_argument(help="Model file or folder.")],
    key: Annotated[Path, path_option("--key", "-k", help=_KEY_HELP)],
    signature: Annotated[Path | None, path_option("--signature", "-s", help=_SIG_HELP)] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            help="Environment variable holding the password of an encrypted key (never the password itself).",
        ),
    ] = None,
) -> None:
    """Sign a model file or folder (OpenSSF model-signing; Sigstore bundle).

    Interrupted (Ctrl-C), it says which of two things happened: no signature was written (the
    bundle, if one was there, is as it was; exit 130), or the bundle was written whole (``signed``,
    exit 0): it is written to a temporary file and renamed into place.
    """
    from bastion import api

    sig = api.signature_path(path, signature)
    try:
        password = None
        if password_env is not None:
            password = os.environ.get(password_env)
            if not password:
                raise ConfigError(f"--password-env {password_env}: the variable is not set")
        # the advice scan runs first: it reads every file, and an interrupt there leaves nothing
        # written (trial 30, L1: after it, Ctrl-C printed "signed" and then "aborted", exit 130)
        unsafe = _unsafe_files(path)
        before = _identity(sig)
        try:
            sig = api.sign_model(path, key=key, signature=signature, password=password)
        except KeyboardInterrupt:
            if _identity(sig) == before:  # the bundle was not renamed into place
                raise
        settle()  # the bundle is in place, whole: from here Ctrl-C changes nothing
    except BastionError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print(
            f"aborted: nothing was signed ({sig} is as it was)", highlight=False, markup=False, soft_wrap=True
        )
        state["interrupt_said"] = True
        raise typer.Exit(EXIT_INTERRUPTED) from None
    err.print(f"signed {path} -> {sig}", highlight=False)
    _warn_unsafe(unsafe)
    raise typer.Exit(EXIT_OK)


def _identity(path: Path) -> tuple[int, ...] | None:
    """What tells a file apart from the one that replaces it (device, inode, size, mtime), or ``None``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unsafe_files(path: Path) -> list[str]:
    """The files under ``path`` that scan as malicious or suspicious (``path (verdict)``).

    Advice only (the signature is made whatever they are): a scan that fails says nothing here
    (``bastion scan`` says why). The scan never loads what it reads.
    """
    from bastion import api

    try:
        scanned = api.scan_models(path, digest=False, records=True)
    except BastionError:
        return []
    return [
        f"{f.path} ({f.verdict.value})"
        for f in scanned.files
        if f.verdict.value in ("malicious", "suspicious")
    ]


def _warn_unsafe(unsafe: list[str]) -> None:
    """Warn when what was just signed scans as malicious or suspicious (the signature still stands).

    A signature attests the bytes, not their safety: a signed payload would pass ``verify`` and
    reach a loader with a valid signature.
    """
    if unsafe:
        names = ", ".join(unsafe[:5])
        more = f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else ""
        err.print(
            f"warning: signed file(s) that scan as unsafe: {names}{more}. A signature attests the "
            "bytes, not their safety: run `bastion scan` before you publish them.",
            highlight=False,
        )


def verify(
    path: Annotated[Path, path_argument(help="Model file or folder.")],
    key: Annotated[Path, path_option("--key", "-k", help="Public key (PEM) to verify with.")],
    signature: Annotated[Path | None, path_option("--signature", "-s", help=_SIG_HELP)] = None,
) -> None:
    """Verify a model against its signature: a changed, added or removed file fails (exit 1)."""
    from bastion import api

    try:
        sig = api.verify_model(path, key=key, signature=signature)
    except IntegrityError as exc:
        from rich.markup import escape

        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(
            f"[bold red]verification failed:[/] {escape(first[:400])}",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FINDINGS) from None
    except BastionError as exc:
        fail(exc)
    err.print(f"verified {path} against {sig}", highlight=False)
    raise typer.Exit(EXIT_OK)


def bom(
    path: Annotated[Path, path_argument(help="Model file or folder.")],
    output: Annotated[Path | None, path_option("--output", "-o", help="Write the BOM to this file.")] = None,
    key: Annotated[
        Path | None,
        path_option(
            "--key",
            "-k",
            help="Public key to verify signatures with (without it a signed file is 'unverified').",
        ),
    ] = None,
    signature: Annotated[Path | None, path_option("--signature", "-s", help=_SIG_HELP)] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Allow your own class (module.Class); repeatable.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Worker processes (0: one per CPU).")] = 1,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Store whose recorded model versions (bastion harden) add their lineage "
            "(default: BASTION_DB, else .bastion/bastion.db when it exists).",
        ),
    ] = None,
) -> None:
    """Write a CycloneDX 1.6 ML-BOM (models with hashes, scan verdicts, signature status; data).

    Model or data: the nearest bastion.yaml (in PATH's folder or above) decides for the files
    it declares (assets, datasets and splits files); otherwise an .npy/.npz of numeric arrays
    named as data (x, y, X_train, splits, indices) is data, and every other file the scanner
    reads is a model. Every file is scanned either way.

    A file that bastion harden recorded as a model version carries its lineage: version,
    the model it was derived from (pedigree.ancestors) and bastion:lineage.* properties.
    No model file under PATH: exit 3 and nothing written.
    """
    from bastion import api
    from bastion.core.settings import load_settings

    try:
        if output is not None:  # before the scan, as scan -o does
            check_output_file(output)
            api.check_report_output(output, [path])
        db_url = load_settings(db_url=db).db_url
        doc, result = api.model_bom(
            path, key=key, signature=signature, allow=allow or [], jobs=jobs, db_url=db_url
        )
    except BastionError as exc:
        fail(exc)
    code = result.exit_code("none")
    if code == EXIT_NOTHING:  # nothing applicable: no BOM at all, not one of data files only (trial)
        err.print(
            f"{path}: no model file (nothing the scanner reads as a model); no ML-BOM written",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(code)
    write(json.dumps(doc, indent=2), output)
    settle()  # the BOM is written: a Ctrl-C from here on changes nothing (trial 30, L1)
    models = sum(1 for c in doc["components"] if c["type"] == "machine-learning-model")
    err.print(f"ML-BOM: {models} model component(s), {len(doc['components']) - models} data", highlight=False)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``sign``, ``verify`` and ``bom`` to the ``bastion`` app."""
    app.command("sign")(sign)
    app.command("verify")(verify)
    app.command("bom")(bom)
