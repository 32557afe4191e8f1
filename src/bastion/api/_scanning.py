"""Supply chain: scanning model files, signing and verifying them, the ML-BOM (issue 4)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from bastion import __version__
from bastion.core._log import get_logger
from bastion.core.errors import ConfigError

if TYPE_CHECKING:  # the scan path needs none of these at run time (start-up cost of `bastion scan`)
    from bastion.core._scan_records import ScanRecords
    from bastion.core.config import Asset, ProjectConfig
    from bastion.core.findings import Finding
    from bastion.core.report import AssetRecord
    from bastion.core.results import CheckResult
    from bastion.core.scanning import ScanResult
    from bastion.scan.signing import FolderBundles

log = get_logger(__name__)


def scan(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    config: str | Path | None = None,
) -> ScanResult:
    """Scan model files statically; nothing scanned is imported, unpickled or loaded.

    Args:
        paths: a file or folder, or several (folders are walked recursively).
        allow: allow-list additions for the user's own classes (``package.module.Class``);
            never read from the scanned folder.
        config: an explicit ``bastion.yaml`` whose ``scan.allow`` adds to ``allow``.

    Returns:
        One ``FileResult`` per file, with verdict, SHA-256 and findings.

    Raises:
        ScanError: a path does not exist.
        ConfigError: the config file is invalid.
    """
    return scan_models(paths, allow=allow, config=config)


@overload
def scan_models(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = ...,
    config: str | Path | None = ...,
    rules: Sequence[str | os.PathLike[str]] = ...,
    jobs: int = ...,
    progress: Callable[[int, int, str], None] | None = ...,
    digest: bool = ...,
    records: Literal[False] = ...,
    on_ready: Callable[[], None] | None = ...,
) -> ScanResult: ...


@overload
def scan_models(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = ...,
    config: str | Path | None = ...,
    rules: Sequence[str | os.PathLike[str]] = ...,
    jobs: int = ...,
    progress: Callable[[int, int, str], None] | None = ...,
    digest: bool = ...,
    records: Literal[True],
    on_ready: Callable[[], None] | None = ...,
) -> ScanRecords: ...


def scan_models(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    config: str | Path | None = None,
    rules: Sequence[str | os.PathLike[str]] = (),
    jobs: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    digest: bool = True,
    records: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> ScanResult | ScanRecords:
    """:func:`scan` with the scanner's options: extra rule files, worker processes, progress.

    Args:
        paths: a file or folder, or several.
        allow: allow-list additions (never read from the scanned folder).
        config: an explicit ``bastion.yaml`` whose ``scan.allow`` adds to ``allow``.
        rules: extra rule files (TOML, the shipped format; deny always wins).
        jobs: worker processes (1: in process; 0: one per CPU).
        progress: called after each file with ``(done, total, path)``.
        digest: compute SHA-256s (``False`` leaves ``sha256`` empty; faster on large files).
        records: return the scanner's plain records (``ScanRecords``: the same fields as
            ``ScanResult``, no pydantic import for a scan without findings) instead of the model;
            what ``bastion scan`` renders its JSON from.
        on_ready: called once the scanners are loaded, before the first file is scanned and
            before worker processes fork.

    Raises:
        ScanError: a path does not exist.
        ConfigError: the config, an allow entry or a rule file is invalid.
    """
    from bastion.scan.engine import scan_records

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    project_allow: list[str] = []
    if config is not None:
        from bastion.core.config import load_config

        # a project file's entries: only the user's own code (refused otherwise when the file
        # is read), matched as written; ``allow`` (typed by the user) keeps its full power
        project_allow = load_config(config).scan.allow
    if not paths:
        raise ConfigError("no path to scan given")
    found = scan_records(
        [Path(p) for p in paths],
        allow=list(allow),
        project_allow=project_allow,
        rules=rules,
        jobs=jobs,
        progress=progress,
        digest=digest,
        on_ready=on_ready,
    )
    found.bastion_version = __version__
    return found if records else found.to_result()


def check_report_output(output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse a report path (``-o``) that would replace what is being scanned.

    The report must not be one of the input files (``bastion scan m.pkl -o m.pkl`` destroyed the
    model it judged: red-team round 22), nor an existing model file inside an input folder.

    Raises:
        ConfigError: ``output`` is an input file, or a model file in an input folder (named).
    """
    from bastion.scan.base import is_model_name

    out = Path(output)
    where = out.parent.resolve() / out.name  # the path written (a link there is replaced, not followed)
    for given in inputs:
        p = Path(given)
        rp = p.resolve()
        if rp == where or (p.is_file() and where.exists() and where.resolve() == rp):
            raise ConfigError(f"--output {out}: is {p}, which is being scanned; write the report elsewhere")
        if p.is_dir() and where.is_relative_to(rp) and where.exists() and is_model_name(out.name):
            raise ConfigError(
                f"--output {out}: would replace {out.name}, a model file in the scanned folder {p}; "
                "write the report elsewhere"
            )


