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


# -- X1: dateutil time-zone paths in dtype aliases and computed strings ---------------------------

DTZ = G("pandas.core.dtypes.dtypes", "DatetimeTZDtype")


def _u_scalar(text: str | None) -> bytes:
    """numpy's ``scalar(dtype('U<n>'), data)`` (a ``numpy.str_``), of ``text`` or of computed data."""
    n = len(text) if text is not None else 20
    dtype = G("numpy", "dtype") + T(S(f"U{n}"), b"\x89", b"\x88") + b"R"
    dtype += T(I(3), S("<"), b"N", b"N", b"N", I(4 * n), I(4), I(8)) + b"b"
    if text is None:
        data = G("builtins", "bytes") + T(b"]") + b"R"  # built at load time: unknown text
    else:
        raw = text.encode("utf-32-le")
        data = b"B" + len(raw).to_bytes(4, "little") + raw
    return G("numpy.core.multiarray", "scalar") + T(dtype, data) + b"R"


def _str_of_codes(text: str) -> bytes:
    """``str(bytes([...]), 'latin1')``: a string no literal in the stream spells."""
    codes = b"](" + b"".join(I(c) for c in text.encode()) + b"e"
    return G("builtins", "str") + T(G("builtins", "bytes") + T(codes) + b"R", S("latin1")) + b"R"


_ALIAS = "datetime64[ns, dateutil//etc/passwd]"
_X1 = {
    "x1_series_dtype_alias": G("pandas.core.series", "Series") + b"(]N" + S(_ALIAS) + b"tR",
    "x1_dtz_alias": DTZ + T(S(_ALIAS)) + b"R",
    "x1_dtz_str_call": DTZ + T(S("ns"), G("builtins", "str") + T(S("dateutil//etc/passwd")) + b"R") + b"R",
    "sparse-dtype-alias": G("pandas", "SparseDtype") + T(S(_ALIAS)) + b"R",
    "numpy-str": DTZ + T(S("ns"), G("numpy", "str_") + T(S("dateutil/../../etc/passwd")) + b"R") + b"R",
    "str-of-byte-codes": DTZ + T(S("ns"), _str_of_codes("dateutil//etc/passwd")) + b"R",
    "numpy-unicode-scalar": DTZ + T(S("ns"), _u_scalar("dateutil//etc/passwd")) + b"R",
    "numpy-unicode-scalar-built": DTZ + T(S("ns"), _u_scalar(None)) + b"R",
    "colon-prefix": DTZ + T(S("ns"), S("dateutil/:/etc/passwd")) + b"R",  # gettz strips one ':'
    "windows-drive": DTZ + T(S("ns"), S("dateutil/C:\\Windows\\win.ini")) + b"R",
    "keywords-filled-later": G("pandas.core.indexes.datetimes", "_new_DatetimeIndex")
    + T(G("pandas", "DatetimeIndex"), ODICT + b"(" + S("tz") + S("dateutil/../../etc/passwd") + b"u")
    + b"R",
}


@pytest.mark.parametrize("body", list(_X1.values()), ids=list(_X1))
def test_x1_time_zone_paths_in_aliases_and_built_strings(tmp_path: Path, body: bytes) -> None:
    verdict, rules = _scan(tmp_path, P(body, proto=3))
    assert verdict == "malicious" and "scan.pickle.file-path-argument" in rules, rules


@pytest.mark.parametrize(
    "body",
    [
        G("pandas", "Series") + b"(]N" + S("datetime64[ns, dateutil/Europe/London]") + b"tR",
        DTZ + T(S("ns"), _u_scalar("dateutil/Asia/Tokyo")) + b"R",
        G("pandas.core.indexes.base", "_new_Index")
        + T(G("pandas", "Index"), b"}(" + S("data") + b"]" + S("name") + _u_scalar("column") + b"u")
        + b"R",
    ],
    ids=["alias-zone-name", "unicode-scalar-zone-name", "unicode-scalar-index-name"],
)
def test_x1_zone_names_stay_safe(tmp_path: Path, body: bytes) -> None:
    assert _scan(tmp_path, P(body, proto=3)) == ("safe", set())


