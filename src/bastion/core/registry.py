"""Plugin registries, one per kind; built-ins register with a decorator.

A config file may enable, disable or tune a registered id; it never names code to
import. Outside plugins come from entry points in the group ``bastion.<kind>s``
(``bastion.attacks``, ``bastion.scanners``, ``bastion.detectors``, ``bastion.checks``,
``bastion.defences``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bastion.core._log import get_logger
from bastion.core._threat import Threat
from bastion.core.capability import Capability
from bastion.core.errors import PluginError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bastion.core._params import NoParams as NoParams

log = get_logger(__name__)

PLUGIN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
KINDS = ("attack", "scanner", "detector", "check", "defence")


def __getattr__(name: str) -> Any:
    """``NoParams``, loaded (with pydantic) on first use: the scanners import this module."""
    if name == "NoParams":
        from bastion.core._params import NoParams

        return NoParams
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _DefaultParams:
    """``Plugin.Params``'s default, :class:`NoParams`, resolved (pydantic imported) on first read."""

    def __get__(self, obj: object, owner: type | None = None) -> type[BaseModel]:
        from bastion.core._params import NoParams

        return NoParams


class Plugin:
    """Class attributes every plugin declares.

    Attributes:
        id: dotted, stable id (``evasion.pgd``); rule ids are ``<id>.<condition>``.
        threat: the threat family of its findings.
        requires: capabilities the target must offer (attacks).
        applies_to: asset kinds it runs on (``model``, ``dataset``, ``endpoint``).
        Params: typed parameters with defaults and bounds.
        references: papers (with arXiv id) and advisories.
        threat_model: one paragraph: what the attacker knows and can do.
        atlas: MITRE ATLAS technique ids its findings map to.
        title: a short human name.
    """

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    threat: ClassVar[Threat] = Threat.GOVERNANCE
    requires: ClassVar[frozenset[Capability]] = frozenset()
    applies_to: ClassVar[frozenset[str]] = frozenset({"model"})
    if TYPE_CHECKING:
        Params: ClassVar[type[BaseModel]]
    else:
        Params = _DefaultParams()  # NoParams, read lazily
    references: ClassVar[tuple[str, ...]] = ()
    threat_model: ClassVar[str] = ""
    atlas: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse_params(cls, raw: dict[str, Any] | None, where: str = "params") -> BaseModel:
        """Validate ``raw`` against ``Params``, raising ``PluginError`` naming every bad field."""
        from pydantic import ValidationError

        try:
            return cls.Params(**(raw or {}))
        except ValidationError as exc:
            problems = [
                f"{where}.{'.'.join(str(p) for p in e['loc'])}: {_not_finite(e) or e['msg']}"
                for e in exc.errors()
            ]
            raise PluginError(f"bad parameters for {cls.id}: " + "; ".join(problems)) from exc


#: pydantic error types of a numeric bound: a NaN fails every one of them.
_BOUND_ERRORS = frozenset(
    {"less_than", "less_than_equal", "greater_than", "greater_than_equal", "multiple_of", "finite_number"}
)


def _not_finite(error: Any) -> str | None:
    """What is wrong with a NaN or infinite value that failed a bound, or ``None``.

    Trial 30, L5: ``-p epsilon=nan`` said "Input should be less than or equal to 1000".
    """
    if error.get("type") not in _BOUND_ERRORS:
        return None
    value = error.get("input")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    import math

    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if math.isfinite(number):
        return None
    ctx = error.get("ctx") or {}
    bound = next((f" (it must be {op} {ctx[k]})" for k, op in _BOUND_WORDS.items() if k in ctx), "")
    return f"{value!r} is not a finite number{bound}"


_BOUND_WORDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


P = TypeVar("P", bound=type)


class Registry:
    """Registered plugin classes of one kind, keyed by id."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}")
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._entry_points_loaded = False

    def register(self, cls: P) -> P:
        """Class decorator: register ``cls`` under ``cls.id``.

        Raises:
            PluginError: the id is malformed or already taken by another class.
        """
        pid = getattr(cls, "id", "")
        if not PLUGIN_ID.match(pid):
            raise PluginError(f"{cls.__name__}: plugin id {pid!r} is not a dotted lower-case id")
        existing = self._items.get(pid)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise PluginError(f"{self.kind} id {pid!r} already registered by {existing.__qualname__}")
        self._items[pid] = cls
        return cls

    def get(self, pid: str) -> Any:
        """The class registered as ``pid``.

        Raises:
            PluginError: unknown id; the message lists the known ids.
        """
        try:
            return self._items[pid]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise PluginError(f"unknown {self.kind} {pid!r}; known: {known}") from None

    def __contains__(self, pid: object) -> bool:
        return pid in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, Any]]:
        """(id, class) pairs sorted by id."""
        return sorted(self._items.items())

    def load_entry_points(self) -> None:
        """Register outside plugins from the ``bastion.<kind>s`` entry-point group (once)."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"bastion.{self.kind}s"):
            try:
                self.register(ep.load())
            except Exception as exc:  # an outside plugin must not break Bastion
                log.warning("entry point %s failed to load: %s", ep.name, exc)


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
attacks = REGISTRIES["attack"]
scanners = REGISTRIES["scanner"]
detectors = REGISTRIES["detector"]
checks = REGISTRIES["check"]
defences = REGISTRIES["defence"]


def register(kind: str) -> Callable[[P], P]:
    """Decorator registering a plugin class in the registry of ``kind``."""
    return REGISTRIES[kind].register


def find(pid: str) -> Any:
    """Look ``pid`` up in every registry.

    Raises:
        PluginError: no registry has it.
    """
    for reg in REGISTRIES.values():
        if pid in reg:
            return reg.get(pid)
    known = sorted(p for reg in REGISTRIES.values() for p in reg)
    raise PluginError(f"unknown plugin {pid!r}; known: {', '.join(known) or 'none'}")
