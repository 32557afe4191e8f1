"""Regression tests from the audit of the pickle allow-list (allow 1.2.0, deny 1.1.0).

Each test builds a malicious pickle by hand (opcodes; never loaded here) that reaches only
allowed globals, checks that it no longer scans ``safe``, and checks that a legitimately pickled
object of the same kind still does. Three bypasses needed the scanner, not a rule file: a
reference-only global (``call = false``) handed to an allowed helper that calls or instantiates
its argument (``_rebuild_from_type_v2``, ``copyreg._reconstructor``, numpy's ``__generator_ctor``)
counts as called (``GlobalRef.passed_to``), except as the class argument of numpy's rebuilds.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bastion.core.scanning import Verdict
from bastion.scan import scan_file


def _arg(value: object) -> bytes:
    """One value as protocol-2 opcodes, without PROTO and STOP."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _scan(tmp_path: Path, name: str, data: bytes) -> Verdict:
    path = tmp_path / name
    path.write_bytes(data)
    return scan_file(path).verdict


def _memmap_args(path: Path) -> bytes:
    return _arg(str(path)) + _arg("uint8") + _arg("w+") + _arg(0) + _arg((16,))


def test_copyreg_newobj_cannot_build_a_reference_only_memmap(tmp_path: Path) -> None:
    """``copyreg.__newobj__(numpy.memmap, path, 'uint8', 'w+', 0, (16,))`` runs ``memmap.__new__``
    (creates the file) without calling ``numpy.memmap`` itself: it scanned safe. No pickler
    writes ``__newobj__``/``__newobj_ex__`` (protocol 2+ writes NEWOBJ), so both are denied."""
    victim = tmp_path / "victim.dat"
    newobj = b"\x80\x02ccopyreg\n__newobj__\n(cnumpy\nmemmap\n" + _memmap_args(victim) + b"tR."
    fr_path = tmp_path / "newobj.pkl"
    fr_path.write_bytes(newobj)
    fr = scan_file(fr_path)
    assert fr.verdict is Verdict.MALICIOUS
    assert any(f.rule_id == "scan.pickle.denied-global" for f in fr.findings)
    kwargs = _arg((str(victim),)) + _arg({"mode": "w+", "shape": (16,)})
    newobj_ex = b"\x80\x02ccopyreg\n__newobj_ex__\n(cnumpy\nmemmap\n" + kwargs + b"tR."
    assert _scan(tmp_path, "newobj_ex.pkl", newobj_ex) is Verdict.MALICIOUS
    assert not victim.exists()


def test_protocol_0_and_1_pickles_that_use_reconstructor_stay_safe(tmp_path: Path) -> None:
    """Protocol 0/1 rebuild plain objects as ``copyreg._reconstructor(cls, object, None)``."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.arange(8.0).reshape(4, 2), np.arange(4.0))
    for protocol in (0, 1):
        data = pickle.dumps(model, protocol=protocol)
        assert b"_reconstructor" in data
        assert _scan(tmp_path, f"lr{protocol}.pkl", data) is Verdict.SAFE, protocol
    for protocol in (2, 4, 5):  # NEWOBJ / NEWOBJ_EX opcodes, never copyreg.__newobj__
        data = pickle.dumps(model, protocol=protocol)
        assert b"__newobj" not in data
        assert _scan(tmp_path, f"lr{protocol}.pkl", data) is Verdict.SAFE, protocol


def test_a_tensor_subclass_pickled_with_rebuild_from_type_stays_safe(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    t = torch.arange(4.0)
    t.note = "python attribute"  # a tensor with state is pickled via _rebuild_from_type_v2
    path = tmp_path / "t.pt"
    torch.save({"t": t}, path)
    assert scan_file(path).verdict is Verdict.SAFE


def test_rebuild_from_type_v2_cannot_call_a_reference_only_memmap(tmp_path: Path) -> None:
    args = _arg((str(tmp_path / "victim.dat"), "uint8", "w+", 0, (16,)))
    data = (
        b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(cnumpy\nmemmap\ncnumpy\nndarray\n" + args + b"}tR."
    )
    assert _scan(tmp_path, "rebuild.pkl", data) is not Verdict.SAFE


def test_reconstructor_cannot_use_a_reference_only_memmap_as_base(tmp_path: Path) -> None:
    data = (
        b"\x80\x02ccopyreg\n_reconstructor\n(cnumpy\nmemmap\ncnumpy\nmemmap\n"
        + _arg(str(tmp_path / "secret.txt"))
        + b"tR."
    )
    assert _scan(tmp_path, "reconstructor.pkl", data) is not Verdict.SAFE


def test_generator_ctor_cannot_call_a_reference_only_memmap(tmp_path: Path) -> None:
    data = (
        b"\x80\x02cnumpy.random._pickle\n__generator_ctor\n("
        + _arg(str(tmp_path / "secret.txt"))
        + b"cnumpy\nmemmap\ntR."
    )
    assert _scan(tmp_path, "generator.pkl", data) is not Verdict.SAFE


def test_a_pickled_generator_stays_safe(tmp_path: Path) -> None:
    import numpy as np

    for protocol in (2, 5):
        data = pickle.dumps(np.random.default_rng(0), protocol=protocol)
        assert _scan(tmp_path, f"rng{protocol}.pkl", data) is Verdict.SAFE, protocol


def test_a_metaclass_reexported_under_an_allowed_name_cannot_build_classes(tmp_path: Path) -> None:
    """``sklearn.base.ABCMeta`` matched ``allow.sklearn-classes`` (``[A-Z]*``): a pickle could create
    a class at load time. Metaclasses are denied wherever they are re-exported."""
    data = b"\x80\x02csklearn.base\nABCMeta\n" + _arg("X") + b"c__builtin__\nobject\n\x85}\x87R."
    assert _scan(tmp_path, "meta.pkl", data) is Verdict.MALICIOUS
    from sklearn.linear_model import LogisticRegression

    legit = tmp_path / "m.pkl"
    legit.write_bytes(pickle.dumps(LogisticRegression(), protocol=4))
    assert scan_file(legit).verdict is Verdict.SAFE