def test_x1_real_time_zone_aware_pandas_objects_stay_safe(tmp_path: Path) -> None:
    # protocol 2 writes a dateutil zone's bytes as _codecs.encode(...): folded data, not built
    pd = pytest.importorskip("pandas")
    joblib = pytest.importorskip("joblib")
    import zoneinfo

    from dateutil import tz as dateutil_tz

    hours = pd.date_range("2024-01-01", periods=3, freq="h")
    objects = {
        "series-dateutil": pd.Series(hours.tz_localize("dateutil/Europe/London")),
        "series-zoneinfo": pd.Series(hours.tz_localize(zoneinfo.ZoneInfo("Europe/Paris"))),
        "series-utc": pd.Series(hours.tz_localize("UTC")),
        "series-tzutc": pd.Series(hours.tz_localize(dateutil_tz.tzutc())),
        "series-tzoffset": pd.Series(hours.tz_localize(dateutil_tz.tzoffset("X", 3600))),
        "index-dateutil": hours.tz_localize("dateutil/Asia/Tokyo"),
        "dtype-dateutil": pd.DatetimeTZDtype("ns", "dateutil/Europe/London"),
        "frame": pd.DataFrame({"t": hours.tz_localize("dateutil/Europe/London"), "v": [1, 2, 3]}),
        "timestamp": pd.Timestamp("2024-01-01", tz="dateutil/Europe/London"),
    }
    for name, obj in objects.items():
        paths = []
        for protocol in (2, 4, 5):
            paths.append(tmp_path / f"{name}-p{protocol}.pkl")
            paths[-1].write_bytes(pickle.dumps(obj, protocol=protocol))
        paths.append(tmp_path / f"{name}.joblib")
        joblib.dump(obj, paths[-1])
        for path in paths:
            res = scan_file(path)
            assert res.verdict.value == "safe", (path.name, [(f.rule_id, f.evidence) for f in res.findings])


# -- X3: sized and costly calls made by helpers, by APPEND/ADDITEMS, and by layer constructors -----

RECONSTRUCTOR = G("copyreg", "_reconstructor")
RANGE_10_12 = G("builtins", "range") + T(I(10**12)) + b"R"
_X3 = {
    # copyreg._reconstructor(cls, base, state): base.__new__(cls, state), base.__init__(obj, state)
    "x3a_reconstructor_bytearray": (
        RECONSTRUCTOR + T(G("builtins", "bytearray"), G("builtins", "bytearray"), I(3 << 30)) + b"R",
        "allocation-bomb",
    ),
    "reconstructor-fraction": (
        RECONSTRUCTOR + T(G("fractions", "Fraction"), G("fractions", "Fraction"), S("1e999999999")) + b"R",
        "compute-bomb",
    ),
    "reconstructor-series": (
        RECONSTRUCTOR + T(G("pandas", "Series"), G("pandas", "Series"), RANGE_10_12) + b"R",
        "allocation-bomb",
    ),
    "reconstructor-batchnorm": (
        RECONSTRUCTOR
        + T(
            G("torch.nn.modules.batchnorm", "BatchNorm1d"),
            G("torch.nn.modules.batchnorm", "BatchNorm1d"),
            I(10**10),
        )
        + b"R",
        "allocation-bomb",
    ),
    # torch's _rebuild_from_type_v2(func, type, args, state) runs func(*args)
    "rebuild-from-type-v2": (
        G("torch._tensor", "_rebuild_from_type_v2")
        + T(G("builtins", "bytearray"), G("torch", "Tensor"), T(I(3 << 30)), b"N")
        + b"R",
        "allocation-bomb",
    ),
    # the unpickler calls obj.append(item) / obj.add(item), which the object answers from its data
    "x3b_bunch_append_bytearray": (
        BUNCH + S("append") + G("builtins", "bytearray") + b"s" + I(3 << 30) + b"a",
        "dynamic-callable",
    ),
    "x3b_bunch_append_fraction": (
        BUNCH + S("append") + G("fractions", "Fraction") + b"s" + S("1e999999999") + b"a",
        "dynamic-callable",
    ),
    "namespace-appends": (
        G("argparse", "Namespace")
        + b")R"
        + b"}("
        + S("extend")
        + G("builtins", "bytearray")
        + b"ub"
        + b"("
        + I(3 << 30)
        + b"e",
        "dynamic-callable",
    ),
    "bunch-additems": (
        BUNCH + S("add") + G("builtins", "bytearray") + b"s" + b"(" + I(3 << 30) + b"\x90",
        "dynamic-callable",
    ),
    # layer and optimizer constructors, called, allocate weights sized by their arguments
    "x3c_torch_linear": (
        G("torch.nn.modules.linear", "Linear") + T(I(100000), I(100000)) + b"R",
        "allocation-bomb",
    ),
    "embedding": (
        G("torch.nn.modules.sparse", "Embedding") + T(I(10**6), I(10**4)) + b"R",
        "allocation-bomb",
    ),
    "lstm-hidden-squared": (G("torch.nn.modules.rnn", "LSTM") + T(I(1), I(10**5)) + b"R", "allocation-bomb"),
    "optimizer-listing-a-range": (G("torch.optim.sgd", "SGD") + T(RANGE_10_12) + b"R", "allocation-bomb"),
    "layer-sized-at-load": (
        G("torch.nn.modules.linear", "Linear")
        + T(G("builtins", "int") + T(S("100000")) + b"R", I(10))
        + b"R",
        "allocation-bomb",
    ),
    # torch.Tensor re-exported by a layer module: sized as torch's own
    "re-exported-tensor": (G("torch.nn.modules.linear", "Tensor") + T(I(3 << 30)) + b"R", "allocation-bomb"),
}


