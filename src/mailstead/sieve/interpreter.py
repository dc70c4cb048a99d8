"""Runs a compiled Sieve script over one message (RFC 5228 section 2.10 and the extensions).

A run never raises: a runtime error (a limit reached, conflicting actions) discards every
action and keeps the message (RFC 5228 section 2.10.6). There are no loops in Sieve, but a
short script can still compare long values many times, so every run has a step budget (and a
CPU budget on the clock it is given); using it up is such a runtime error too. Nothing here
reads a clock of its own: "currentdate" (RFC 5260) sees the time ``run`` is given.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailstead import __version__
from mailstead.sieve.actions import (
    Action,
    Discard,
    FileInto,
    Keep,
    Outcome,
    Redirect,
    Reject,
    Vacation,
)
from mailstead.sieve.compile import Node, Script
from mailstead.sieve.dates import LOCAL_ZONE, extract, from_timestamp, parse_date
from mailstead.sieve.limits import Budget, BudgetExceeded, SieveLimits
from mailstead.sieve.match import matches, relational
from mailstead.sieve.message import MessageView
from mailstead.sieve.parser import StringList

# RFC 5230 section 4.1: :days defaults to 7; we bound it to 1..30 (the section allows a
# site minimum and maximum).
VACATION_DAYS_DEFAULT = 7
VACATION_DAYS_MIN = 1
VACATION_DAYS_MAX = 30
# RFC 5229 section 3: ${name} or ${0}..${9} match variables; other namespaces are not ours.
_VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)\}")
# RFC 5232 section 3: flags are system flags or IMAP atoms (RFC 3501 flag-keyword).
_FLAG = re.compile(r"\\?[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]+\Z")
_SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged",
                 "\\deleted": "\\Deleted", "\\draft": "\\Draft"}


class _RuntimeFailure(Exception):
    pass


class _Stop(Exception):
    pass


@dataclass(slots=True)
class Envelope:
    """The SMTP envelope of this copy: sender ("" for <>) and the recipient it was for."""

    mail_from: str
    rcpt_to: str


@dataclass(frozen=True, slots=True)
class SieveEnvironment:
    """What the RFC 5183 "environment" test reports about where the script runs; an empty
    string is an item this server does not know."""

    host: str = ""  # "host": this server's fully qualified name
    domain: str = ""  # "domain": the DNS domain the server belongs to
    name: str = "Mailstead"
    version: str = __version__
    location: str = "MDA"  # scripts run at final delivery
    phase: str = "during"  # ... while the message is being delivered

    @classmethod
    def for_host(cls, hostname: str) -> SieveEnvironment:
        """The environment of a server called ``hostname``. RFC 5183 section 4: "domain"
        is usually a proper suffix of the host name: mail.example.org is in example.org
        (a name of two labels or fewer is its own domain)."""
        host = hostname.rstrip(".").lower()
        labels = host.split(".")
        return cls(host=host, domain=".".join(labels[1:]) if len(labels) > 2 else host)

    def item(self, name: str) -> str | None:
        """The value of item ``name`` (case-insensitive); None when unknown. "remote-host"
        and "remote-ip" are unknown here: they belong to the SMTP session, which the
        delivery step does not carry."""
        value = {"host": self.host, "domain": self.domain, "name": self.name,
                 "version": self.version, "location": self.location,
                 "phase": self.phase}.get(name.lower())
        return value or None


@dataclass(slots=True)
class _State:
    variables: dict[str, str] = field(default_factory=dict)
    match_vars: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # the internal variable (RFC 5232 3)
    actions: list[Action] = field(default_factory=list)
    cancel_keep: bool = False
    redirects: int = 0


def normalize_flags(values: list[str]) -> list[str]:
    """Space-separated flag lists split, invalid flags dropped, duplicates merged (RFC 5232
    section 3), system flags in their canonical case."""
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            if not _FLAG.match(flag) or (flag.startswith("\\") and
                                         flag.lower() not in _SYSTEM_FLAGS):
                continue
            flag = _SYSTEM_FLAGS.get(flag.lower(), flag)
            if flag.lower() not in seen:
                seen.add(flag.lower())
                out.append(flag)
    return out


class Interpreter:
    """Runs scripts; one instance serves many runs (it keeps no per-run state)."""

    def __init__(self, limits: SieveLimits | None = None,
                 environment: SieveEnvironment | None = None,
                 cpu_clock: Callable[[], float] | None = None) -> None:
        """``cpu_clock``: the CPU time of the running thread (``time.thread_time``), which
        bounds a run to ``limits.max_cpu_seconds``; without it only the steps count."""
        self.limits = limits or SieveLimits()
        self.environment = environment or SieveEnvironment()
        self._cpu_clock = cpu_clock

    def run(
        self,
        script: Script,
        message: MessageView,
        envelope: Envelope,
        mailbox_exists: Callable[[str], bool] = lambda _name: True,
        *,
        now: float | None = None,
    ) -> Outcome:
        """The actions for this message; never raises. ``now``: the delivery time in
        seconds since the epoch, which "currentdate" tests (without it they are false)."""
        budget = Budget(self.limits.max_steps, self._cpu_clock, self.limits.max_cpu_seconds)
        run = _Run(self.limits, script, message, envelope, mailbox_exists, self.environment,
                   now, budget)
        try:
            run.script(script.commands)
            return Outcome(run.finish())
        except _RuntimeFailure as exc:
            return Outcome((Keep(),), error=str(exc))
        except BudgetExceeded as exc:
            return Outcome((Keep(),), error=f"script stopped: {exc}", exhausted=True)
        except RecursionError:
            return Outcome((Keep(),), error="script nested too deeply")


class _Run:
    def __init__(self, limits: SieveLimits, script: Script, message: MessageView,
                 envelope: Envelope, mailbox_exists: Callable[[str], bool],
                 environment: SieveEnvironment, now: float | None, budget: Budget) -> None:
        self.budget = budget
        self.limits = limits
        self.vars_on = "variables" in script.extensions
        self.msg = message
        self.env = envelope
        self.mailbox_exists = mailbox_exists
        self.s = _State()
        self.environment = environment
        self.now = now

    # Strings -------------------------------------------------------------------------

    def expand(self, value: str) -> str:
        """RFC 5229 section 3: one pass of ${...} substitution; unknown names are ""."""
        if not self.vars_on or "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.isdigit():
                n = int(name)
                return self.s.match_vars[n] if n < len(self.s.match_vars) else ""
            return self.s.variables.get(name.lower(), "")

        out = _VAR_REF.sub(sub, value)
        return out[: self.limits.max_string]

    def strings(self, arg: object) -> list[str]:
        assert isinstance(arg, StringList)
        if not self.vars_on:  # nothing to expand
            return list(arg.items)
        return [self.expand(v) for v in arg.items]

    def string(self, arg: object) -> str:
        assert isinstance(arg, StringList)
        return self.expand(arg.items[0])

    # Commands ------------------------------------------------------------------------

    def script(self, nodes: list[Node]) -> None:
        try:
            self.block(nodes)
        except _Stop:
            return  # RFC 5228 section 3.3: stop ends the script; the actions so far stand

    def block(self, nodes: list[Node]) -> None:
        for node in nodes:
            self.command(node)

    def command(self, node: Node) -> None:
        self.budget.spend()
        n = node.name
        if n == "if":
            for test, body in node.branches:
                if test is None or self.test(test):
                    self.block(body)
                    return
            return
        if n == "stop":
            raise _Stop
        if n == "keep":
            flags = self._flags_arg(node)
            self.add(Keep(tuple(flags)))
        elif n == "discard":
            self.s.cancel_keep = True
            self.add(Discard())
        elif n == "fileinto":
            mailbox = self.string(node.pos[0])
            if not _valid_mailbox(mailbox):
                raise _RuntimeFailure(f"fileinto: invalid mailbox name {mailbox[:60]!r}")
            self.add(FileInto(mailbox, tuple(self._flags_arg(node)), "create" in node.tags))
            if "copy" not in node.tags:
                self.s.cancel_keep = True
        elif n == "redirect":
            address = self.string(node.pos[0]).strip()
            if not _valid_address(address):
                # RFC 5228 section 4.2: an invalid address is a runtime error.
                raise _RuntimeFailure(f"redirect: invalid address {address[:60]!r}")
            self.s.redirects += 1
            if self.s.redirects > self.limits.max_redirects:
                raise _RuntimeFailure("too many redirect actions")
            self.add(Redirect(address))
            if "copy" not in node.tags:
                self.s.cancel_keep = True
        elif n == "reject":
            self.s.cancel_keep = True
            self.add(Reject(self.string(node.pos[0])))
        elif n in ("setflag", "addflag", "removeflag"):
            self.flag_command(node)
        elif n == "set":
            self.set_command(node)
        elif n == "vacation":
            self.vacation(node)

    def add(self, action: Action) -> None:
        if len(self.s.actions) >= self.limits.max_actions:
            raise _RuntimeFailure("too many actions")
        self.s.actions.append(action)

    def _flags_arg(self, node: Node) -> list[str]:
        if "flags" in node.tags:
            return normalize_flags(self.strings(node.tags["flags"]))
        return list(self.s.flags)

    def flag_command(self, node: Node) -> None:
        var = node.pos[0]
        values = normalize_flags(self.strings(node.pos[1]))
        if var is None:
            current = self.s.flags
        else:
            current = normalize_flags([self.s.variables.get(self.string(var).lower(), "")])
        if node.name == "setflag":
            result = values
        elif node.name == "addflag":
            result = normalize_flags(current + values)
        else:
            drop = {f.lower() for f in values}
            result = [f for f in current if f.lower() not in drop]
        if var is None:
            self.s.flags = result
        else:
            self.set_var(self.string(var), " ".join(result))

    def set_var(self, name: str, value: str) -> None:
        key = name.lower()
        if key not in self.s.variables and len(self.s.variables) >= self.limits.max_variables:
            raise _RuntimeFailure("too many variables")
        self.s.variables[key] = value[: self.limits.max_string]

    def set_command(self, node: Node) -> None:
        name = node.pos[0]
        assert isinstance(name, StringList)
        value = self.string(node.pos[1])
        tags = node.tags
        # RFC 5229 section 4.1: modifiers apply in order of precedence 40 (lower/upper), 30
        # (lowerfirst/upperfirst), 20 (quotewildcard), 10 (length).
        if "lower" in tags:
            value = value.lower()
        if "upper" in tags:
            value = value.upper()
        if "lowerfirst" in tags:
            value = value[:1].lower() + value[1:]
        if "upperfirst" in tags:
            value = value[:1].upper() + value[1:]
        if "quotewildcard" in tags:
            value = re.sub(r"([*?\\])", r"\\\1", value)
        if "length" in tags:
            value = str(len(value))
        self.set_var(name.items[0], value)

    def vacation(self, node: Node) -> None:
        t = node.tags
        days = t.get("days")
        n_days = days if isinstance(days, int) else VACATION_DAYS_DEFAULT
        n_days = max(VACATION_DAYS_MIN, min(VACATION_DAYS_MAX, n_days))
        reason = self.string(node.pos[0])
        subject = self.string(t["subject"]) if "subject" in t else None
        from_ = self.string(t["from"]) if "from" in t else None
        addresses = tuple(self.strings(t["addresses"])) if "addresses" in t else ()
        if "handle" in t:
            handle = self.string(t["handle"])
        else:
            # RFC 5230 section 4.2: without :handle, the handle is derived from the reason
            # and the other arguments, so a changed reply goes out again.
            source = "\0".join([reason, subject or "", from_ or "", *addresses,
                                "mime" if "mime" in t else ""])
            handle = hashlib.sha256(source.encode("utf-8", "replace")).hexdigest()[:32]
        if any(isinstance(a, Vacation) for a in self.s.actions):
            raise _RuntimeFailure("vacation used twice")  # RFC 5230 section 4.7
        self.add(Vacation(reason, subject, from_, addresses, n_days, handle, "mime" in t))

    def finish(self) -> tuple[Action, ...]:
        actions = list(self.s.actions)
        rejects = len([a for a in actions if isinstance(a, Reject)])
        # RFC 5429 section 2.2: reject is incompatible with keep, fileinto, redirect and
        # vacation; RFC 5230 section 4.7: vacation with reject is an error.
        if rejects and (rejects > 1 or any(
                isinstance(a, Keep | FileInto | Redirect | Vacation) for a in actions)):
            raise _RuntimeFailure("reject cannot be combined with other delivery actions")
        if not self.s.cancel_keep:
            # RFC 5232 section 3: the implicit keep uses the current internal flags.
            actions.append(Keep(tuple(self.s.flags)))
        return _merge(actions)

    # Tests ---------------------------------------------------------------------------

    def test(self, node: Node) -> bool:
        self.budget.spend()
        n = node.name
        if n == "true":
            return True
        if n == "false":
            return False
        if n == "not":
            return not self.test(node.tests[0])
        if n == "allof":
            return all(self.test(t) for t in node.tests)
        if n == "anyof":
            return any(self.test(t) for t in node.tests)
        if n == "exists":
            return all(self.msg.raw_headers(h) for h in self.strings(node.pos[0]))
        if n == "size":
            limit = node.pos[0]
            assert isinstance(limit, int)
            # RFC 5228 section 5.9: :over is strictly greater, :under strictly less.
            return self.msg.size > limit if "over" in node.tags else self.msg.size < limit
        if n == "mailboxexists":
            return all(self.mailbox_exists(m) for m in self.strings(node.pos[0]))
        if n in ("environment", "date", "currentdate"):
            # RFC 5183 section 4, RFC 5260 section 4: an unknown item, or no valid date,
            # fails the test whatever the match type (:count included).
            found = (self.environment.item(self.string(node.pos[0])) if n == "environment"
                     else self.date(node))
            return found is not None and self.compare(node, [found], self.strings(node.pos[-1]))
        return self.compare(node, self.values(node), self.strings(node.pos[-1]))

    def date(self, node: Node) -> str | None:
        """The date part a date/currentdate test compares; None when there is none (no
        such field, no valid date-time in it, no current time given)."""
        if node.name == "currentdate":
            moment = from_timestamp(self.now) if self.now is not None else None
        else:
            # RFC 5260 section 4: the date test looks at the first field of that name.
            fields = self.msg.raw_headers(self.string(node.pos[0]))
            moment = parse_date(fields[0]) if fields else None
        if "zone" in node.tags:
            zone: str | None = self.string(node.tags["zone"])
        else:
            zone = None if "originalzone" in node.tags else LOCAL_ZONE
        return extract(moment, self.string(node.pos[-2]), zone) if moment is not None else None

    def values(self, node: Node) -> list[str]:
        n = node.name
        if n == "header":
            return [v for h in self.strings(node.pos[0]) for v in self.msg.headers(h)]
        if n == "address":
            addrs = [a for h in self.strings(node.pos[0]) for a in self.msg.addresses(h)]
            return [_address_part(a, node.address_part) for a in addrs]
        if n == "envelope":
            out: list[str] = []
            for part in self.strings(node.pos[0]):
                addr = self.env.mail_from if part.lower() == "from" else self.env.rcpt_to
                # RFC 5228 section 5.4: the null reverse-path matches as "" (:all only).
                if addr or node.address_part == "all":
                    out.append(_address_part(addr, node.address_part) if addr else "")
            return out
        if n == "body":
            if "raw" in node.tags:
                return [self.msg.body_raw()]
            types = tuple(self.strings(node.tags["content"])) if "content" in node.tags else None
            return self.msg.body_text(types)
        if n == "hasflag":
            var = node.pos[0]
            if var is None:
                return list(self.s.flags)
            return [f for v in self.strings(var)
                    for f in self.s.variables.get(v.lower(), "").split()]
        if n == "string":
            return self.strings(node.pos[0])
        return []

    def count(self, node: Node, values: list[str]) -> int:
        """RFC 5231 section 4.2: how many entities the test found."""
        if node.name == "string":
            # RFC 5229 section 5: the empty string counts 0, any other string 1.
            return sum(1 for v in values if v)
        if node.name == "envelope":
            # The addresses, not the parts: the null reverse-path holds no address.
            return sum(1 for part in self.strings(node.pos[0])
                       if (self.env.mail_from if part.lower() == "from" else self.env.rcpt_to))
        # header: fields; address: addresses; hasflag: flags; body: text parts; date: dates.
        return len(values)

    def compare(self, node: Node, values: list[str], keys: list[str]) -> bool:
        if node.match == "count":
            # RFC 5231 section 4.2: the count, as a decimal string, against each key
            # (so with no values the count is "0"; with no keys nothing matches).
            count = str(self.count(node, values))
            return any(relational(count, key, node.relation, node.comparator)
                       for key in keys)
        if node.match == "value":
            # RFC 5231 section 4.1: true if any (value, key) pair stands in the relation.
            self.budget.spend(len(values) * len(keys))
            return any(relational(value, key, node.relation, node.comparator)
                       for value in values for key in keys)
        for value in values:
            for key in keys:
                ok, groups = matches(value, key, node.match, node.comparator, self.budget)
                if ok:
                    if groups is not None:
                        # RFC 5229 section 3.2: a successful :matches sets ${0}..${9}.
                        self.s.match_vars = [g[: self.limits.max_string] for g in groups[:10]]
                    return True
        return False


def _address_part(address: str, part: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at:
        return address if part in ("all", "localpart") else ""
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    return address


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and len(address) <= 254 and "." in domain
                and not any(c in address for c in " \t\r\n<>,;\"\\"))


def _valid_mailbox(name: str) -> bool:
    return bool(name) and len(name) <= 255 and name == name.strip() and not any(
        ord(c) < 0x20 or c in "*%\x7f" for c in name) and "//" not in name


def _merge(actions: list[Action]) -> tuple[Action, ...]:
    """Duplicate actions become one (RFC 5228 section 2.10.3): one fileinto per mailbox
    (keep is fileinto the default mailbox), one redirect per address, flags merged."""
    out: list[Action] = []
    for action in actions:
        if isinstance(action, Keep | FileInto):
            target = "" if isinstance(action, Keep) else action.mailbox
            for i, prev in enumerate(out):
                prev_target = ("" if isinstance(prev, Keep) else
                               prev.mailbox if isinstance(prev, FileInto) else None)
                if prev_target == target and isinstance(prev, Keep | FileInto):
                    flags = tuple(normalize_flags([*prev.flags, *action.flags]))
                    out[i] = (Keep(flags) if isinstance(prev, Keep) else
                              FileInto(prev.mailbox, flags, prev.create or
                                       (isinstance(action, FileInto) and action.create)))
                    break
            else:
                out.append(action)
        elif isinstance(action, Redirect):
            if all(not (isinstance(p, Redirect) and p.address.lower() == action.address.lower())
                   for p in out):
                out.append(action)
        elif isinstance(action, Discard):
            continue  # discard only cancels the implicit keep (RFC 5228 section 4.4)
        else:
            out.append(action)
    return tuple(out)
