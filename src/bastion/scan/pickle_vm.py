"""A static pickle opcode emulator: it reads a pickle stream and never executes it.

The emulator walks the opcodes of protocols 0-5 (stack, memo, marks, frames) the way
``pickle.Unpickler`` would, but every value is symbolic: a ``GLOBAL`` pushes a
:class:`Global` naming ``module.name`` instead of importing anything, a ``REDUCE`` pushes an
:class:`Obj` recording the call instead of calling. It records every callable reached
(``GLOBAL``, ``STACK_GLOBAL`` through the memo, ``INST``) with the byte offset of the opcode
that resolved it, every place it is invoked (``REDUCE``, ``NEWOBJ``, ``NEWOBJ_EX``, ``OBJ``,
``INST``, ``BUILD``), and stream tricks that a real unpickler would honour but no pickler
writes (a ``STACK_GLOBAL`` over computed strings, a call of a computed callable, mutating an
imported object, extension codes).

joblib's ``NumpyArrayWrapper`` is understood: after the ``BUILD`` of a wrapper, joblib writes
the raw array bytes (or, for object arrays, a nested pickle) straight into the stream; the
emulator computes the byte length from the wrapper's ``shape``/``dtype``/alignment state and
skips it, or parses the nested pickle, and then resumes.

Pure and stdlib-only: no policy lives here (see :mod:`bastion.scan.policy`), no import of the
scanned names, no ``pickle.loads``. Arguments are decoded with the opcode table of
:mod:`pickletools` (codes and names only); the readers are our own, with hard limits, so a
hostile length field cannot make us allocate gigabytes.

Reference: the pickle protocol as implemented in CPython ``Lib/pickle.py`` and
``Modules/_pickle.c``; PEP 3154 (protocol 4, framing) and PEP 574 (protocol 5).
"""

from __future__ import annotations

import codecs
import math
import re
import struct
import time
from collections.abc import Callable
from typing import IO, Any, Final

from bastion.core._plain import PlainRecord, PlainValue
from bastion.core._regex import LazyPattern

__all__ = [
    "JOBLIB_WRAPPERS",
    "Anomaly",
    "CallSite",
    "Global",
    "GlobalRef",
    "Obj",
    "PickleParseError",
    "PickleResult",
    "Reader",
    "emulate",
]

#: ``module.name`` of joblib's array wrapper (and sklearn's old vendored copy).
JOBLIB_WRAPPERS: Final = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    }
)

_IDENT: Final = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_RECONSTRUCTORS: Final = frozenset({"copyreg._reconstructor", "copy_reg._reconstructor"})
#: Callables that take a class as an argument only to build an array of that type (never calling
#: it): qualified name -> the argument positions holding such classes. A global passed anywhere
#: else is recorded in :attr:`GlobalRef.passed_to`.
CLASS_ARGUMENT_SITES: Final = {
    "numpy.core.multiarray._reconstruct": (0,),
    "numpy._core.multiarray._reconstruct": (0,),
    "numpy.ma.core._mareconstruct": (1,),  # ndarray.__new__(baseclass, ...); subtype.__new__ is called
    # NDArrayBacked.__new__(cls) / IntervalMixin.__new__(cls): an empty instance, no constructor run
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked": (0,),
    "pandas._libs.interval.__pyx_unpickle_IntervalMixin": (0,),
    "dateutil.tz._tzfile._unpickle": (0,),  # cls.__new__(cls), then the pickled data
}
#: Allowed helpers that call one of their arguments (qualified name -> argument positions):
#: ``__generator_ctor(name, ctor)`` calls ``ctor(name)`` (numpy's legacy path),
#: ``__bit_generator_ctor(cls)`` calls ``cls()``, ``_rebuild_from_type_v2(func, type, args,
#: state)`` calls ``func(*args)``. A global there counts as called; anything else (an object
#: built in the stream, whose ``__call__`` may run what it holds) is a ``dynamic-callable``.
CALLING_SITES: Final = {
    "numpy.random._pickle.__generator_ctor": (1,),
    "numpy.random._pickle.__randomstate_ctor": (1,),
    "numpy.random._pickle.__bit_generator_ctor": (0,),
    "torch._tensor._rebuild_from_type_v2": (0,),
    # pandas: ``_new_Index(cls, d)`` returns ``cls.__new__(cls, **d)`` (an Index's constructor)
    "pandas.core.indexes.base._new_Index": (0,),
    "pandas.core.indexes.datetimes._new_DatetimeIndex": (0,),
    "pandas.core.indexes.period._new_PeriodIndex": (0,),
}
#: Helpers of :data:`CALLING_SITES` that spread one argument as the call's arguments: it must be
#: a literal tuple (the globals in it are then walked as handed over).
CALL_ARGUMENTS_AT: Final = {"torch._tensor._rebuild_from_type_v2": 2}
#: Container nodes the hand-over walk (:meth:`_VM.note_passed`) may visit in one stream.
MAX_ARGUMENT_WALK: Final = 1 << 20
_NEWOBJ_HELPERS: Final = frozenset({"copyreg.__newobj__", "copyreg.__newobj_ex__"})
_GETATTR: Final = frozenset({"builtins.getattr", "__builtin__.getattr"})
_ATTRIBUTE: Final = LazyPattern(r"[A-Za-z_]\w*")
#: Allowed functions that return their first argument (TorchScript's type tags and list builders).
_IDENTITY_FUNCS: Final = frozenset(
    {
        "torch.jit._pickle.restore_type_tag", "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensorlist",
    }
)  # fmt: skip
#: Allowed callables that return an instance shared by the whole process (a singleton or a cached
#: value), which ``BUILD`` and the item opcodes may change: dateutil's ``tzutc()`` and
#: ``tzoffset(name, offset)``, pytz's zones, pandas' ``NaT``. Pickles never ``BUILD`` their result.
_SHARED_RESULTS: Final = frozenset(
    [f"{m}.{n}" for m in ("dateutil.tz", "dateutil.tz.tz") for n in ("tzutc", "tzoffset")]
    + [f"{m}.{n}" for m in ("pytz", "pytz.tzinfo") for n in ("_p", "unpickler", "_UTC")]
    + ["pandas._libs.tslibs.nattype._nat_unpickle", "pandas._libs.tslibs.nattype.__nat_unpickle"]
)
#: Attributes numpy, pandas and the array-API libraries look up on any object they are handed, to
#: read it as an array (``__array_interface__``'s ``data`` is an address numpy reads, object
#: pointers included). No pickler writes one of these as a dict key, at any depth.
_ARRAY_PROTOCOL_KEYS: Final = frozenset(
    {
        "__array_interface__", "__array_struct__", "__array__", "__array_priority__", "__array_function__",
        "__array_ufunc__", "__array_wrap__", "__array_finalize__", "__array_prepare__", "__dataframe__",
        "__cuda_array_interface__", "__dlpack__", "__dlpack_device__", "__arrow_c_array__",
        "__arrow_c_stream__", "__arrow_c_schema__", "__torch_function__", "__torch_dispatch__",
    }
)  # fmt: skip
#: Mappings whose items are only items: no attribute lookup reads them (``OrderedDict`` of a state
#: dict). Any other object filled by ``SETITEM(S)`` may answer attribute lookups from its items
#: (scikit-learn's ``Bunch.__getattr__`` returns ``self[key]``).
_PLAIN_MAPPINGS: Final = frozenset(
    {
        "builtins.dict", "__builtin__.dict", "collections.OrderedDict", "_collections.OrderedDict",
        "collections.defaultdict", "_collections.defaultdict", "collections.Counter",
    }
)  # fmt: skip
#: Keys of an object's state whose dicts answer its attribute lookups (``torch.nn.Module.__getattr__``
#: returns ``self._modules[name]``, and the same of ``_parameters`` and ``_buffers``).
_ATTRIBUTE_TABLES: Final = frozenset({"_modules", "_parameters", "_buffers"})
#: Allowed torch helpers that set attributes from a state argument (``torch._utils._set_obj_state``:
#: ``setattr(obj, k, v)`` for each item): qualified name -> the state's position.
_SETATTR_STATE_AT: Final = {
    "torch._utils._rebuild_parameter_with_state": 3,
    "torch._tensor._rebuild_from_type_v2": 3,
}
#: Container nodes the walk of objects' states for ``__x__`` keys may visit in one stream (each
#: container once).
MAX_STATE_WALK: Final = 1 << 20
#: Opcodes that call a class itself (its ``__init__`` runs); ``NEWOBJ`` calls ``cls.__new__`` only.
_INIT_OPCODES: Final = frozenset({"REDUCE", "INST", "OBJ"})
#: Modules of torch's layer and optimizer classes: a pickle rebuilds them with ``NEWOBJ`` and a
#: ``BUILD`` state, never by calling them; called, their constructors allocate and initialise
#: weights sized by the arguments (``Linear(100000, 100000)`` asks for 40 GB).
_TORCH_LAYERS: Final = ("torch.nn.modules.", "torch.ao.nn.", "torch.nn.utils.", "torch.optim.")
#: Calls whose result is a number or an iterable (a size computed at load time).
_NUMBER_CALLS: Final = frozenset({"builtins.int", "__builtin__.int", "__builtin__.long", "builtins.float"})
#: Classes whose ``append``/``extend`` the unpickler may call (``APPEND(S)``; ``ADDITEMS``: ``add``):
#: exact types without a ``__dict__``, so the method is the type's. On any other object the name is
#: looked up on the instance, which may answer it from its data (a ``Bunch`` from its items, any
#: object from the ``__dict__`` a ``BUILD`` set): the callable and its arguments are the stream's.
_APPENDABLE: Final = frozenset(
    {"builtins.list", "__builtin__.list", "collections.deque", "_collections.deque"}
)
_ADDABLE: Final = frozenset({"builtins.set", "__builtin__.set"})
#: Container nodes the search of pandas' arguments for time-zone paths may visit in one stream.
MAX_TEXT_WALK: Final = 1 << 20
#: A walk budget once spent and reported (``argument-walk-limit`` is reported once a stream).
_WALK_SPENT: Final = -(1 << 62)
#: Callables that build a string (``numpy.str_`` is one: ``isinstance(np.str_('x'), str)``).
_STR_CALLS: Final = frozenset(
    {"builtins.str", "__builtin__.str", "__builtin__.unicode", "numpy.str_", "numpy.unicode_"}
)
#: numpy's scalar rebuild, ``scalar(dtype, data)``: a ``'U'`` dtype's data is UTF-32 text, an
#: object dtype's is the value itself.
_NUMPY_SCALARS: Final = frozenset({"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"})
_DATEUTIL: Final = "dateutil/"
#: Attribute names of the callables that build a string or return their argument (a cheap filter).
_TEXT_BUILDER_NAMES: Final = frozenset(
    n.rpartition(".")[2] for n in _STR_CALLS | _NUMPY_SCALARS | _RECONSTRUCTORS | _IDENTITY_FUNCS
)
_DRIVE: Final = LazyPattern(r"[A-Za-z]:")
_PATH_PARTS: Final = LazyPattern(r"[/\\]")


def _tz_path_escapes(text: str) -> str | None:
    """The zone after a ``dateutil/`` in ``text`` that dateutil opens outside its folders, or ``None``.

    pandas hands ``dateutil/<zone>`` (a ``tz=`` argument, or the zone of a dtype alias
    ``'datetime64[ns, dateutil/<zone>]'``) to ``dateutil.tz.gettz``, which strips a leading ``:``,
    opens an absolute path as it is and joins a relative one to its folders (``..`` leaves them).
    Every occurrence is checked, wherever it stands in the text.
    """
    start = text.find(_DATEUTIL)
    while start >= 0:
        zone = text[start + len(_DATEUTIL) :]
        name = zone.lstrip(": \t")
        if name.startswith(("/", "\\")) or _DRIVE.match(name):
            return zone
        if any(part.strip(" ]") == ".." for part in _PATH_PARTS.split(name)):
            return zone
        start = text.find(_DATEUTIL, start + 1)
    return None


_DTYPE_NAMES: Final = frozenset(
    {"numpy.dtype", "numpy.core.multiarray.dtype", "numpy._core.multiarray.dtype"}
)
_CODECS_ENCODE: Final = frozenset({"_codecs.encode", "codecs.encode"})
#: Constructors that encode or decode text with a codec named by their second argument.
_TEXT_CODEC_CALLS: Final = frozenset(
    {
        "builtins.bytes", "builtins.bytearray", "builtins.str", "__builtin__.bytes", "__builtin__.bytearray",
        "__builtin__.str", "__builtin__.unicode", "numpy.str_", "numpy.bytes_", "numpy.unicode_",
    }
)  # fmt: skip
#: Codecs that take linear time (what picklers and numpy write).
_LINEAR_CODECS: Final = frozenset(
    {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "utf-8", "utf8", "ascii", "us-ascii"}
)
#: Number types built from text or a ``(sign, digits, exponent)`` tuple; past
#: :data:`MAX_EXPONENT`, building (``Fraction('1e999999999')`` computes ``10**999999999``) or
#: converting (``int(Decimal('1e1000000'))``) the value takes minutes to hours.
_NUMBER_PARSERS: Final = frozenset(
    {"decimal.Decimal", "_decimal.Decimal", "_pydecimal.Decimal", "fractions.Fraction"}
)
MAX_EXPONENT: Final = 10_000
#: An integer argument longer than this (bytes; ~10,000 decimal digits) is a ``compute-bomb``:
#: number constructors convert it in quadratic time (``SeedSequence``, ``Fraction``, ``Decimal``).
MAX_INT_BYTES: Final = 4096
_EXPONENT: Final = LazyPattern(r"[eE]\s*([+-]?\d{1,40})")


def _exponent(v: Any) -> int | None:
    """The decimal exponent of a number's text (``'1e5'``) or ``Decimal`` tuple, if it has one."""
    if isinstance(v, str):
        m = _EXPONENT.search(v)
        return int(m.group(1)) if m else None
    if isinstance(v, tuple) and len(v) == 3:
        return _int(v[2])
    return None


MAX_LINE: Final = 1 << 16
"""Longest text-opcode argument line accepted (bytes)."""


#: :func:`_dotted_name`'s answers for short names (streams name the same few modules again and again).
_DOTTED_SEEN: Final[dict[str, bool]] = {}
_DOTTED_SEEN_MAX: Final = 4096
_DOTTED_SEEN_LONGEST: Final = 256


def _dotted_name(text: str) -> bool:
    """Whether ``text`` is a dotted Python name as :data:`_IDENT` matches it (``a.b_c``)."""
    known = _DOTTED_SEEN.get(text)
    if known is not None:
        return known
    ok = _IDENT.match(text) is not None
    if len(text) <= _DOTTED_SEEN_LONGEST and len(_DOTTED_SEEN) < _DOTTED_SEEN_MAX:
        _DOTTED_SEEN[text] = ok
    return ok


