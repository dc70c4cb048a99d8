"""``check-client``: sets up a mail account like a mail client would, against any server,
tries every common combination of port and security, and explains each failure.

The grid is what people actually type into clients: IMAP 993 SSL/TLS and 143 STARTTLS, POP3
995 and 110, SMTP 465, 587 and 25 (RFC 8314 section 3 prefers implicit TLS), plus the plain
variants so "login refused before TLS" can be told apart without ever sending a password in
the clear. Every probe runs concurrently, so a dropped port costs one timeout, not seven.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from mailstead.diagnostics.classify import Cause, fix, is_success, words
from mailstead.diagnostics.discovery import Discovered
from mailstead.diagnostics.model import printable
from mailstead.diagnostics.probe import (
    Credentials,
    ProbeResult,
    ProbeSettings,
    Protocol,
    Security,
    Target,
    probe,
)

# (protocol, standard port, security): the settings people configure.
GRID: tuple[tuple[Protocol, int, Security], ...] = (
    ("imap", 993, "ssl"),
    ("imap", 143, "starttls"),
    ("imap", 143, "none"),
    ("pop3", 995, "ssl"),
    ("pop3", 110, "starttls"),
    ("pop3", 110, "none"),
    ("smtp", 465, "ssl"),
    ("smtp", 587, "starttls"),
    ("smtp", 587, "none"),
    ("smtp", 25, "starttls"),
)
# Failure causes that speak about the account, not the port: shown first in the summary.
_ACCOUNT_CAUSES = (Cause.APP_PASSWORD, Cause.WEB_LOGIN, Cause.BLOCKED, Cause.USERNAME_FORM,
                   Cause.WRONG_PASSWORD, Cause.TEMPORARY)


@dataclass(frozen=True, slots=True)
class Row:
    """One tried setting: ``standard_port`` is the port people know (993...), ``target`` what
    was really tried (the same unless remapped with --port)."""

    standard_port: int
    result: ProbeResult
    username: str

    @property
    def cause(self) -> Cause:
        return self.result.cause


@dataclass
class Report:
    """Every row, the discovery notes, and the best working setting per protocol."""

    email: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def best(self, protocol: str) -> Row | None:
        """The working setting to recommend: SSL/TLS before STARTTLS (RFC 8314 section 3),
        submission ports before 25."""
        rank = {"ssl": 0, "starttls": 1, "none": 2}
        working = [r for r in self.rows if r.result.target.protocol == protocol
                   and is_success(r.cause)]
        working.sort(key=lambda r: (rank[r.result.target.security], r.standard_port == 25))
        return working[0] if working else None

    def main_failure(self, protocol: str) -> Row | None:
        rows = [r for r in self.rows if r.result.target.protocol == protocol]
        for cause in _ACCOUNT_CAUSES:
            for row in rows:
                if row.cause is cause:
                    return row
        return rows[0] if rows else None

    def ok(self) -> bool:
        """An incoming protocol and sending both work."""
        return (self.best("imap") is not None or self.best("pop3") is not None) and \
            self.best("smtp") is not None


def plan(host: str, *, address: str | None = None, ports: Mapping[int, int] | None = None,
         discovered: Discovered | None = None,
         extra: Sequence[Target] = ()) -> list[tuple[int, Target]]:
    """(standard port, target) pairs to try: discovered settings first, then the grid on each
    discovered host (or ``host``), ports remapped through ``ports``; duplicates dropped."""
    ports = ports or {}
    pairs: list[tuple[int, Target]] = []
    hosts: dict[str, list[str]] = {p: [host] for p in ("imap", "pop3", "smtp")} if host else {}
    if discovered is not None:
        for t in discovered.targets:
            if t.port:
                pairs.append((t.port, replace(t, address=address)))
        for protocol in ("imap", "pop3", "smtp"):
            found = discovered.hosts(protocol)
            if found:
                hosts[protocol] = found
    for protocol, port, security in GRID:
        for name in hosts.get(protocol, []):
            pairs.append((port, Target(protocol, name, ports.get(port, port), security,
                                       address)))
    for t in extra:
        pairs.append((t.port, t))
    seen: set[Target] = set()
    out = []
    for standard, target in pairs:
        if target not in seen:
            seen.add(target)
            out.append((standard, target))
    return out


# Answers that say the password itself is refused for the account, whichever port asked:
# sending it again elsewhere would only count more failed logins against this machine.
_DEFINITE = (Cause.WRONG_PASSWORD, Cause.APP_PASSWORD, Cause.WEB_LOGIN, Cause.BLOCKED)


async def run(email: str, targets: Sequence[tuple[int, Target]], creds: Credentials | None,
              settings: ProbeSettings) -> Report:
    """Probe every target at once without a password (connection, TLS, certificate), then
    log in on the settings that work one at a time, stopping at the first definite refusal:
    one wrong password costs one failed login, not one per port (a server's brute-force
    protection would otherwise block the checking machine). Where a user name other than
    the address was refused, the full address is tried once per protocol, to tell a wrong
    name form from a wrong password."""
    report = Report(email)
    results = list(await asyncio.gather(*(probe(t, None, settings) for _, t in targets)))
    refusal: ProbeResult | None = None
    retried: dict[str, ProbeResult] = {}
    for index, (_, target) in enumerate(targets):
        if creds is None or results[index].cause is not Cause.LOGIN_NOT_TESTED:
            continue
        if refusal is not None:
            where = f"{refusal.target.protocol.upper()} port {refusal.target.port}"
            results[index] = ProbeResult(
                target, refusal.cause, f"not sent again: refused on {where}: {refusal.detail}")
            continue
        # POP3 logins go one at a time anyway: RFC 1939 section 8 lets a session lock the
        # maildrop, so parallel logins to the same account would collide.
        result = await probe(target, creds, settings)
        if (result.cause is Cause.WRONG_PASSWORD
                and creds.username.lower() != email.lower()):
            if target.protocol not in retried:
                retried[target.protocol] = await probe(
                    target, Credentials(email, creds.password), settings)
            if retried[target.protocol].cause is Cause.OK:
                result = ProbeResult(target, Cause.USERNAME_FORM,
                                     f"{printable(creds.username)} refused; {email} works")
        results[index] = result
        if result.cause in _DEFINITE:  # a wrong name form is USERNAME_FORM by now
            refusal = result
    username = creds.username if creds else email
    for (standard, _), result in zip(targets, results, strict=True):
        report.rows.append(Row(standard, result, username))
    return report


def _security_words(security: str) -> str:
    return {"ssl": "SSL/TLS", "starttls": "STARTTLS", "none": "none"}[security]


def render(report: Report) -> str:
    """The table of every tried setting, the reason and fix of each failure, and the
    settings to use."""
    lines = [f"Mail settings for {report.email}"]
    lines += [f"  found through {note}" for note in report.notes]
    lines.append("")
    lines.append(f"{'PROTOCOL':<9}{'SERVER':<28}{'PORT':>11}  {'SECURITY':<9} RESULT")
    for row in report.rows:
        t = row.result.target
        shown_port = str(row.standard_port) if t.port == row.standard_port else \
            f"{row.standard_port}>{t.port}"
        status = "works" if is_success(row.cause) else "FAILS"
        if row.cause is Cause.LOGIN_NOT_TESTED:
            status = "connects (login not tested)"
        lines.append(f"{t.protocol.upper():<9}{printable(t.host, 27):<28}{shown_port:>11}  "
                     f"{_security_words(t.security):<9} {status}")
        if not is_success(row.cause):
            lines.append(f"    why: {words(row.cause)}")
            if row.result.detail:
                lines.append(f"    server said: {row.result.detail}")
            lines.append(f"    fix: {fix(row.cause)}")
    lines.append("")
    lines.append("Settings to use:")
    for protocol, label in (("imap", "incoming (IMAP)"), ("pop3", "incoming (POP3)"),
                            ("smtp", "outgoing (SMTP)")):
        best = report.best(protocol)
        if best is not None:
            t = best.result.target
            lines.append(f"  {label}: server {t.host}, port {best.standard_port}, security "
                         f"{_security_words(t.security)}, user name {printable(best.username)}")
            continue
        failure = report.main_failure(protocol)
        if failure is None:
            lines.append(f"  {label}: not tried")
        else:
            lines.append(f"  {label}: nothing works; {words(failure.cause)}. "
                         f"Fix: {fix(failure.cause)}")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The report for machines: every row with its cause name, and the settings to use."""
    rows = []
    for row in report.rows:
        t = row.result.target
        rows.append({
            "protocol": t.protocol, "host": t.host, "port": row.standard_port,
            "connected_port": t.port, "security": t.security, "works": is_success(row.cause),
            "cause": row.cause.value, "why": words(row.cause), "fix": fix(row.cause),
            "detail": row.result.detail,
        })
    use: dict[str, object] = {}
    for protocol in ("imap", "pop3", "smtp"):
        best = report.best(protocol)
        use[protocol] = None if best is None else {
            "host": best.result.target.host, "port": best.standard_port,
            "security": best.result.target.security, "username": best.username,
        }
    doc = {"email": report.email, "ok": report.ok(), "found_through": report.notes,
           "results": rows, "use": use}
    return json.dumps(doc, indent=2) + "\n"
