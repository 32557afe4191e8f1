"""The pickle policy: versioned allow/deny rules (``scan/rules/*.toml``) and the user's additions.

An allow-list decides; a deny-list only names the danger (for the severity and the rationale of
the finding) and always wins: nothing — neither the shipped allow-list nor a user's ``allow=`` —
can allow a deny-listed callable.

Matching is conservative:

* Python 2 names are mapped the way ``pickle``'s ``fix_imports`` maps them
  (``__builtin__.eval`` is ``builtins.eval``, ``commands`` is ``subprocess``); both the written
  and the mapped name are checked against the deny-list.
* Protocol 4 resolves dotted names by attribute chains (``pickle`` + ``os.system`` reaches
  ``os.system`` through ``pickle.os``), so every module/attribute split of the full dotted path
  is checked against the deny-list; the allow-list only matches the name as written.
"""

import _compat_pickle
import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, NamedTuple

from bastion.core._log import get_logger
from bastion.core.errors import ConfigError
from bastion.core.project_trust import project_allow_problem
from bastion.core.severity import Severity

log = get_logger(__name__)

__all__ = [
    "COMPILED_RULES",
    "Judgement",
    "PicklePolicy",
    "Rule",
    "Verdictish",
    "check_allow_entries",
    "compile_rules",
    "load_rules",
    "write_compiled_rules",
]

_MAX_PARTS = 24

#: Modules of a package's test suite (``sklearn.utils._repr_html.tests.test_js``, ``conftest``,
#: ``sklearn.utils._testing``): no pickle of a model refers to them, and a name there is whatever
#: the test imported (``HTTPServer``, ``unittest.mock.Mock``). The built-in allow rules never
#: match them, whatever their patterns say; a user's own ``allow`` entries still may.
_TEST_MODULE = re.compile(r"(?:^|\.)(?:tests?|testing|_testing|conftest|_pytest|pytest|test_\w*)(?:\.|$)")


class Verdictish(str, Enum):
    """How the policy judges one global."""

    DENIED = "denied"
    ALLOWED = "allowed"
    UNKNOWN = "unknown"


#: ``Verdictish.ALLOWED``, read once (an enum member's attribute read is slow; the emulator asks
#: :meth:`PicklePolicy.capture` for every call it sees).
_ALLOWED = Verdictish.ALLOWED


class Rule(NamedTuple):
    """One allow or deny entry.

    Attributes:
        id: stable id (``deny.os``).
        modules: module patterns (``os``, ``subprocess.*``, ``*``).
        names: attribute patterns (fnmatch; a pattern without a dot never matches a dotted name).
        severity: for deny rules, ``critical`` or ``high``; ``info`` for allow rules.
        rationale: one line.
        reference: a URL or citation.
        nested: deny rules only: the call's ``bytes`` arguments are a payload to scan too.
        source: ``builtin`` or ``user``.
        call: allow rules only: ``False`` allows the global as a reference (a class handed to
            a rebuild helper, as ``numpy.memmap`` to ``_reconstruct``), never as a callable the
            stream invokes (``numpy.memmap(path, mode="w+")`` creates or overwrites a file).
    """

    id: str
    modules: tuple[str, ...]
    names: tuple[str, ...]
    severity: Severity
    rationale: str
    reference: str
    nested: bool = False
    source: str = "builtin"
    call: bool = True

    def matches(self, module: str, name: str) -> bool:
        """Whether ``module.name`` matches this rule."""
        return any(_module_match(module, p) for p in self.modules) and any(
            _name_match(name, p) for p in self.names
        )


def _module_match(module: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        return module == prefix or module.startswith(prefix + ".")
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module, pattern)
    return module == pattern


def _name_match(name: str, pattern: str) -> bool:
    if "." in name and "." not in pattern:
        return False
    # Most shipped patterns are ``*`` or a plain name: answer those without compiling a regex
    # (fnmatch compiles each pattern once per process, ~60 patterns: a few ms of start-up).
    if pattern == "*":
        return True
    if not any(c in pattern for c in "*?["):
        return name == pattern
    return fnmatch.fnmatchcase(name, pattern)


class Judgement(NamedTuple):
    """The policy's view of one global.

    Attributes:
        kind: denied, allowed or unknown.
        rule: the matching rule (deny rule for denied; allow rule or user rule for allowed).
        matched: the ``module.name`` that matched (may differ from the written name when a
            Python 2 alias or a dotted attribute chain led to it).
    """

    kind: Verdictish
    rule: Rule | None = None
    matched: str | None = None


