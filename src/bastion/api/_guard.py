"""The runtime guard's use-cases (issue 7)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bastion.api._assessing import _build_target, _load_datasets, allow_entries, gate_scan, scan_allowed
from bastion.api._history import _store_exists
from bastion.api._plugins import loads_file
from bastion.api._scanning import _refuse_failed_signature, sign_model
from bastion.core.config import load_config
from bastion.core.errors import ConfigError
from bastion.core.redact import redact_url
from bastion.core.scanning import Verdict

log = logging.getLogger(__name__)


def guard_fit(
    config: str | Path,
    *,
    asset: str,
    out: str | Path,
    split: str = "train",
    honeytokens: int = 0,
    honeytokens_out: str | Path | None = None,
    honeytoken_step: float | None = None,
    sign_key: str | Path | None = None,
    seed: int | None = None,
    honeytoken_pepper_env: str | None = None,
    force: bool = False,
    allow: Sequence[str] = (),
    range_margin: float | None = None,
) -> dict[str, Any]:
    """Fit the guard's artefact (input profile, OOD detector, query sketch, output reference).

    The asset's dataset split (``train``) is the reference; the model (scanned, judged
    ``safe`` and hash-checked, as in :func:`assess`) gives the output reference. Written
    without pickle (``profile.npz`` + ``profile.json``).

    Args:
        config: the project's ``bastion.yaml``.
        asset: the model asset the guard will serve.
        out: the artefact folder.
        split: the dataset split to learn from.
        honeytokens: honeytoken records to make (0: none); their keyed hashes go into the
            artefact, their rows into ``honeytokens_out`` for the data owner to plant.
        honeytokens_out: file (``.npz`` or ``.csv``) for the rows; required with ``honeytokens``.
        honeytoken_step: value grid of the tokens (default: the data's own grid, per feature
            where features differ, see :func:`bastion.guard.canary.data_steps`); matching
            tolerance is half of it.
        honeytoken_pepper_env: environment variable holding a secret pepper mixed into the
            honeytokens' HMAC key; only the name goes into the artefact, and the guard needs
            the same variable set to serve.
        sign_key: PEM EC private key; the artefact folder is then signed (:func:`sign_model`)
            into ``<out>.sig``.
        seed: honeytoken randomness (tests only; default from the OS).
        range_margin: each feature's accepted range is its training [min, max] widened by this
            fraction of max − min on each side (``None``: ``DEFAULT_RANGE_MARGIN``, 0.25);
            ignored where the asset declares ``input.range``. Recorded in the artefact
            (``meta.range_margin``) and returned.
        force: replace a guard artefact already in ``out`` and an existing ``honeytokens_out``
            (never a dataset's own file).
        allow: allow-list additions for the model scan, as :func:`~bastion.api.assess`'s
            (``bastion guard fit --allow``): not limited to your own code; no entry allows a
            deny-listed callable.

    Returns:
        ``{"path", "sha256", "rows", "asset", "range_margin"}`` (``range_margin`` ``None``:
        the asset's declared ``input.range`` is used) (+ ``honeytokens``, ``signature``, and
        ``scan_allowed``: each global of the model file that only an allow-list addition, yours
        or the project file's, let through): pin ``sha256`` in ``guard.yaml`` (``profile.sha256``).

    Raises:
        ConfigError: unknown asset, no dataset or split, or too little data; a malformed
            ``allow`` entry; ``honeytokens``
            without ``honeytokens_out``, or ``honeytokens_out`` a dataset's file, or existing
            without ``force``; ``out`` a file, a folder of other files, or an artefact without
            ``force``.
        IntegrityError: the model file is not judged safe or changed after scanning.
    """
    from bastion.core.errors import IntegrityError
    from bastion.guard.profile import fit_profile, save_profile

    allow = allow_entries(allow)
    from bastion.guard.profile import DEFAULT_RANGE_MARGIN

    if range_margin is None:
        range_margin = DEFAULT_RANGE_MARGIN
    if not isinstance(range_margin, int | float) or not 0 <= range_margin < float("inf"):
        raise ConfigError(f"--range-margin must be a finite number >= 0, got {range_margin!r}")
    if honeytokens and honeytokens_out is None:
        raise ConfigError("--honeytokens needs --honeytokens-out FILE (the rows to plant in the data)")
    path = Path(config)
    cfg = load_config(path)
    base = path.resolve().parent
    if honeytokens and honeytokens_out is not None:
        _honeytokens_dest(honeytokens_out, cfg, base, force=force)  # before any work is done
    replaced_tokens = _artefact_dest(Path(out), force=force)  # before any work is done
    a = cfg.asset(asset)
    if not a.dataset:
        raise ConfigError(f"asset {asset!r} names no dataset to fit the guard on")
    if a.input is None or a.num_classes is None:
        raise ConfigError(f"asset {asset!r}: input.shape and num_classes are needed to fit the guard")
    datasets = _load_datasets(cfg, base, [a])
    ds = datasets[a.dataset]
    if split not in ds.splits:
        raise ConfigError(f"dataset {a.dataset!r} has no split {split!r}")
    x = ds.splits[split].x
    facts: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if loads_file(a) and a.path:  # whatever its framework (none: the loader picks one by the file's suffix)
        fr = gate_scan(base / a.path, cfg, allow)
        if fr.verdict != Verdict.SAFE:
            raise IntegrityError(f"{base / a.path}: the scanner judged it {fr.verdict.value}; not loading it")
        _refuse_failed_signature(cfg, base, a, sha256=fr.sha256)  # as assess: a bad signature stops it
        facts["scan_sha256"] = fr.sha256
        if scan_allowed(fr):  # what an allow-list addition let through, in the command's output
            extra["scan_allowed"] = scan_allowed(fr)
    target = _build_target(a, base, facts)
    probs = target.predict_proba(x) if "probabilities" in {c.value for c in target.capabilities} else None
    value_range = tuple(a.input.range) if a.input.range is not None else None
    profile = fit_profile(
        x,
        num_classes=int(a.num_classes),
        probs=probs,
        value_range=value_range,  # type: ignore[arg-type]
        margin=range_margin,
        seed=cfg.seed,
        meta={"asset": a.name, "model_sha256": facts.get("scan_sha256"), "dataset_sha256": ds.sha256},
    )
    if honeytokens:
        assert honeytokens_out is not None
        spec = _guard_make_honeytokens(
            ds,
            split,
            profile,
            n=honeytokens,
            out=honeytokens_out,
            step=honeytoken_step,
            seed=seed,
            pepper_env=honeytoken_pepper_env,
            label=cfg.dataset(a.dataset).label,
        )
        profile.honeytokens = spec.model_dump(exclude_none=True)
        extra["honeytokens"] = {"count": len(spec.tokens), "step": spec.step, "file": str(honeytokens_out)}
    if replaced_tokens and not profile.honeytokens:
        log.warning(
            "%s held %d honeytokens and the new artefact holds none: rows planted in the data no "
            "longer match (fit with --honeytokens to plant new ones)",
            out,
            replaced_tokens,
        )
    try:
        sha = save_profile(profile, out)
    except OSError as exc:
        raise ConfigError(f"--output {out}: cannot write the guard artefact: {exc.strerror or exc}") from None
    if sign_key is not None:
        extra["signature"] = str(sign_model(out, key=sign_key))
    else:
        from bastion.scan.signing import default_signature_path

        stale = default_signature_path(out)
        if stale.is_file():  # an earlier fit's signature, now over other bytes: guard serve would refuse
            stale.unlink()
            extra["removed_stale_signature"] = str(stale)
            log.warning("removed %s: it signed an earlier artefact (fit with --sign-key to sign)", stale)
    extra["range_margin"] = profile.meta.get("range_margin")
    return {"path": str(Path(out)), "sha256": sha, "rows": len(x), "asset": a.name, **extra}


def _artefact_dest(out: Path, *, force: bool) -> int:
    """Check ``guard fit``'s output folder before any work; the honeytokens it would replace.

    A new or empty folder is fine. A folder holding a guard artefact (``profile.json``) is
    replaced only with ``force``: its honeytokens (rows planted in the data match only them)
    and its signature would be lost (new-user trial 30). Any other non-empty folder, or a file,
    is refused.

    Raises:
        ConfigError: a file is in the way, the folder holds something else, or an artefact
            without ``force``.
    """
    import json

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--output {out}: a file is in the way; give a folder for the guard artefact")
    if not out.exists() or not any(out.iterdir()):
        return 0
    try:
        doc = json.loads((out / "profile.json").read_text(encoding="utf-8"))
        tokens = len(doc.get("honeytokens", {}).get("tokens", [])) if isinstance(doc, dict) else -1
        is_artefact = isinstance(doc, dict) and "npz_sha256" in doc and tokens >= 0
    except (OSError, ValueError, AttributeError):
        is_artefact, tokens = False, 0
    if not is_artefact:
        raise ConfigError(
            f"--output {out}: the folder holds files that are not a guard artefact; give a new, empty folder"
        )
    if not force:
        held = f", its {tokens} honeytokens" if tokens else ""
        raise ConfigError(
            f"--output {out}: holds a guard artefact; pass --force to replace it (its pinned SHA-256{held} "
            "and its signature would no longer hold)"
        )
    return tokens


def _source_layout(
    ds: Any, label: str | None, n_features: int
) -> tuple[list[str], str | None, list[str], Any, Any, bool]:
    """How the dataset's own file writes rows, so token rows can be appended to it as they are.

    Returns ``(feature names, label name, columns, x dtype, y dtype, fixed decimals)``.

    Columns: the CSV header's order when it holds exactly the features and the label, else the
    feature names then the label. Dtypes: the npz arrays' own (float32/int64 when unknown).
    """
    import csv
    import io
    import re

    import numpy as np

    names = [str(v) for v in getattr(ds, "feature_names", [])]
    if len(names) != n_features:
        names = [f"f{i}" for i in range(n_features)]
    has_y = getattr(ds, "y", None) is not None
    lab = label or ("label" if has_y else None)
    cols = names + ([lab] if lab else [])
    xdt: Any = np.dtype(np.float32)
    fixed = True
    ydt: Any = np.dtype(np.int64)
    path = Path(getattr(ds, "path", "") or "")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as fh:
                header = [h.strip() for h in next(csv.reader(io.StringIO(fh.readline())), [])]
                sample = [
                    next(csv.reader(io.StringIO(ln)), []) for _, ln in zip(range(2000), fh, strict=False)
                ]
            if sorted(header) == sorted(cols):
                cols = header
            # fixed decimals ("2.40") keep trailing zeros; a shortest-form file ("2.4") has none
            fixed = any(re.search(r"\.\d*0$", c.strip()) for row in sample for c in row)
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                fx = "x" if "x" in keys else None
                if fx is not None and np.issubdtype(z[fx].dtype, np.floating):
                    xdt = z[fx].dtype
                ly = label or "y"
                if has_y and ly in keys and np.issubdtype(z[ly].dtype, np.integer):
                    ydt = z[ly].dtype
    except (OSError, ValueError, StopIteration):
        pass  # the defaults: float32 rows, names from the loader
    return names, lab, cols, xdt, ydt, fixed


def _honeytokens_dest(out: str | Path, cfg: Any, base: Path, *, force: bool) -> Path:
    """Where the honeytoken rows may be written: ``out``, checked before any work is done.

    Never a file of one of the project's datasets (the rows are planted in the data by its
    owner, never written over it: red-team round 22 turned a 179-row training set into 6 rows),
    and never an existing file unless ``force``.

    Raises:
        ConfigError: a bad suffix, a folder, a dataset's file, or an existing file without ``force``.
    """
    dest = Path(out)
    if dest.suffix.lower() not in (".npz", ".csv"):
        raise ConfigError(f"{dest}: honeytokens file must end in .npz or .csv")
    if dest.is_dir():
        raise ConfigError(f"{dest}: is a folder; give a .npz or .csv file for the honeytoken rows")
    target = dest.resolve()
    for d in cfg.datasets:
        for rel in (d.path, d.splits_file):
            if rel and (base / rel).resolve() == target:
                raise ConfigError(
                    f"{dest}: is the file of dataset {d.name!r}; write the honeytoken rows to a new file "
                    "and plant them in the data yourself"
                )
    if (dest.exists() or dest.is_symlink()) and not force:
        raise ConfigError(f"{dest}: already exists; pass --force to replace it with the honeytoken rows")
    return dest


def _write_secret(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` with mode 0600, atomically (:func:`bastion.core.files.replace_file`)."""
    from bastion.core.files import replace_file

    try:
        replace_file(dest, data, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"{dest}: cannot write honeytokens: {exc.strerror or exc}") from None


def _guard_make_honeytokens(
    ds: Any,
    split: str,
    profile: Any,
    *,
    n: int,
    out: str | Path,
    step: float | None,
    seed: int | None,
    pepper_env: str | None = None,
    label: str | None = None,
) -> Any:
    """Make ``n`` honeytokens from a dataset split, write their rows to ``out``; their ``HoneytokenSpec``.

    Rows are written like the dataset's own: CSV columns named and ordered as its header (the
    features, then ``label`` — the label column's real name), each feature written with the
    decimals of its grid (``14.23``, ``1065``); npz arrays in the source file's dtypes. No
    value is a negative zero.
    """
    import csv
    import io

    import numpy as np

    from bastion.guard.canary import (
        MAX_HONEYTOKENS,
        data_steps,
        honeytoken_pepper,
        honeytoken_spec,
        make_honeytokens,
        step_decimals,
    )
    from bastion.guard.config import is_env_name

    if n < 1:
        raise ConfigError(f"honeytokens: n must be at least 1, got {n}")
    sp = ds.splits[split]
    x = np.asarray(sp.x, dtype=np.float64)
    cap = min(MAX_HONEYTOKENS, len(x))
    if n > cap:
        raise ConfigError(
            f"honeytokens: n={n} is too many; at most {cap:,} (the split's {len(x):,} rows, "
            f"and never more than {MAX_HONEYTOKENS:,})"
        )
    if pepper_env is not None:
        if not is_env_name(pepper_env):
            raise ConfigError(f"honeytokens: {pepper_env!r} is not an environment variable name")
        honeytoken_pepper(pepper_env)  # set? (fail before anything is written)
    dest = Path(out)
    y = getattr(sp, "y", None)
    st = float(step) if step is not None else data_steps(np.asarray(sp.x))
    if not np.all(np.asarray(st) > 0):
        raise ConfigError(f"honeytokens: step must be positive, got {step}")
    thr = float(profile.ood_threshold)

    def in_dist(t: Any) -> bool:
        return bool(profile.mahalanobis(t[None, :])[0] <= thr)

    rng = np.random.default_rng(seed) if seed is not None else None
    tokens, labels = make_honeytokens(
        x,
        y,
        n=n,
        step=st,
        lo=profile.lo,
        hi=profile.hi,
        categorical=list(profile.categories),
        accept=in_dist,
        rng=rng,
    )
    nf = int(np.prod(tokens.shape[1:]))
    flat = tokens.reshape(len(tokens), nf)
    decs = [step_decimals(float(v)) for v in np.broadcast_to(np.asarray(st, dtype=np.float64), (nf,))]
    for d in sorted(set(decs)):
        idx = [j for j in range(nf) if decs[j] == d]
        flat[:, idx] = np.round(flat[:, idx], d)
    flat += 0.0  # no negative zero (real data has none)
    names, lab, cols, xdt, ydt, fixed = _source_layout(ds, label, nf)
    tokens = flat.reshape(tokens.shape).astype(xdt)  # as the guard and the data hold them
    fh = io.BytesIO()  # the rows are a secret: written at once, mode 0600 (_write_secret)
    if dest.suffix.lower() == ".npz":
        arrays: dict[str, Any] = {"x": tokens}
        if labels is not None:
            arrays["y"] = labels.astype(ydt)
        np.savez(fh, **arrays)
    else:
        pos = {c: i for i, c in enumerate(cols)}
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for i, r in enumerate(flat):
            cells = [""] * len(cols)
            for j, name in enumerate(names):
                cell = f"{r[j]:.{decs[j]}f}"
                if not fixed and "." in cell:
                    cell = cell.rstrip("0").rstrip(".")
                cells[pos[name]] = cell
            if labels is not None and lab is not None:
                cells[pos[lab]] = str(int(labels[i]))
            w.writerow(cells)
        fh.write(buf.getvalue().encode())
    _write_secret(dest, fh.getvalue())
    return honeytoken_spec(tokens, step=st, pepper_env=pepper_env)


def guard_honeytokens(
    config: str | Path,
    *,
    asset: str,
    out: str | Path,
    n: int = 20,
    split: str = "train",
    step: float | None = None,
    seed: int | None = None,
    pepper_env: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Make honeytoken records for a dataset: rows to plant, and the ``guard.yaml`` block that catches them.

    The rows (blends of real rows of one class on the data's value grid) go to ``out``
    (``.npz`` with ``x``/``y``, or ``.csv``; mode 0600): add them to the training data. The
    returned ``honeytokens`` block holds only keyed hashes; put it in ``guard.yaml``. Any query
    within ``step / 2`` of a token then raises ``guard.honeytoken.hit`` at once. With
    ``pepper_env``, the HMAC key also holds that variable's secret value (only its name is
    recorded; the guard needs it set to serve).

    Returns:
        ``{"file", "count", "honeytokens": {salt, step, tokens: [{id, hmac}]}}``.

    Raises:
        ConfigError: unknown asset, no dataset or split, bad ``out`` suffix, too little data;
            ``out`` a dataset's file, or existing without ``force`` (which replaces it).
    """
    from bastion.guard.profile import fit_profile

    path = Path(config)
    cfg = load_config(path)
    _honeytokens_dest(out, cfg, path.resolve().parent, force=force)  # before any work is done
    a = cfg.asset(asset)
    if not a.dataset or a.input is None or a.num_classes is None:
        raise ConfigError(f"asset {asset!r}: honeytokens need a dataset, input.shape and num_classes")
    ds = _load_datasets(cfg, path.resolve().parent, [a])[a.dataset]
    if split not in ds.splits:
        raise ConfigError(f"dataset {a.dataset!r} has no split {split!r}")
    value_range = tuple(a.input.range) if a.input.range is not None else None
    prof = fit_profile(ds.splits[split].x, num_classes=int(a.num_classes), value_range=value_range)  # type: ignore[arg-type]
    spec = _guard_make_honeytokens(
        ds,
        split,
        prof,
        n=n,
        out=out,
        step=step,
        seed=seed,
        pepper_env=pepper_env,
        label=cfg.dataset(a.dataset).label,
    )
    return {"file": str(out), "count": len(spec.tokens), "honeytokens": spec.model_dump(exclude_none=True)}


def guard_app(
    config: str | Path, *, clock: Callable[[], float] | None = None, allow: Sequence[str] = ()
) -> Any:
    """The guard's FastAPI app for ``guard.yaml`` (model scanned and profile hash-checked first).

    ``allow``: allow-list additions for the model scan, as :func:`~bastion.api.assess`'s
    (``bastion guard serve --allow``).

    Raises:
        ConfigError, IntegrityError, StoreError, MissingExtraError: see ``bastion.guard.app``;
            ConfigError also for a malformed ``allow`` entry.
    """
    from bastion.guard.app import create_app
    from bastion.guard.config import load_guard_config

    allow = allow_entries(allow)
    cfg = load_guard_config(config)
    return create_app(cfg, clock=clock, allow=allow)


def guard_server_address(config: str | Path) -> tuple[str, int]:
    """``(host, port)`` from ``guard.yaml``'s ``server`` section."""
    from bastion.guard.config import load_guard_config

    cfg = load_guard_config(config)
    return cfg.server.host, cfg.server.port


def guard_verify_log(
    config: str | Path | None = None,
    *,
    db: str | None = None,
    chain: str | None = None,
    expected_head: tuple[int | None, str] | None = None,
    key_env: str | None = None,
) -> Any:
    """Verify the guard's hash-chained audit log (``VerifyResult``: ``ok``, ``problems``, head).

    ``key_env``: the variable holding a keyed chain's HMAC key (default: ``guard.yaml``'s
    ``audit.key_env``).

    ``expected_head``: a head ``(seq or None, hash)`` recorded earlier (logged by the guard on
    shutdown); a chain that no longer holds it was truncated or rewritten.

    The store comes from ``db``, else ``guard.yaml``'s ``audit.db``, else the default store.

    Raises:
        StoreError: the database cannot be reached.
    """
    from bastion.store.audit import AuditLog
    from bastion.store.repository import default_url

    url, name = db, chain
    if config is not None:
        from bastion.guard.config import load_guard_config

        cfg = load_guard_config(config)
        url = url or cfg.audit.db
        name = name or cfg.audit.chain
        key_env = key_env or cfg.audit.key_env
    url = url or default_url()
    if not _store_exists(url):
        raise ConfigError(
            f"no audit database at {redact_url(url)}: nothing to verify (check --db / audit.db)"
        )
    from bastion.guard.config import audit_key

    log_ = AuditLog.open(url, chain=name or "guard", key=audit_key(key_env))
    try:
        return log_.verify(expected_head=expected_head)
    finally:
        log_.close()


def guard_new_key(
    key_id: str, models: Sequence[str] = ("*",), *, expires: dt.datetime | None = None
) -> tuple[str, dict[str, Any]]:
    """A fresh API key and its ``guard.yaml`` entry (salt + HMAC only, JSON types); show the secret once.

    Raises:
        ValueError: a bad key id or model list, or ``expires`` without a timezone.
    """
    from bastion.guard.access import new_key

    secret, spec = new_key(key_id, list(models), expires=expires)
    return secret, spec.model_dump(mode="json")
