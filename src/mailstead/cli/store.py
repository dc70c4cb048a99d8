"""``mailstead store migrate --to DSN``: copy the embedded store into PostgreSQL (issue 10).

The copy and its verification live in ``storage/transfer.py``; this module checks the
arguments, shows progress on stderr, prints the summary and the ``[store]`` lines to put into
mailstead.toml, and with ``--switch`` writes them into the config itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config, parse_config
from mailstead.config.model import CONFIG_FILE_NAME
from mailstead.config.values import BadValue, parse_dsn
from mailstead.storage.transfer import Progress, TransferReport, copy_to_postgres, safe_dsn
from mailstead.storage.verify import VerifyReport, repair_store, verify_store

MIGRATE_DESCRIPTION = """\
Copy this installation's embedded store (DATA/mailstead.db and the message bodies in
DATA/blobs/) into an empty PostgreSQL database, so that several `mailstead serve` nodes can
share it. Stop `mailstead serve` first (a process that has the store open is detected and
refused). Every table is copied with its ids unchanged (accounts, passwords, two-factor
secrets, app passwords, mailboxes with their UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, each
message's UID, flags and MODSEQ, subscriptions, the outbound queue, DKIM keys, spam and Sieve
data), the bodies into the database. Before anything is committed the copy is verified: row
counts of every table, the SHA-256 of every body as PostgreSQL holds it, and per mailbox
UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, message count and total size; when anything differs
nothing is committed. The embedded store is left as it was.

The target database must be empty (the schema is created). Then either put the [store] lines
printed at the end into DATA/mailstead.toml, or pass --switch to have them written there.
Every node needs DATA/security.key and the TLS files of this data directory too."""

MIGRATE_EPILOG = """\
example:
  createdb -O mailstead mailstead
  mailstead store migrate --data-dir /var/lib/mailstead \\
      --to postgresql://mailstead@127.0.0.1/mailstead --switch"""

VERIFY_DESCRIPTION = """\
Check the whole store; change nothing unless --repair is given. The server may be running:
the rows are read in one snapshot, which never blocks deliveries.

Checked: the database (the embedded store: PRAGMA integrity_check of DATA/mailstead.db; check
PostgreSQL's pages with pg_amcheck); every message body a message or the queue refers to exists
and matches its SHA-256 name; each message's size (and size in CRLF form, and whether its last
line ends) agrees with its body; per mailbox, UIDNEXT is above every UID and HIGHESTMODSEQ at or
above every MODSEQ; per account, the quota usage agrees with its messages; no orphan bodies (no
message or queue row refers to them, older than an hour, since a delivery writes its body just
before its row) and no temp leftovers in DATA/blobs/; no text-index document without its body.
Prints what was checked, then each fault on its own line; exits 1 on any fault, 0 when clean.

--repair fixes what needs no guessing, safely while the server runs: UIDNEXT and HIGHESTMODSEQ
are raised to what the messages need (never lowered: clients keep UIDs, RFC 9051 section
2.3.1.1), quota usage is recomputed, orphan bodies and temp leftovers are removed. It lists what
it could not fix: a missing or damaged body is restored from a backup (mailstead restore, or the
file of the same name from a backup's blobs directory: the same name holds the same bytes).

A damaged database is not repaired here: stop the server, keep a copy of the data directory,
then restore DATA/mailstead.db from a backup, or rebuild it with the sqlite3 shell:
  sqlite3 DATA/mailstead.db .recover | sqlite3 DATA/recovered.db
and move recovered.db to mailstead.db."""

VERIFY_EPILOG = """\
example:
  mailstead verify --data-dir /var/lib/mailstead
  mailstead verify --data-dir /var/lib/mailstead --repair"""

# Bodies named in full in the output; the rest are counted.
VERIFY_SHOWN = 20

# How often progress lines are written to stderr.
PROGRESS_INTERVAL = 2.0