#: Most problems a rule file's error lists (then "and N more").
MAX_RULE_PROBLEMS = 20

#: The fields a ``[[rule]]`` table may have.
_RULE_FIELDS = ("id", "module", "name", "severity", "rationale", "reference", "nested", "call")


def _patterns(raw: dict[str, Any], key: str, where: str, problems: list[str]) -> tuple[str, ...]:
    """``raw[key]`` (``module``/``name``) as patterns; a problem naming ``where`` and the field, else."""
    value = raw.get(key)
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    if key not in raw:
        problems.append(f"{where}: missing {key}")
    else:
        problems.append(f"{where}: {key} must be a string or a non-empty list of strings, not {value!r}")
    return ()


def _rule_problems(raw: dict[str, Any], kind: str, where: str) -> tuple[list[str], Rule | None]:
    """Every problem of one ``[[rule]]`` table (``where`` names it) and, without any, its rule."""
    problems: list[str] = []
    rid = raw.get("id")
    if "id" not in raw:
        problems.append(f"{where}: missing id")
    elif not isinstance(rid, str) or not rid:
        problems.append(f"{where}: id must be a non-empty string, not {rid!r}")
    modules = _patterns(raw, "module", where, problems)
    names = _patterns(raw, "name", where, problems)
    sev_raw = raw.get("severity", "info" if kind == "allow" else None)
    severity: Severity | None = None
    if sev_raw is None:
        problems.append(f"{where}: missing severity (a deny rule is high or critical)")
    else:
        try:
            severity = Severity(sev_raw)
        except (ValueError, TypeError):
            problems.append(f"{where}: bad severity {sev_raw!r}")
    if severity is not None and kind == "deny" and severity < Severity.HIGH:
        problems.append(f"{where}: a deny rule is high or critical, not {severity.value}")
    if severity is not None and kind == "allow" and severity is not Severity.INFO:
        problems.append(f"{where}: an allow rule has no severity (or 'info')")
    for key in ("rationale", "reference"):
        if key not in raw:
            problems.append(f"{where}: missing {key}")
        elif not isinstance(raw[key], str) or not raw[key]:
            problems.append(f"{where}: {key} must be a non-empty string, not {raw[key]!r}")
    call = raw.get("call", True)
    if not isinstance(call, bool) or (kind == "deny" and "call" in raw):
        problems.append(f"{where}: 'call' is true or false, and only in an allow rule")
    nested = raw.get("nested", False)
    if not isinstance(nested, bool) or (kind == "allow" and "nested" in raw):
        problems.append(f"{where}: 'nested' is true or false, and only in a deny rule")
    unknown = sorted(str(k) for k in raw if k not in _RULE_FIELDS)
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(unknown)} (a rule has {', '.join(_RULE_FIELDS)})"
        )
    if problems or severity is None:
        return problems, None
    rule = Rule(
        id=str(rid),
        modules=modules,
        names=names,
        severity=severity,
        rationale=str(raw["rationale"]),
        reference=str(raw["reference"]),
        nested=bool(nested),
        source="builtin",
        call=bool(call),
    )
    return problems, rule


def _parse_rules(doc: dict[str, Any], kind: str, source: str) -> tuple[str, list[Rule]]:
    """The rules of a rule file's document; every problem of every rule in one ``ConfigError``.

    Each problem names the rule (``rule[2] (id 'deny.x')``, its index among the ``[[rule]]``
    tables, from 0) and the field; the first :data:`MAX_RULE_PROBLEMS`, then how many more.
    """
    problems: list[str] = []  # every problem of the file, listed together
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        problems.append("missing top-level 'version' string")
    if doc.get("kind", kind) != kind:
        raise ConfigError(f"{source}: kind is {doc.get('kind')!r}, expected {kind!r}")
    rules: list[Rule] = []
    seen: set[str] = set()
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}: 'rule' must be an array of tables", problems)
    for i, raw in enumerate(raw_rules):
        if not isinstance(raw, dict):
            problems.append(f"rule[{i}]: not a table (write each rule under [[rule]])")
            continue
        rid = raw.get("id")
        where = f"rule[{i}] (id {rid!r})" if isinstance(rid, str) and rid else f"rule[{i}]"
        if isinstance(rid, str) and rid in seen:
            problems.append(f"{where}: duplicate id")
        if isinstance(rid, str):
            seen.add(rid)
        found, rule = _rule_problems(raw, kind, where)
        problems.extend(found)
        if rule is not None:
            rules.append(rule)
    if problems:
        if len(problems) > MAX_RULE_PROBLEMS:
            more = len(problems) - MAX_RULE_PROBLEMS
            problems = [*problems[:MAX_RULE_PROBLEMS], f"... and {more} more problem(s)"]
        raise ConfigError(f"bad pickle rules in {source}", problems)
    return str(version), rules