class PickleParseError(Exception):
    """The stream is not a well-formed pickle (truncated, bad opcode, stack underflow ...).

    Attributes:
        offset: byte offset of the opcode being decoded when parsing failed.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class _Truncated(Exception):
    """Raised by :class:`Reader` when the stream ends early."""


# --------------------------------------------------------------------------- reader


class Reader:
    """Forward reader over a binary stream with its own buffering and hard limits.

    Args:
        stream: a readable binary file object, positioned where reading starts.
        start: the offset the stream position corresponds to (offsets are reported from it).
        chunk: refill size in bytes.
        limit: stop (as if truncated) after this many bytes from ``start``; ``None`` = no limit.
    """

    def __init__(
        self, stream: IO[bytes], *, start: int = 0, chunk: int = 1 << 16, limit: int | None = None
    ) -> None:
        self._stream = stream
        self._buf = b""
        self._i = 0
        self._base = start  # offset of _buf[0]
        self._chunk = chunk
        self._limit = None if limit is None else start + limit
        self._eof = False
        self._delta: int | None = None
        try:
            if stream.seekable():
                self._delta = stream.tell() - start
        except (OSError, ValueError, AttributeError):
            self._delta = None

    @property
    def pos(self) -> int:
        """Current offset (bytes)."""
        return self._base + self._i

    def stream_delta(self, position: int) -> int:
        """Stream position minus reported offset, given the stream's current ``position``.

        The stream stands just after the buffered bytes (this reader reads forward only).
        """
        return position - self._base - len(self._buf)

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` unread bytes available; False at end of stream."""
        while len(self._buf) - self._i < need:
            if self._eof:
                return False
            want = max(self._chunk, need - (len(self._buf) - self._i))
            want = min(want, 1 << 24)
            if self._limit is not None:
                want = min(want, self._limit - (self._base + len(self._buf)))
                if want <= 0:
                    self._eof = True
                    return False
            data = self._stream.read(want)
            if not data:
                self._eof = True
                return False
            self._base += self._i
            self._buf = self._buf[self._i :] + data
            self._i = 0
        return True

    def at_eof(self) -> bool:
        """Whether no byte is left."""
        return not self._fill(1)

    def peek(self, n: int) -> bytes:
        """Up to ``n`` next bytes without consuming them."""
        self._fill(n)
        return self._buf[self._i : self._i + n]

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (``n`` must be small enough to hold in memory).

        Raises:
            _Truncated: the stream ends first.
        """
        i = self._i
        j = i + n
        if n > 0 and j <= len(self._buf):
            self._i = j
            return self._buf[i:j]
        if n <= 0:
            return b""
        if n <= (1 << 24):
            if not self._fill(n):
                raise _Truncated(f"needed {n} bytes")
            out = self._buf[self._i : self._i + n]
            self._i += n
            return out
        parts = []
        left = n
        while left:
            step = min(left, 1 << 24)
            parts.append(self.read(step))
            left -= step
        return b"".join(parts)

    def read_byte(self) -> int:
        """One byte as an int.

        Raises:
            _Truncated: the stream ends first.
        """
        i = self._i
        if i < len(self._buf):
            self._i = i + 1
            return self._buf[i]
        return self.read(1)[0]

    def skip(self, n: int) -> None:
        """Skip ``n`` bytes.

        Raises:
            _Truncated: the stream ends first.
        """
        if n < 0:
            raise ValueError("negative skip")
        avail = len(self._buf) - self._i
        if n <= avail:
            self._i += n
            return
        n -= avail
        self._base += len(self._buf)
        self._buf = b""
        self._i = 0
        target = self._base + n
        if self._limit is not None and target > self._limit:
            raise _Truncated("skip past limit")
        if self._delta is not None:
            # Seekable stream (file, spooled file): seek instead of reading.
            end = self._stream.seek(0, 2)
            if end < target + self._delta:
                raise _Truncated("skip past end of stream")
            self._stream.seek(target + self._delta)
            self._base = target
            return
        while n:
            data = self._stream.read(min(n, 1 << 20))
            if not data:
                raise _Truncated("skip past end of stream")
            n -= len(data)
            self._base += len(data)

    def unread(self) -> bytes:
        """The bytes buffered and not read yet (after a failed read: up to the end of the stream)."""
        return bytes(self._buf[self._i :])

    def readline(self, max_len: int = MAX_LINE) -> bytes:
        """Bytes up to (not including) the next newline.

        Raises:
            _Truncated: no newline before the end of the stream.
            ValueError: the line is longer than ``max_len``.
        """
        scanned = 0
        while True:
            j = self._buf.find(b"\n", self._i + scanned)
            if j >= 0:
                line = self._buf[self._i : j]
                self._i = j + 1
                return line
            scanned = len(self._buf) - self._i
            if scanned > max_len:
                raise ValueError("text argument line too long")
            if not self._fill(scanned + 1):
                raise _Truncated("no newline")


# --------------------------------------------------------------------------- symbolic values


# Plain classes rather than ``@dataclass``: the eleven classes cost ~2.5 ms of every scan's
# start-up to create as dataclasses. ``__init__`` is written out in each, in field order.
_Value = PlainValue
_Compared = PlainRecord


class Global(_Value):
    """A callable or object resolved by ``GLOBAL``/``STACK_GLOBAL``/``INST`` (never imported)."""

    _fields = ("ref",)

    def __init__(self, ref: GlobalRef) -> None:
        self.ref = ref

    @property
    def qualname(self) -> str:
        """``module.name``."""
        return self.ref.qualname


class Obj(_Value):
    """The result of a call (``REDUCE``, ``NEWOBJ``, ``OBJ``, ``INST``): never computed.

    Attributes:
        func: the callable (usually a :class:`Global`).
        args: positional arguments (a tuple of symbolic values) or something else if malformed.
        kwargs: keyword arguments (``NEWOBJ_EX``).
        opcode: the invoking opcode.
        offset: its byte offset.
        state: the ``BUILD`` state, kept only where the scanner needs it (dtypes, joblib wrappers).
        value: a folded constant (``_codecs.encode(str, 'latin1')`` gives bytes), else ``None``.
    """

    _fields = ("func", "args", "opcode", "offset", "kwargs", "state", "value")

    def __init__(
        self,
        func: Any,
        args: Any,
        opcode: str,
        offset: int,
        kwargs: Any = None,
        state: Any = None,
        value: Any = None,
    ) -> None:
        self.func = func
        self.args = args
        self.opcode = opcode
        self.offset = offset
        self.kwargs = kwargs
        self.state = state
        self.value = value

    @property
    def cls(self) -> Global | None:
        """The class built (looks through copyreg helpers), or ``None``."""
        if not isinstance(self.func, Global):
            return None
        name = self.func.qualname
        if (
            (name in _RECONSTRUCTORS or name in _NEWOBJ_HELPERS)
            and isinstance(self.args, tuple)
            and self.args
            and isinstance(self.args[0], Global)
        ):
            return self.args[0]
        return self.func

    @property
    def cls_name(self) -> str | None:
        """``module.name`` of the class built, or ``None``."""
        cls = self.cls
        return None if cls is None else cls.qualname


class PList(_Value):
    """A list built by the stream."""

    _fields = ("items",)

    def __init__(self, items: list[Any] | None = None) -> None:
        self.items: list[Any] = [] if items is None else items


class PDict(_Value):
    """A dict built by the stream, as (key, value) pairs (keys may be unhashable)."""

    _fields = ("items",)

    def __init__(self, items: list[tuple[Any, Any]] | None = None) -> None:
        self.items: list[tuple[Any, Any]] = [] if items is None else items

    def get(self, key: str, default: Any = None) -> Any:
        """Last value stored under the ``str`` key ``key``."""
        # An index loop, not ``reversed(self.items)``: mypyc 2.4 fails on that loop over Any pairs.
        items = self.items
        for i in range(len(items) - 1, -1, -1):
            k, v = items[i]
            if isinstance(k, str) and k == key:
                return v
        return default

    def has(self, key: str) -> bool:
        """Whether ``key`` was stored."""
        return any(isinstance(k, str) and k == key for k, _ in self.items)


class PSet(_Value):
    """A set or frozenset built by the stream."""

    _fields = ("items", "frozen")

    def __init__(self, items: list[Any] | None = None, frozen: bool = False) -> None:
        self.items: list[Any] = [] if items is None else items
        self.frozen = frozen


class Opaque(_Value):
    """A value the emulator does not model (persistent id, extension, out-of-band buffer, big data)."""

    _fields = ("what", "payload")

    def __init__(self, what: str, payload: Any = None) -> None:
        self.what = what
        self.payload = payload


class _Mark(_Value):
    pass


# ``isinstance`` with a tuple of classes is a generic call once compiled; these are one type check
# each (the walks below run them on every item of every argument and state).
def _container(v: Any) -> bool:
    """``isinstance(v, (tuple, PList, PSet, PDict))``: a container the walks open."""
    return isinstance(v, tuple) or isinstance(v, PList) or isinstance(v, PSet) or isinstance(v, PDict)  # noqa: SIM101


def _node(v: Any) -> bool:
    """``isinstance(v, (tuple, PList, PSet, PDict, Obj))``: a container or a call's result."""
    return _container(v) or isinstance(v, Obj)


def _walked(v: Any) -> bool:
    """``isinstance(v, (Global, tuple, PList, PSet, PDict))``: what :meth:`_VM.note_passed` walks."""
    return isinstance(v, Global) or _container(v)


# --------------------------------------------------------------------------- results


class CallSite(_Compared):
    """One invocation of a resolved global.

    Attributes:
        opcode: ``REDUCE``, ``NEWOBJ``, ``NEWOBJ_EX``, ``OBJ``, ``INST`` or ``BUILD``.
        offset: byte offset of that opcode.
        preview: a short, safe rendering of the arguments (captured globals only).
        blobs: ``bytes`` found in the arguments (captured globals only), for nested scans.
    """

    _fields = ("opcode", "offset", "preview", "blobs")

    def __init__(self, opcode: str, offset: int, preview: str = "", blobs: list[bytes] | None = None) -> None:
        self.opcode = opcode
        self.offset = offset
        self.preview = preview
        self.blobs: list[bytes] = [] if blobs is None else blobs


class GlobalRef(_Compared):
    """One resolution of ``module.name`` in the stream.

    Attributes:
        module: module part as written in the stream.
        name: attribute part (may be dotted with protocol 4+).
        offset: byte offset of the resolving opcode.
        opcode: ``GLOBAL``, ``STACK_GLOBAL`` or ``INST``.
        calls: invocations (first few only).
        ncalls: total number of invocations.
        passed_to: the callables it was handed to as an argument (first few), other than the
            class argument of numpy's array rebuilds (:data:`CLASS_ARGUMENT_SITES`): a helper
            may call what it is given (``copyreg.__newobj__(cls, *args)`` calls ``cls.__new__``).
        npassed: total number of such hand-overs.
        folded: calls of ``getattr(<global>, '<name>')`` the emulator resolved to the global
            ``module.Class.name`` (judged in its place: ``getattr(ZoneInfo, '_unpickle')``).
    """

    _fields = ("module", "name", "offset", "opcode", "calls", "ncalls", "passed_to", "npassed", "folded")

    def __init__(
        self,
        module: str,
        name: str,
        offset: int,
        opcode: str,
        calls: list[CallSite] | None = None,
        ncalls: int = 0,
        passed_to: list[str] | None = None,
        npassed: int = 0,
        folded: int = 0,
    ) -> None:
        self.module = module
        self.name = name
        self.offset = offset
        self.opcode = opcode
        self.calls: list[CallSite] = [] if calls is None else calls
        self.ncalls = ncalls
        self.passed_to: list[str] = [] if passed_to is None else passed_to
        self.npassed = npassed
        self.folded = folded
        #: ``module.name`` (module and name are never changed after construction).
        self.qualname = f"{module}.{name}"


class Anomaly(_Compared):
    """Something a real unpickler honours but no pickler writes.

    Attributes:
        kind: ``unresolved-global`` (``STACK_GLOBAL`` over computed values), ``dynamic-callable``
            (a call of something that is not a resolved global), ``mutates-global`` (``BUILD``,
            ``APPEND``, ``SETITEM`` ... applied to an imported object), ``extension-code``
            (``EXT1/2/4``, resolved through ``copyreg``'s extension registry).
        offset: byte offset of the opcode.
        opcode: its name.
        detail: one line.
    """

    _fields = ("kind", "offset", "opcode", "detail")

    def __init__(self, kind: str, offset: int, opcode: str, detail: str) -> None:
        self.kind = kind
        self.offset = offset
        self.opcode = opcode
        self.detail = detail