def store_migrate(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    config = load_config(data_dir)
    if config.store.backend == "postgresql":
        raise CommandError(
            f"this installation already uses PostgreSQL ({safe_dsn(config.store.dsn)}); "
            'store migrate copies the embedded store: set [store] backend = "sqlite" to copy it'
        )
    try:
        dsn = parse_dsn(args.to)
    except BadValue as exc:
        raise CommandError(f"--to: {exc}") from None
    if not dsn:
        raise CommandError("--to: give the PostgreSQL URI, e.g. postgresql://USER@HOST/DATABASE")
    print(f"mailstead: copying the store of {data_dir} into {safe_dsn(dsn)}", file=ctx.stderr)
    report = asyncio.run(copy_to_postgres(data_dir, dsn, ProgressPrinter(ctx.stderr)))
    for line in summary(report):
        ctx.out(line)
    if args.switch:
        switch_config(data_dir / CONFIG_FILE_NAME, data_dir, dsn)
        ctx.out(
            f"{data_dir / CONFIG_FILE_NAME} now uses PostgreSQL: start `mailstead serve` "
            "(the embedded store stays as it was; mail delivered from now on goes only to "
            "PostgreSQL)"
        )
    else:
        ctx.out("To use it, put these lines into the config (replacing any [store] table),")
        ctx.out("then start `mailstead serve`:")
        ctx.out("")
        ctx.out("[store]")
        ctx.out('backend = "postgresql"')
        ctx.out(f"dsn = {_toml_string(_shown_dsn(dsn))}")
        if _shown_dsn(dsn) != dsn:
            ctx.out("(write the password in place of PASSWORD, or keep it in ~/.pgpass)")
    return 0


def summary(report: TransferReport) -> list[str]:
    """The lines printed after a verified copy."""
    lines = [
        f"copied {len(report.rows)} tables, {report.total_rows:,} rows in "
        f"{report.seconds:.1f} s: {report.accounts:,} account(s), {report.mailboxes:,} "
        f"mailboxes, {report.messages:,} messages, {report.blobs:,} bodies "
        f"({_size(report.blob_bytes)})",
        "verified: row counts of every table, the SHA-256 of every body in PostgreSQL, and "
        "UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, message count and size of every mailbox",
    ]
    if report.measured:
        lines.append(f"measured the wire size of {report.measured:,} older message(s)")
    if report.skipped_blobs:
        lines.append(
            f"left out {len(report.skipped_blobs)} unreadable body file(s) no message or queue "
            "entry refers to (garbage the collector had not removed yet)"
        )
    if report.cleaned_values:
        lines.append(
            f"{report.cleaned_values} text value(s) held characters PostgreSQL cannot store "
            "(NUL, lone surrogates): they were replaced with U+FFFD"
        )
    return lines


class ProgressPrinter:
    """Writes a progress line at most every PROGRESS_INTERVAL seconds (so a small store
    prints nothing), plus one when a long step ends."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.last = clock()
        self.printed: tuple[str, str] | None = None

    def __call__(self, p: Progress) -> None:
        now = self.clock()
        finished = p.total > 0 and p.done >= p.total and self.printed == (p.step, p.table)
        if now - self.last < PROGRESS_INTERVAL and not finished:
            return
        if p.total == 0 and p.done == 0:
            return
        self.last = now
        self.printed = (p.step, p.table)
        text = f"mailstead: {p.step} {p.table}: {p.done:,}/{p.total:,} rows"
        if p.total_bytes:
            text += f" ({_size(p.nbytes)} of {_size(p.total_bytes)})"
        print(text, file=self.stream, flush=True)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _shown_dsn(dsn: str) -> str:
    """The DSN with any password replaced by PASSWORD (for the terminal)."""
    head, sep, tail = dsn.partition("@")
    scheme, found, userinfo = head.partition("://")
    if not sep or not found or ":" not in userinfo:
        return dsn
    return f"{scheme}://{userinfo.split(':', 1)[0]}:PASSWORD@{tail}"


def _toml_string(text: str) -> str:
    """A TOML basic string (RFC-free: TOML 1.0 section "String")."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise CommandError("the URI contains control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADER = re.compile(r"^\s*\[")
_STORE_HEADER = re.compile(r"^\s*\[\s*store\s*\]\s*(#.*)?$")


def _assigns(key: str, commented: bool) -> re.Pattern[str]:
    """A line assigning ``key`` (or, with ``commented``, such a line commented out)."""
    prefix = r"#\s*" if commented else ""
    return re.compile(rf"^\s*{prefix}{key}\s*=")


def switched_text(text: str, dsn: str) -> str:
    """``text`` (a mailstead.toml) with ``backend = "postgresql"`` and ``dsn`` set in its
    ``[store]`` table: an existing or commented-out line of each key is replaced in place (its
    comments stay above it); without a ``[store]`` table one is appended. Everything else is
    kept byte for byte."""
    lines = text.splitlines(keepends=True)
    wanted = {"backend": 'backend = "postgresql"\n', "dsn": f"dsn = {_toml_string(dsn)}\n"}
    start = next((i for i, line in enumerate(lines) if _STORE_HEADER.match(line)), None)
    if start is None:
        if "store" in tomllib.loads(text):
            raise CommandError(
                "the config sets store outside a [store] table: edit it by hand to "
                f'backend = "postgresql" and dsn = {_toml_string(_shown_dsn(dsn))}'
            )
        tail = "" if not text or text.endswith("\n") else "\n"
        return text + tail + "\n[store]\n" + "".join(wanted.values())
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    body = lines[start + 1 : end]
    after = 0  # a key without a line of its own goes after the previous key
    for key, line in wanted.items():
        active = [i for i, old in enumerate(body) if _assigns(key, False).match(old)]
        commented = [i for i, old in enumerate(body) if _assigns(key, True).match(old)]
        if active or commented:
            at = (active or commented)[0]
            body[at] = line
        else:
            at = after
            body.insert(at, line)
        after = at + 1
    return "".join([*lines[: start + 1], *body, *lines[end:]])


def switch_config(path: Path, data_dir: Path, dsn: str) -> None:
    """Points the config at PostgreSQL: the new text must load and name ``dsn`` before it
    atomically replaces the file (same mode; written, fsync'd, renamed)."""
    text = path.read_text(encoding="utf-8")
    new = switched_text(text, dsn)
    config = parse_config(new, path, data_dir)
    if config.store.backend != "postgresql" or config.store.dsn != dsn:
        raise CommandError("could not set [store] in the config: edit it by hand")
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=".mailstead.toml.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _faults(ctx: Context, kind: str, lines: list[str]) -> None:
    """Prints at most VERIFY_SHOWN of ``lines``, then how many more there are."""
    for line in lines[:VERIFY_SHOWN]:
        ctx.out(f"  {line}")
    if len(lines) > VERIFY_SHOWN:
        ctx.out(f"  ... and {len(lines) - VERIFY_SHOWN} more {kind}")


def _print_report(ctx: Context, report: VerifyReport, where: str) -> None:
    ctx.out(f"database {where}: "
            + ("ok" if not report.database else f"{len(report.database)} problem(s)"))
    for problem in report.database:
        ctx.out(f"  {problem}")
    ctx.out(f"checked {report.accounts} accounts, {report.mailboxes} mailboxes, "
            f"{report.messages} messages, {report.files} stored bodies")
    ctx.out(f"message bodies: {report.bodies} checked, {len(report.damaged)} damaged, "
            f"{len(report.missing)} missing")
    for kind, names in (("damaged", report.damaged), ("missing", report.missing)):
        _faults(ctx, kind, [f"{kind} {name}" for name in names])
    _faults(ctx, "messages", report.lost)
    sections = (
        ("sizes", "message sizes", report.sizes),
        ("counters", "mailbox counters", report.counters),
        ("accounts", "quota usage", report.usage),
        ("orphans", "orphan bodies", [f"orphan body {n}" for n in report.orphans]),
        ("temp files", "temp leftovers", [f"temp leftover {p}" for p in report.temps]),
        ("documents", "text index", report.index),
    )
    for kind, title, lines in sections:
        ctx.out(f"{title}: " + (f"{len(lines)} fault(s)" if lines else "ok"))
        _faults(ctx, kind, lines)


def verify(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    config = load_config(data_dir)
    report = asyncio.run(verify_store(data_dir, config.store))
    where = str(data_dir / "mailstead.db") if report.backend == "sqlite" else safe_dsn(
        config.store.dsn)
    _print_report(ctx, report, where)
    if report.ok:
        ctx.out("verify: the store is sound")
        return 0
    if not args.repair:
        ctx.out("verify: the store is damaged; `mailstead verify --repair` fixes counters and "
                "orphans, see `mailstead verify --help`")
        return 1
    done = asyncio.run(repair_store(data_dir, report, config.store)) if report.fixable else []
    for line in done:
        ctx.out(f"repaired: {line}")
    after = asyncio.run(verify_store(data_dir, config.store))
    if after.ok:
        ctx.out("verify: repaired; the store is sound")
        return 0
    ctx.out("not repaired (restore these from a backup: `mailstead restore`, or the files of "
            "the same name from a backup's blobs directory):")
    _faults(ctx, "messages", after.lost or [f"body {n}" for n in after.missing + after.damaged])
    left = [*after.database, *after.sizes, *after.counters, *after.usage, *after.index,
            *(f"orphan body {n}" for n in after.orphans),
            *(f"temp leftover {p}" for p in after.temps)]
    _faults(ctx, "faults", left)
    ctx.out("verify: the store is still damaged")
    return 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
    group: Callable[..., argparse._SubParsersAction[argparse.ArgumentParser]],
) -> None:
    """Adds the ``store`` command group and ``verify`` to the parser tree of cli/main.py."""
    p = add(sub, "verify", verify,
            "check the database, every message body and the counters; --repair fixes them",
            description=VERIFY_DESCRIPTION, epilog=VERIFY_EPILOG)
    p.add_argument("--repair", action="store_true",
                   help="raise UIDNEXT/HIGHESTMODSEQ, recompute quota usage, remove orphan "
                   "bodies and temp leftovers; list the bodies to restore from a backup")
    store = group(sub, "store", "move the store to PostgreSQL (several nodes, one database)")
    p = add(
        store,
        "migrate",
        store_migrate,
        "copy the embedded store into an empty PostgreSQL database, verified",
        description=MIGRATE_DESCRIPTION,
        epilog=MIGRATE_EPILOG,
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="DSN",
        help="the empty target database, e.g. postgresql://mailstead@127.0.0.1/mailstead "
        "(a password may be in the URI, in $PGPASSWORD or in ~/.pgpass)",
    )
    p.add_argument(
        "--switch",
        action="store_true",
        help="after a verified copy, set [store] backend and dsn in DATA/mailstead.toml "
        "(other lines and comments are kept)",
    )