def sign_model(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
    password: str | None = None,
) -> Path:
    """Sign a model file or folder (OpenSSF model-signing, Sigstore bundle); returns the bundle path.

    ``password`` decrypts an encrypted private key.

    Raises:
        ConfigError: missing path or key, an encrypted key without its password. MissingExtraError:
            ``model-signing`` not installed. IntegrityError: the key was refused.
    """
    from bastion.scan.signing import sign_path

    return sign_path(path, key=key, signature=signature, password=password)


def signature_path(path: str | os.PathLike[str], signature: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`sign_model` writes the bundle: ``signature``, else ``<path>.sig`` beside the model."""
    from bastion.scan.signing import default_signature_path

    return Path(os.fspath(signature)) if signature is not None else default_signature_path(path)


def verify_model(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
) -> Path:
    """Verify a model file or folder against its signature; returns the bundle path.

    Raises:
        IntegrityError: bad or missing signature, a bundle that is not one (or signs a folder
            where a file is given, or the reverse), or a changed, added or removed file (named).
        ConfigError: missing path or key, a bad key, a model file or folder, bundle or key that
            cannot be read. MissingExtraError: ``model-signing`` not installed.
    """
    from bastion.scan.signing import verify_path

    return verify_path(path, key=key, signature=signature).signature


def model_bom(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
    allow: Sequence[str] = (),
    jobs: int = 1,
    db_url: str | None = None,
) -> tuple[dict[str, Any], ScanResult]:
    """A CycloneDX 1.6 ML-BOM of a model file or folder (scans it first).

    With ``db_url``, a file whose SHA-256 is a model version recorded by ``bastion harden`` in
    that store carries its lineage (version, ``pedigree.ancestors``, ``bastion:lineage.*``). A
    SQLite store that does not exist yet adds nothing.

    Returns:
        ``(bom dict, the scan it was built from)``.

    Raises:
        ScanError: the path does not exist.
        ConfigError: ``key`` is missing or not a PEM elliptic-curve public key; ``signature``
            names no file.
        StoreError: ``db_url`` names a database that cannot be read.
    """
    from bastion.scan.bom import build_bom

    if key is not None:  # a key that cannot verify anything is bad input, before the scan
        from bastion.scan.signing import check_public_key

        check_public_key(key)
    if signature is not None:  # so is a named bundle that is not there (never another one in its place)
        from bastion.scan.signing import check_signature_file

        check_signature_file(signature)
    result = scan_models([path], allow=allow, jobs=jobs)
    lineage = _recorded_lineage(db_url, {f.sha256 for f in result.files if f.sha256}) if db_url else {}
    doc = build_bom(
        result,
        root=path,
        key=key,
        signature=signature,
        tool_version=__version__,
        lineage=lineage,
        data_files=_project_data_files(Path(os.fspath(path))),
    )
    return doc, result


def _project_data_files(root: Path) -> set[str]:
    """Real paths of the data files that ``root/bastion.yaml`` declares (``datasets[]``), if any.

    A project's ``.npz`` data set looks like a model file to the scanner; its config says it is
    data. A config that cannot be read is warned about and adds nothing (the BOM is still made).
    """
    cfg_path = root / "bastion.yaml"
    if not root.is_dir() or not cfg_path.is_file():
        return set()
    from bastion.core.config import load_config

    try:
        cfg = load_config(cfg_path)
    except ConfigError as exc:
        log.warning("data sets of %s not used for the BOM: %s", cfg_path, exc)
        return set()
    return {
        os.path.realpath(root / rel)
        for d in cfg.datasets
        for rel in (d.path, d.splits_file)
        if rel is not None
    }


def _recorded_lineage(db_url: str, hashes: set[str]) -> dict[str, Any]:
    """``{sha256: VersionLineage}`` of the recorded model versions among ``hashes`` (oldest first wins)."""
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).is_file():
        return {}  # no store yet (checked before importing SQLAlchemy: `bastion bom` starts fast)
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    if u.get_backend_name() == "sqlite" and (not u.database or not Path(u.database).is_file()):
        return {}
    from bastion.api._planning import lineage_of
    from bastion.store import Store
    from bastion.store.versions import list_versions

    out: dict[str, Any] = {}
    with Store.open(db_url) as st:
        for v in list_versions(st):
            if v.sha256 in hashes and v.sha256 not in out:
                out[v.sha256] = lineage_of(v)
    return out


def _signing_key(cfg: ProjectConfig, base: Path, assets: Sequence[Asset]) -> Path | None:
    """The project's ``signing.public_key`` (resolved), checked in preflight; ``None`` when unset.

    Raises:
        ConfigError: the key file is missing. MissingExtraError: ``model-signing`` is not installed
            while a model file is to be verified.
    """
    if not cfg.signing.public_key:
        return None
    key = base / cfg.signing.public_key
    from bastion.scan.signing import key_file_problem

    problem = key_file_problem(key, private=False, where="signing.public_key:")
    if problem:
        raise ConfigError(problem)
    if any(a.kind == "model" and a.path for a in assets):
        from bastion.core.errors import require

        require("model_signing", "signing")
    return key


def _refuse_failed_signature(cfg: ProjectConfig, base: Path, a: Asset, *, sha256: str | None = None) -> None:
    """Refuse to load ``a``'s file when its signature fails against the project's key.

    ``sha256``: the digest of the bytes that were scanned and will be loaded; the signature must
    sign those bytes. Unsigned files are refused too when ``signing.require`` is on.

    Raises:
        IntegrityError: the signature does not verify, cannot be checked, signs other bytes, or
            is missing while required. ConfigError: the key file is missing.
    """
    if a.kind != "model" or not a.path:
        return
    from bastion.scan.signing import refuse_failed_signature

    refuse_failed_signature(
        base / a.path,
        key=_signing_key(cfg, base, [a]),
        root=base,
        sha256=sha256,
        require_signed=cfg.signing.require,
    )


#: The rule of a model signature that does not verify (reported even by a run narrowed to other checks).
SIGNATURE_FAILED = "scan.signature.verification-failed"


def _signature_check(
    a: Asset,
    path: Path,
    key: Path | None,
    rec: AssetRecord,
    folders: FolderBundles | None = None,
    *,
    sha256: str | None = None,
) -> CheckResult | None:
    """Verify ``<path>.sig`` with ``key``; set ``rec.signature``; the ``scan.signature`` result, if any.

    Without ``<path>.sig``, the bundle of the nearest folder signed as a whole (``models.sig``
    for ``models/``, see ``FolderBundles``) decides when ``folders`` finds one. A failed
    verification is a high finding ``scan.signature.verification-failed``; a model without a
    signature is a low finding ``scan.signature.unsigned`` only when a key is configured. With no
    key and no signature nothing is checked (``None``). ``sha256``: the digest of the bytes the
    scan read; a signature over other bytes (the file changed between the reads) fails.
    """
    from bastion.core.atlas import SUPPLY_CHAIN_MODEL
    from bastion.core.findings import Finding, Location, Threat
    from bastion.core.results import CheckResult
    from bastion.core.severity import Severity
    from bastion.scan.signing import STATUS_WORDS, SignatureStatus, bound_signature, default_signature_path

    ts = time.monotonic()
    sig = default_signature_path(path)
    status: SignatureStatus | None = None
    why: str | None = None
    signed: str | None = None  # the signed SHA-256 of the file, once verified
    if not sig.is_file() and folders is not None:  # a folder of the project signed as a whole?
        status, why, bundle = folders.status_of(path)
        if bundle is None:
            status = None
        else:
            sig = bundle
            signed = folders.signed_digest(path)
    if key is None and not sig.is_file():
        rec.signature = "unsigned"
        return None
    if status is None:
        status, why, signed = bound_signature(path, key=key)
    if status is SignatureStatus.VERIFIED and sha256 is not None and signed != sha256:
        status = SignatureStatus.INVALID
        why = f"{path}: the signed bytes are not the bytes scanned (the file changed while it was checked)"
    if key is None:
        why = f"{sig.name} found but no signing.public_key is configured to verify it"
    # paths in the report are the project's, relative to its folder (as every other path there)
    root = str(path)[: -len(a.path)] if a.path and str(path).endswith(a.path) else ""

    def rel(text: str) -> str:
        return text.replace(root, "") if root and root.endswith(("/", "\\")) else text

    why = rel(why) if why else why
    rec.signature = STATUS_WORDS[status.value]  # type: ignore[assignment]
    rec.signature_detail = why
    if key is None:
        return None
    loc = Location(path=a.path)
    findings: list[Finding] = []
    if status is SignatureStatus.INVALID:
        findings.append(
            Finding(
                rule_id=SIGNATURE_FAILED,
                severity=Severity.HIGH,
                threat=Threat.SUPPLY_CHAIN,
                title="Model signature does not verify: the file changed or the signature is not the key's",
                asset=a.name,
                location=loc,
                evidence={"signature": rel(str(sig)), "key": rel(str(key)), "reason": (why or "")[:1000]},
                atlas=[SUPPLY_CHAIN_MODEL],
                remediation="Restore the signed file, or re-sign it (`bastion sign`) if the change is yours.",
                references=["https://github.com/sigstore/model-transparency"],
            )
        )
    elif status is SignatureStatus.UNSIGNED:
        findings.append(
            Finding(
                rule_id="scan.signature.unsigned",
                severity=Severity.LOW,
                threat=Threat.SUPPLY_CHAIN,
                title="Model file has no signature while the project verifies signatures",
                asset=a.name,
                location=loc,
                evidence={"expected_signature": rel(str(sig))},
                atlas=[SUPPLY_CHAIN_MODEL],
                remediation=f"Sign it: `bastion sign {a.path} --key PRIVATE_KEY`.",
                references=["https://github.com/sigstore/model-transparency"],
            )
        )
    return CheckResult(
        id="scan.signature",
        asset=a.name,
        status="error" if status is SignatureStatus.UNVERIFIED else "ok",
        reason=f"IntegrityError: {why}" if status is SignatureStatus.UNVERIFIED else None,
        metrics={"verified": 1.0 if status is SignatureStatus.VERIFIED else 0.0},
        notes={"signature": rec.signature or "", "signature_path": rel(str(sig))},
        seconds=round(time.monotonic() - ts, 4),
        findings=findings,
    )