def load_rules(kind: str, text: str | None = None, source: str | None = None) -> tuple[str, list[Rule]]:
    """Load the shipped (or given) rule file of ``kind``.

    Args:
        kind: ``allow`` or ``deny``.
        text: TOML text to parse instead of the shipped ``rules/pickle_<kind>.toml``.
        source: a name for messages.

    Returns:
        ``(version, rules)``.

    Raises:
        ConfigError: the file is malformed; the message lists every problem.
    """
    if kind not in ("allow", "deny"):
        raise ValueError(f"kind must be 'allow' or 'deny', got {kind!r}")
    name = f"pickle_{kind}.toml"
    doc: dict[str, Any] | None = None
    if text is None:
        text = shipped_rules_text(name)
        doc = _compiled_doc(name, text)
    if doc is None:
        import tomllib  # a user's rule file, or an edited one (the shipped copies are JSON)

        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source or name}: not valid TOML: {exc}") from exc
    return _parse_rules(doc, kind, source or name)


#: The shipped rule files that have a compiled copy (``rules/<name>.json``, see :func:`compile_rules`).
COMPILED_RULES = ("pickle_allow.toml", "pickle_deny.toml")


def compile_rules(name: str) -> str:
    """The compiled copy of the shipped rule file ``name``: JSON text, derived from the TOML only.

    ``{"toml": <the TOML text>, "doc": <that text parsed>}``: the same text always gives the same
    copy, and the copy is used only while its ``toml`` equals the shipped file's text, so an edited
    rule file is read from its TOML until the copy is written again (:func:`write_compiled_rules`).
    JSON parses ~20 times faster than TOML (``tomllib`` is pure Python): ~3 ms of every scan's
    start-up.
    """
    import json
    import tomllib

    text = shipped_rules_text(name)
    return json.dumps({"toml": text, "doc": tomllib.loads(text)}, ensure_ascii=False, indent=1) + "\n"