@pytest.mark.parametrize(("body", "kind"), list(_X3.values()), ids=list(_X3))
def test_x3_hidden_and_layer_calls_are_checked(tmp_path: Path, body: bytes, kind: str) -> None:
    verdict, rules = _scan(tmp_path, P(body))
    assert verdict != "safe" and f"scan.pickle.{kind}" in rules, rules


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps(__import__("collections").deque([1, 2, 3], 5), protocol=2),  # deque: APPENDS
        pickle.dumps(__import__("collections").deque([1, 2, 3]), protocol=4),
        P(
            G("torch.jit._pickle", "restore_type_tag")
            + T(b"]", S("List[int]"))
            + b"R"
            + b"("
            + I(1)
            + I(2)
            + b"e"
        ),
        P(G("torch.nn.modules.activation", "ReLU") + T() + b"R"),  # called, but sized by nothing
        P(G("torch.nn.modules.linear", "Linear") + T(I(100000), I(100000)) + b"\x81"),  # cls.__new__ only
        P(RECONSTRUCTOR + T(G("argparse", "Namespace"), G("builtins", "object"), b"N") + b"R"),
    ],
    ids=["deque-p2", "deque-p4", "type-tagged-list", "unsized-layer", "newobj-layer", "reconstructor-object"],
)
def test_x3_ordinary_streams_stay_safe(tmp_path: Path, data: bytes) -> None:
    assert _scan(tmp_path, data) == ("safe", set())


# -- X4: shared objects changed through identity helpers; allowed globals that are modules --------