class PickleResult(_Compared):
    """What :func:`emulate` learnt about one pickle stream.

    Attributes:
        start: offset of the first opcode.
        end: offset just after ``STOP`` (or where parsing stopped).
        complete: reached ``STOP`` without error.
        error: why parsing stopped early, else ``None``.
        error_offset: offset of the failing opcode.
        protocol: protocol announced by ``PROTO`` (0 if none).
        globals: every global resolved, in stream order (nested joblib pickles included).
        anomalies: stream tricks found.
        opcodes: number of opcodes decoded.
        joblib_arrays: joblib raw array buffers skipped.
        joblib_object_arrays: joblib nested object-array pickles parsed.
        persistent_ids: number of ``PERSID``/``BINPERSID`` opcodes.
        timed_out: parsing stopped at the ``deadline`` (the stream is not known to be malformed).
        limited: parsing stopped at a limit of the emulator (:class:`LimitReached`), not at an
            error of the stream.
    """

    _fields = (
        "start",
        "end",
        "complete",
        "error",
        "error_offset",
        "protocol",
        "globals",
        "anomalies",
        "opcodes",
        "joblib_arrays",
        "joblib_object_arrays",
        "persistent_ids",
        "timed_out",
        "limited",
    )

    def __init__(
        self,
        start: int,
        end: int = 0,
        complete: bool = False,
        error: str | None = None,
        error_offset: int | None = None,
        protocol: int = 0,
        globals: list[GlobalRef] | None = None,
        anomalies: list[Anomaly] | None = None,
        opcodes: int = 0,
        joblib_arrays: int = 0,
        joblib_object_arrays: int = 0,
        persistent_ids: int = 0,
        timed_out: bool = False,
        limited: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.complete = complete
        self.error = error
        self.error_offset = error_offset
        self.protocol = protocol
        self.globals: list[GlobalRef] = [] if globals is None else globals
        self.anomalies: list[Anomaly] = [] if anomalies is None else anomalies
        self.opcodes = opcodes
        self.joblib_arrays = joblib_arrays
        self.joblib_object_arrays = joblib_object_arrays
        self.persistent_ids = persistent_ids
        self.timed_out = timed_out
        self.limited = limited


class _TimeUp(Exception):
    """The emulation passed its deadline."""


class LimitReached(ValueError):
    """A limit of the emulator (stack, memo, MARK nesting) that the unpickler does not have.

    Not a malformed stream: the stream may still be a valid pickle, so it is never taken for
    "not a pickle" (``PickleResult.limited``).
    """


#: The deadline is checked at least once per this many opcodes.
_CLOCK_EVERY: Final = 1024
#: Memo entries a pickle may make (each costs memory: 2M is ~200 MB of references).
MAX_MEMO: Final = 1 << 21
#: MARKs open at once (each keeps a list: 1M is ~60 MB); the unpickler has no such limit.
MAX_MARKS: Final = 1 << 20
#: Nesting the emulator's recursive checks follow (a ``torch.Size`` of a ``torch.Size``, a dtype's
#: field dtype, a helper's call hidden in another's arguments): deeper is :class:`LimitReached`.
#: An explicit bound, not Python's recursion limit: compiled by mypyc, this module's recursion
#: never raises ``RecursionError`` (an unbounded one overflows the C stack and kills the process).
MAX_NESTING: Final = 128


# --------------------------------------------------------------------------- helpers


def preview(value: Any, limit: int = 200) -> str:
    """A short, safe rendering of a symbolic value (never calls ``repr`` on unknown objects)."""
    out: list[str] = []
    _render(value, out, limit, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(v: Any, out: list[str], limit: int, depth: int) -> None:
    if sum(len(s) for s in out) > limit or depth > 6:
        out.append("...")
        return
    if v is None or isinstance(v, (bool, int, float)):
        out.append(repr(v) if not isinstance(v, int) or abs(v) < 10**30 else "<big int>")
    elif isinstance(v, (str, bytes, bytearray)):
        r = repr(v[:limit])
        out.append(r if len(v) <= limit else r + "...")
    elif isinstance(v, Global):
        out.append(v.qualname)
    elif isinstance(v, Obj):
        if v.value is not None:
            _render(v.value, out, limit, depth + 1)
            return
        _render(v.func, out, limit, depth + 1)
        out.append("(")
        _render(v.args, out, limit, depth + 1)
        out.append(")")
    elif isinstance(v, tuple):
        out.append("(")
        for i, x in enumerate(v[:20]):
            if i:
                out.append(", ")
            _render(x, out, limit, depth + 1)
        out.append(",)" if len(v) == 1 else ")")
    elif isinstance(v, PList):
        out.append("[")
        for i, x in enumerate(v.items[:20]):
            if i:
                out.append(", ")
            _render(x, out, limit, depth + 1)
        out.append("]")
    elif isinstance(v, PDict):
        out.append("{")
        for i, (k, x) in enumerate(v.items[:20]):
            if i:
                out.append(", ")
            _render(k, out, limit, depth + 1)
            out.append(": ")
            _render(x, out, limit, depth + 1)
        out.append("}")
    elif isinstance(v, PSet):
        out.append("{")
        for i, x in enumerate(v.items[:20]):
            if i:
                out.append(", ")
            _render(x, out, limit, depth + 1)
        out.append("}")
    elif isinstance(v, Opaque):
        out.append(f"<{v.what}>")
    else:
        out.append(f"<{type(v).__name__}>")


#: Containers :func:`find_blobs` opens per call site at most (a pickle can make a value whose
#: tree, unfolded, is exponentially larger than the file: shared tuples through the memo).
#: A call that asks for more bytes than this when the file is loaded is an ``allocation-bomb``
#: anomaly: a few bytes of pickle that exhaust memory or loop for ever (``bytes(2**40)``,
#: ``list(range(10**10))``, ``deque(range(10**18), 0)``, ``numpy._reconstruct(ndarray, (10**12,),
#: ...)``, ``torch.FloatStorage(10**12)``). Real files never size these calls: the data comes
#: from the file's own bytes. A size the stream computes at load time (``range(int("1e10"))``)
#: is one too, whatever its value.
MAX_ALLOCATION: Final = 1 << 30
#: Elements of a layer's weights past which its constructor is an ``allocation-bomb`` (4 bytes each).
MAX_LAYER_ELEMENTS: Final = MAX_ALLOCATION // 4
#: :func:`requested_bytes`'s answer for a size computed by the stream at load time.
COMPUTED: Final = -1
_RANGES: Final = frozenset({"builtins.range", "__builtin__.range", "__builtin__.xrange"})
_BYTES: Final = frozenset(
    {"builtins.bytes", "builtins.bytearray", "__builtin__.bytearray", "__builtin__.bytes"}
)
#: Callables that iterate their first argument to build their result (8 bytes a slot at least).
_CONSUMERS: Final = frozenset(
    {
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
        "__builtin__.list",
        "__builtin__.tuple",
        "__builtin__.set",
        "__builtin__.frozenset",
        "collections.deque",
        "_collections.deque",
        "collections.Counter",
    }
)
#: Bytes an item of ``array.array(typecode, ...)``.
_ARRAY_ITEM: Final = {
    "b": 1, "B": 1, "u": 4, "w": 4, "h": 2, "H": 2, "i": 4, "I": 4,
    "l": 8, "L": 8, "q": 8, "Q": 8, "f": 4, "d": 8,
}  # fmt: skip
#: Bytes an element of torch's typed storage and tensor classes, by name prefix.
_TORCH_ITEM: Final = (
    ("ComplexDouble", 16),
    ("ComplexFloat", 8),
    ("Double", 8),
    ("Long", 8),
    ("Float", 4),
    ("Int", 4),
    ("QInt32", 4),
    ("BFloat16", 2),
    ("Half", 2),
    ("Short", 2),
)


_NUMPY_ARRAYS: Final = frozenset(
    f"{m}.{n}"
    for m in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
    for n in ("_reconstruct", "ndarray", "void")
)
#: The callables :func:`requested_bytes` sizes (besides torch's ``*Storage``/``*Tensor`` classes).
_SIZED: Final = _BYTES | _CONSUMERS | _NUMPY_ARRAYS | {"array.array"}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _call_name(v: Any) -> str | None:
    """``module.name`` of the global ``v`` is the result of calling, if it is such a value."""
    return v.func.qualname if isinstance(v, Obj) and isinstance(v.func, Global) else None


def _value_checked(where: str) -> bool:
    """Whether calls of ``where`` have checks of their values (:meth:`_VM._value_checks`)."""
    return (
        where in _NUMBER_PARSERS
        or where in _SIZED
        or where in _TEXT_CODEC_CALLS
        or where in _RECONSTRUCTORS
        or where in CALL_ARGUMENTS_AT
        or where.startswith(_CHECKED_PREFIXES)
        or (where.startswith("torch") and where.endswith(("Storage", "Tensor")))
    )


def _unwrapped(v: Any) -> Any:
    """``v`` with the allowed identity functions (:data:`_IDENTITY_FUNCS`) looked through."""
    for _ in range(64):
        if not (
            isinstance(v, Obj)
            and isinstance(v.func, Global)
            and v.func.qualname in _IDENTITY_FUNCS
            and isinstance(v.args, tuple)
            and v.args
        ):
            break
        v = v.args[0]
    return v


def _shared_target(v: Any) -> str | None:
    """What a ``BUILD`` or item opcode on ``v`` would change for the whole process, or ``None``.

    An imported object (a module, a class, a global dict: the stream names it as a global), also
    returned by an identity function (``restore_type_tag(torch.nn.modules.conv.F, None)`` is
    ``torch.nn.functional``: red-team round 29), and the shared instance a callable of
    :data:`_SHARED_RESULTS` returns (``dateutil.tz.tzutc()``).
    """
    through = ""
    for _ in range(64):
        if isinstance(v, Global):
            return f"the imported object {v.qualname}{through}"
        name = _call_name(v)
        if name in _SHARED_RESULTS:
            return f"the instance {name}() shares with the whole process{through}"
        if name not in _IDENTITY_FUNCS or not isinstance(v.args, tuple) or not v.args:
            return None
        through = f" (returned by {name})"
        v = v.args[0]
    return None


def _is_dunder(key: Any) -> bool:
    """Whether ``key`` is an ``__x__`` name (a protocol attribute when it names an attribute)."""
    return isinstance(key, str) and len(key) > 4 and key.startswith("__") and key.endswith("__")


def _computed_key(key: Any) -> bool:
    """Whether a key is built by a call at load time (``numpy.str_('__x__')``, ``str(bytes([...]))``).

    Its text is unknown: as an attribute name it may be any protocol attribute. A folded
    constant (bytes) is not: no attribute is named by bytes.
    """
    return isinstance(key, Obj) and not isinstance(key.value, (bytes, bytearray))


def _bytes_text(data: bytes | bytearray) -> str | None:
    """An escaping time-zone text in bytes read as latin-1 or UTF-32 (a numpy ``'U'`` scalar's data)."""
    if len(data) > 1 << 16:
        return None
    texts = [bytes(data).decode("latin-1")]
    if len(data) % 4 == 0:
        texts += [bytes(data).decode(c, "replace") for c in ("utf-32-le", "utf-32-be")]
    for text in texts:
        if _DATEUTIL in text and _tz_path_escapes(text) is not None:
            return text
    return None


def _built_text(v: Obj) -> bool:
    """Whether ``v`` is a string the stream builds from values whose text the scanner cannot read.

    ``str(x)``, ``numpy.str_(x)`` and ``copyreg._reconstructor(cls, str, x)`` of a literal string
    or bytes (searched as such) are known; of anything else (``bytes([100, 97, ...])``, another
    call), unknown. So is numpy's ``scalar(dtype, data)`` whose data is not literal bytes, unless
    the dtype is a literal non-text one.
    """
    name = _call_name(v)
    args = v.args if isinstance(v.args, tuple) else ()
    if name in _RECONSTRUCTORS:
        base = args[1] if len(args) == 3 else None
        if not (isinstance(base, Global) and base.qualname in _STR_CALLS):
            return False
        args = args[2:]
    elif name in _NUMPY_SCALARS:
        if len(args) >= 2 and isinstance(args[1], (bytes, bytearray, str)):
            return False
        if len(args) >= 2 and isinstance(args[1], Obj) and isinstance(args[1].value, (bytes, bytearray)):
            return False
        kind = _scalar_kind(args[0]) if args else None
        return kind is None or kind in "UO"
    elif name not in _STR_CALLS:
        return False
    if not args:
        return False  # str() is ''
    first = _unwrapped(args[0])
    if isinstance(first, (str, bytes, bytearray, int, float, bool)) or first is None:
        return False
    return not (isinstance(first, Obj) and isinstance(first.value, (bytes, bytearray)))


def _scalar_kind(dtype: Any) -> str | None:
    """The kind letter of a numpy dtype argument (``'U'``, ``'f'`` ...), if the stream names it."""
    if isinstance(dtype, Obj) and _call_name(dtype) in _DTYPE_NAMES and isinstance(dtype.args, tuple):
        first = dtype.args[0] if dtype.args else None
        m = _TYPESTR.fullmatch(first) if isinstance(first, str) else None
        return m.group(1) if m else None
    return None


#: Class name prefixes of objects that answer attribute lookups from the data the stream gave
#: them (scikit-learn's ``Bunch`` from its items, torch's ``Module`` from its ``_modules``, any
#: object from the ``__dict__`` its BUILD set); numpy and pandas read array protocols and methods
#: (``__array_interface__``, ``mean``) from what they are handed.
_ATTRIBUTE_SERVERS: Final = ("sklearn.", "torch.nn.", "torch.ao.nn.", "torch.optim.", "argparse.Namespace")
#: Modules whose callables read array protocols from their arguments.
_ARRAY_READERS: Final = ("numpy.", "pandas.", "scipy.", "sklearn.externals.array_api_compat.")


def _size_arg(v: Any) -> int | None:
    """A size argument: a non-negative int, :data:`COMPUTED` for a value built by a call.

    Any call's result counts as computed (``int("1e10")``, ``numpy.int64(2**34)``), except a
    folded constant (``_codecs.encode(text, 'latin1')`` is bytes, not a size).
    """
    n = _int(v)
    if n is not None:
        return n if n >= 0 else None
    return COMPUTED if isinstance(v, Obj) and v.value is None else None


def _bytes_length(v: Any, depth: int = 0) -> int | None:
    """Length of ``bytes(v)``/``bytearray(v)``: a size, or the count of an iterable ``v``."""
    if isinstance(v, Obj):
        count = _iter_count(v, depth)
        return count if count is not None else _size_arg(v)
    return _size_arg(v)


def _iter_count(v: Any, depth: int = 0) -> int | None:
    """How many items iterating ``v`` yields, when known (:data:`COMPUTED` for a computed count).

    Literal containers and strings, a folded constant, ``range(...)``, ``bytes(n)`` and the
    consumers of :data:`_CONSUMERS` (whose count is their argument's); ``None`` otherwise.
    """
    if isinstance(v, (tuple, bytes, str)):
        return len(v)
    if isinstance(v, (PList, PSet, PDict)):
        return len(v.items)
    if not isinstance(v, Obj) or depth > 16:
        return None
    if isinstance(v.value, (bytes, bytearray)):
        return len(v.value)
    name = _call_name(v)
    args = v.args if isinstance(v.args, tuple) else ()
    if name in _RANGES:
        if not 1 <= len(args) <= 3:
            return None
        return _range_count(*((0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]))
    if name in _BYTES and len(args) == 1:
        return _bytes_length(args[0], depth + 1)
    if (name in _CONSUMERS or name == "array.array") and args:
        return _iter_count(args[-1] if name == "array.array" else args[0], depth + 1)
    return None


#: Time-zone transitions a real zone has at most (hundreds; a margin for generated zones): at
#: 5,000 dateutil's quadratic DST inference already takes seconds.
MAX_TZ_TRANSITIONS: Final = 2_000
#: Modules whose callables turn what they are given into arrays (``numpy.negative(range(2**28))``,
#: ``pandas.Series(0, index=...)``): their calls are sized by :func:`_lazy_length`.
_LAZY_SIZED: Final = (
    "pandas.",
    "numpy.",
    "scipy._lib.array_api_compat",
    "sklearn.externals.array_api_compat",
)
#: Name prefixes of the callables whose calls have value checks (:func:`_value_checked`).
_CHECKED_PREFIXES: Final = (*_LAZY_SIZED, "pandas.", "dateutil.", *_TORCH_LAYERS)
#: pandas callables that hold their arguments without broadcasting them over an axis.
_NON_BROADCASTING: Final = (
    "BlockManager", "SingleBlockManager", "_unpickle_block", "BlockPlacement", "__pyx_unpickle_NDArrayBacked",
    "__pyx_unpickle_IntervalMixin", "_unpickle_timestamp", "_timedelta_unpickle", "_nat_unpickle", "dtype",
)  # fmt: skip
#: A product of lengths past this is as good as infinite (kept small to stay cheap).
_LENGTH_CAP: Final = 1 << 62


def _range_count(start: Any, stop: Any, step: Any) -> int | None:
    """Elements of ``range(start, stop, step)``; :data:`COMPUTED` for a bound the stream computes.

    ``None`` when a bound is not an integer, or the step is 0 (``range`` would raise).
    """
    bounds = (_int(start), _int(stop), _int(step))
    if None in bounds:
        return COMPUTED if any(_size_arg(v) == COMPUTED for v in (start, stop, step)) else None
    a, b, c = bounds
    assert a is not None and b is not None and c is not None
    if c == 0:
        return None
    return max(0, (b - a + c - (1 if c > 0 else -1)) // c)


def _may_materialise(args: Any, depth: int = 0) -> bool:
    """Whether a numpy call's arguments hold something it may turn into a big array.

    A ``range`` or another call's result, also inside a literal container (``numpy.array([range(
    2**28)])`` materialises the range: red-team round 23), or a literal container of more than 64
    items; numpy's own rebuilds (``_reconstruct(ndarray, (0,), b'b')``, ``scalar(dtype, bytes)``)
    hold none.
    """
    if not isinstance(args, tuple):
        return False
    for a in args:
        if isinstance(a, Obj):
            name = _call_name(a) or ""
            if name in _RANGES or name in _CONSUMERS or name.startswith("pandas."):
                return True
        elif _container(a):
            items = a if isinstance(a, tuple) else a.items
            if len(items) > 64:
                return True
            flat = tuple(x for pair in items for x in pair) if isinstance(a, PDict) else tuple(items)
            nested = any(_node(x) for x in flat)
            if nested and depth >= 3:  # deeper than it looks: sized (a range four lists down, round 25)
                return True
            if _may_materialise(flat, depth + 1):
                return True
    return False


def _lazy_length(v: Any, budget: list[int], depth: int = 0) -> int:
    """Elements a numpy or pandas call makes of ``v`` at load time.

    A ``range(...)`` or a ``RangeIndex`` (called, or rebuilt as ``_new_Index(RangeIndex,
    {'start', 'stop', 'step'})``) counts its length; a tuple, list, set or dict its item count
    times its largest item's (a list of ``N`` labels is ``N``, of ``N`` rows of ``M`` is
    ``N * M``); a pandas value the product of its arguments' (``DataFrame(0, range(10**5),
    range(10**5))`` and ``DataFrame(1, [0]*2**15, [0]*2**15)`` broadcast to 2**30 cells and
    more); :data:`COMPUTED` for a length the stream computes. ``budget`` bounds the nodes
    visited (values shared through the memo are visited again).
    """
    budget[0] -= 1
    if depth > 8 or budget[0] < 0:
        return 1
    if _container(v):
        items: Any = v if isinstance(v, tuple) else v.items
        if isinstance(v, PDict):
            items = [x for _, x in items]
        total = len(items)  # each scalar item is one element
        for x in items[:4096]:
            if not _node(x):
                continue
            n = _lazy_length(x, budget, depth + 1)
            if n == COMPUTED:
                return COMPUTED
            total = min(total - 1 + n, _LENGTH_CAP)
        return max(total, 1)
    parts: list[Any]
    if isinstance(v, Obj):
        name = _call_name(v) or ""
        args = v.args if isinstance(v.args, tuple) else ()
        if name in _RANGES:
            count = _iter_count(v)
            return count if count is not None else 1
        if not name.startswith(_LAZY_SIZED):
            return 1
        bounds: tuple[Any, ...] | None = None
        if name.endswith(".RangeIndex") and args:
            bounds = (*args, 1)[:3] if len(args) >= 2 else (0, args[0], 1)
        elif name.endswith("._new_Index") and len(args) == 2 and isinstance(args[1], PDict):
            cls, d = args
            if isinstance(cls, Global) and cls.ref.name == "RangeIndex":
                bounds = (d.get("start", 0), d.get("stop", 0), d.get("step", 1))
        if bounds is not None:
            count = _range_count(*bounds)
            return count if count is not None else 1
        parts = list(args)
        if isinstance(v.kwargs, PDict):
            parts += [x for _, x in v.kwargs.items]
        # a frame, series or index broadcasts its data over its axes (product); the managers,
        # blocks and Cython rebuilds only hold what they are given (sum)
        broadcast = not name.endswith(_NON_BROADCASTING)
    else:
        return 1
    total = 1 if broadcast else 0
    for part in parts:
        n = _lazy_length(part, budget, depth + 1)
        if n == COMPUTED:
            return COMPUTED
        total = min(total * max(n, 1) if broadcast else total + n, _LENGTH_CAP)
    return max(total, 1)


def _product(shape: Any, depth: int = 0) -> int | None:
    """Elements of an array of ``shape`` (int, tuple, list, ``torch.Size(...)``); :data:`COMPUTED`."""
    if isinstance(shape, Obj) and _call_name(shape) in ("torch.Size",) and isinstance(shape.args, tuple):
        if depth >= MAX_NESTING:
            raise LimitReached(f"torch.Size nested over {MAX_NESTING} deep")
        return _product(shape.args[0], depth + 1) if shape.args else None
    if isinstance(shape, PList):
        shape = tuple(shape.items)
    dims = [_size_arg(d) for d in shape] if isinstance(shape, tuple) else [_size_arg(shape)]
    if not dims or any(d is None for d in dims):
        return None
    if COMPUTED in dims:
        return COMPUTED
    total = 1
    for d in dims:
        assert d is not None
        total *= d
    return total


def _scaled(count: int | None, size: int) -> int | None:
    return count if count is None or count == COMPUTED else count * size


def _numpy_item(dtype: Any) -> int | None:
    """Bytes an element of a numpy ``dtype`` argument (a type string, bytes or a dtype value).

    :data:`COMPUTED` for a dtype the emulator cannot size (a sub-array dtype built from a tuple:
    ``dtype(('O', (10000, 10000)))``): its arrays may be of any size.
    """
    if isinstance(dtype, bytes):
        dtype = dtype.decode("latin-1")
    info = typestr_itemsize(dtype) if isinstance(dtype, str) else dtype_info(dtype)
    return max(info[0], 1) if info is not None else COMPUTED


def _array_bytes(shape: Any, dtype: Any, *, given: bool) -> int | None:
    """Bytes of a numpy array of ``shape`` and ``dtype`` (``given``: the dtype argument is there)."""
    count = _product(shape)
    if count is None or count == COMPUTED or count == 0:
        return count
    item = _numpy_item(dtype) if given else 8
    return COMPUTED if item == COMPUTED or item is None else count * item


def _torch_item(name: str) -> int:
    return next((n for prefix, n in _TORCH_ITEM if name.startswith(prefix)), 1)


def requested_bytes(module: str, name: str, args: Any) -> int | None:
    """A lower bound of the bytes a call of ``module.name(*args)`` allocates (or iterates).

    ``bytes``/``bytearray`` of a size or of an iterable; ``list``/``tuple``/``set``/
    ``frozenset``/``deque``/``Counter`` of a sized iterable (``range``, ``bytes(n)``, nested
    consumers; 8 bytes a slot, so ``deque(range(10**18), 0)``, which loops for ever in constant
    memory, counts too); ``array.array(code, iterable)``; numpy's ``_reconstruct(cls, shape,
    dtype)``, ``ndarray(shape, dtype)`` and ``void(n)`` (the dtype's item size); torch's
    ``*Storage(n)`` and ``*Tensor(*sizes)`` (the class's element size). :data:`COMPUTED` when a
    size is computed by the stream at load time; ``None`` for anything else.
    """
    if not isinstance(args, tuple) or not args:
        return None
    qual = f"{module}.{name}"
    if qual in _BYTES:
        if len(args) != 1:
            return None
        return _bytes_length(args[0])
    if qual in _CONSUMERS:  # a literal argument's items are in the stream already
        return _scaled(_iter_count(args[0]), 8) if isinstance(args[0], Obj) else None
    if qual == "array.array":
        item = _ARRAY_ITEM.get(args[0], 8) if isinstance(args[0], str) else 8
        return _scaled(_iter_count(args[1]), item) if len(args) == 2 and isinstance(args[1], Obj) else None
    if module.startswith("numpy"):
        if name == "_reconstruct" and len(args) >= 2:
            return _array_bytes(args[1], args[2] if len(args) > 2 else None, given=len(args) > 2)
        if name == "ndarray":
            return _array_bytes(args[0], args[1] if len(args) > 1 else None, given=len(args) > 1)
        return _size_arg(args[0]) if name == "void" else None
    if module.startswith("torch") and name.endswith(("Storage", "Tensor")):
        item = _torch_item(name)
        if len(args) == 1 and _call_name(args[0]) == "torch.Size":
            return _scaled(_product(args[0]), item)
        return _scaled(_product(args), item)
    return None


MAX_BLOB_WALK: Final = 4096
#: Containers all the calls of one stream may open together (see ``opened``).
MAX_BLOB_TOTAL: Final = 65536


def find_blobs(
    value: Any, *, max_depth: int = 4, max_nodes: int = MAX_BLOB_WALK, opened: dict[int, Any] | None = None
) -> list[bytes]:
    """Every ``bytes`` value inside ``value`` (tuples, lists, dicts, folded calls), bounded.

    Depth-limited, each container's first 64 items, each shared container opened once, and at
    most ``max_nodes`` containers in all: the walk costs O(``max_nodes``) whatever the pickle
    built (memo references can share one tuple N times at each of several levels: N^depth).
    ``opened`` is shared across calls (the emulator passes one per stream): a container is
    opened once per stream, and at most :data:`MAX_BLOB_TOTAL` in all. It holds the containers
    themselves, not only their ids: a container freed after one call (the ``(args, kwargs)``
    tuple a call site passes) must not lend its id to a new one, whose blobs would then be
    skipped (a payload in ``BytesIO`` state handed to ``torch.load`` went unscanned whenever the
    allocator reused the address).
    """
    found: list[bytes] = []
    seen: dict[int, Any] = {} if opened is None else opened  # shared: one budget across calls
    here = [0]

    def walk(v: Any, depth: int) -> None:
        if depth > max_depth or len(found) > 16:
            return
        if isinstance(v, (bytes, bytearray)):
            found.append(bytes(v))
            return
        if not isinstance(v, (Obj, tuple, PList, PSet, PDict)) or id(v) in seen:
            return
        if here[0] >= max_nodes or len(seen) >= MAX_BLOB_TOTAL:
            return
        here[0] += 1
        seen[id(v)] = v  # kept alive: its id stays its own
        if isinstance(v, Obj):
            if isinstance(v.value, (bytes, bytearray)):
                found.append(bytes(v.value))
            else:
                walk(v.args, depth + 1)
                walk(v.kwargs, depth + 1)
                walk(v.state, depth + 1)
        elif isinstance(v, tuple):
            for x in v[:64]:
                walk(x, depth + 1)
        elif isinstance(v, (PList, PSet)):
            for x in v.items[:64]:
                walk(x, depth + 1)
        elif isinstance(v, PDict):
            for k, x in v.items[:64]:
                walk(k, depth + 1)
                walk(x, depth + 1)

    walk(value, 0)
    return found


#: A protocol-0 ``INT``/``LONG`` line read at most this long (the unpickler has no limit; a longer
#: number is kept as an opaque value, never converted).
_MAX_INT_LINE: Final = 1 << 20
#: ``strtol(line, &end, 0)`` as CPython's ``INT`` reads it: C whitespace, a sign, then hex after
#: ``0x``, octal after ``0``, else decimal; a NUL ends the line as its newline does.
_C_LONG_LINE: Final = LazyPattern(
    rb"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)(?:\x00.*)?", re.DOTALL
)
#: ``PyLong_FromString(line, NULL, 0)`` (``int(text, 0)``): Python's integer literal syntax.
_PY_INT_LINE: Final = LazyPattern(
    rb"\s*[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|0(?:_?0)*|[1-9](?:_?[0-9])*)\s*"
)


#: What CPython's ``FLOAT`` accepts (``PyOS_string_to_double``): no whitespace, no underscores.
#: ``\d+(?:\.\d*)?``, not ``\d+\.?\d*`` (the same strings): that one split a run of digits
#: between its two ``\d`` every way before failing, quadratic on a 1 MiB line of digits and a letter.
_C_FLOAT_LINE: Final = LazyPattern(
    rb"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE
)


def _text_float(line: bytes) -> float:
    """The value a protocol-0 ``FLOAT`` line has for CPython's C unpickler or its Python one.

    The C unpickler (``pickle.load``) reads up to a NUL with ``PyOS_string_to_double``: no
    blanks, no underscores, an overflow fails. The Python one (``pickle._Unpickler``, which
    ``joblib.load`` subclasses) calls ``float(line)``: blanks, ``1_5`` and ``1e999`` (inf) pass.
    A line either accepts is read (the C value when both do): a stream one loader refuses runs
    in the other.

    Raises:
        ValueError: both reject the line.
    """
    text = line.split(b"\x00", 1)[0]
    if _C_FLOAT_LINE.fullmatch(text):
        value = float(text)
        if not (math.isinf(value) and b"inf" not in text.lower()):
            return value
    try:
        return float(line)
    except ValueError:
        raise ValueError(f"could not convert string to float: {text[:40]!r}") from None


def _memo_index(line: bytes) -> int:
    """A protocol-0 ``GET``/``PUT`` index as CPython reads it: base 10, up to a NUL.

    Raises:
        ValueError: the unpickler rejects it too.
    """
    return int(line.split(b"\x00", 1)[0], 10)


def _text_int(line: bytes, *, c_long: bool) -> Any:
    """The value CPython's unpickler gives a protocol-0 ``INT`` (``c_long``) or ``LONG`` line.

    ``INT``: ``strtol`` with base 0 (``010`` is 8, ``0x10`` 16) when the number fits a C long
    (``00``/``01`` and other two-character zeros and ones are ``False``/``True``), else
    ``int(text, 0)``; a line starting with a NUL is 0 (``strtol`` stops there, and the C reader
    accepts an end at a NUL). ``LONG``: ``int(text, 0)`` up to a NUL. Numbers of more than 64 digits stay
    :class:`Opaque` (the loader converts them; the emulator need not).

    Raises:
        ValueError: the unpickler rejects the line too.
    """
    if c_long:
        if line[:1] == b"\x00":  # strtol reads no digit; it stops at the NUL, which the C reader accepts
            return False if len(line) == 2 else 0
        m = _C_LONG_LINE.fullmatch(line)
        if m:
            sign, digits = m.groups()
            base = 16 if digits[:2] in (b"0x", b"0X") else 8 if len(digits) > 1 and digits[0] == 48 else 10
            if len(digits) <= 64:
                value = int(digits[2:] if base == 16 else digits, base)
                value = -value if sign == b"-" else value
                if -(1 << 63) <= value < (1 << 63):
                    if len(line) == 2 and value in (0, 1):
                        # (not ``bool(value) if ... else value``: its type is int, and mypyc
                        # would turn the bool into an int)
                        return bool(value)
                    return value
    text = line.split(b"\x00", 1)[0]
    if not _PY_INT_LINE.fullmatch(text):
        raise ValueError(f"invalid literal for int() with base 0: {text[:40]!r}")
    if len(text) > 64:
        return Opaque("long", len(text) * 415 // 1000 + 1)  # digits -> about that many bytes
    return int(text, 0)


#: A numpy type string as numpy pickles and ``.npy`` headers write it: an optional byte order,
#: one kind character, an optional size and an optional datetime unit (``'<f8'``, ``'U3'``,
#: ``'<M8[ns]'``). Anything else (``'float64'``, which numpy also accepts) is not sized: a guessed
#: item size would let the emulator resume inside an array's bytes where the loader does not.
_TYPESTR: Final = re.compile(r"[<>|=]?([a-zA-Z?])(\d*)(?:\[\w+\])?")
_KIND_SIZE: Final = {
    "?": 1,
    "b": 1,
    "B": 1,
    "h": 2,
    "H": 2,
    "i": 4,
    "I": 4,
    "l": 8,
    "L": 8,
    "q": 8,
    "Q": 8,
    "e": 2,
    "f": 4,
    "d": 8,
    "g": 16,
    "F": 8,
    "D": 16,
    "G": 32,
    "O": 8,
    "M": 8,
    "m": 8,
    "p": 8,
    "P": 8,
}


def typestr_itemsize(typestr: str) -> tuple[int, bool] | None:
    """Item size (bytes) and whether it holds Python objects, for a numpy type string.

    Args:
        typestr: ``'<f8'``, ``'|b1'``, ``'U3'``, ``'O'``, ``'<M8[ns]'`` ...

    Returns:
        ``(itemsize, hasobject)`` or ``None`` when the string is not understood.
    """
    m = _TYPESTR.fullmatch(typestr)
    if not m:
        return None
    kind, digits = m.group(1), m.group(2)
    if "[" in typestr and kind not in "Mm":
        return None
    if kind == "O":
        return (int(digits) if digits else 8), True
    if digits:
        n = int(digits)
        if kind == "U":
            return 4 * n, False
        if kind in "biufcSVaMm":
            return n, False
        if kind == "?":
            return n, False
        return None
    if kind in _KIND_SIZE:
        return _KIND_SIZE[kind], False
    if kind in "SUV":
        return 0, False
    return None


def dtype_info(
    dtype: Any, _seen: dict[int, tuple[int, bool] | None] | None = None, _depth: int = 0
) -> tuple[int, bool] | None:
    """``(itemsize, hasobject)`` of a symbolic ``numpy.dtype(...)`` (with its ``BUILD`` state).

    Returns ``None`` when the value is not a dtype the emulator can size. Each dtype object is
    sized once (a pickle can make a dtype whose fields name one shared sub-dtype twice at each
    of 60 levels: 2^60 walks otherwise); a dtype nested in itself is not sizeable.

    Raises:
        LimitReached: sub-dtypes nested over :data:`MAX_NESTING` deep.
    """
    seen: dict[int, tuple[int, bool] | None] = {} if _seen is None else _seen
    if id(dtype) in seen:
        return seen[id(dtype)]
    if _depth >= MAX_NESTING:
        raise LimitReached(f"numpy dtypes nested over {MAX_NESTING} deep")
    seen[id(dtype)] = None  # while being sized: a cycle is not sizeable
    out = _dtype_info(dtype, seen, _depth)
    seen[id(dtype)] = out
    return out


#: numpy's ``NPY_ITEM_REFCOUNT`` dtype flag: the items are Python object pointers.
_NPY_ITEM_REFCOUNT: Final = 0x01


def _dtype_layout(state: Any) -> tuple[Any, Any, int | None] | None:
    """``(subarray, fields, flags)`` of a dtype state as numpy's ``__setstate__`` reads it.

    ``flags`` is ``None`` where numpy recomputes them from the fields (versions 0-2); states of
    another shape (numpy refuses them) give ``None``.
    """
    if not isinstance(state, tuple):
        return None
    n = len(state)
    if n in (8, 9):
        flags = state[7]
        if not isinstance(flags, int) or isinstance(flags, bool):
            return None
        return state[2], state[4], flags
    if n in (6, 7) and isinstance(state[0], int) and not isinstance(state[0], bool):
        fields = state[4] if n == 7 else state[3]
        return state[2], fields, None if state[0] < 3 else 0  # version 3+ without flags: 0
    if n == 5:  # version 0: (endian, subarray, fields, elsize, alignment), flags recomputed
        return state[1], state[2], None
    return None


def _dtype_objects(dtype: Any, depth: int = 0) -> bool | None:
    """Whether a numpy dtype value built by the stream holds Python objects; ``None``: unknown."""
    if depth > 32 or not isinstance(dtype, Obj) or not isinstance(dtype.func, Global):
        return None
    if dtype.func.qualname not in _DTYPE_NAMES:
        return None
    args = dtype.args
    first = args[0] if isinstance(args, tuple) and args else None
    if isinstance(first, Global):  # a scalar type: dtype(numpy.record, ...) of a recarray
        if first.ref.name in ("object_", "object"):
            return True
    else:
        m = _TYPESTR.fullmatch(first) if isinstance(first, str) else None
        if m is None:
            return None
        if m.group(1) == "O":
            return True
    if dtype.state is None:
        return False
    layout = _dtype_layout(dtype.state)
    if layout is None:
        return None
    sub, fields, _ = layout
    parts: list[Any] = []
    if isinstance(fields, PDict):
        parts += [spec[0] if isinstance(spec, tuple) and spec else None for _, spec in fields.items]
    elif fields is not None:
        return None
    if isinstance(sub, tuple) and sub:
        parts.append(sub[0])
    elif sub is not None:
        return None
    holds = False
    for part in parts:
        h = _dtype_objects(part, depth + 1)
        if h is None:
            return None
        holds = holds or h
    return holds


def dtype_flags_problem(dtype: Obj) -> str | None:
    """Why the flags a stream gives a numpy dtype contradict what it holds, or ``None``.

    numpy's ``dtype.__setstate__`` takes the flags from the state (8 or 9 items; 0 for a 6- or
    7-item state of version 3 or later) without checking them: a structured dtype with an
    object field and no ``NPY_ITEM_REFCOUNT`` flag makes numpy read 8 bytes of the stream as a
    ``PyObject *`` (``scalar(dtype, b'AAAAAAAA')``, then ``str()``: a chosen pointer is
    dereferenced), and the flag on a dtype without objects makes it reference-count raw bytes.
    Both are memory corruption when the file is loaded.
    """
    layout = _dtype_layout(dtype.state)
    if layout is None or layout[2] is None:
        return None
    holds = _dtype_objects(dtype)
    flagged = bool(layout[2] & _NPY_ITEM_REFCOUNT)
    if holds is None:
        return None if flagged else "a dtype whose fields the scanner cannot check, without the object flag"
    if holds == flagged:
        return None
    if holds:
        return (
            f"numpy dtype flags {layout[2]:#x} lack NPY_ITEM_REFCOUNT but the dtype holds objects: "
            "numpy reads the array's bytes as object pointers (memory corruption when loaded)"
        )
    return (
        f"numpy dtype flags {layout[2]:#x} set NPY_ITEM_REFCOUNT on a dtype without objects: numpy "
        "reference-counts raw bytes as object pointers (memory corruption when loaded)"
    )


def _dtype_info(dtype: Any, seen: dict[int, tuple[int, bool] | None], depth: int) -> tuple[int, bool] | None:
    if not isinstance(dtype, Obj) or not isinstance(dtype.func, Global):
        return None
    if dtype.func.qualname not in _DTYPE_NAMES:
        return None
    args = dtype.args
    if not isinstance(args, tuple) or not args or not isinstance(args[0], str):
        return None
    base = typestr_itemsize(args[0])
    if base is None:
        return None
    itemsize, hasobject = base
    state = dtype.state
    if state is None:  # no BUILD: the type string alone
        return itemsize, hasobject
    # Only the state numpy writes (8 items; 9 with metadata: datetimes), read as its
    # ``__setstate__`` reads it. numpy also accepts 5-7 items with other layouts; a state the
    # emulator would read differently from numpy is not sized (the array's bytes are unknown).
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
        return None
    elsize, alignment, flags = state[5], state[6], state[7]
    if any(not isinstance(v, int) or isinstance(v, bool) for v in (elsize, alignment, flags)):
        return None
    if args[0].lstrip("<>|=")[:1] in ("V", "S", "U", "a"):  # flexible: the state's size counts
        if elsize <= 0:
            return None
        itemsize = elsize
    # (a fixed kind keeps its size: numpy ignores the state's, ``('f8', elsize=1)`` is 8 bytes)
    holds = bool(flags & _NPY_ITEM_REFCOUNT)  # numpy takes the flags from the state
    if holds != hasobject and not (holds and (state[2] is not None or state[4] is not None)):
        return None  # an 'O' without the flag, or the flag on a plain kind: not what numpy writes
    hasobject = holds
    fields = state[4]
    if isinstance(fields, PDict):
        for _, spec in fields.items:
            if isinstance(spec, tuple) and spec:
                sub = dtype_info(spec[0], seen, depth + 1)
                if sub is None:
                    return None
                if sub[1] and not hasobject:
                    return None
    sub = state[2]
    if isinstance(sub, tuple) and sub:
        inner = dtype_info(sub[0], seen, depth + 1)
        if inner is None or (inner[1] and not hasobject):
            return None
    return itemsize, hasobject


# --------------------------------------------------------------------------- the machine


class _Stop(Exception):
    pass


CaptureFn = Callable[[str, str], bool]


class _VM:
    """One emulator run over one pickle stream (fresh stack and memo)."""

    def __init__(
        self,
        reader: Reader,
        result: PickleResult,
        *,
        capture: CaptureFn | None,
        max_value: int,
        max_stack: int,
        depth: int,
        max_calls_kept: int = 5,
        deadline: float | None = None,
        joblib: bool = True,
        fold: CaptureFn | None = None,
        lenient_memo: bool = False,
        capture_known: dict[tuple[str, str], bool] | None = None,
    ) -> None:
        self.r = reader
        self.capture_known = capture_known
        self.joblib = joblib
        self.lenient_memo = lenient_memo
        self.fold = fold
        self.deadline = deadline
        self.blob_opened: dict[int, Any] = {}  # containers find_blobs has opened in this stream
        self.walk_budget = MAX_ARGUMENT_WALK  # container nodes note_passed may still visit
        self.big_ints_seen: set[str] = set()  # callables already reported as handed a huge int
        self.memo_bomb_seen = False  # a sparse memo index reported once
        # containers reached from objects' states (walked once each for ``__x__`` keys; a dict
        # among them filled later by SETITEM(S) has those keys checked then)
        self.state_seen: dict[int, Any] = {}
        self.checked: dict[str, bool] = {}  # qualified name -> whether its calls have value checks
        self.state_budget = MAX_STATE_WALK
        self.computed_keys: dict[int, Any] = {}  # mappings given a key built at load time
        # dicts reported for an array-protocol key: (the dict, the anomaly), replaced by the
        # report of the state that sets it as an attribute (one finding, the more precise one)
        self.protocol_dicts: dict[int, tuple[PDict, Anomaly]] = {}
        # containers and values searched for time-zone paths (each once a stream), and the objects
        # filled (SETITEM(S), APPEND(S)) with a string built at load time
        self.text_seen: dict[int, Any] = {}
        self.text_budget = MAX_TEXT_WALK
        self.built_texts: dict[int, Any] = {}
        self.frame_end = 0  # offset where the current protocol-4 frame ends
        self.res = result
        self.capture = capture
        self.max_value = max_value
        self.max_stack = max_stack
        self.depth = depth
        self.max_calls_kept = max_calls_kept
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.op_offset = 0
        self.op_name = ""

    # -- stack helpers
    def captured(self, module: str, name: str) -> bool:
        """``capture(module, name)``, from ``capture_known`` when it has the answer (no call)."""
        known = self.capture_known
        if known is not None:
            hit = known.get((module, name))
            if hit is not None:
                return hit
        capture = self.capture
        return capture is not None and capture(module, name)

    def push(self, v: Any) -> None:
        if len(self.stack) >= self.max_stack:
            raise LimitReached("pickle stack too deep")
        self.stack.append(v)

    def pop(self) -> Any:
        if not self.stack:
            raise ValueError("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise ValueError("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise ValueError("no MARK on the stack")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # -- reading helpers
    def _bytes(self, n: int) -> Any:
        if n < 0:
            raise ValueError("negative length")
        if n > self.max_value:
            self.r.skip(n)
            return Opaque("bytes", n)
        return self.r.read(n)

    def _uint(self, fmt: str, size: int) -> int:
        value: int = struct.unpack(fmt, self.r.read(size))[0]
        return value

    def _text(self, n: int, kind: str) -> Any:
        data = self._bytes(n)
        if isinstance(data, Opaque):
            return Opaque(kind, n)
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise ValueError(f"invalid UTF-8 in {self.op_name}") from exc

    # -- globals and calls
    def resolve(self, module: str, name: str, opcode: str) -> Global:
        ref = GlobalRef(module=module, name=name, offset=self.op_offset, opcode=opcode)
        if not _dotted_name(module) or not _dotted_name(name):
            # A real unpickler still hands these to find_class (``__import__('zz-mod')`` loads
            # ``zz-mod.py`` if one is on the path): record the global, then stop parsing.
            if module and name and "\n" not in module and "\n" not in name:
                self.res.globals.append(ref)
            raise ValueError(f"{opcode} names no importable object: {module!r} {name!r}")
        self.res.globals.append(ref)
        return Global(ref)

    def anomaly(self, kind: str, detail: str) -> None:
        self.res.anomalies.append(Anomaly(kind, self.op_offset, self.op_name, detail))

    def _argument_tuple(self, args: Any) -> Any:
        """The positional arguments a call of ``func(*args)`` gets, for ``args`` not a tuple.

        Only the C unpickler insists on a tuple; Python's (joblib's, torch's ``weights_only``)
        unpack any iterable: a list, set or string gives its items, a dict its keys. Anything
        else is built at load time: its items are unknown (``dynamic-callable``).
        """
        kind = type(args).__name__
        if isinstance(args, (PList, PSet)):
            items: Any = tuple(args.items)
        elif isinstance(args, PDict):
            items = tuple(k for k, _ in args.items)
        elif isinstance(args, (str, bytes)):
            items = tuple(args)
        else:
            self.anomaly(
                "dynamic-callable",
                f"{self.op_name} calls with arguments built at load time ({preview(args, 60)}), not a tuple",
            )
            return args
        self.anomaly(
            "argument-list",
            f"{self.op_name} calls with a {kind} of arguments, not a tuple: the C unpickler refuses "
            "it, Python's (joblib.load, torch.load) unpacks it",
        )
        return items

    def call(self, func: Any, args: Any, kwargs: Any = None) -> Obj:
        if not isinstance(args, tuple):
            args = self._argument_tuple(args)
        obj = Obj(func=func, args=args, kwargs=kwargs, opcode=self.op_name, offset=self.op_offset)
        where = func.qualname if isinstance(func, Global) else "<computed callable>"
        self.note_passed(where, args, kwargs)
        if isinstance(func, Global):
            ref = func.ref
            ref.ncalls += 1
            sites = CALLING_SITES.get(where)
            if sites is not None and isinstance(args, tuple):
                self._calls_its_argument(where, args, sites)
            captured = self.captured(ref.module, ref.name)
            if len(ref.calls) < self.max_calls_kept or captured:
                site = CallSite(opcode=self.op_name, offset=self.op_offset)
                if captured:
                    site.preview = preview((args, kwargs) if kwargs is not None else args)
                    # one budget of containers for the whole stream: each opened once, in all
                    site.blobs = find_blobs((args, kwargs), opened=self.blob_opened)
                if len(ref.calls) < 64:
                    ref.calls.append(site)
            # Constant folding for protocol <= 2 bytes: _codecs.encode(str, 'latin1').
            if where in _CODECS_ENCODE:
                enc = args[1] if isinstance(args, tuple) and len(args) >= 2 else None
                if not (isinstance(enc, str) and enc.lower() in ("latin1", "latin-1")):
                    self._codec_call(where, enc)
                elif isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
                    try:
                        obj.value = args[0].encode("latin-1")
                    except UnicodeEncodeError:
                        obj.value = None
            if isinstance(args, tuple):
                if where not in self.big_ints_seen:
                    self._big_int_arguments(where, args)
                checked = self.checked.get(where)
                if checked is None:
                    checked = self.checked[where] = _value_checked(where)
                if checked:
                    self._value_checks(where, args, kwargs, obj, runs_init=self.op_name in _INIT_OPCODES)
            if isinstance(args, tuple):
                pos = _SETATTR_STATE_AT.get(where)
                if pos is not None and len(args) > pos:  # setattr(obj, k, v) for each item of the state
                    self._dunder_state(args[pos], f"{self.op_name} {where}")
                    if where in CALL_ARGUMENTS_AT and args[pos] is not None and isinstance(args[2], tuple):
                        # the state is set on what func(*args) returns
                        shared = _shared_target(Obj(func=args[0], args=args[2], opcode="", offset=0))
                        if shared is not None:
                            self.anomaly(
                                "mutates-global", f"{self.op_name} {where} sets the state of {shared}"
                            )
                elif where in _RECONSTRUCTORS and len(args) == 3:
                    # base.__init__(obj, state): dict.__init__ fills a mapping (a Bunch) with its items
                    cls = args[0].qualname if isinstance(args[0], Global) else None
                    self._item_keys(args[2], f"{self.op_name} {where}", cls, holder=obj, pairs=True)
                if where.startswith(_ARRAY_READERS):
                    self._attribute_servers(where, args, kwargs)
            if where in ("builtins.bytearray", "builtins.bytes", "__builtin__.bytearray"):
                if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
                    obj.value = bytes(args[0])
                elif isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
                    try:
                        obj.value = args[0].encode("latin-1")
                    except UnicodeEncodeError:
                        obj.value = None
        else:
            self.anomaly(
                "dynamic-callable",
                f"{self.op_name} calls a computed value ({preview(func, 80)}), not a resolved global",
            )
        return obj

    def _value_checks(
        self,
        where: str,
        args: tuple[Any, ...],
        kwargs: Any,
        obj: Obj,
        *,
        runs_init: bool,
        act: str = "",
        nesting: int = 0,
    ) -> None:
        """The checks of a call of ``where(*args, **kwargs)`` by its values (sizes, costs, paths).

        Run for every call of a global, and for the calls allowed helpers make with the stream's
        values (:meth:`_hidden_calls`: ``copyreg._reconstructor``'s ``base.__init__(obj, state)``);
        ``runs_init``: the call runs the class's constructor (not ``NEWOBJ``'s ``cls.__new__``);
        ``nesting``: how many helpers' hidden calls this one is inside.
        """
        if act:  # a helper's call: the stream's call of the helper had its integers checked
            if where not in self.big_ints_seen:
                self._big_int_arguments(where, args)
        else:
            act = self.op_name
        if where in _NUMBER_PARSERS and args:
            exponent = _exponent(args[0])
            if exponent is not None and abs(exponent) > MAX_EXPONENT:
                self.anomaly(
                    "compute-bomb",
                    f"{act} {where}{preview(args, 60)}: an exponent of {exponent:,} (converting "
                    f"it computes a {abs(exponent):,}-digit number)",
                )
        if where in _SIZED or (where.startswith("torch") and where.endswith(("Storage", "Tensor"))):
            module, _, name = where.rpartition(".")
            size = requested_bytes(module, name, args)
            if size == COMPUTED:
                self.anomaly(
                    "allocation-bomb",
                    f"{act} {where}{preview(args, 80)} is sized by a value the "
                    "stream computes when the file is loaded",
                )
            elif size is not None and size > MAX_ALLOCATION:
                self.anomaly(
                    "allocation-bomb",
                    f"{act} {where}{preview(args, 80)} asks for about "
                    f"{size / 2**30:,.0f} GiB when the file is loaded",
                )
        if where in _TEXT_CODEC_CALLS and len(args) >= 2:
            enc = args[1]  # bytes(text, encoding), str(data, encoding) decode or encode with it
            if not (isinstance(enc, str) and enc.lower().replace("_", "-") in _LINEAR_CODECS):
                self._codec_call(where, enc)
        if where.startswith(_LAZY_SIZED) and (where.startswith("pandas.") or _may_materialise(args)):
            count = _lazy_length(obj, [4096])
            if count == COMPUTED or count * 8 >= MAX_ALLOCATION:
                self.anomaly(
                    "allocation-bomb",
                    f"{act} {where}{preview(args, 80)} "
                    + (
                        "is sized by a value the stream computes when the file is loaded"
                        if count == COMPUTED
                        else f"spans {count:,} elements (about {count * 8 / 2**30:,.0f} GiB) when built"
                    ),
                )
        if where.startswith(("pandas.", "dateutil.")):
            self._time_zone_paths(f"{act} {where}", [args, kwargs])
        if where == "dateutil.tz._tzfile._unpickle" and len(args) > 3:
            self._tz_data(where, args[3])
        if runs_init and where.startswith(_TORCH_LAYERS):
            self._layer_size(where, args, kwargs, act)
        if where in _RECONSTRUCTORS or where in CALL_ARGUMENTS_AT:
            self._hidden_calls(where, args, nesting)

    def _hidden_calls(self, where: str, args: tuple[Any, ...], nesting: int = 0) -> None:
        """The calls an allowed helper makes with the stream's values, checked as calls.

        ``copyreg._reconstructor(cls, base, state)`` runs ``base.__new__(cls, state)`` and
        ``base.__init__(obj, state)`` (``_reconstructor(bytearray, bytearray, 3 << 30)`` allocates
        3 GiB); torch's ``_rebuild_from_type_v2(func, type, args, state)`` runs ``func(*args)``.
        """
        callee: Any = None
        hidden: tuple[Any, ...] = ()
        if where in _RECONSTRUCTORS and len(args) == 3:
            callee, hidden = _unwrapped(args[1]), (args[2],)
            if isinstance(callee, Global) and callee.qualname in ("builtins.object", "__builtin__.object"):
                return  # object.__new__(cls): the state is not used
            if not isinstance(callee, Global):
                self.anomaly(
                    "dynamic-callable",
                    f"{self.op_name} {where} with a base built in the stream ({preview(callee, 60)}): "
                    "it calls base.__new__ and base.__init__ with the state",
                )
                return
        elif where in CALL_ARGUMENTS_AT and len(args) > CALL_ARGUMENTS_AT[where]:
            callee, hidden = _unwrapped(args[0]), args[CALL_ARGUMENTS_AT[where]]
            if not isinstance(callee, Global) or not isinstance(hidden, tuple):
                return  # a dynamic-callable already (_calls_its_argument)
        else:
            return
        if nesting >= MAX_NESTING:
            raise LimitReached(f"calls hidden in {where}'s arguments nested over {MAX_NESTING} deep")
        inner = Obj(func=callee, args=hidden, opcode=self.op_name, offset=self.op_offset)
        self._value_checks(
            callee.qualname,
            hidden,
            None,
            inner,
            runs_init=True,
            act=f"{self.op_name} {where} calling",
            nesting=nesting + 1,
        )

    def _layer_size(self, where: str, args: tuple[Any, ...], kwargs: Any, act: str) -> None:
        """A torch layer or optimizer class called with sizes (its constructor allocates weights).

        An upper bound of the weights: the product of its integer arguments (also those in tuples:
        kernel sizes), or the square of the largest (recurrent and attention layers allocate
        ``hidden x hidden``), or the length of an iterable argument (an optimizer lists its
        ``params``); a number or iterable computed at load time is unbounded. Pickles never call
        these classes (``torch.save`` writes ``NEWOBJ`` and a state), so the bound need not be tight.
        """
        values: list[Any] = list(args)
        if isinstance(kwargs, PDict):
            values += [v for _, v in kwargs.items]
        flat: list[Any] = []
        for v in values:
            flat += list(v if isinstance(v, tuple) else v.items if isinstance(v, PList) else (v,))
        product, largest, computed = 1, 0, None
        for v in flat:
            n = _int(v)
            if n is None and isinstance(v, Obj) and v.value is None:
                name = _call_name(v) or ""
                if name in _RANGES or name in _CONSUMERS:  # an iterable: its length
                    n = _iter_count(v)
                    if n is None or n == COMPUTED:
                        computed = v
                        break
                elif name in _NUMBER_CALLS or name.startswith("numpy."):  # a number built at load time
                    computed = v
                    break
            if n is not None and n > 0:
                product = min(product * n, _LENGTH_CAP)
                largest = max(largest, n)
        if computed is not None:
            self.anomaly(
                "allocation-bomb",
                f"{act} {where}{preview(args, 80)}: a layer constructor sized by a value the stream "
                "computes when the file is loaded",
            )
            return
        elements = max(product if len(flat) > 1 else 0, largest * largest)
        if elements > MAX_LAYER_ELEMENTS:
            self.anomaly(
                "allocation-bomb",
                f"{act} {where}{preview(args, 80)}: the layer constructor allocates and initialises up "
                f"to about {elements * 4 / 2**30:,.0f} GiB of weights (pickles never call it: torch.save "
                "writes NEWOBJ and a state)",
            )

    def _codec_call(self, where: str, enc: Any) -> None:
        self.anomaly(
            "codec-call",
            f"{self.op_name} {where} with encoding {preview(enc, 40)}: picklers write only "
            "latin1 (other codecs can take quadratic time: punycode, idna)",
        )

    def _time_zone_paths(self, action: str, values: list[Any]) -> None:
        """A time zone naming a path (``dateutil/<path>``): pandas hands it to dateutil, which opens it.

        ``values`` (a pandas or dateutil call's arguments, a pandas object's state) are searched at
        any depth, calls' arguments included, for text holding ``dateutil/`` and a path that
        leaves dateutil's folders (:func:`_tz_path_escapes`): a ``tz=`` argument, a dtype alias
        ``'datetime64[ns, dateutil/<path>]'`` (red-team round 29). A string the stream builds at
        load time (``str(...)``, ``numpy.str_(...)``, a numpy ``'U'`` scalar of computed data) is one
        too, unless its text is known.
        """
        found = self._texts_in(values)
        if found is None:
            return
        text, built = found
        if built is None:
            self.anomaly(
                "file-path-argument",
                f"{action} with the time zone {preview(text, 80)}: dateutil opens that path as a "
                "time-zone file when the file is loaded",
            )
        else:
            self.anomaly(
                "file-path-argument",
                f"{action} with a string built at load time ({preview(built, 80)}): pandas hands a "
                "'dateutil/<path>' time zone (or a dtype alias naming one) to dateutil, which opens the path",
            )

    def _texts_in(self, values: list[Any]) -> tuple[str, Any] | None:
        """The first escaping time-zone text in ``values``, or a string built at load time.

        ``(text, None)`` for a text naming a path, ``("", value)`` for a string built at load time
        whose text is unknown, ``None`` when there is neither. Each container and call is
        searched once a stream (a value found again was reported, or is clean), at most
        :data:`MAX_TEXT_WALK` of them in all.
        """
        seen = self.text_seen
        todo = list(values)
        while todo:
            v = todo.pop()
            if isinstance(v, str):
                if _DATEUTIL in v and _tz_path_escapes(v) is not None:
                    return v, None
                continue
            if isinstance(v, (bytes, bytearray)):
                text = _bytes_text(v)
                if text is not None:
                    return text, None
                continue
            if not _node(v) or id(v) in seen:
                continue
            if self.text_budget <= 0:
                self.text_budget = self._walk_spent(
                    self.text_budget,
                    f"arguments too large to check for time-zone paths (over {MAX_TEXT_WALK:,} nodes)",
                )
                return None
            seen[id(v)] = v
            if isinstance(v, Obj):
                self.text_budget -= 1
                if id(v) in self.built_texts:
                    return "", self.built_texts[id(v)]
                if _built_text(v):
                    return "", v
                todo += [v.args, v.kwargs, v.value]
                continue
            if isinstance(v, PDict):
                items: Any = [x for kv in v.items for x in kv]
            else:
                items = v if isinstance(v, tuple) else v.items
            self.text_budget -= len(items) + 1
            todo.extend(items)
        return None

    def _tz_data(self, where: str, data: Any) -> None:
        """Dateutil's ``_unpickle`` data: transitions written in the file, few enough to process.

        Its DST inference is quadratic in the transitions (a megabyte of them takes hours), and
        values built at load time (``range(2**27)``) are not data the file holds.
        """
        todo, seen, longest = [data], 0, 0
        while todo and seen < 1 << 16:
            v = todo.pop()
            seen += 1
            if isinstance(v, Obj) and not isinstance(v.value, (bytes, bytearray)):  # bytes: folded data
                self.anomaly(
                    "allocation-bomb", f"{self.op_name} {where} with time-zone data built at load time"
                )
                return
            items = v if isinstance(v, tuple) else v.items if isinstance(v, (PList, PSet)) else None
            if items is not None:
                longest = max(longest, len(items))
                todo += [x for x in items if isinstance(x, (tuple, PList, PSet, Obj))]
        if longest > MAX_TZ_TRANSITIONS:
            self.anomaly(
                "compute-bomb",
                f"{self.op_name} {where} with {longest:,} time-zone transitions (dateutil's DST inference is "
                "quadratic in them)",
            )

    def _calls_its_argument(self, where: str, args: tuple[Any, ...], sites: tuple[int, ...]) -> None:
        """A helper of :data:`CALLING_SITES` calls ``args[pos]``: a global there is called."""
        spread = CALL_ARGUMENTS_AT.get(where)
        if spread is not None and len(args) > spread and not isinstance(args[spread], tuple):
            self.anomaly(
                "dynamic-callable",
                f"{self.op_name} {where} calls with arguments built in the stream "
                f"({preview(args[spread], 80)}), not a tuple the scanner can check",
            )
        for pos in sites:
            if pos >= len(args):
                continue
            target = args[pos]
            if isinstance(target, Global) and target.qualname in CALLING_SITES:
                self.anomaly(
                    "dynamic-callable",
                    f"{self.op_name} {where} is handed {target.qualname} to call, itself a helper that "
                    "calls its arguments (the final callee and its arguments are hidden)",
                )
            elif isinstance(target, Global):
                target.ref.ncalls += 1
            elif not isinstance(target, str):  # numpy's bit-generator name may be a string
                self.anomaly(
                    "dynamic-callable",
                    f"{self.op_name} {where} calls its argument {pos}, a value built in the stream "
                    f"({preview(target, 80)}), not a resolved global",
                )

    def _big_int_arguments(self, where: str, args: tuple[Any, ...]) -> None:
        """A ``compute-bomb`` (once per callable) when ``where`` is handed a huge integer."""
        for a in args:
            if (
                isinstance(a, Opaque)
                and a.what == "long"
                and isinstance(a.payload, int)
                and a.payload > MAX_INT_BYTES
            ):
                self.big_ints_seen.add(where)
                self.anomaly(
                    "compute-bomb",
                    f"{self.op_name} {where} is handed an integer of about {a.payload:,} bytes (converting "
                    "it takes quadratic time; a stream can hand it over again and again)",
                )
                return

    def note_passed(self, where: str, args: Any, kwargs: Any, *, suffix: str = "") -> None:
        """Record the globals handed to a call (``where``) as arguments, at any depth.

        Globals inside tuples, lists, sets and dicts of the arguments are handed over too (a
        helper may call what it is given: ``Parallel()([(numpy.memmap, args, {})])``). Values
        built by other calls are not opened: their own arguments were recorded at their call.
        The class argument of numpy's array rebuilds (:data:`CLASS_ARGUMENT_SITES`) is exempt: a
        pickled ``np.memmap`` is ``_reconstruct(numpy.memmap, (0,), b"b")``, which never calls
        it. Containers shared between calls are walked again each time, up to
        :data:`MAX_ARGUMENT_WALK` nodes a stream; past that the walk stops with an
        ``argument-walk-limit`` anomaly.
        """
        if isinstance(args, tuple):
            todo = [v for v in args if _walked(v)]
            exempt = CLASS_ARGUMENT_SITES.get(where) if todo and not suffix else None
            if exempt:
                todo = [v for i, v in enumerate(args) if _walked(v) and i not in exempt]
        else:
            todo = []
        if kwargs is not None:
            if isinstance(kwargs, PDict):
                todo += [v for kv in kwargs.items for v in kv if _walked(v)]
            elif isinstance(kwargs, dict):
                todo += [v for v in kwargs.values() if _walked(v)]
        if not todo:  # most calls hand over plain values only
            return
        # No memory of visited containers: one shared by many calls (or many times in one
        # value) is walked each time, within the stream's budget of nodes.
        budget = self.walk_budget
        while todo:
            v = todo.pop()
            if isinstance(v, Global):
                budget -= 1
                ref = v.ref
                ref.npassed += 1
                if len(ref.passed_to) < 8:
                    ref.passed_to.append(where + suffix)
            else:
                items = v if isinstance(v, tuple) else v.items
                if isinstance(v, PDict):
                    items = [x for kv in items for x in kv]
                budget -= len(items) + 1
                todo += [x for x in items if _walked(x)]
            if budget <= 0:
                if self.walk_budget > 0:
                    self.anomaly(
                        "argument-walk-limit",
                        f"arguments too large to check for handed-over globals (over {MAX_ARGUMENT_WALK:,} "
                        "nodes)",
                    )
                budget = 0
                break
        self.walk_budget = budget

    def _walk_spent(self, budget: int, detail: str) -> int:
        """A spent walk budget's new value: ``argument-walk-limit`` (``detail``) is reported once."""
        if budget > _WALK_SPENT:
            self.anomaly("argument-walk-limit", detail)
        return _WALK_SPENT

    def mutate(self, target: Any, what: str) -> None:
        """A ``mutates-global`` when ``what`` (``BUILD``, ``SETITEM`` ...) changes a shared object."""
        shared = _shared_target(target)
        if shared is not None:
            self.anomaly("mutates-global", f"{what} changes {shared}")

    # -- main loop
    def run(self) -> None:
        r = self.r
        names = _NAMES
        handlers = _HANDLERS
        memo = self.memo
        max_stack = self.max_stack
        max_value = self.max_value
        count = 0
        next_check = _CLOCK_EVERY
        try:
            while True:
                i = r._i
                buf = r._buf
                n = len(buf)
                if i < n:
                    code = buf[i]
                    r._i = i + 1
                    self.op_offset = r._base + i
                else:
                    self.op_offset = r.pos
                    code = r.read_byte()
                    buf = r._buf
                    i = r._i - 1
                    n = len(buf)
                # Inlined (the handlers do the same): MEMOIZE is a third of the opcodes of a
                # typical state dict; SHORT_BINUNICODE (every key) and BININT1 come next.
                if code == _MEMOIZE:
                    self.op_name = "MEMOIZE"
                    count += 1
                    stack = self.stack
                    if not stack:
                        raise ValueError("stack underflow")
                    if len(memo) >= MAX_MEMO:
                        raise LimitReached(f"pickle memo over {MAX_MEMO} entries")
                    memo[len(memo)] = stack[-1]
                    continue
                if code == _SHORT_BINUNICODE and i + 1 < n:
                    j = i + 2 + buf[i + 1]
                    if j <= n and j - i - 2 <= max_value:
                        self.op_name = "SHORT_BINUNICODE"
                        count += 1
                        r._i = j
                        try:
                            text = buf[i + 2 : j].decode("utf-8", "surrogatepass")
                        except UnicodeDecodeError as exc:
                            raise ValueError("invalid UTF-8 in SHORT_BINUNICODE") from exc
                        stack = self.stack
                        if len(stack) >= max_stack:
                            raise LimitReached("pickle stack too deep")
                        stack.append(text)
                        continue
                elif code == _BININT1 and i + 1 < n:
                    self.op_name = "BININT1"
                    count += 1
                    r._i = i + 2
                    stack = self.stack
                    if len(stack) >= max_stack:
                        raise LimitReached("pickle stack too deep")
                    stack.append(buf[i + 1])
                    continue
                elif code == _STOP:  # every stream's last opcode: ends the run without raising _Stop
                    self.op_name = "STOP"
                    count += 1
                    self.pop()
                    self.res.end = r.pos
                    self.res.complete = True
                    return
                handler = handlers[code]
                if handler is None:
                    raise ValueError(f"invalid pickle opcode 0x{code:02x}")
                self.op_name = names[code]
                count += 1
                if count >= next_check:  # by count, whatever the mix of inlined opcodes
                    next_check = count + _CLOCK_EVERY
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        raise _TimeUp
                try:
                    handler(self)
                except _Stop:
                    self.res.end = r.pos
                    self.res.complete = True
                    return
        finally:
            self.res.opcodes += count

    # -- opcode handlers --------------------------------------------------------
    def op_proto(self) -> None:
        v = self.r.read_byte()
        if v > 5:
            raise ValueError(f"unsupported pickle protocol {v}")
        self.res.protocol = v

    def op_frame(self) -> None:
        size = self._uint("<Q", 8)
        self.frame_end = self.r.pos + size

    def op_stop(self) -> None:
        self.pop()
        raise _Stop

    def op_int(self) -> None:
        self.push(_text_int(self.r.readline(_MAX_INT_LINE), c_long=True))

    def op_binint(self) -> None:
        self.push(self._uint("<i", 4))

    def op_binint1(self) -> None:
        self.push(self.r.read_byte())

    def op_binint2(self) -> None:
        self.push(self._uint("<H", 2))

    def op_long(self) -> None:
        line = self.r.readline(_MAX_INT_LINE)
        if line.endswith(b"L"):
            line = line[:-1]
        self.push(_text_int(line, c_long=False))

    def _long_n(self, n: int) -> None:
        data = self._bytes(n)
        if isinstance(data, Opaque) or n > 64:
            self.push(Opaque("long", n))
        else:
            self.push(int.from_bytes(data, "little", signed=True))

    def op_long1(self) -> None:
        self._long_n(self.r.read_byte())

    def op_long4(self) -> None:
        n = self._uint("<i", 4)
        if n < 0:
            raise ValueError("LONG4 with negative length")
        self._long_n(n)

    def op_string(self) -> None:
        # a protocol-0 string: a whole array's bytes may be one line (as long as a value may be)
        data = self.r.readline(max(MAX_LINE, self.max_value))
        if len(data) >= 2 and data[0] == data[-1] and data[0] in b"\"'":
            data = data[1:-1]
        else:
            raise ValueError("the STRING opcode argument must be quoted")
        raw: bytes = codecs.escape_decode(data)[0]
        self.push(raw.decode("latin-1"))

    def op_binstring(self) -> None:
        n = self._uint("<i", 4)
        if n < 0:
            raise ValueError("BINSTRING pickle has negative byte count")
        data = self._bytes(n)
        self.push(data.decode("latin-1") if isinstance(data, bytes) else data)

    def op_short_binstring(self) -> None:
        data = self._bytes(self.r.read_byte())
        self.push(data.decode("latin-1") if isinstance(data, bytes) else data)

    def op_binbytes(self) -> None:
        self.push(self._bytes(self._uint("<I", 4)))

    def op_short_binbytes(self) -> None:
        self.push(self._bytes(self.r.read_byte()))

    def op_binbytes8(self) -> None:
        self.push(self._bytes(self._uint("<Q", 8)))

    def op_bytearray8(self) -> None:
        self.push(self._bytes(self._uint("<Q", 8)))

    def op_next_buffer(self) -> None:
        self.push(Opaque("out-of-band buffer"))

    def op_readonly_buffer(self) -> None:
        self.top()

    def op_none(self) -> None:
        self.push(None)

    def op_newtrue(self) -> None:
        self.push(True)

    def op_newfalse(self) -> None:
        self.push(False)

    def op_unicode(self) -> None:
        line = self.r.readline(max(MAX_LINE, self.max_value))
        self.push(line.decode("raw-unicode-escape"))

    def op_short_binunicode(self) -> None:
        # Hot path (every dict key of a state dict): the string is already in the buffer.
        r = self.r
        buf = r._buf
        i = r._i
        if i < len(buf):
            j = i + 1 + buf[i]
            if j <= len(buf) and j - i - 1 <= self.max_value:
                r._i = j
                try:
                    text = buf[i + 1 : j].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"invalid UTF-8 in {self.op_name}") from exc
                self.push(text)
                return
        self.push(self._text(self.r.read_byte(), "str"))

    def op_binunicode(self) -> None:
        self.push(self._text(self._uint("<I", 4), "str"))

    def op_binunicode8(self) -> None:
        self.push(self._text(self._uint("<Q", 8), "str"))

    def op_float(self) -> None:
        self.push(_text_float(self.r.readline(_MAX_INT_LINE)))

    def op_binfloat(self) -> None:
        self.push(struct.unpack(">d", self.r.read(8))[0])

    def op_empty_list(self) -> None:
        self.push(PList())

    def op_append(self) -> None:
        value = self.pop()
        target = self.top()
        self.mutate(target, "APPEND")
        target = _unwrapped(target)
        if isinstance(target, PList):
            target.items.append(value)
        else:
            self._served_method(target, "append", _APPENDABLE)
            self._filled(target, "append", (value,))

    def op_appends(self) -> None:
        items = self.pop_mark()
        target = self.top()
        self.mutate(target, "APPENDS")
        target = _unwrapped(target)
        if isinstance(target, PList):
            target.items.extend(items)
        else:
            self._served_method(target, "extend", _APPENDABLE)
            self._filled(target, "extend", tuple(items))

    def _served_method(self, target: Any, method: str, types: frozenset[str]) -> None:
        """``APPEND(S)``/``ADDITEMS`` on an object other than a list, deque or set: ``obj.<method>``.

        The unpickler looks the method up on the object, which may answer it from its data (a
        ``Bunch`` from its items, any object from its ``__dict__``): any allowed callable, called
        with the stream's arguments, past the checks of a call (``bytearray(3 << 30)``).
        """
        if not isinstance(target, Obj) or not isinstance(target.func, Global):
            return  # a computed callable is reported where it is called; an opaque value is the loader's
        cls = target.cls_name
        if cls in types:
            return
        self.anomaly(
            "dynamic-callable",
            f"{self.op_name} calls {method} of a {cls}, which the object may answer from its data "
            "(a Bunch from its items, an object from its state): the callable and its arguments are "
            "the stream's",
        )

    def _filled(self, target: Any, method: str, items: tuple[Any, ...]) -> None:
        """Hand over the items added to a value the stream built by a call (``list()``, an object).

        The walk of later calls does not open such values, so their items are recorded now.
        """
        cls = target.cls_name if isinstance(target, Obj) else None
        self.note_passed(cls or "<object>", items, None, suffix=f".{method}")
        if isinstance(target, Obj):  # an OrderedDict of keyword arguments may go to pandas later
            for item in items:  # the items themselves (a walk of every tensor of a state dict costs)
                if item.__class__ is Obj and isinstance(item.func, Global):
                    if item.func.ref.name not in _TEXT_BUILDER_NAMES:
                        continue  # (by name first: a tensor's rebuild is none)
                    item = _unwrapped(item)
                if isinstance(item, str) and _DATEUTIL in item and _tz_path_escapes(item) is not None:
                    self._time_zone_paths(f"{self.op_name} into {cls or 'an object'}", [item])
                    return
                if isinstance(item, Obj) and _built_text(item):
                    self.built_texts[id(target)] = item

    def op_list(self) -> None:
        self.push(PList(self.pop_mark()))

    def op_empty_tuple(self) -> None:
        self.push(())

    def op_tuple(self) -> None:
        self.push(tuple(self.pop_mark()))

    def op_tuple1(self) -> None:
        self.push((self.pop(),))

    def op_tuple2(self) -> None:
        b = self.pop()
        a = self.pop()
        self.push((a, b))

    def op_tuple3(self) -> None:
        c = self.pop()
        b = self.pop()
        a = self.pop()
        self.push((a, b, c))

    def op_empty_dict(self) -> None:
        self.push(PDict())

    def op_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise ValueError("odd number of items for DICT")
        d = PDict(list(zip(items[::2], items[1::2], strict=True)))
        self._protocol_keys(d, items[::2])
        self.push(d)

    def op_setitem(self) -> None:
        value = self.pop()
        key = self.pop()
        target = self.top()
        self.mutate(target, "SETITEM")
        self._set_items(_unwrapped(target), [(key, value)])

    def op_setitems(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise ValueError("odd number of items for SETITEMS")
        target = self.top()
        self.mutate(target, "SETITEMS")
        self._set_items(_unwrapped(target), list(zip(items[::2], items[1::2], strict=True)))

    def _set_items(self, target: Any, pairs: list[tuple[Any, Any]]) -> None:
        """``target[key] = value`` for each pair, with the ``__x__`` keys checked.

        A dict reached from an object's state (which may answer the object's attribute lookups)
        or any other object (a ``Bunch`` answers them from its items) may not be given an
        ``__x__`` key; no dict at all an array-protocol one (:data:`_ARRAY_PROTOCOL_KEYS`).
        """
        if isinstance(target, PDict):
            if id(target) in self.state_seen:
                self._item_keys(PDict(pairs), self.op_name, None, holder=target)
            else:
                self._protocol_keys(target, [k for k, _ in pairs])
            target.items.extend(pairs)
            return
        if isinstance(target, Obj):
            self._item_keys(PDict(pairs), self.op_name, target.cls_name, holder=target)
        self._filled(target, "__setitem__", tuple(x for kv in pairs for x in kv))

    def _protocol_keys(self, target: PDict, keys: list[Any]) -> None:
        """A ``dunder-state`` for an array-protocol key (:data:`_ARRAY_PROTOCOL_KEYS`) of any dict."""
        for key in keys:
            if isinstance(key, str) and key in _ARRAY_PROTOCOL_KEYS:
                self.anomaly(
                    "dunder-state",
                    f"{self.op_name} puts the key {key!r} in a dict: objects that answer attribute lookups "
                    "from their data hand it to numpy, which reads the address it names",
                )
                self.protocol_dicts[id(target)] = (target, self.res.anomalies[-1])
                return

    def _superseded(self, container: Any) -> None:
        """Drop the array-protocol report of ``container``: a state sets its key as an attribute."""
        entry = self.protocol_dicts.pop(id(container), None)
        if entry is not None and entry[1] in self.res.anomalies:
            self.res.anomalies.remove(entry[1])

    def _item_keys(
        self, items: Any, action: str, cls: str | None, *, holder: Any, pairs: bool = False
    ) -> None:
        """The keys an object (of class ``cls``; ``None``: a dict) is filled with, checked.

        ``items`` is a dict, or (``pairs``) a list or tuple of ``(key, value)`` pairs as
        ``dict.__init__`` takes them. An ``__x__`` key is a ``dunder-state``; so is a key built at
        load time, unless ``cls`` is a plain mapping (its text is unknown: ``numpy.str_`` equals
        ``'__array_interface__'``): the mapping (``holder``) is then remembered, for the attribute
        tables of a later state (torch's ``_modules``).
        """
        keys: list[Any]
        if isinstance(items, PDict):
            keys = [k for k, _ in items.items]
        elif pairs and isinstance(items, (PList, tuple)):
            seq = items.items if isinstance(items, PList) else items
            keys = [p[0] for p in seq[:4096] if isinstance(p, tuple) and len(p) == 2]
        else:
            return
        plain = cls is None or cls in _PLAIN_MAPPINGS
        for key in keys:
            if key.__class__ is str and key[:2] != "__":
                continue  # most keys (a state dict's)
            key = _unwrapped(key)
            if _is_dunder(key):
                what = "a dict" if cls is None else f"a {cls}"
                self.anomaly(
                    "dunder-state",
                    f"{action} puts the key {key!r} in {what}: objects that answer attribute lookups "
                    "from their items (scikit-learn's Bunch, torch's Module tables) hand it to code that "
                    "reads the object (numpy reads __array_interface__'s address)",
                )
                return
            if _computed_key(key):
                if plain:
                    self.computed_keys[id(holder)] = holder
                    continue
                self.anomaly(
                    "dunder-state",
                    f"{action} gives a {cls} a key built at load time ({preview(key, 60)}): the object "
                    "answers attribute lookups from its items, and the key may name a protocol attribute",
                )
                return

    def op_empty_set(self) -> None:
        self.push(PSet())

    def op_additems(self) -> None:
        items = self.pop_mark()
        target = self.top()
        self.mutate(target, "ADDITEMS")
        target = _unwrapped(target)
        if isinstance(target, PSet):
            target.items.extend(items)
        else:
            self._served_method(target, "add", _ADDABLE)
            self._filled(target, "add", tuple(items))

    def op_frozenset(self) -> None:
        self.push(PSet(self.pop_mark(), frozen=True))

    def op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_dup(self) -> None:
        self.push(self.top())

    def op_mark(self) -> None:
        if len(self.metastack) >= MAX_MARKS:
            raise LimitReached(f"MARK nesting over {MAX_MARKS:,}")
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop_mark(self) -> None:
        self.pop_mark()

    def _get(self, idx: int) -> None:
        try:
            self.push(self.memo[idx])
        except KeyError:
            if not self.lenient_memo:
                raise ValueError(f"memo value not found at index {idx}") from None
            self.push(Opaque("memo value saved before this stream", idx))

    def op_get(self) -> None:
        self._get(_memo_index(self.r.readline(_MAX_INT_LINE)))

    def op_binget(self) -> None:
        self._get(self.r.read_byte())

    def op_long_binget(self) -> None:
        self._get(self._uint("<I", 4))

    def _put(self, idx: int) -> None:
        if idx < 0:
            raise ValueError("negative PUT argument")
        memo = self.memo
        if idx * 16 > MAX_ALLOCATION and idx > len(memo) + 4096 and not self.memo_bomb_seen:
            # CPython's unpickler keeps its memo as an array and grows it to twice the index
            self.memo_bomb_seen = True
            self.anomaly(
                "allocation-bomb",
                f"{self.op_name} at memo index {idx:,} with {len(memo):,} values saved: the C unpickler "
                f"grows its memo array to about {idx * 16 / 2**30:,.0f} GiB",
            )
        memo[idx] = self.top()

    def op_put(self) -> None:
        self._put(_memo_index(self.r.readline(_MAX_INT_LINE)))

    def op_binput(self) -> None:
        self._put(self.r.read_byte())

    def op_long_binput(self) -> None:
        self._put(self._uint("<I", 4))

    def op_memoize(self) -> None:
        stack = self.stack
        if not stack:
            raise ValueError("stack underflow")
        memo = self.memo
        memo[len(memo)] = stack[-1]

    def _ext(self, code: int) -> None:
        self.anomaly("extension-code", f"extension code {code} resolves a global through copyreg")
        self.push(Opaque("extension", code))

    def op_ext1(self) -> None:
        self._ext(self.r.read_byte())

    def op_ext2(self) -> None:
        self._ext(self._uint("<H", 2))

    def op_ext4(self) -> None:
        self._ext(self._uint("<i", 4))

    def _line_pair(self) -> tuple[str, str]:
        module = self.r.readline(4096).decode("utf-8")
        try:
            name = self.r.readline(4096).decode("utf-8")
        except _Truncated:
            # CPython's pure-Python unpickler reads a last line without its newline and drops its
            # last byte: it imports ``module`` and looks the rest up before the stream breaks
            rest = self.r.unread()[:-1].decode("utf-8", "replace")
            if rest and _IDENT.match(module) and _IDENT.match(rest):
                self.res.globals.append(
                    GlobalRef(module=module, name=rest, offset=self.op_offset, opcode="GLOBAL")
                )
            raise
        return module, name

    def op_global(self) -> None:
        module, name = self._line_pair()
        self.push(self.resolve(module, name, "GLOBAL"))

    def op_stack_global(self) -> None:
        name = self.pop()
        module = self.pop()
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(module, bytes):
            module = module.decode("latin-1")
        if not isinstance(name, str) or not isinstance(module, str):
            self.anomaly(
                "unresolved-global",
                f"STACK_GLOBAL over computed values ({preview(module, 60)}, {preview(name, 60)})",
            )
            self.push(Opaque("unresolved global"))
            return
        self.push(self.resolve(module, name, "STACK_GLOBAL"))

    def op_reduce(self) -> None:
        args = self.pop()
        func = self.pop()
        if (
            isinstance(func, Global)
            and func.qualname in _GETATTR
            and isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], Global)
            and isinstance(args[1], str)
            and _ATTRIBUTE.fullmatch(args[1])
            and self.fold is not None
            and self.fold(args[0].ref.module, f"{args[0].ref.name}.{args[1]}")
        ):
            # ``getattr(zoneinfo.ZoneInfo, '_unpickle')`` (how a bound classmethod pickles) is the
            # global ``zoneinfo.ZoneInfo._unpickle``: resolved here and judged as such
            func.ref.ncalls += 1
            func.ref.folded += 1
            owner = args[0].ref
            owner.npassed += 1
            ref = GlobalRef(
                module=owner.module, name=f"{owner.name}.{args[1]}", offset=self.op_offset, opcode="getattr"
            )
            self.res.globals.append(ref)
            self.push(Global(ref))
            return
        self.push(self.call(func, args))

    def op_build(self) -> None:
        state = self.pop()
        inst = self.top()
        if _shared_target(inst) is not None:
            self.mutate(inst, "BUILD")
            return
        if not isinstance(inst, Obj):
            return
        # what an allowed function that returns its argument returned is that argument: joblib
        # reads array bytes after the BUILD of whatever object *is* a NumpyArrayWrapper
        while (
            isinstance(inst.func, Global)
            and inst.func.qualname in _IDENTITY_FUNCS
            and isinstance(inst.args, tuple)
            and inst.args
            and isinstance(inst.args[0], Obj)
        ):
            inst = inst.args[0]
        cls = inst.cls_name
        if cls is not None and isinstance(inst.func, Global):
            ref = inst.func.ref
            if len(ref.calls) < self.max_calls_kept:
                ref.calls.append(CallSite(opcode="BUILD", offset=self.op_offset))
        # globals in the state are handed to the object (``__setstate__`` or its methods later);
        # a joblib wrapper's ``subclass`` is the array's class, never called (numpy.memmap of a
        # model dumped after ``joblib.load(mmap_mode='r')``): joblib rebuilds it as _reconstruct
        handed = state
        if cls in JOBLIB_WRAPPERS and isinstance(state, PDict):
            handed = PDict([(k, v) for k, v in state.items if k != "subclass"])
        self.note_passed(cls or "<object>", (handed,), None, suffix=".__setstate__")
        self._dunder_state(state)
        if cls is not None and cls.startswith("pandas."):  # numpy states hold their own bytes
            self._time_zone_paths(f"BUILD of {cls}", [state])
            count = _lazy_length(state, [4096])
            if count == COMPUTED or count * 8 >= MAX_ALLOCATION:
                self.anomaly(
                    "allocation-bomb",
                    f"BUILD of {cls} with a state that spans "
                    + ("a size computed at load time" if count == COMPUTED else f"{count:,} elements"),
                )
        if cls in _DTYPE_NAMES:
            inst.state = state
            problem = dtype_flags_problem(inst)
            if problem is not None:
                self.anomaly("dtype-flags", problem)
        elif cls in JOBLIB_WRAPPERS and self.joblib:
            inst.state = state
            self._joblib_payload(inst)
        else:
            # Keep the state of objects whose class the caller captures (not allowed): a
            # payload may hide there (io.BytesIO(b'...') handed to torch.load). Allowed classes
            # (numpy arrays, tensors) drop theirs, so big buffers are not kept twice.
            klass = inst.cls
            if klass is not None and self.captured(klass.ref.module, klass.ref.name):
                inst.state = state

    def _dunder_state(self, state: Any, action: str = "BUILD") -> None:
        """An object's state setting ``__x__`` attributes: protocols other code looks up on it.

        numpy reads ``__array_interface__`` from an instance (a chosen address then becomes an
        array, object pointers included), ``__class__`` changes its type. No pickler writes such
        keys into an ordinary object's state, at any depth: objects answer attribute lookups from
        nested data too (torch's ``Module.__getattr__`` from ``_modules``, ``_parameters`` and
        ``_buffers``; red-team round 29). An attribute name built at load time (``numpy.str_``)
        may be any of them. ``action`` names what sets the state (``BUILD``, or torch's
        ``_rebuild_parameter_with_state``, which ``setattr``s each item).
        """
        for part in state if isinstance(state, tuple) and len(state) == 2 else (state,):
            part = _unwrapped(part)
            if isinstance(part, Obj) and id(part) in self.computed_keys:
                self.anomaly(
                    "dunder-state",
                    f"{action} sets attributes from a mapping given keys built at load time: any may "
                    "name a protocol attribute",
                )
                return
            if not isinstance(part, PDict):
                continue
            for key, value in part.items:
                key = _unwrapped(key)
                if _is_dunder(key):
                    self._superseded(part)
                    self.anomaly(
                        "dunder-state",
                        f"{action} sets the attribute {key!r}: code that reads the object (numpy, the "
                        "interpreter) follows it",
                    )
                    return
                if _computed_key(key):
                    self.anomaly(
                        "dunder-state",
                        f"{action} sets an attribute whose name is built at load time ({preview(key, 60)}): "
                        "it may name a protocol attribute ('__array_interface__')",
                    )
                    return
                if isinstance(key, str) and key in _ATTRIBUTE_TABLES and self._computed_table(value):
                    self.anomaly(
                        "dunder-state",
                        f"{action} sets {key!r} to a mapping with a key built at load time: the object "
                        "answers attribute lookups from it, and the key may name a protocol attribute",
                    )
                    return
        found = self._nested_dunder_key(state)
        if found is not None:
            self._superseded(found[1])
            self.anomaly(
                "dunder-state",
                f"{action} state holds the key {found[0]!r} in a nested mapping: objects answer attribute "
                "lookups from such data (torch's Module from _modules, scikit-learn's Bunch from its "
                "items), and numpy follows them",
            )

    def _computed_table(self, value: Any) -> bool:
        """Whether a mapping of an object's attribute table has a key built at load time."""
        value = _unwrapped(value)
        if id(value) in self.computed_keys:
            return True
        if isinstance(value, PDict):
            return any(_computed_key(_unwrapped(k)) for k, _ in value.items)
        if isinstance(value, Obj) and _call_name(value) in _PLAIN_MAPPINGS and isinstance(value.args, tuple):
            for a in value.args[:1]:
                if isinstance(a, PDict) and any(_computed_key(_unwrapped(k)) for k, _ in a.items):
                    return True
                seq = a.items if isinstance(a, PList) else a if isinstance(a, tuple) else ()
                if any(isinstance(p, tuple) and len(p) == 2 and _computed_key(_unwrapped(p[0])) for p in seq):
                    return True
        return False

    def _nested_dunder_key(self, value: Any) -> tuple[str, Any] | None:
        """The first ``__x__`` key of a mapping inside ``value`` (an object's state), and the mapping.

        Dicts, lists, tuples and sets are opened, and the mappings the stream builds by calling
        ``dict``/``OrderedDict`` (their ``(key, value)`` pairs); each container once per stream (a
        dict seen here has keys put in it later checked too: :meth:`_set_items`), at most
        :data:`MAX_STATE_WALK` in all.
        """
        seen = self.state_seen
        todo = [value]
        while todo:
            v = todo.pop()
            if isinstance(v, Obj):
                name = _call_name(v)
                if (name not in _IDENTITY_FUNCS and name not in _PLAIN_MAPPINGS) or id(v) in seen:
                    continue
                if not isinstance(v.args, tuple):
                    continue
                seen[id(v)] = v
                if name in _IDENTITY_FUNCS:
                    todo.extend(v.args[:1])
                    continue
                for a in v.args[:1]:  # dict(pairs), OrderedDict(mapping or pairs)
                    seq = a.items if isinstance(a, PList) else a if isinstance(a, tuple) else ()
                    for p in seq[:4096]:
                        if isinstance(p, tuple) and len(p) == 2 and _is_dunder(_unwrapped(p[0])):
                            return str(_unwrapped(p[0])), a
                    todo.append(a)
                continue
            if not _container(v) or id(v) in seen:
                continue
            if self.state_budget <= 0:
                self.state_budget = self._walk_spent(
                    self.state_budget,
                    f"objects' states too large to check for __x__ keys (over {MAX_STATE_WALK:,} nodes)",
                )
                return None
            seen[id(v)] = v
            if isinstance(v, PDict):
                self.state_budget -= len(v.items) + 1
                for k, x in v.items:
                    k = _unwrapped(k)
                    if _is_dunder(k):
                        return str(k), v
                    if _node(x):
                        todo.append(x)
            else:
                items = v if isinstance(v, tuple) else v.items
                self.state_budget -= len(items) + 1
                todo += [x for x in items if _node(x)]
        return None

    def _attribute_servers(self, where: str, args: tuple[Any, ...], kwargs: Any) -> None:
        """A numpy/pandas callable handed an object that answers attribute lookups from its data.

        numpy reads ``__array_interface__``/``__array__`` and calls ``mean``/``sum`` on what it is
        given; a scikit-learn ``Bunch`` answers them from its items, a torch ``Module`` from its
        ``_modules``, any object from the ``__dict__`` its state set. No pickler writes such a call.
        """
        values: list[Any] = list(args)
        if isinstance(kwargs, PDict):
            values += [v for _, v in kwargs.items]
        for v in values:  # the arguments themselves: an object array's items (skops' np.array) are data
            v = _unwrapped(v)
            cls = (v.cls_name or "") if isinstance(v, Obj) else ""
            if cls.startswith(_ATTRIBUTE_SERVERS):
                self.anomaly(
                    "dynamic-callable",
                    f"{self.op_name} {where} is handed a {cls} built in the stream: numpy and pandas "
                    "read array protocols (__array_interface__) and call methods (mean, sum) of what "
                    "they are given, which the object answers from its data",
                )
                return

    def op_inst(self) -> None:
        if not self.metastack:  # CPython looks for the MARK before it reads the names
            raise ValueError("could not find MARK for INST")
        module, name = self._line_pair()
        g = self.resolve(module, name, "INST")
        args = self.pop_mark()
        self.push(self.call(g, tuple(args)))

    def op_obj(self) -> None:
        args = self.pop_mark()
        if not args:
            raise ValueError("OBJ without a class")
        cls = args.pop(0)
        self.push(self.call(cls, tuple(args)))

    def op_newobj(self) -> None:
        args = self.pop()
        cls = self.pop()
        self.push(self.call(cls, args))

    def op_newobj_ex(self) -> None:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        self.push(self.call(cls, args, kwargs))

    def op_persid(self) -> None:
        pid = self.r.readline(4096)
        self.res.persistent_ids += 1
        self.push(Opaque("persistent id", pid.decode("latin-1")))

    def op_binpersid(self) -> None:
        pid = self.pop()
        self.res.persistent_ids += 1
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module" and isinstance(pid[1], Global):
            # torch's legacy format: ``persistent_load(('module', cls, file, source))`` returns
            # ``cls`` (a whole nn.Module saved with _use_new_zipfile_serialization=False); the
            # class is a global of the stream, judged as such
            self.push(pid[1])
            return
        self.push(Opaque("persistent id", pid))

    # -- joblib ----------------------------------------------------------------
    def _joblib_payload(self, wrapper: Obj) -> None:
        """Skip (or parse) what joblib writes right after a NumpyArrayWrapper's BUILD."""
        if self.r.pos < self.frame_end:
            # joblib's unpickler has read the whole frame: it takes the array from after the
            # frame, then goes on with the rest of the frame (joblib ends a frame at each array)
            raise ValueError(
                "joblib NumpyArrayWrapper inside a pickle frame (its array is read after the frame)"
            )
        state = wrapper.state
        if not isinstance(state, PDict):
            raise ValueError("joblib NumpyArrayWrapper without a state dict")
        shape = state.get("shape")
        info = dtype_info(state.get("dtype"))
        if info is None:
            raise ValueError("joblib NumpyArrayWrapper with a dtype the scanner cannot size")
        itemsize, hasobject = info
        if hasobject:
            if self.depth >= 8:
                raise ValueError("joblib object arrays nested too deeply")
            sub = PickleResult(start=self.r.pos)
            vm = _VM(
                self.r,
                sub,
                capture=self.capture,
                capture_known=self.capture_known,
                max_value=self.max_value,
                max_stack=self.max_stack,
                depth=self.depth + 1,
                deadline=self.deadline,
            )
            try:
                vm.run()
            finally:
                self.res.globals.extend(sub.globals)
                self.res.anomalies.extend(sub.anomalies)
                self.res.opcodes += sub.opcodes
                self.res.joblib_arrays += sub.joblib_arrays
                self.res.joblib_object_arrays += sub.joblib_object_arrays + 1
            return
        if not isinstance(shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError("joblib NumpyArrayWrapper with a malformed shape")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * itemsize
        if state.has("numpy_array_alignment_bytes"):
            align = state.get("numpy_array_alignment_bytes")
            if align is not None:
                pad = self.r.read_byte()
                self.r.skip(pad)
        self.r.skip(nbytes)
        self.res.joblib_arrays += 1


#: Every pickle opcode (protocols 0-5): name -> code, in :mod:`pickletools` order (a test checks
#: it against ``pickletools.opcodes``; not importing pickletools saves ~2 ms of start-up).
_OPCODES: Final[dict[str, int]] = {
    "INT": 0x49,
    "BININT": 0x4A,
    "BININT1": 0x4B,
    "BININT2": 0x4D,
    "LONG": 0x4C,
    "LONG1": 0x8A,
    "LONG4": 0x8B,
    "STRING": 0x53,
    "BINSTRING": 0x54,
    "SHORT_BINSTRING": 0x55,
    "BINBYTES": 0x42,
    "SHORT_BINBYTES": 0x43,
    "BINBYTES8": 0x8E,
    "BYTEARRAY8": 0x96,
    "NEXT_BUFFER": 0x97,
    "READONLY_BUFFER": 0x98,
    "NONE": 0x4E,
    "NEWTRUE": 0x88,
    "NEWFALSE": 0x89,
    "UNICODE": 0x56,
    "SHORT_BINUNICODE": 0x8C,
    "BINUNICODE": 0x58,
    "BINUNICODE8": 0x8D,
    "FLOAT": 0x46,
    "BINFLOAT": 0x47,
    "EMPTY_LIST": 0x5D,
    "APPEND": 0x61,
    "APPENDS": 0x65,
    "LIST": 0x6C,
    "EMPTY_TUPLE": 0x29,
    "TUPLE": 0x74,
    "TUPLE1": 0x85,
    "TUPLE2": 0x86,
    "TUPLE3": 0x87,
    "EMPTY_DICT": 0x7D,
    "DICT": 0x64,
    "SETITEM": 0x73,
    "SETITEMS": 0x75,
    "EMPTY_SET": 0x8F,
    "ADDITEMS": 0x90,
    "FROZENSET": 0x91,
    "POP": 0x30,
    "DUP": 0x32,
    "MARK": 0x28,
    "POP_MARK": 0x31,
    "GET": 0x67,
    "BINGET": 0x68,
    "LONG_BINGET": 0x6A,
    "PUT": 0x70,
    "BINPUT": 0x71,
    "LONG_BINPUT": 0x72,
    "MEMOIZE": 0x94,
    "EXT1": 0x82,
    "EXT2": 0x83,
    "EXT4": 0x84,
    "GLOBAL": 0x63,
    "STACK_GLOBAL": 0x93,
    "REDUCE": 0x52,
    "BUILD": 0x62,
    "INST": 0x69,
    "OBJ": 0x6F,
    "NEWOBJ": 0x81,
    "NEWOBJ_EX": 0x92,
    "PROTO": 0x80,
    "STOP": 0x2E,
    "FRAME": 0x95,
    "PERSID": 0x50,
    "BINPERSID": 0x51,
}


def _build_dispatch() -> dict[int, tuple[str, Callable[[_VM], None]]]:
    table: dict[int, tuple[str, Callable[[_VM], None]]] = {}
    for name, code in _OPCODES.items():
        method = getattr(_VM, "op_" + name.lower(), None)
        if method is None:  # pragma: no cover - every opcode has a handler (tested)
            raise RuntimeError(f"no handler for pickle opcode {name}")
        table[code] = (name, method)
    return table


_DISPATCH: Final = _build_dispatch()
#: The dispatch table as two 256-entry lists (opcode -> name, opcode -> handler; ``None``:
#: not an opcode), faster to index in the main loop than the dict.
_NAMES: Final[list[str]] = [""] * 256
_HANDLERS: Final[list[Callable[[_VM], None] | None]] = [None] * 256
for _code, (_name, _handler) in _DISPATCH.items():
    _NAMES[_code], _HANDLERS[_code] = _name, _handler
del _code, _name, _handler
_MEMOIZE: Final = 0x94  # pickle.MEMOIZE
_SHORT_BINUNICODE: Final = 0x8C  # pickle.SHORT_BINUNICODE
_BININT1: Final = 0x4B  # pickle.BININT1
_STOP: Final = 0x2E  # pickle.STOP


def emulate(
    stream: IO[bytes],
    *,
    start: int = 0,
    capture: CaptureFn | None = None,
    max_value: int = 64 << 20,
    max_stack: int = 10_000_000,
    limit: int | None = None,
    reader: Reader | None = None,
    deadline: float | None = None,
    joblib: bool = True,
    fold: CaptureFn | None = None,
    lenient_memo: bool = False,
    capture_known: dict[tuple[str, str], bool] | None = None,
) -> PickleResult:
    """Emulate one pickle stream from the current position of ``stream`` up to its ``STOP``.

    Never raises for malformed input: failures are reported in ``PickleResult.error``.

    Args:
        stream: readable binary stream positioned at the first opcode.
        start: offset of that position, used for reported offsets.
        capture: ``capture(module, name)`` says whether calls of that global should keep an
            argument preview and the ``bytes`` passed (for nested-pickle scans).
        max_value: largest ``bytes``/``str`` value kept in memory; larger ones are skipped.
        max_stack: largest stack accepted.
        limit: read at most this many bytes.
        reader: continue with an existing :class:`Reader` (sequential pickles in one stream).
        deadline: ``time.monotonic()`` value past which emulation stops (``timed_out``).
        joblib: skip (or parse as a separate pickle) the array bytes joblib writes after a
            ``NumpyArrayWrapper``'s ``BUILD``, as ``joblib.load`` does. ``False`` reads them as
            opcodes, as plain ``pickle.load`` does: a file can mean two different things.
        fold: ``fold(module, name)`` says whether ``getattr(<global module.C>, 'a')`` may be
            resolved to the global ``module.C.a`` (the scanner folds what its policy allows:
            ``zoneinfo.ZoneInfo._unpickle``); otherwise its result is a computed value.
        lenient_memo: a ``GET`` of an index nothing was saved at pushes an opaque value instead
            of failing (for emulating from the middle of a stream, whose memo was filled before).
        capture_known: ``capture``'s answers already known, by ``(module, name)`` (the policy's
            cache, read without calling ``capture``: a call from the compiled emulator into
            Python costs more than the lookup); ``capture`` is asked for any other global.

    Returns:
        A :class:`PickleResult`; ``complete`` is True when ``STOP`` was reached.
    """
    r = reader if reader is not None else Reader(stream, start=start, limit=limit)
    res = PickleResult(start=r.pos)
    vm = _VM(
        r,
        res,
        capture=capture,
        max_value=max_value,
        max_stack=max_stack,
        depth=0,
        deadline=deadline,
        joblib=joblib,
        fold=fold,
        lenient_memo=lenient_memo,
        capture_known=capture_known,
    )
    try:
        vm.run()
    except _TimeUp:
        res.error = f"time limit reached after {res.opcodes} opcodes"
        res.error_offset = vm.op_offset
        res.timed_out = True
    except _Truncated:
        res.error = f"truncated pickle: stream ends inside {vm.op_name or 'the first opcode'}"
        res.error_offset = vm.op_offset
    # ``limit_exc``, not ``exc``: compiled by mypyc, a name bound by ``except`` keeps the type of
    # its first clause in every clause (mypyc issue 620): a ValueError bound to it would raise
    # TypeError. setup.py's audit refuses a compiled module that does this.
    except LimitReached as limit_exc:
        res.error = f"pickle beyond the scanner's limits: {limit_exc}"
        res.error_offset = vm.op_offset
        res.limited = True
    except (ValueError, UnicodeDecodeError, struct.error, OverflowError, IndexError) as exc:
        res.error = f"malformed pickle: {exc}"
        res.error_offset = vm.op_offset
    except MemoryError:  # pragma: no cover - depends on the machine
        res.error = "pickle too large to emulate in memory"
        res.error_offset = vm.op_offset
    except Exception as exc:
        res.error = f"malformed pickle: {type(exc).__name__}: {exc}"
        res.error_offset = vm.op_offset
    if not res.complete:
        res.end = r.pos
    return res
