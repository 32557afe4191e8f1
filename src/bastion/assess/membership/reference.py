"""Reference ("shadow") models trained by the target's own recipe, batched, seeded and cached.

LiRA and RMIA compare the target with models trained the same way on data with and
without each audited record. The training procedure is the user's: a function named in
``bastion.yaml`` as ``package.module:name`` (``checks.membership.lira.params.recipe``).
A recipe trains ``K`` models at once and returns their probabilities on the query records:

.. code-block:: python

    def recipe(x, y, masks, query, *, seeds) -> np.ndarray:
        # x: (N, *input_shape) float32, y: (N,) int64 — the pool the references draw from
        # masks: (K, N) bool — model k trains on x[masks[k]]
        # query: (Q, *input_shape) float32 — the records to score
        # seeds: (K,) int64 — model k's seed (init and batch order)
        # returns (K, Q, C) float probabilities

Recipes should vectorise over ``K`` (``torch.func.functional_call`` + ``vmap`` over stacked
parameters; see :mod:`bastion.examples.clinic_recipes`). An :class:`Executor` splits the ``K``
models into chunks: :class:`LocalExecutor` runs them in this process, :class:`PoolExecutor`
in a process pool; any object with the same ``map`` (e.g. a Ray wrapper) fits. Outputs are
cached under ``<project>/.bastion/cache/`` keyed by the recipe (its reference and source
hash), the data, the masks and the seeds — as ``.npz`` (no pickle) plus a JSON sidecar that
records the npz's SHA-256, checked before every load.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bastion.core.errors import ConfigError, PluginError

log = logging.getLogger(__name__)

#: ``package.module:function``.
RECIPE_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
CACHE_VERSION = 1

Recipe = Callable[..., Any]


def parse_recipe_ref(ref: str, *, where: str = "params.recipe") -> tuple[str, str]:
    """Split ``package.module:name`` into ``(module, name)``.

    Raises:
        ConfigError: ``ref`` is not of that form.
    """
    if not isinstance(ref, str) or not RECIPE_REF.match(ref):
        raise ConfigError(f"{where}: {ref!r} is not a training recipe reference 'package.module:function'")
    from bastion.core.project_trust import model_class_problem

    if problem := model_class_problem(ref, field=where):  # before any import (red-team round 33)
        raise ConfigError(f"{where}: {problem}")
    mod, _, name = ref.partition(":")
    return mod, name


def load_recipe(ref: str, *, where: str = "params.recipe") -> Recipe:
    """Import the recipe function ``ref`` (``package.module:function``).

    Raises:
        ConfigError: bad reference, module not importable, name missing or not callable.
    """
    mod_name, name = parse_recipe_ref(ref, where=where)
    try:
        mod = importlib.import_module(mod_name)
    except (Exception, SystemExit) as exc:  # a module that exits when imported must not end the run
        raise ConfigError(
            f"{where}: cannot import module {mod_name!r} of recipe {ref!r} ({type(exc).__name__}: {exc})"
        ) from None
    fn = getattr(mod, name, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"{where}: module {mod_name!r} has no callable {name!r}")
    return fn


def recipe_fingerprint(ref: str) -> str:
    """SHA-256 of the recipe reference and its module's source (editing the recipe invalidates caches)."""
    mod_name, _ = parse_recipe_ref(ref)
    h = hashlib.sha256(ref.encode())
    try:
        src = inspect.getsource(importlib.import_module(mod_name))
        h.update(src.encode())
    except (Exception, SystemExit):  # load_recipe reports the module; the fingerprint only hashes it
        pass
    return h.hexdigest()


# -- executors -----------------------------------------------------------------------------
class Executor(Protocol):
    """Runs reference-model chunks; ``map(fn, items)`` returns ``[fn(*item) for item in items]`` in order."""

    def map(self, fn: Callable[..., np.ndarray], items: Sequence[tuple[Any, ...]]) -> list[np.ndarray]:
        """Apply ``fn`` to every argument tuple, keeping order."""
        ...


class LocalExecutor:
    """Run every chunk in this process, one after another (the recipe vectorises within a chunk)."""

    def map(self, fn: Callable[..., np.ndarray], items: Sequence[tuple[Any, ...]]) -> list[np.ndarray]:
        """Apply ``fn`` to every argument tuple, in order."""
        return [fn(*item) for item in items]