def write_compiled_rules() -> list[str]:
    """Write the compiled copy of every file of :data:`COMPILED_RULES` next to it; return the paths.

    Run after editing a shipped rule file (``python -c "from bastion.scan.policy import
    write_compiled_rules; write_compiled_rules()"``); a stale copy is never used, only slower.
    """
    written = []
    for name in COMPILED_RULES:
        path = _compiled_path(name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(compile_rules(name))
        written.append(path)
    return written


def _compiled_path(name: str) -> str:
    return os.path.join(os.path.dirname(__file__), "rules", os.path.splitext(name)[0] + ".json")


def _compiled_doc(name: str, text: str) -> dict[str, Any] | None:
    """The parsed document of the shipped ``name`` from its compiled copy, if that copy is current.

    ``None`` (parse the TOML) when there is no copy, it is unreadable, or it was compiled from
    another text than ``text``.
    """
    if name not in COMPILED_RULES:
        return None
    import json

    try:
        with open(_compiled_path(name), encoding="utf-8") as fh:
            compiled = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(compiled, dict) or compiled.get("toml") != text:
        return None
    doc = compiled.get("doc")
    return doc if isinstance(doc, dict) else None


def shipped_rules_text(name: str) -> str:
    """The text of the shipped rule file ``bastion/scan/rules/<name>``.

    Read from the package's folder (``importlib.resources``, which costs ~5 ms of start-up to
    import, only when the package is not a plain folder, e.g. a zip import).
    """
    try:
        with open(os.path.join(os.path.dirname(__file__), "rules", name), encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        from importlib import resources

        return resources.files("bastion.scan").joinpath("rules").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def _builtin_rules() -> tuple[str, tuple[Rule, ...], str, tuple[Rule, ...]]:
    av, allow = load_rules("allow")
    dv, deny = load_rules("deny")
    return av, tuple(allow), dv, tuple(deny)


def _user_rule(entry: str, source: str = "user") -> Rule:
    """A user allow entry: ``module.Name`` (exact) or ``module.*`` (module and submodules).

    ``source`` is ``user`` (typed by the user: ``--allow``, ``allow=``) or ``project`` (a project
    file's ``scan.allow``: only the user's own code, matched only as written, see
    :class:`PicklePolicy`).
    """
    text = entry.strip()
    project = source == "project"
    if project:
        problem = project_allow_problem(text)
        if problem:
            raise ConfigError(problem)
    rid = f"{source}:{text}"
    rationale = "allowed by the project file's scan.allow" if project else "allowed by the user"
    wildcard = text.endswith(".*")
    parts = (text[:-2] if wildcard else text).split(".")
    # every part a Python identifier (``x.``, ``mypkg..x``, ``a-b.C`` match nothing: a typo)
    if not all(part.isidentifier() for part in parts) or (len(parts) < 2 and not wildcard):
        raise ConfigError(
            f"allow entry {entry!r} is not 'module.Name' or 'module.*' (each dotted part a Python identifier)"
        )
    if wildcard:
        prefix = text[:-2]
        return Rule(
            id=rid,
            modules=(prefix + ".*",),
            # a project file's entry never reaches through attribute chains (``mypkg._os.system``)
            names=("*",) if project else ("*", "*.*"),
            severity=Severity.INFO,
            rationale=rationale,
            reference="scan.allow",
            source=source,
        )
    # 'a.b.C' may be module 'a.b' + name 'C' or module 'a' + nested name 'b.C': keep the full
    # dotted path and compare it whole (see PicklePolicy.judge).
    return Rule(
        id=rid,
        modules=(text,),
        names=("",),
        severity=Severity.INFO,
        rationale=rationale,
        reference="scan.allow",
        source=source,
    )


def check_allow_entries(allow: Sequence[str]) -> list[str]:
    """The user's allow entries (``--allow``, ``allow=``), checked as :class:`PicklePolicy` checks them.

    A single string is one entry. Nothing is logged (the policy that uses them says which
    entries the deny-list overrides).

    Raises:
        ConfigError: an entry is not ``module.Name`` or ``module.*`` (every bad entry is listed).
    """
    entries = [allow] if isinstance(allow, str) else [str(e) for e in allow]
    _user_rules(((entries, "user"),))
    return entries


def _user_rules(groups: Iterable[tuple[Sequence[str], str]]) -> list[Rule]:
    """The rules of allow entries, by ``(entries, source)`` group, in order.

    Raises:
        ConfigError: every entry that is not ``module.Name`` or ``module.*``, listed.
    """
    problems: list[str] = []
    rules: list[Rule] = []
    for entries, source in groups:
        for entry in entries:
            try:
                rules.append(_user_rule(entry, source))
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError("bad scan allow-list entries", problems)
    return rules


_DOTTED_IDENT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")


def _candidates(module: str, name: str) -> list[tuple[str, str]]:
    """Every (module, attribute) pair a global could reach, for deny matching.

    The written module is imported as a whole, so its own parts are never re-split; a dotted
    name is an attribute chain in which any link may be a module (``pickle.os.system``), so
    every split inside the name is a candidate too.
    """
    out: list[tuple[str, str]] = [(module, name)]
    if not (_DOTTED_IDENT.match(module) and _DOTTED_IDENT.match(name)):
        # not importable as written (``INST`` of the text ``import os``: module "mport os"):
        # judged as written, never split into a name that happens to be a module
        return out
    mapped = _py2_map(module, name)
    if mapped != (module, name):
        out.append(mapped)
    for mod, nm in list(out):
        if "." not in nm:
            continue
        mparts = mod.split(".")
        nparts = nm.split(".")[:_MAX_PARTS]
        parts = mparts + nparts
        first = len(mparts)
        for i in range(first, len(parts)):
            # module prefix + part of the chain: ("pickle.os", "system")
            out.append((".".join(parts[:i]), parts[i]))
            out.append((".".join(parts[:i]), ".".join(parts[i:])))
            # a link of the chain taken as a module: ("os", "system")
            for j in range(first, i):
                out.append((".".join(parts[j:i]), parts[i]))
                out.append((".".join(parts[j:i]), ".".join(parts[i:])))
    return out


def _py2_map(module: str, name: str) -> tuple[str, str]:
    key = (module, name)
    if key in _compat_pickle.NAME_MAPPING:
        mapped: tuple[str, str] = _compat_pickle.NAME_MAPPING[key]
        return mapped
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


class PicklePolicy:
    """Judge the globals a pickle reaches.

    Args:
        allow: the user's additions: ``'module.Name'`` or ``'module.*'``; never read from the
            scanned folder.
        project_allow: a project file's additions (``scan.allow`` of a ``bastion.yaml``), which
            someone else may have written: only the user's own code (no entry may name the
            standard library, ``bastion`` or a library of
            :data:`bastion.core.project_trust.PROTECTED_ALLOW_ROOTS`), outside the module's test
            suites, and matched only as written: ``module.Name`` is module ``module`` and name
            ``Name``, ``module.*`` a plain name in the module or a submodule, never a dotted
            attribute chain (``mypkg._os.system`` reaches ``os.system`` through an import).
        allow_rules: allow rules (defaults to the shipped allow-list).
        deny_rules: deny rules (defaults to the shipped deny-list).
        report_allowed: also report each global that only an ``allow`` entry let through, as
            a ``project_allow`` entry's always is: an ``info`` finding ``<scanner>.user-allowed``
            (``scan.pickle.project-allowed`` for a project file's). The scan gate of ``assess``,
            ``harden`` and the guard sets it, so that their reports show what ``--allow`` added;
            ``bastion scan --allow`` does not (its result is read by whoever typed the entry).

    Whatever the source of an addition, a deny rule wins over it, and so does a shipped allow
    rule that accepts a global only as a class reference (``call = false``: ``numpy.memmap``
    called creates a file): no addition makes such a global callable.

    Raises:
        ConfigError: an ``allow`` or ``project_allow`` entry is malformed, or a
            ``project_allow`` entry names a protected module (every bad entry is listed).
    """

    def __init__(
        self,
        allow: Sequence[str] = (),
        *,
        project_allow: Sequence[str] = (),
        allow_rules: Iterable[Rule] | None = None,
        deny_rules: Iterable[Rule] | None = None,
        report_allowed: bool = False,
    ) -> None:
        av, ballow, dv, bdeny = _builtin_rules()
        self.report_allowed = report_allowed
        self.allow_version = av if allow_rules is None else "custom"
        self.deny_version = dv if deny_rules is None else "custom"
        self.allow_rules: tuple[Rule, ...] = ballow if allow_rules is None else tuple(allow_rules)
        self.deny_rules: tuple[Rule, ...] = bdeny if deny_rules is None else tuple(deny_rules)
        users = _user_rules(((allow, "user"), (project_allow, "project")))
        self.user_rules: tuple[Rule, ...] = tuple(users)
        self._reference_only = tuple(r for r in self.allow_rules if not r.call)
        self._cache: dict[tuple[str, str], Judgement] = {}
        self._silent: dict[tuple[str, str], bool] = {}
        self._capture: dict[tuple[str, str], bool] = {}
        for r in users:  # deny always wins: an allow entry naming a denied callable does nothing
            if r.names != ("",):  # ``module.*``: say which deny rules it cannot override
                prefix = r.modules[0][:-2]
                hits = [
                    d.id
                    for d in self.deny_rules
                    if any(m == prefix or m.startswith(prefix + ".") for m in d.modules)
                ]
                if hits:
                    log.warning(
                        "allow entry %s does not allow what the deny-list names in %s (deny always wins: %s)",
                        r.modules[0],
                        prefix,
                        ", ".join(sorted(hits)[:5]),
                    )
                continue
            module, _, name = r.modules[0].rpartition(".")
            rule = self.denied(module, name)
            if rule is not None:
                log.warning(
                    "allow entry %s has no effect: it is deny-listed (%s: %s)",
                    r.modules[0],
                    rule.id,
                    rule.rationale,
                )
            elif any(ref.matches(module, name) for ref in self._reference_only):
                log.warning(
                    "allow entry %s has no effect: the allow-list accepts it only as a class reference, "
                    "never called",
                    r.modules[0],
                )

    @property
    def version(self) -> str:
        """``allow@<version>,deny@<version>`` of the rules in force."""
        return f"allow@{self.allow_version},deny@{self.deny_version}"

    def denied(self, module: str, name: str) -> Rule | None:
        """The deny rule ``module.name`` matches (through aliases and dotted paths), or ``None``."""
        for mod, nm in _candidates(module, name):
            for rule in self.deny_rules:
                if rule.matches(mod, nm):
                    return rule
        return None

    def allows(self, module: str, name: str) -> bool:
        """Whether ``module.name`` is allowed (the emulator folds such ``getattr`` results)."""
        return self.judge(module, name).kind is _ALLOWED

    def judge(self, module: str, name: str) -> Judgement:
        """Judge one global: denied beats allowed beats unknown."""
        key = (module, name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._judge(module, name)
        if len(self._cache) < 100_000:
            self._cache[key] = result
        return result

    def _judge(self, module: str, name: str) -> Judgement:
        rule = self.denied(module, name)
        if rule is not None:
            return Judgement(Verdictish.DENIED, rule, f"{module}.{name}")
        mapped = _py2_map(module, name)
        pairs = {(module, name), mapped}
        for mod, nm in pairs:
            # an allow rule that accepts the global only as a reference wins over any addition:
            # no --allow or scan.allow makes numpy.memmap callable (red-team round 31)
            if not _TEST_MODULE.search(mod):
                for r in self._reference_only:
                    if r.matches(mod, nm):
                        return Judgement(Verdictish.ALLOWED, r, f"{mod}.{nm}")
        for mod, nm in pairs:
            full = f"{mod}.{nm}"
            test_module = _TEST_MODULE.search(mod)
            for r in self.user_rules:
                if r.source == "project" and (test_module or "." in nm):
                    continue  # a project file's entry: as written, never a test suite's import
                if r.names == ("",):
                    if full == r.modules[0]:
                        return Judgement(Verdictish.ALLOWED, r, full)
                elif r.matches(mod, nm):
                    return Judgement(Verdictish.ALLOWED, r, full)
            if test_module:  # a package's test suite re-exports anything it imports
                continue
            for r in self.allow_rules:
                if r.matches(mod, nm):
                    return Judgement(Verdictish.ALLOWED, r, full)
        return Judgement(Verdictish.UNKNOWN, None, f"{module}.{name}")

    def is_nested_loader(self, module: str, name: str) -> bool:
        """Whether ``module.name`` is a deny-listed loader whose bytes arguments are a payload."""
        rule = self.denied(module, name)
        return rule is not None and rule.nested

    def reports(self, rule: Rule | None) -> bool:
        """Whether a global this allow rule let through is shown as an ``info`` finding.

        A project file's ``scan.allow`` entry always is; a user's entry when ``report_allowed``.
        """
        if rule is None:
            return False
        return rule.source == "project" or (rule.source == "user" and self.report_allowed)

    def silent(self, module: str, name: str) -> bool:
        """Whether ``module.name`` gets no finding whatever a stream does with it.

        True for a global an allow rule accepts as a callable (``call = true``) when that rule's
        allowance is not itself reported (a project file's ``scan.allow`` entry always is; a
        user's entry is when ``report_allowed``). Most globals of most files are such; the
        scanner skips its per-global evidence work for them.
        """
        key = (module, name)
        known = self._silent.get(key)
        if known is None:
            j = self.judge(module, name)
            rule = j.rule
            known = j.kind is _ALLOWED and rule is not None and rule.call and not self.reports(rule)
            if len(self._silent) < 100_000:
                self._silent[key] = known
        return known

    @property
    def capture_known(self) -> dict[tuple[str, str], bool]:
        """:meth:`capture`'s answers so far, by ``(module, name)`` (the emulator reads them directly).

        Read only: entries are added by :meth:`capture`, never changed.
        """
        return self._capture

    def capture(self, module: str, name: str) -> bool:
        """Whether the emulator should keep argument previews and bytes for calls of this global.

        Every global but an allowed callable: a reference-only allowed global (``call = false``)
        is captured too, so that a call of it shows its arguments.
        """
        key = (module, name)
        known = self._capture.get(key)
        if known is None:
            j = self.judge(module, name)
            known = j.kind is not _ALLOWED or (j.rule is not None and not j.rule.call)
            if len(self._capture) < 100_000:
                self._capture[key] = known
        return known
