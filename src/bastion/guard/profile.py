"""The fitted guard artefact: input profile, OOD detector, query-sketch projection, output reference.

``bastion guard fit`` learns it from the training split and writes a folder with two files,
without pickle:

- ``profile.npz`` — arrays only (``allow_pickle=False`` on load);
- ``profile.json`` — schema version, shapes, scalar settings and the SHA-256 of ``profile.npz``.

The artefact's identity is the SHA-256 of ``profile.json`` (which pins the npz). ``guard.yaml``
records it; :func:`load_profile` refuses a folder whose hashes differ (``IntegrityError``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, IntegrityError

SCHEMA = "bastion.guard.profile/1"
#: ``fit_profile``'s default ``margin`` (``bastion guard fit --range-margin``): a feature's accepted
#: range is its training [min, max] widened by this fraction of max − min on each side. 5 % (the
#: old default) refused real held-out rows (new-user trial 32: 2 of 597 digits test rows, a pixel
#: rarely lit in training); a quarter of the span admits them and still refuses a value far out.
DEFAULT_RANGE_MARGIN = 0.25
_ARRAYS = ("lo", "hi", "mean", "precision", "proj_mean", "components", "comp_scale", "bin_edges", "ref_conf")


@dataclass
class Profile:
    """What the guard knows about normal inputs and outputs.

    Attributes:
        input_shape: one sample's shape.
        num_classes: classes of the model.
        lo, hi: per flat feature, the lowest/highest accepted value ``(F,)``.
        categories: flat feature index → allowed values (integer-valued low-cardinality features).
        mean, precision: Mahalanobis detector (``(F,)``, ``(F, F)``; shrunk covariance inverse).
        ood_threshold: distance above which a row is out of distribution.
        proj_mean, components, comp_scale: PCA projection ``(F,)``, ``(k, F)``, ``(k,)`` for query sketches.
        bin_edges: per component, inner quantile edges ``(k, b-1)`` used to quantise into cells.
        ref_conf: reference top-1 confidences of the model on training data (may be empty).
        meta: free metadata (asset, model SHA-256, created, fitted rows).
        honeytokens: keyed hashes of planted honeytoken records (``HoneytokenSpec`` as a dict;
            empty: none). Part of ``profile.json``, so covered by the artefact hash and signature.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    precision: np.ndarray
    ood_threshold: float
    proj_mean: np.ndarray
    components: np.ndarray
    comp_scale: np.ndarray
    bin_edges: np.ndarray
    ref_conf: np.ndarray
    categories: dict[int, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    honeytokens: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Flat feature count."""
        return int(np.prod(self.input_shape))

    # -- scoring helpers used by the controls ------------------------------------------------
    def mahalanobis(self, x: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each flat row ``(N, F)`` → ``(N,)``."""
        return self.embed(x)[0]

    def project(self, x: np.ndarray) -> np.ndarray:
        """PCA coordinates in units of each component's training std ``(N, k)``."""
        return self.embed(x)[1]

    def embed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mahalanobis distances ``(N,)`` and PCA coordinates ``(N, k)`` of flat rows ``(N, F)``, together.

        Both are linear maps of the row, so one matrix product computes them: with the precision
        matrix factored as ``P = V diag(w) Vᵀ`` (``eigh``; negative round-off eigenvalues
        clipped to 0), ``(x−μ)ᵀ P (x−μ) = ‖(x−μ) V √w‖²``, and the projection is
        ``(x−μ_pca) Cᵀ / s``. The fused ``(F, F+k)`` matrix and offsets are built on first use.
        """
        y, f = self._fused_product(x)
        m = y[:, :f]
        return np.sqrt(np.einsum("nf,nf->n", m, m)), y[:, f:]

    def _fused_product(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Flat rows ``(N, F)`` through the fused map: ``(N, F+k)`` (whitened, then projected), and ``F``."""
        w, off, f = self.__dict__.get("_fused_cache") or self._fused()  # (the cache without a call)
        y = np.asarray(x, dtype=np.float64) @ w
        y -= off
        return y, f

    def _fused(self) -> tuple[np.ndarray, np.ndarray, int]:
        cached = self.__dict__.get("_fused_cache")
        if cached is not None:
            return cached
        prec = np.asarray(self.precision, dtype=np.float64)
        ev, vec = np.linalg.eigh((prec + prec.T) / 2.0)
        half = vec * np.sqrt(np.clip(ev, 0.0, None))  # P = half @ half.T
        proj = np.asarray(self.components, dtype=np.float64).T / np.asarray(self.comp_scale, dtype=np.float64)
        w = np.ascontiguousarray(np.hstack([half, proj]))
        off = np.concatenate([np.asarray(self.mean, dtype=np.float64) @ half, self.proj_mean @ proj])
        out = (w, off, int(half.shape[1]))
        self.__dict__["_fused_cache"] = out
        return out

    def locate(self, flat: np.ndarray) -> tuple[list[float], list[list[float]], list[int]]:
        """Per flat row ``(N, F)``: Mahalanobis distance, PCA coordinates (``k`` floats) and cell code.

        The values of :meth:`embed` and :meth:`cells`, as Python lists: one matrix product for all
        rows, then the few numbers of each row in Python — for the handful of rows of one request
        that is several times cheaper than a chain of numpy calls (each costs microseconds).
        """
        y, f = self._fused_product(flat)
        dist: list[float] = []
        coords: list[list[float]] = []
        codes: list[int] = []
        code = self._cell_code
        for row in y.tolist():
            dist.append(math.hypot(*row[:f]))
            zr = row[f:]
            coords.append(zr)
            codes.append(code(zr))
        return dist, coords, codes

    def cells(self, z: np.ndarray) -> np.ndarray:
        """Quantised cell code (int64) of projected rows ``(N, k)`` → ``(N,)``."""
        rows = np.asarray(z, dtype=np.float64).tolist()
        return np.asarray([self._cell_code(r) for r in rows], dtype=np.int64)

    def _cell_code(self, z: list[float]) -> int:
        """Cell code of one projected row (``k`` floats, ``k`` ≤ the profile's components).

        Per component, the bin is the count of edges strictly below the value
        (``searchsorted(side="left")``; a NaN lies after every edge, as in ``searchsorted``);
        the code is the bins read as the digits of a base-``b`` number (``b`` bins per
        component), the first component the most significant.
        """
        edges = self.__dict__.get("_edge_lists")
        if edges is None:  # sorted per component: the count of edges below a value does not change
            edges = self.__dict__["_edge_lists"] = [sorted(e) for e in np.asarray(self.bin_edges).tolist()]
        b = len(edges[0]) + 1 if edges else 1
        out = 0
        for v, e in zip(z, edges, strict=False):
            out = out * b + (bisect_left(e, v) if v == v else len(e))
        return out


def fit_profile(
    x: np.ndarray,
    *,
    num_classes: int,
    probs: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
    components: int = 6,
    bins: int = 4,
    ood_quantile: float = 0.995,
    margin: float = DEFAULT_RANGE_MARGIN,
    max_categories: int = 12,
    shrinkage: float = 0.1,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> Profile:
    """Learn a :class:`Profile` from training inputs.

    Args:
        x: training inputs ``(N, *input_shape)``, finite.
        num_classes: model classes.
        probs: the model's probabilities on ``x`` ``(N, C)`` (output reference), optional.
        value_range: a declared range for every value (images), used instead of observed ranges.
        components: PCA components of the query-sketch projection.
        bins: quantile bins per component (cells = ``bins ** components``).
        ood_quantile: training quantile of the Mahalanobis distance taken as the OOD threshold.
        margin: observed ranges widen by this fraction of the range (max − min) on each side;
            recorded in ``meta["range_margin"]`` (``None`` with ``value_range``: the declared range).
        max_categories: integer-valued features with at most this many values become categorical.
        shrinkage: covariance shrinkage toward a scaled identity (0–1).
        seed: unused randomness seed (kept for reproducibility records).
        meta: metadata to record.

    Raises:
        ConfigError: too few rows or non-finite values; ``margin`` negative or not finite.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"guard fit: the range margin must be a finite number >= 0, got {margin!r}")
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 10:
        raise ConfigError(f"guard fit: need at least 10 training rows, got {len(x)}")
    if not np.isfinite(x).all():
        raise ConfigError("guard fit: training inputs hold NaN or infinite values")
    shape = tuple(int(d) for d in x.shape[1:])
    flat = x.reshape(len(x), -1)
    n, f = flat.shape
    if value_range is not None:
        lo = np.full(f, float(value_range[0]))
        hi = np.full(f, float(value_range[1]))
    else:
        mn, mx = flat.min(axis=0), flat.max(axis=0)
        span = np.maximum(mx - mn, 1e-6)
        lo, hi = mn - margin * span, mx + margin * span
    cats: dict[int, list[float]] = {}
    for j in range(f):
        col = flat[:, j]
        if np.all(col == np.round(col)):
            vals = np.unique(col)
            if 1 < len(vals) <= max_categories and value_range is None:
                cats[j] = [float(v) for v in vals]
    mean = flat.mean(axis=0)
    cov = np.cov(flat, rowvar=False).reshape(f, f)
    avg = float(np.trace(cov)) / f or 1.0
    cov = (1 - shrinkage) * cov + shrinkage * avg * np.eye(f)
    precision = np.linalg.pinv(cov)
    d = flat - mean
    dist = np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", d, precision, d), 0.0))
    thr = float(np.quantile(dist, ood_quantile))
    k = max(1, min(components, f, n - 1))
    _, _sv, vt = np.linalg.svd(d, full_matrices=False)
    comps = vt[:k]
    z = d @ comps.T
    scale = np.maximum(z.std(axis=0), 1e-9)
    z = z / scale
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.stack([np.quantile(z[:, j], qs) for j in range(k)])
    ref_conf = np.asarray(probs, dtype=np.float64).max(axis=1)[:5000] if probs is not None else np.zeros(0)
    m = dict(meta or {})
    m.setdefault("created", dt.datetime.now(dt.UTC).isoformat())
    m["rows"] = int(n)
    m["seed"] = int(seed)
    m["range_margin"] = None if value_range is not None else float(margin)
    return Profile(
        input_shape=shape,
        num_classes=int(num_classes),
        lo=lo.astype(np.float64),
        hi=hi.astype(np.float64),
        mean=mean,
        precision=precision,
        ood_threshold=thr,
        proj_mean=mean.copy(),
        components=comps,
        comp_scale=scale,
        bin_edges=edges,
        ref_conf=ref_conf,
        categories=cats,
        meta=m,
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_profile(profile: Profile, folder: str | Path) -> str:
    """Write ``profile.npz`` and ``profile.json`` into ``folder`` atomically.

    Returns:
        The artefact SHA-256 (of ``profile.json``) to pin in ``guard.yaml``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    arrays: dict[str, Any] = {name: np.asarray(getattr(profile, name)) for name in _ARRAYS}
    np.savez(buf, **arrays)
    npz = buf.getvalue()
    doc = {
        "schema": SCHEMA,
        "npz_sha256": _sha(npz),
        "input_shape": list(profile.input_shape),
        "num_classes": profile.num_classes,
        "ood_threshold": profile.ood_threshold,
        "categories": {str(k): v for k, v in profile.categories.items()},
        "meta": profile.meta,
    }
    if profile.honeytokens:
        doc["honeytokens"] = profile.honeytokens
    js = json.dumps(doc, sort_keys=True, indent=1).encode("utf-8")
    for name, data in (("profile.npz", npz), ("profile.json", js)):
        tmp = out / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
    return _sha(js)


def profile_sha256(folder: str | Path) -> str:
    """The artefact SHA-256 of a profile folder (of its ``profile.json``)."""
    return _sha((Path(folder) / "profile.json").read_bytes())


def _check_doc(doc: Any, where: Path) -> None:
    """Check ``profile.json``'s structure, so a corrupted file gives one clear error.

    Raises:
        ConfigError: naming ``where`` and the first malformed field.
    """

    def bad(field_: str, want: str) -> ConfigError:
        return ConfigError(f"{where}: malformed guard profile: {field_} must be {want}")

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if not isinstance(doc, dict):
        raise ConfigError(
            f"{where}: malformed guard profile: expected a JSON object, got {type(doc).__name__}"
        )
    if doc.get("schema") != SCHEMA:
        raise ConfigError(f"{where}: schema {doc.get('schema')!r}, expected {SCHEMA}")
    if not isinstance(doc.get("npz_sha256"), str):
        raise bad("npz_sha256", "a hex string")
    shape = doc.get("input_shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise bad("input_shape", "a list of positive integers")
    nc = doc.get("num_classes")
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise bad("num_classes", "a positive integer")
    if not number(doc.get("ood_threshold")):
        raise bad("ood_threshold", "a number")
    cats = doc.get("categories", {})
    if not isinstance(cats, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(v, list) and all(number(x) for x in v)
        for k, v in cats.items()
    ):
        raise bad("categories", "an object of feature index -> list of numbers")
    if not isinstance(doc.get("meta", {}), dict):
        raise bad("meta", "an object")
    ht = doc.get("honeytokens")
    if ht is not None and not isinstance(ht, dict):
        raise bad("honeytokens", "an object (salt, step, tokens)")
    if ht:
        from pydantic import ValidationError

        from bastion.guard.config import HoneytokenSpec

        try:
            HoneytokenSpec.model_validate(ht)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ()))
            raise bad(
                f"honeytokens{'.' + loc if loc else ''}", f"valid ({first.get('msg', 'invalid')})"
            ) from None


def load_profile(folder: str | Path, *, expected_sha256: str | None = None) -> Profile:
    """Load a profile folder after checking its hashes; nothing is unpickled.

    Args:
        folder: the folder ``bastion guard fit`` wrote.
        expected_sha256: the artefact hash pinned in ``guard.yaml`` (checked when given).

    Raises:
        ConfigError: a file is missing or malformed (the file and the field are named: a
            corrupted, unpinned ``profile.json`` is refused with one clear error).
        IntegrityError: ``profile.json`` or ``profile.npz`` does not match its recorded hash.
    """
    p = Path(folder)
    try:
        js = (p / "profile.json").read_bytes()
        npz = (p / "profile.npz").read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read guard profile: {exc}") from None
    if expected_sha256 is not None and _sha(js) != expected_sha256:
        raise IntegrityError(f"{p / 'profile.json'}: SHA-256 {_sha(js)[:12]}… is not the pinned one")
    try:
        doc = json.loads(js)
    except ValueError as exc:
        raise ConfigError(f"{p / 'profile.json'}: not JSON: {exc}") from None
    _check_doc(doc, p / "profile.json")
    if _sha(npz) != doc.get("npz_sha256"):
        raise IntegrityError(f"{p / 'profile.npz'}: SHA-256 does not match profile.json")
    try:
        with np.load(io.BytesIO(npz), allow_pickle=False) as z:
            arrays = {name: np.asarray(z[name]) for name in _ARRAYS}
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{p / 'profile.npz'}: malformed: {exc}") from None
    f = int(np.prod(doc["input_shape"]))
    for name, shape in (
        ("lo", (f,)),
        ("hi", (f,)),
        ("mean", (f,)),
        ("precision", (f, f)),
        ("proj_mean", (f,)),
    ):
        if arrays[name].shape != shape:
            raise ConfigError(
                f"{p / 'profile.npz'}: array {name!r} has shape {arrays[name].shape}, expected {shape} "
                "for the recorded input_shape"
            )
    return Profile(
        input_shape=tuple(int(d) for d in doc["input_shape"]),
        num_classes=int(doc["num_classes"]),
        ood_threshold=float(doc["ood_threshold"]),
        categories={int(k): [float(x) for x in v] for k, v in doc.get("categories", {}).items()},
        meta=dict(doc.get("meta", {})),
        honeytokens=dict(doc.get("honeytokens") or {}),
        **arrays,
    )


def verify_profile_signature(
    folder: str | Path, *, public_key: str | Path | None, signature: str | Path | None = None
) -> Path | None:
    """Check the artefact's OpenSSF model-signing signature before it is used.

    Uses :func:`bastion.scan.signing.verify_path` (the same check as ``bastion verify``).

    Args:
        folder: the artefact folder.
        public_key: the signer's PEM public key (``profile.public_key``); when ``None``, a
            signature must not be present (one that cannot be verified is refused).
        signature: the bundle (default ``<folder>.sig``).

    Returns:
        The verified bundle, or ``None`` when unsigned and no key is required.

    Raises:
        IntegrityError: no signature while a key is required, a bad signature, a changed, added
            or removed file (named), or a signature present with no key to verify it.
        ConfigError: the key is missing or not an EC public key. MissingExtraError: no
            ``model-signing`` (``pip install 'bastion-ml[signing]'``).
    """
    from bastion.scan.signing import default_signature_path, verify_path

    p = Path(folder)
    if not p.exists():
        raise ConfigError(f"{p}: guard profile not found (profile.path; make it with `bastion guard fit`)")
    sig = Path(signature) if signature is not None else default_signature_path(p)
    if public_key is None:
        if sig.is_file():
            raise IntegrityError(
                f"{sig}: the guard artefact {p} is signed but the guard config names no profile.public_key "
                "to verify it with; not serving"
            )
        return None
    if not sig.is_file():
        raise IntegrityError(
            f"{p}: the guard config names profile.public_key but the signature {sig} is missing"
        )
    return verify_path(p, key=public_key, signature=sig).signature