class PoolExecutor:
    """Run chunks in a ``concurrent.futures`` process pool (``spawn``); ``fn`` must be importable.

    Args:
        workers: processes; defaults to the CPU count.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers

    def map(self, fn: Callable[..., np.ndarray], items: Sequence[tuple[Any, ...]]) -> list[np.ndarray]:
        """Apply ``fn`` to every argument tuple in worker processes, in order."""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(fn, *item) for item in items]
            return [f.result() for f in futures]


def _run_chunk(
    ref: str, x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    """Import the recipe by reference and run it on one chunk (module-level: picklable for pools)."""
    fn = load_recipe(ref)
    out = np.asarray(fn(x, y, masks, query, seeds=seeds), dtype=np.float64)
    if out.ndim != 3 or out.shape[0] != len(masks) or out.shape[1] != len(query):
        raise PluginError(
            f"recipe {ref}: returned shape {out.shape}, expected ({len(masks)}, {len(query)}, classes)"
        )
    return out


#: A preflight trial trains one model on at most this many records per class …
TRIAL_PER_CLASS = 2
#: … and at most this many records in all, and scores this many.
TRIAL_MAX, TRIAL_QUERY = 40, 2
#: Trial outcomes by recipe fingerprint + trial data (``None``: it ran), so that a recipe is tried
#: once per process however many checks and points preflight it.
_TRIALS: dict[str, str | None] = {}


def trial_recipe(ref: str, x: np.ndarray, y: np.ndarray, *, where: str = "params.recipe") -> str | None:
    """Run the recipe once on a handful of records (one model): its run-time errors, before the real run.

    Preflight of LiRA / RMIA (and of the checks that run them): a recipe that imports but raises
    when called — a wrong signature, a shape it cannot take, a bug — is reported in one line
    naming the recipe and the exception, before any reference model trains. The trial trains a
    single model (seed 0) on up to :data:`TRIAL_PER_CLASS` records of every class (at most
    :data:`TRIAL_MAX`) and scores :data:`TRIAL_QUERY` of them; its output must be ``(1, Q, C)``
    finite probabilities. The global numpy and torch random states are restored afterwards.

    Args:
        ref: the recipe, ``package.module:function`` (already importable: :func:`load_recipe`).
        x: ``(N, *input_shape)`` records the reference models would train on.
        y: ``(N,)`` their labels.
        where: the config location named in the message.

    Returns:
        ``None`` when the trial ran, else the one-line problem.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    rows = np.sort(
        np.concatenate([np.flatnonzero(y == c)[:TRIAL_PER_CLASS] for c in np.unique(y)])[:TRIAL_MAX]
        if len(y)
        else np.zeros(0, dtype=np.int64)
    )
    if len(rows) == 0:
        return None  # nothing to train on: the attacks' own preflight reports the missing data
    xs, ys = x[rows], y[rows]
    h = hashlib.sha256(recipe_fingerprint(ref).encode())
    h.update(xs.tobytes())
    h.update(ys.tobytes())
    key = h.hexdigest()
    if key in _TRIALS:
        return _TRIALS[key]
    import sys

    np_state = np.random.get_state()
    torch = sys.modules.get("torch")
    torch_state = torch.random.get_rng_state() if torch is not None else None
    problem: str | None = None
    try:
        out = _run_chunk(
            ref, xs, ys, np.ones((1, len(rows)), dtype=bool), xs[:TRIAL_QUERY], np.zeros(1, np.int64)
        )
        if not np.all(np.isfinite(out)):
            problem = "returned non-finite probabilities"
    except Exception as exc:  # the user's code: any exception is the finding
        msg = " ".join(str(exc).split())
        problem = f"{type(exc).__name__}: {msg[:300]}" if msg else type(exc).__name__
    finally:
        np.random.set_state(np_state)
        if torch is not None and torch_state is not None:
            torch.random.set_rng_state(torch_state)
    if problem is not None:
        problem = (
            f"{where}: training recipe {ref} failed on a trial run (1 model, {len(rows)} records): {problem}"
        )
    _TRIALS[key] = problem
    return problem


