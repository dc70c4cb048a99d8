"""Semantic checks of a parsed Sieve script: known commands and tests, their tags and
arguments, ``require`` before use (RFC 5228 sections 2.10.5 and 3.2), control structure.

The result is a tree of ``Node`` objects the interpreter runs without further checks. Every
problem is a ``SieveError`` naming the line, so ManageSieve CHECKSCRIPT/PUTSCRIPT can tell
the user exactly what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailstead.sieve.dates import DATE_PARTS, parse_zone
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.match import RELATIONS
from mailstead.sieve.parser import Argument, Command, SieveError, StringList, Tag, Test, parse

# Extensions we implement, as named by ``require`` and in the SIEVE capability (RFC 5804
# section 1.7). "comparator-i;octet" and "comparator-i;ascii-casemap" are always available
# (RFC 5228 section 2.7.3) and may be required without effect.
EXTENSIONS: tuple[str, ...] = (
    "fileinto", "reject", "envelope", "body", "imap4flags", "variables", "vacation", "copy",
    "mailbox", "relational", "date", "environment", "comparator-i;ascii-numeric",
    "comparator-i;octet", "comparator-i;ascii-casemap",
)
# What the ManageSieve SIEVE capability lists (RFC 5804 section 1.7): every extension but
# the two comparators every implementation has. Clients offer i;ascii-numeric only when it
# is listed (RFC 5231 section 3 makes it part of "relational").
CAPABILITY_EXTENSIONS: tuple[str, ...] = tuple(
    e for e in EXTENSIONS if e not in ("comparator-i;octet", "comparator-i;ascii-casemap"))
COMPARATORS = ("i;octet", "i;ascii-casemap", "i;ascii-numeric")
# Comparators that must be required before use (RFC 5228 section 2.7.3).
_COMPARATOR_EXTENSIONS = {"i;ascii-numeric": "comparator-i;ascii-numeric"}
_MATCH_TYPES = frozenset({"is", "contains", "matches"})
# RFC 5231 section 4: the relational match types, each followed by its relation.
_RELATIONAL_MATCH_TYPES = frozenset({"value", "count"})
_ADDRESS_PARTS = frozenset({"localpart", "domain", "all"})
_SET_MODIFIERS = frozenset({"lower", "upper", "lowerfirst", "upperfirst", "quotewildcard",
                            "length"})
# RFC 5229 section 3: variable-name = (ALPHA / "_") *(ALPHA / DIGIT / "_").
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_S, _L, _N = "string", "stringlist", "number"


@dataclass(frozen=True, slots=True)
class _Spec:
    """The arguments one command or test takes."""

    positional: tuple[str, ...]
    tags: dict[str, str | None] = field(default_factory=dict)  # tag -> its argument kind
    optional_leading: int = 0  # how many leading positionals may be left out
    extension: str | None = None
    match: bool = False  # takes COMPARATOR and MATCH-TYPE
    address_part: bool = False


_TESTS: dict[str, _Spec] = {
    "address": _Spec((_L, _L), match=True, address_part=True),
    "envelope": _Spec((_L, _L), match=True, address_part=True, extension="envelope"),
    "header": _Spec((_L, _L), match=True),
    "exists": _Spec((_L,)),
    "size": _Spec((_N,), {"over": None, "under": None}),
    "body": _Spec((_L,), {"raw": None, "text": None, "content": _L}, match=True,
                  extension="body"),
    "hasflag": _Spec((_L, _L), match=True, optional_leading=1, extension="imap4flags"),
    "string": _Spec((_L, _L), match=True, extension="variables"),
    "mailboxexists": _Spec((_L,), extension="mailbox"),
    # RFC 5260 sections 4 and 5 (the section 6 :index/:last are not implemented).
    "date": _Spec((_S, _S, _L), {"zone": _S, "originalzone": None}, match=True,
                  extension="date"),
    "currentdate": _Spec((_S, _L), {"zone": _S}, match=True, extension="date"),
    "environment": _Spec((_S, _L), match=True, extension="environment"),  # RFC 5183
    "true": _Spec(()),
    "false": _Spec(()),
    "not": _Spec(()),
    "allof": _Spec(()),
    "anyof": _Spec(()),
}

_COMMANDS: dict[str, _Spec] = {
    "keep": _Spec((), {"flags": _L}),
    "discard": _Spec(()),
    "stop": _Spec(()),
    "fileinto": _Spec((_S,), {"flags": _L, "create": None, "copy": None},
                      extension="fileinto"),
    "redirect": _Spec((_S,), {"copy": None}),
    "reject": _Spec((_S,), extension="reject"),
    "setflag": _Spec((_S, _L), optional_leading=1, extension="imap4flags"),
    "addflag": _Spec((_S, _L), optional_leading=1, extension="imap4flags"),
    "removeflag": _Spec((_S, _L), optional_leading=1, extension="imap4flags"),
    "set": _Spec((_S, _S), {m: None for m in _SET_MODIFIERS}, extension="variables"),
    "vacation": _Spec((_S,), {"days": _N, "subject": _S, "from": _S, "addresses": _L,
                              "mime": None, "handle": _S}, extension="vacation"),
}
# Tags that need an extension of their own beyond the command's (RFC 3894, RFC 5232, RFC 5490).
_TAG_EXTENSIONS = {("fileinto", "flags"): "imap4flags", ("keep", "flags"): "imap4flags",
                   ("fileinto", "copy"): "copy", ("redirect", "copy"): "copy",
                   ("fileinto", "create"): "mailbox"}


@dataclass(slots=True)
class Node:
    """One checked command or test. ``tags`` maps a tag to its argument (None for a flag tag);
    ``pos`` holds the positional arguments (a left-out optional leading one is None)."""

    name: str
    line: int
    tags: dict[str, Argument | None] = field(default_factory=dict)
    pos: list[Argument | None] = field(default_factory=list)
    tests: list[Node] = field(default_factory=list)
    block: list[Node] = field(default_factory=list)
    # "if": the chain of (test, block) branches; the test of a final else is None.
    branches: list[tuple[Node | None, list[Node]]] = field(default_factory=list)
    comparator: str = "i;ascii-casemap"  # RFC 5228 section 2.7.3: the default
    match: str = "is"  # RFC 5228 section 2.7.1: the default
    relation: str = ""  # with match "value" or "count": "gt", "ge", ... (RFC 5231)
    address_part: str = "all"  # RFC 5228 section 2.7.4: the default


@dataclass(slots=True)
class Script:
    """A compiled script: its commands and the extensions it required."""

    commands: list[Node]
    extensions: frozenset[str]


def _kind(arg: Argument) -> str:
    if isinstance(arg, int):
        return _N
    if isinstance(arg, StringList):
        return _S if arg.single else _L
    return "tag"


def _fits(arg: Argument, kind: str) -> bool:
    got = _kind(arg)
    return got == kind or (kind == _L and got == _S)


class _Checker:
    def __init__(self) -> None:
        self.required: set[str] = set()

    def need(self, ext: str, what: str, line: int) -> None:
        # RFC 5228 section 3.2: using an extension not required is an error.
        if ext not in self.required:
            raise SieveError(f'{what} needs require "{ext}"', line)

    def args(self, name: str, spec: _Spec, raw: list[Argument], line: int, node: Node) -> None:
        i = 0
        seen_match = seen_part = seen_cmp = False
        while i < len(raw) and isinstance(raw[i], Tag):
            tag = raw[i]
            assert isinstance(tag, Tag)
            i += 1
            t = tag.name
            if spec.match and (t in _MATCH_TYPES or t in _RELATIONAL_MATCH_TYPES):
                if seen_match:
                    raise SieveError(f"{name}: more than one match type", line)
                seen_match = True
                node.match = t
                if t in _RELATIONAL_MATCH_TYPES:
                    self.need("relational", f":{t}", line)
                    if i >= len(raw) or _kind(raw[i]) != _S:
                        raise SieveError(f'{name}: :{t} needs a relation such as "ge"', line)
                    value = raw[i]
                    assert isinstance(value, StringList)
                    i += 1
                    # RFC 5231 section 4: the relation names are case-insensitive; any
                    # other is an error (found here, before the script is stored).
                    relation = value.items[0].lower()
                    if relation not in RELATIONS:
                        raise SieveError(f"{name}: unknown relation {value.items[0]!r} "
                                         '(use "gt", "ge", "lt", "le", "eq" or "ne")', line)
                    node.relation = relation
                continue
            if spec.address_part and t in _ADDRESS_PARTS:
                if seen_part:
                    raise SieveError(f"{name}: more than one address part", line)
                seen_part = True
                node.address_part = t
                continue
            if spec.match and t == "comparator":
                if seen_cmp or i >= len(raw) or _kind(raw[i]) != _S:
                    raise SieveError(f"{name}: :comparator needs one comparator name", line)
                seen_cmp = True
                value = raw[i]
                assert isinstance(value, StringList)
                i += 1
                cmp = value.items[0].lower()
                if cmp not in COMPARATORS:
                    # RFC 5228 section 2.7.3: an unknown comparator is a compile error.
                    raise SieveError(f"{name}: comparator {cmp!r} is not supported", line)
                if cmp in _COMPARATOR_EXTENSIONS:
                    self.need(_COMPARATOR_EXTENSIONS[cmp], f"comparator {cmp}", line)
                node.comparator = cmp
                continue
            if t not in spec.tags:
                raise SieveError(f"{name}: unknown tag :{t}", line)
            if t in node.tags:
                raise SieveError(f"{name}: tag :{t} given twice", line)
            ext = _TAG_EXTENSIONS.get((name, t))
            if ext is not None:
                self.need(ext, f"{name} :{t}", line)
            want = spec.tags[t]
            if want is None:
                node.tags[t] = None
                continue
            if i >= len(raw) or not _fits(raw[i], want):
                raise SieveError(f"{name}: :{t} needs a {want} argument", line)
            node.tags[t] = raw[i]
            i += 1
        if node.comparator == "i;ascii-numeric" and node.match in ("contains", "matches"):
            # RFC 4790 section 9.1: i;ascii-numeric has no substring operation, and RFC
            # 5228 section 2.7.3 makes a match type the comparator lacks an error.
            raise SieveError(f"{name}: :{node.match} cannot be used with i;ascii-numeric",
                             line)
        rest = raw[i:]
        if any(isinstance(a, Tag) for a in rest):
            raise SieveError(f"{name}: tags must come before the other arguments", line)
        want_all = spec.positional
        if len(rest) == len(want_all) - spec.optional_leading and spec.optional_leading:
            node.pos = [None] * spec.optional_leading
            want_all = want_all[spec.optional_leading:]
        elif len(rest) != len(want_all):
            raise SieveError(f"{name}: expected {len(want_all)} argument(s), got {len(rest)}",
                             line)
        for arg, want in zip(rest, want_all, strict=True):
            if not _fits(arg, want):
                raise SieveError(f"{name}: expected a {want} argument", line)
            node.pos.append(arg)

    def test(self, t: Test) -> Node:
        spec = _TESTS.get(t.name)
        if spec is None:
            raise SieveError(f"unknown test {t.name!r}", t.line)
        if spec.extension:
            self.need(spec.extension, f"test {t.name}", t.line)
        node = Node(t.name, t.line)
        self.args(t.name, spec, t.args, t.line, node)
        if t.name == "not":
            if len(t.tests) != 1:
                raise SieveError("not takes exactly one test", t.line)
        elif t.name in ("allof", "anyof"):
            if not t.tests:
                raise SieveError(f"{t.name} needs a test list", t.line)
        elif t.tests:
            raise SieveError(f"test {t.name} takes no nested tests", t.line)
        if t.name == "size" and len(node.tags) != 1:
            raise SieveError("size needs exactly one of :over and :under", t.line)
        if t.name == "body" and len({"raw", "text", "content"} & node.tags.keys()) > 1:
            raise SieveError("body takes one of :raw, :text, :content", t.line)
        if t.name == "envelope":
            self._envelope_parts(node)
        if t.name in ("date", "currentdate"):
            self._date_arguments(node)
        node.tests = [self.test(sub) for sub in t.tests]
        return node

    @staticmethod
    def _envelope_parts(node: Node) -> None:
        parts = node.pos[0]
        assert isinstance(parts, StringList)
        for part in parts.items:
            # RFC 5228 section 5.4: "from" and "to" are the parts every implementation has.
            if part.lower() not in ("from", "to"):
                raise SieveError(f"envelope part {part!r} is not supported", node.line)

    def _literal(self, arg: Argument | None) -> str | None:
        """A single-string argument's text when it can be checked now: None when it holds
        a variable reference (RFC 5229), known only when the script runs."""
        assert isinstance(arg, StringList)
        text = arg.items[0]
        return None if "variables" in self.required and "${" in text else text

    def _date_arguments(self, node: Node) -> None:
        if "zone" in node.tags and "originalzone" in node.tags:
            raise SieveError("date takes :zone or :originalzone, not both", node.line)
        part = self._literal(node.pos[-2])
        # RFC 5260 section 4.2: the date parts (case-insensitive).
        if part is not None and part.lower() not in DATE_PARTS:
            raise SieveError(f"{node.name}: unknown date part {part!r} (use one of "
                             f"{', '.join(sorted(DATE_PARTS))})", node.line)
        if "zone" in node.tags:
            zone = self._literal(node.tags["zone"])
            # RFC 5260 section 4.1: the zone is "+hhmm" or "-hhmm".
            if zone is not None and parse_zone(zone) is None:
                raise SieveError(f'{node.name}: :zone {zone!r} is not a zone such as "+0100"',
                                 node.line)

    def block(self, cmds: list[Command], top: bool) -> list[Node]:
        out: list[Node] = []
        allow_require = top
        prev: Node | None = None
        for cmd in cmds:
            if cmd.name == "require":
                # RFC 5228 section 3.2: require only at the start of the script.
                if not allow_require:
                    raise SieveError("require must come before any other command", cmd.line)
                self.require(cmd)
                continue
            allow_require = False
            if cmd.name in ("elsif", "else"):
                if prev is None or prev.name != "if" or prev.branches[-1][0] is None:
                    raise SieveError(f"{cmd.name} without a preceding if", cmd.line)
                test = self.control_test(cmd) if cmd.name == "elsif" else None
                if cmd.name == "else" and (cmd.args or cmd.tests):
                    raise SieveError("else takes no test", cmd.line)
                prev.branches.append((test, self.control_block(cmd)))
                continue
            node = self.command(cmd)
            out.append(node)
            prev = node
        return out

    def control_test(self, cmd: Command) -> Node:
        if cmd.args or len(cmd.tests) != 1:
            raise SieveError(f"{cmd.name} needs exactly one test", cmd.line)
        return self.test(cmd.tests[0])

    def control_block(self, cmd: Command) -> list[Node]:
        if cmd.block is None:
            raise SieveError(f"{cmd.name} needs a block", cmd.line)
        return self.block(cmd.block, top=False)

    def require(self, cmd: Command) -> None:
        if cmd.block is not None or cmd.tests or len(cmd.args) != 1:
            raise SieveError("require takes one string list", cmd.line)
        arg = cmd.args[0]
        if not isinstance(arg, StringList):
            raise SieveError("require takes one string list", cmd.line)
        for ext in arg.items:
            if ext.lower() not in EXTENSIONS:
                # RFC 5228 section 3.2: an unknown required extension fails the script.
                raise SieveError(f"extension {ext!r} is not supported", cmd.line)
            self.required.add(ext.lower())

    def command(self, cmd: Command) -> Node:
        if cmd.name == "if":
            node = Node("if", cmd.line)
            node.branches.append((self.control_test(cmd), self.control_block(cmd)))
            return node
        spec = _COMMANDS.get(cmd.name)
        if spec is None:
            raise SieveError(f"unknown command {cmd.name!r}", cmd.line)
        if cmd.block is not None:
            raise SieveError(f"{cmd.name} takes no block", cmd.line)
        if cmd.tests:
            raise SieveError(f"{cmd.name} takes no test", cmd.line)
        if spec.extension:
            self.need(spec.extension, cmd.name, cmd.line)
        node = Node(cmd.name, cmd.line)
        self.args(cmd.name, spec, cmd.args, cmd.line, node)
        if cmd.name == "set":
            name = node.pos[0]
            assert isinstance(name, StringList)
            if not VARIABLE_NAME.match(name.items[0]):
                raise SieveError(f"invalid variable name {name.items[0]!r}", cmd.line)
        if cmd.name in ("setflag", "addflag", "removeflag") and node.pos[0] is not None:
            self.need("variables", f"{cmd.name} with a variable name", cmd.line)
        return node


def compile_script(text: str | bytes, limits: SieveLimits | None = None) -> Script:
    """Parses and checks a script. Raises SieveError only, whatever the input."""
    try:
        tree = parse(text, limits)
        checker = _Checker()
        commands = checker.block(tree, top=True)
    except RecursionError:
        raise SieveError("script nested too deeply") from None
    return Script(commands, frozenset(checker.required))
