"""The per-request paths written for few rows (Python lists, pooled ids) agree with their definitions."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config

from bastion.guard.access import KeySpec
from bastion.guard.app import Guard, _request_id
from bastion.guard.canary import CanaryWatch, HoneytokenWatch, canary_hash, honeytoken_hmac
from bastion.guard.config import Canary, HoneytokenEntry, HoneytokenSpec
from bastion.guard.profile import Profile


def _random_profile(rng: np.random.Generator, k: int, bins: int, f: int, *, ties: bool) -> Profile:
    edges = np.sort(rng.normal(size=(k, bins)), axis=1)
    if ties:  # repeated edges (a quantile that several rows share)
        edges = np.round(edges, 1)
    a = rng.normal(size=(f, f))
    return Profile(
        input_shape=(f,),
        num_classes=3,
        lo=np.full(f, -10.0),
        hi=np.full(f, 10.0),
        mean=rng.normal(size=f),
        precision=a @ a.T + np.eye(f),
        ood_threshold=1.0,
        proj_mean=rng.normal(size=f),
        components=rng.normal(size=(k, f)),
        comp_scale=np.abs(rng.normal(size=k)) + 0.1,
        bin_edges=edges,
        ref_conf=np.zeros(0),
    )


def _cells_by_searchsorted(profile: Profile, z: np.ndarray) -> np.ndarray:
    """The definition: per component ``searchsorted(edges, v, side="left")``, read as base-b digits."""
    edges = profile.bin_edges
    b = edges.shape[1] + 1
    code = np.zeros(len(z), dtype=np.int64)
    for j in range(z.shape[1]):
        code = code * b + np.searchsorted(edges[j], z[:, j], side="left")
    return code


@pytest.mark.parametrize("seed", range(25))
def test_locate_and_cells_match_embed_and_searchsorted(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, bins, f = int(rng.integers(1, 8)), int(rng.integers(1, 6)), int(rng.integers(2, 16))
    p = _random_profile(rng, k, bins, f, ties=seed % 2 == 0)
    x = rng.normal(size=(int(rng.integers(1, 12)), f)) * 2
    dist, z = p.embed(x)
    got_d, got_z, got_c = p.locate(x)
    np.testing.assert_allclose(got_d, dist, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(got_z), z)  # the same matrix product
    assert got_c == _cells_by_searchsorted(p, z).tolist()
    # values exactly on an edge, and NaN (after every edge, as searchsorted puts it)
    zz = z.copy()
    zz[0, 0] = p.bin_edges[0, 0]
    zz[-1, -1] = np.nan
    np.testing.assert_array_equal(p.cells(zz), _cells_by_searchsorted(p, zz))


def test_cells_of_fewer_components_than_the_profile_use_the_leading_ones() -> None:
    rng = np.random.default_rng(3)
    p = _random_profile(rng, 5, 3, 6, ties=False)
    z = rng.normal(size=(7, 3))
    np.testing.assert_array_equal(p.cells(z), _cells_by_searchsorted(p, z))


def test_canary_and_honeytoken_hits_match_their_hash_functions() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(0, 16, size=(6, 1, 8, 8)), 0).astype(np.float32)
    watch = CanaryWatch(
        [Canary(id="c2", sha256=canary_hash(x[2])), Canary(id="c5", sha256=canary_hash(x[5]))]
    )
    assert watch.hits(x) == ["c2", "c5"]
    assert watch.hits(x[:2]) == []
    salt = "ab" * 16
    spec = HoneytokenSpec(
        salt=salt,
        step=1.0,
        tokens=[HoneytokenEntry(id="ht-0001", hmac=honeytoken_hmac(x[4], salt=salt, step=1.0))],
    )
    ht = HoneytokenWatch([spec], n_features=64)
    near = x.copy()
    near[1] = x[4] + 0.4  # within step / 2 of the token in every feature
    assert ht.hits(near) == [(1, "ht-0001"), (4, "ht-0001")]
    assert ht.hits(x[:3]) == []


def test_request_ids_are_unique_uuid4_hex_and_a_forked_child_draws_its_own() -> None:
    ids = [_request_id() for _ in range(1000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).hex == i for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, _request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    os.close(r)
    os.close(w)
    assert child != _request_id()


class _BrokenOutput(SoftmaxTarget):
    """A model whose output is not a probability table: a NaN/inf in some class, or too few rows."""

    def __init__(self, w: np.ndarray, b: np.ndarray, bad: str) -> None:
        super().__init__(w, b)
        self.bad = bad

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = super()._predict_proba(x)
        if self.bad == "short":
            return p[:-1]
        p[:, {"nan-first": 0, "nan-last": -1, "inf": 4}[self.bad]] = np.inf if self.bad == "inf" else np.nan
        return p


@pytest.mark.parametrize("bad", ["nan-first", "nan-last", "inf", "short"])
def test_a_model_output_with_nan_inf_or_missing_rows_is_a_backend_failure(
    bad: str, keys: dict[str, tuple[str, KeySpec]], target: SoftmaxTarget
) -> None:
    """Never a 200 carrying NaN (a NaN in a later class once slipped past the top-1 label)."""
    sink = MemorySink()
    g = Guard(make_config(keys), target=_BrokenOutput(target.w, target.b, bad), store=sink)
    body = json.dumps({"instances": [[0.0] * 64, [1.0] * 64]}).encode()
    reply = g.handle("digits", {"Authorization": f"Bearer {keys['alice'][0]}"}, body)
    assert reply.headers.get("X-Bastion-Degraded") == "1" and reply.body.get("degraded") is True
    rec = sink.records[-1]
    assert rec["decision"] == "fallback" and rec["reason"] == "backend failed: ValueError"