# -- cache ---------------------------------------------------------------------------------
def cache_key(
    ref: str, x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, seeds: np.ndarray
) -> str:
    """The cache key: SHA-256 over the recipe fingerprint and every input array (dtype, shape, bytes)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    h.update(recipe_fingerprint(ref).encode())
    for arr in (x, y, masks, query, seeds):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_cached(cache_dir: Path, key: str) -> np.ndarray | None:
    meta_p, npz_p = cache_dir / f"refs-{key[:32]}.json", cache_dir / f"refs-{key[:32]}.npz"
    if not meta_p.is_file() or not npz_p.is_file():
        return None
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
        data = npz_p.read_bytes()
        if meta.get("key") != key or hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            log.warning("reference cache %s does not match its record; retraining", npz_p.name)
            return None
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return np.asarray(z["proba"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("reference cache %s unreadable (%s); retraining", npz_p.name, exc)
        return None


def _store_cached(cache_dir: Path, key: str, proba: np.ndarray, meta: dict[str, Any]) -> None:
    import io

    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, proba=np.asarray(proba, dtype=np.float64))
    data = buf.getvalue()
    stem = cache_dir / f"refs-{key[:32]}"
    for suffix, payload in (
        (".npz", data),
        (".json", json.dumps({**meta, "key": key, "npz_sha256": hashlib.sha256(data).hexdigest()}).encode()),
    ):
        tmp = stem.with_name(f".{stem.name}{suffix}.{os.getpid()}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, stem.with_suffix(suffix))


@dataclass
class ReferenceOutputs:
    """Reference models' probabilities on the query records.

    Attributes:
        proba: ``(K, Q, C)`` float64.
        seconds: training + prediction seconds (0 when cached).
        cached: read from the cache.
        key: the cache key.
    """

    proba: np.ndarray
    seconds: float
    cached: bool
    key: str


def reference_outputs(
    ref: str,
    x: np.ndarray,
    y: np.ndarray,
    masks: np.ndarray,
    query: np.ndarray,
    *,
    seed: int,
    cache_dir: Path | None = None,
    executor: Executor | None = None,
    chunk_size: int | None = None,
) -> ReferenceOutputs:
    """Train ``K = len(masks)`` reference models by recipe ``ref``; their probabilities on ``query``.

    Model ``k`` gets seed ``seed * 1_000_003 + k`` whatever the chunking, so results do not
    depend on how models are split across workers.

    Args:
        ref: the recipe, ``package.module:function``.
        x: ``(N, *input_shape)`` pool inputs.
        y: ``(N,)`` pool labels.
        masks: ``(K, N)`` bool, model ``k`` trains on ``x[masks[k]]``.
        query: ``(Q, *input_shape)`` records to score.
        seed: base seed.
        cache_dir: where to cache (``None``: no cache).
        executor: how chunks run (default :class:`LocalExecutor`).
        chunk_size: models per chunk (default all in one).

    Returns:
        :class:`ReferenceOutputs`.

    Raises:
        ConfigError: bad recipe reference.
        PluginError: the recipe failed or returned the wrong shape.
    """
    load_recipe(ref)  # validate before hashing / training
    masks = np.asarray(masks, dtype=bool)
    k_models = len(masks)
    seeds = np.asarray([seed * 1_000_003 + k for k in range(k_models)], dtype=np.int64)
    key = cache_key(ref, x, y, masks, query, seeds)
    if cache_dir is not None:
        hit = _load_cached(cache_dir, key)
        if hit is not None and hit.shape[:2] == (k_models, len(query)):
            log.info("reference models: cache hit %s", key[:12])
            return ReferenceOutputs(proba=hit, seconds=0.0, cached=True, key=key)
    size = chunk_size or k_models
    items = [(ref, x, y, masks[i : i + size], query, seeds[i : i + size]) for i in range(0, k_models, size)]
    t0 = time.monotonic()
    try:
        parts = (executor or LocalExecutor()).map(_run_chunk, items)
    except (ConfigError, PluginError):
        raise
    except Exception as exc:
        raise PluginError(f"training recipe {ref} failed: {type(exc).__name__}: {exc}") from exc
    proba = np.concatenate(parts, axis=0)
    seconds = time.monotonic() - t0
    if cache_dir is not None:
        _store_cached(
            cache_dir,
            key,
            proba,
            {
                "recipe": ref,
                "models": k_models,
                "query": len(query),
                "seconds": round(seconds, 3),
                "seed": seed,
            },
        )
    return ReferenceOutputs(proba=proba, seconds=seconds, cached=False, key=key)
