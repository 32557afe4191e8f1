"""Red-team round 29 (allow-list abuse): each bypass as a generated fixture, and the real objects of
the classes each fix touches (saved by their own libraries) still ``safe``."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
from tests.scan._pickles import G, I, P, S, T

from bastion.scan import scan_file


def _scan(tmp_path: Path, data: bytes, name: str = "model.pkl") -> tuple[str, set[str]]:
    path = tmp_path / name
    path.write_bytes(data)
    res = scan_file(path)
    return res.verdict.value, {f.rule_id for f in res.findings}


def _iface(addr: int = 0x10) -> bytes:
    """``{'shape': (4,), 'typestr': '|O', 'data': (addr, True), 'version': 3}``: numpy reads ``addr``."""
    return (
        b"}("
        + S("shape")
        + T(I(4))
        + S("typestr")
        + S("|O")
        + S("data")
        + T(I(addr), b"\x88")
        + S("version")
        + I(3)
        + b"u"
    )


AI = S("__array_interface__")
BUNCH = G("sklearn.utils._bunch", "Bunch") + b")R"
MODULE = G("torch.nn.modules.linear", "Identity") + b")\x81"  # cls.__new__(cls): as torch.save writes it
ODICT = G("collections", "OrderedDict") + b")R"
NSTR = G("numpy", "str_") + T(AI) + b"R"  # a key built at load time, equal to '__array_interface__'


# -- X2: __array_interface__ served from nested data ---------------------------------------------


def test_x2_bunch_items_and_module_tables_serving_array_interface(tmp_path: Path) -> None:
    # numpy.negative(Bunch() + SETITEMS {'__array_interface__': ...}): Bunch.__getattr__ answers
    # from its items; numpy.negative(Identity BUILD {'_modules': {'__array_interface__': ...}})
    bunch = P(G("numpy", "negative") + b"(" + BUNCH + b"(" + AI + _iface() + b"u" + b"tR")
    state = (
        b"}("
        + S("_modules")
        + b"}("
        + AI
        + _iface()
        + b"u"
        + S("_parameters")
        + b"}"
        + S("_buffers")
        + b"}"
        + S("training")
        + b"\x89u"
    )
    module = P(G("numpy", "negative") + b"(" + MODULE + state + b"b" + b"tR")
    for name, data in (("x2_bunch_objptr.pkl", bunch), ("x2_module_objptr.pkl", module)):
        verdict, rules = _scan(tmp_path, data, name)
        assert verdict == "malicious", (name, rules)
        assert {"scan.pickle.dunder-state", "scan.pickle.dynamic-callable"} <= rules, (name, rules)


_X2_VARIANTS = {
    "bunch-setitem": BUNCH + AI + _iface() + b"s",
    "bunch-key-built-at-load": BUNCH + b"(" + NSTR + _iface() + b"u",
    "module-ordereddict-setitems": MODULE
    + b"}("
    + S("_modules")
    + ODICT
    + b"("
    + AI
    + _iface()
    + b"uu"
    + b"b",
    "module-ordereddict-key-built-at-load": MODULE
    + b"}("
    + S("_modules")
    + ODICT
    + b"("
    + NSTR
    + _iface()
    + b"uu"
    + b"b",
    "module-ordereddict-of-pairs": MODULE
    + b"}("
    + S("_modules")
    + G("collections", "OrderedDict")
    + T(b"](" + S("__len__") + _iface() + b"ta")
    + b"R"
    + b"u"
    + b"b",
    # the nested dict is kept in the memo, and given its key after the BUILD
    "key-put-after-build": MODULE
    + b"}("
    + S("_modules")
    + b"}q\x01u"
    + b"b"
    + b"0h\x01"
    + S("__len__")
    + I(1)
    + b"s",
    # torch._utils._set_obj_state: setattr(obj, k, v) for the state's items
    "parameter-with-state": G("torch._utils", "_rebuild_parameter_with_state")
    + T(b"N", b"\x89", ODICT, b"}(" + AI + _iface() + b"u")
    + b"R",
    "from-type-v2-state": G("torch._tensor", "_rebuild_from_type_v2")
    + T(G("torch", "Tensor"), G("torch", "Tensor"), b")", b"(N}(" + AI + _iface() + b"ut")
    + b"R",
    # copyreg._reconstructor(Bunch, dict, state): dict.__init__(obj, state) fills the Bunch
    "reconstructor-dict-state": G("copyreg", "_reconstructor")
    + T(G("sklearn.utils._bunch", "Bunch"), G("builtins", "dict"), b"}(" + AI + _iface() + b"u")
    + b"R",
    "array-protocol-key-anywhere": b"}(" + AI + _iface() + b"u",
    "attribute-named-at-load": G("argparse", "Namespace") + b")R" + b"}(" + NSTR + _iface() + b"u" + b"b",
}


@pytest.mark.parametrize("body", list(_X2_VARIANTS.values()), ids=list(_X2_VARIANTS))
def test_x2_variants_are_dunder_state(tmp_path: Path, body: bytes) -> None:
    verdict, rules = _scan(tmp_path, P(body))
    assert verdict == "malicious" and "scan.pickle.dunder-state" in rules, rules


def test_x2_numpy_handed_an_object_serving_attributes_from_data(tmp_path: Path) -> None:
    # numpy.mean(bunch) calls bunch.mean(...), which the Bunch answers from its items
    verdict, rules = _scan(tmp_path, P(G("numpy", "mean") + T(BUNCH) + b"R"))
    assert verdict == "malicious" and "scan.pickle.dynamic-callable" in rules, rules


@pytest.mark.parametrize(
    "body",
    [
        ODICT + b"(" + S("fc.weight") + I(1) + S("fc.bias") + I(2) + b"u",
        MODULE
        + b"}("
        + S("_modules")
        + ODICT
        + b"("
        + S("fc")
        + MODULE
        + b"}b"
        + b"u"
        + S("training")
        + b"\x88u"
        + b"b",
        G("collections", "Counter")
        + b")R"
        + b"("
        + NSTR
        + I(1)
        + b"u",  # a plain mapping's keys are only keys
        b"}(" + S("module") + S("__main__") + b"u",  # an __x__ value is no key
    ],
    ids=["state-dict", "module", "counter-key-built-at-load", "dunder-value"],
)
def test_x2_ordinary_mappings_stay_safe(tmp_path: Path, body: bytes) -> None:
    assert _scan(tmp_path, P(body)) == ("safe", set())


@pytest.fixture(scope="module")
def torch_and_sklearn_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """torch modules, parameters with attributes, optimizers and scikit-learn Bunches, saved for real."""
    torch = pytest.importorskip("torch")
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.ensemble import StackingClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    out = tmp_path_factory.mktemp("rt29-real")
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Linear(4, 8),
        nn.Conv2d(3, 4, 3),
        nn.LSTM(4, 8, 2),
        nn.Embedding(10, 4),
        nn.MultiheadAttention(8, 2),
        nn.TransformerEncoderLayer(8, 2, 16),
        nn.BatchNorm1d(4),
        nn.ModuleDict({"act": nn.ReLU()}),
        nn.ModuleList([nn.GELU()]),
    )
    files = []
    torch.save(net, out / "full.pt")
    torch.save(net.state_dict(), out / "state_dict.pt")
    param = nn.Parameter(torch.ones(2))
    param.note = "kept"  # pickled through _rebuild_parameter_with_state(..., state)
    torch.save({"p": param}, out / "param_state.pt")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.save(opt, out / "optimizer.pt")
    torch.save(opt.state_dict(), out / "optimizer_state.pt")
    files += [
        out / n for n in ("full.pt", "state_dict.pt", "param_state.pt", "optimizer.pt", "optimizer_state.pt")
    ]

    iris = load_iris()
    x, y = iris.data, iris.target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair = [("lr", LogisticRegression(max_iter=300)), ("dt", DecisionTreeClassifier())]
        stacking = StackingClassifier(pair).fit(x, y)  # named_estimators_ is a Bunch
        voting = VotingClassifier(pair).fit(x, y)
    for name, obj in {
        "stacking": stacking,
        "voting": voting,
        "iris": iris,
        "iris-frame": load_iris(as_frame=True),
    }.items():
        joblib.dump(obj, out / f"{name}.joblib")
        files.append(out / f"{name}.joblib")
        for protocol in range(6):
            path = out / f"{name}-p{protocol}.pkl"
            path.write_bytes(pickle.dumps(obj, protocol=protocol))
            files.append(path)
    return files


def test_x2_real_torch_and_sklearn_objects_stay_safe(torch_and_sklearn_files: list[Path]) -> None:
    for path in torch_and_sklearn_files:
        res = scan_file(path)
        assert res.verdict.value == "safe", (path.name, [(f.rule_id, f.evidence) for f in res.findings])