RTT = G("torch.jit._pickle", "restore_type_tag")
NEGATIVE = G("numpy", "negative")
ACTIVATIONS = G("sklearn.neural_network._base", "ACTIVATIONS")  # a global dict of the estimator's functions
_X4 = {
    # torch.nn.modules.conv.F is torch.nn.functional: (None, {'relu': elu}) rewrites it for the process
    "x4_wrapped_F": RTT
    + T(G("torch.nn.modules.conv", "F"), b"N")
    + b"R"
    + b"(N}("
    + S("relu")
    + G("torch.nn.functional", "elu")
    + b"ut"
    + b"b",
    "wrapped-global-dict": RTT + T(ACTIVATIONS, b"N") + b"R" + S("relu") + NEGATIVE + b"s",
    "list-builder-global-dict": G("torch.jit._pickle", "build_intlist")
    + T(ACTIVATIONS)
    + b"R"
    + b"("
    + S("relu")
    + NEGATIVE
    + b"u",
    "wrapped-global-list": RTT
    + T(G("sklearn.metrics.pairwise", "_VALID_METRICS"), b"N")
    + b"R"
    + S("x")
    + b"a",
    "wrapped-class": RTT
    + T(G("argparse", "Namespace"), b"N")
    + b"R"
    + b"(N}("
    + S("__init__")
    + NEGATIVE
    + b"ut"
    + b"b",
    # callables returning a process-wide instance: dateutil's UTC singleton and cached offsets, NaT
    "tzutc-singleton": G("dateutil.tz.tz", "tzutc") + b")R" + b"}(" + S("utcoffset") + NEGATIVE + b"u" + b"b",
    "tzoffset-cached": G("dateutil.tz", "tzoffset")
    + T(S("X"), I(3600))
    + b"R"
    + b"}("
    + S("utcoffset")
    + NEGATIVE
    + b"ub",
    "nat-singleton": G("pandas._libs.tslibs.nattype", "_nat_unpickle")
    + b")R"
    + b"}("
    + S("isoformat")
    + NEGATIVE
    + b"ub",
    # torch._utils._set_obj_state on what _rebuild_from_type_v2's func(*args) returns
    "rebuild-from-type-v2-singleton": G("torch._tensor", "_rebuild_from_type_v2")
    + T(
        G("dateutil.tz.tz", "tzutc"),
        G("dateutil.tz.tz", "tzutc"),
        b")",
        b"}(" + S("utcoffset") + NEGATIVE + b"u",
    )
    + b"R",
}


@pytest.mark.parametrize("body", list(_X4.values()), ids=list(_X4))
def test_x4_shared_objects_changed_through_helpers(tmp_path: Path, body: bytes) -> None:
    verdict, rules = _scan(tmp_path, P(body))
    assert verdict == "malicious" and "scan.pickle.mutates-global" in rules, rules


def test_x4_a_module_alias_is_denied(tmp_path: Path) -> None:
    verdict, rules = _scan(tmp_path, P(G("torch.nn.modules.conv", "F")))
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules, rules


@pytest.mark.parametrize(
    "body",
    [
        RTT + T(b"}", S("Dict[str, int]")) + b"R" + b"(" + S("a") + I(1) + b"u",  # TorchScript's typed dict
        G("dateutil.tz.tz", "tzutc") + b")\x81",  # how a tzutc pickles: cls.__new__, no state
        G("dateutil.tz", "tzoffset") + T(S("X"), I(3600)) + b"R",
    ],
    ids=["type-tagged-dict", "tzutc-newobj", "tzoffset-call"],
)
def test_x4_ordinary_streams_stay_safe(tmp_path: Path, body: bytes) -> None:
    assert _scan(tmp_path, P(body)) == ("safe", set())


def test_x4_no_allowed_global_is_a_module() -> None:
    """Every attribute of the allowed torch and scikit-learn modules that is itself a module is refused.

    The ``[A-Z]*`` class patterns matched ``torch.nn.modules.*.F`` (``torch.nn.functional``).
    """
    import importlib
    import pkgutil
    import types

    from bastion.scan.policy import PicklePolicy

    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    policy = PicklePolicy()
    names: list[str] = []
    for root in ("torch.nn.modules", "torch.optim", "torch.ao.nn", "torch.nn.utils", "sklearn"):
        package = importlib.import_module(root)
        names.append(root)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, root + ".") if "test" not in m.name]
    allowed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception:  # an optional dependency of one submodule
                continue
            allowed += [
                f"{name}.{attr}"
                for attr, value in vars(module).items()
                if isinstance(value, types.ModuleType) and policy.allows(name, attr)
            ]
    assert not allowed, allowed


def test_x2_an_attribute_state_is_one_finding(tmp_path: Path) -> None:
    # the dict's array-protocol key and the BUILD that sets it as an attribute are one act
    path = tmp_path / "model.pkl"
    path.write_bytes(P(G("argparse", "Namespace") + b")R" + b"}(" + AI + _iface() + b"u" + b"b"))
    hits = [f for f in scan_file(path).findings if f.rule_id == "scan.pickle.dunder-state"]
    assert len(hits) == 1 and "BUILD sets the attribute" in str(hits[0].evidence["detail"]), hits
