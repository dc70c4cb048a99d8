"""``mailstead import ...``: bring mail in from elsewhere; the work is in interchange/.

``register`` creates the ``import`` group (and ``export`` for the exporters); each importer
adds its subcommand with a ``register_*`` function of its own, so the group grows in one place.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from mailstead.cli.context import CommandError, Context
from mailstead.cli.progress import ProgressBar, size_text
from mailstead.core.secret import Secret
from mailstead.interchange import files
from mailstead.interchange.imap import ImapSource, ImapSummary, Security, import_imap
from mailstead.interchange.sink import ImportReport, ImportSink
from mailstead.storage.interfaces import Store

Add = Callable[..., argparse.ArgumentParser]
Group = Callable[..., "argparse._SubParsersAction[argparse.ArgumentParser]"]

IMAP_DESCRIPTION = """\
Copy every folder of an account on another IMAP server (iCloud, Gmail, mail.com, Outlook, any
IMAP server) into the Mailstead account ADDRESS: each message byte for byte with its flags,
keywords and internal date. The provider's special folders (by their SPECIAL-USE attribute,
else by their usual names: "Sent Messages", "Deleted Items", "[Gmail]/Sent Mail", "Gesendet",
"Papierkorb", "Envoyés", ...) go into our Sent, Drafts, Trash, Junk and Archive; the rest keep
their names and hierarchy. Gmail's "All Mail", "Important" and "Starred" are skipped (they
show the messages of the other folders, the labels, again). The source is only read.

A second run copies only what is missing, and an interrupted run picks up where it stopped:
nothing is copied twice. The server may be running meanwhile.

The server's certificate must be trusted by the system, or by --ca-file FILE; an untrusted one
is refused with its fingerprint shown. With two-factor authentication on, iCloud, Gmail and
mail.com need an app password, made in the provider's account settings."""

IMAP_EPILOG = """\
example:
  echo 'app-password' | mailstead import imap --host imap.mail.me.com --user alice@icloud.com \\
      --password-stdin --into alice@example.org --data-dir /var/lib/mailstead"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], add: Add,
             group: Group) -> None:
    """Adds the ``import`` group with ``import imap`` to the parser tree of cli/main.py."""
    imports = group(sub, "import", "copy mail into an account from another server or files")
    register_imap(imports, add)
    register_files(imports, add)
    exports = group(sub, "export", "write an account's mail into Maildir or mbox files")
    register_exports(exports, add)


def register_imap(imports: argparse._SubParsersAction[argparse.ArgumentParser],
                  add: Add) -> None:
    p = add(imports, "imap", import_imap_command,
            "copy an account from another IMAP server (resumable, repeatable)",
            description=IMAP_DESCRIPTION, epilog=IMAP_EPILOG)
    p.add_argument("--host", required=True, help="the source server, e.g. imap.gmail.com")
    p.add_argument("--port", type=int, help="default: 993 (--ssl), 143 (--starttls)")
    security = p.add_mutually_exclusive_group()
    security.add_argument("--ssl", dest="security", action="store_const", const="ssl",
                          help="TLS from the first byte (the default, port 993)")
    security.add_argument("--starttls", dest="security", action="store_const",
                          const="starttls", help="plain connection upgraded by STARTTLS")
    p.add_argument("--user", required=True, help="the user name on the source server")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input; without "
                   "it the password is asked on the terminal")
    p.add_argument("--into", required=True, metavar="ADDRESS",
                   help="the Mailstead account to import into (it must exist)")
    p.add_argument("--folder", action="append", default=[], metavar="NAME",
                   help="import only this source folder and its subfolders ('*' matches any "
                   "text); repeatable")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="leave this source folder and its subfolders out; repeatable")
    p.add_argument("--ca-file", type=Path, metavar="FILE",
                   help="trust this certificate or authority (PEM) for the source server")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up when the source does not answer for this long (default 60)")


def _password(ctx: Context, from_stdin: bool) -> Secret:
    if from_stdin:
        return ctx.read_password(True)
    if not ctx.stdin.isatty():
        raise CommandError(
            "standard input is not a terminal: pass the password with --password-stdin"
        )
    return Secret(ctx.getpass("Password on the source server: "))


def import_imap_command(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    security: Security = args.security or ("starttls" if args.port == 143 else "ssl")
    port = args.port or (993 if security == "ssl" else 143)
    if args.ca_file is not None and not args.ca_file.is_file():
        raise CommandError(f"--ca-file {args.ca_file}: no such file")
    source = ImapSource(args.host, port, security, args.user,
                        _password(ctx, args.password_stdin), args.ca_file, args.timeout)
    bar = ProgressBar(ctx.stderr)

    async def go() -> tuple[ImportReport, ImapSummary]:
        store = await ctx.open_store(data_dir)
        try:
            sink = await ImportSink.open(store, args.into, source.uri)
            try:
                summary = await import_imap(
                    source, sink, include=args.folder, exclude=args.exclude,
                    progress=lambda n, b, label: bar.advance(n, b, label),
                    totals=lambda n, b: bar.set_totals(n, b),
                )
            finally:
                await sink.close()
            return sink.report, summary
        finally:
            await store.close()

    report, summary = asyncio.run(go())
    bar.finish()
    print_summary(ctx, report, summary.skipped_folders)
    return 1 if report.failed else 0


def print_summary(ctx: Context, report: ImportReport,
                  skipped_folders: Sequence[tuple[str, str]] = ()) -> None:
    """The summary every importer prints on stdout."""
    ctx.out(f"folders: {report.folders}")
    ctx.out(f"messages: {report.messages:,} ({size_text(report.nbytes)})")
    ctx.out(f"skipped (already there): {report.skipped:,}")
    for note in report.notes:
        ctx.out(note)
    for name, reason in skipped_folders:
        ctx.out(f"folder not imported: {name} ({reason})")
    ctx.out(f"failed: {len(report.failed):,}")
    for folder, origin, reason in report.failed[:100]:
        ctx.out(f"  {folder} {origin}: {reason}")
    if len(report.failed) > 100:
        ctx.out(f"  ... and {len(report.failed) - 100:,} more")


MAILDIR_DESCRIPTION = """\
Copy a Maildir or Maildir++ tree (as Dovecot, Courier and mbsync write them: subfolders in
".A.B" directories or nested, flags from the ":2," part of the file names, keywords from
dovecot-keywords, the file's time as the received date) into the account ADDRESS. Sent,
Drafts, Trash, Junk/Spam and Archive go into our special folders. A second run copies only
what is missing. The server may be running meanwhile."""

MBOX_DESCRIPTION = """\
Copy mbox files (mboxrd or mboxo: Thunderbird's folder files, Apple Mail's NAME.mbox
exports, Python's mailbox module, `mailstead export mbox`) into the folder NAME of the account
ADDRESS. Flags come from Status/X-Status or X-Mozilla-Status, the received date from the
From_ line. A second run copies only what is missing."""

EXPORT_DESCRIPTION = """\
Write every folder of the account ADDRESS into the new directory DEST: as Dovecot-compatible
Maildir++ ("maildir": flags and keywords in the file names, the received date as the file's
time) or as one mboxrd file per folder ("mbox": DEST/FOLDER.mbox, with flags and received
dates in FOLDER.mbox.mailstead.jsonl beside it, so that `mailstead import mbox` gives back
the same messages, flags and dates). The messages are written byte for byte as stored."""


def register_files(imports: argparse._SubParsersAction[argparse.ArgumentParser],
                   add: Add) -> None:
    p = add(imports, "maildir", import_maildir_command,
            "copy a Maildir or Maildir++ tree into an account", description=MAILDIR_DESCRIPTION,
            epilog="example:\n  mailstead import maildir ~/Maildir --into alice@example.org")
    p.add_argument("path", type=Path, metavar="PATH", help="the Maildir's root directory")
    p.add_argument("--into", required=True, metavar="ADDRESS",
                   help="the Mailstead account to import into (it must exist)")
    p = add(imports, "mbox", import_mbox_command, "copy mbox files into a folder of an account",
            description=MBOX_DESCRIPTION,
            epilog="example:\n  mailstead import mbox Archive.mbox --into alice@example.org "
            "--folder Archive/2019")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="mbox files")
    p.add_argument("--into", required=True, metavar="ADDRESS",
                   help="the Mailstead account to import into (it must exist)")
    p.add_argument("--folder", required=True, metavar="NAME",
                   help='the folder to import into ("/" between levels), created if missing')
    p.add_argument("--format", choices=("auto", "mboxrd", "mboxo"), default="auto",
                   help="how '>From ' lines are unquoted (default: auto)")


def register_exports(exports: argparse._SubParsersAction[argparse.ArgumentParser],
                     add: Add) -> None:
    for kind in ("maildir", "mbox"):
        p = add(exports, kind, export_command, f"write an account's mail as {kind}",
                description=EXPORT_DESCRIPTION,
                epilog=f"example:\n  mailstead export {kind} alice@example.org /srv/export")
        p.set_defaults(kind=kind)
        p.add_argument("address", metavar="ADDRESS", help="the account to export")
        p.add_argument("dest", type=Path, metavar="DEST",
                       help="a new (or empty) directory to write into")


def _run_import(ctx: Context, args: argparse.Namespace,
                work: Callable[[Store, files.Progress], Awaitable[ImportReport]]) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    bar = ProgressBar(ctx.stderr)

    async def go() -> ImportReport:
        store = await ctx.open_store(data_dir)
        try:
            return await work(store, lambda folder, n: bar.advance(1, n, folder))
        finally:
            await store.close()

    report = asyncio.run(go())
    bar.finish()
    print_summary(ctx, report)
    return 1 if report.failed else 0


def import_maildir_command(ctx: Context, args: argparse.Namespace) -> int:
    return _run_import(ctx, args, lambda store, progress: files.import_maildir(
        store, args.into, args.path, progress))


def import_mbox_command(ctx: Context, args: argparse.Namespace) -> int:
    return _run_import(ctx, args, lambda store, progress: files.import_mbox(
        store, args.into, args.files, args.folder, args.format, progress))


def export_command(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    bar = ProgressBar(ctx.stderr)
    write = files.export_maildir if args.kind == "maildir" else files.export_mbox

    async def go() -> files.ExportReport:
        store = await ctx.open_store(data_dir)
        try:
            return await write(store, args.address, args.dest,
                               lambda folder, n: bar.advance(1, n, folder))
        finally:
            await store.close()

    report = asyncio.run(go())
    bar.finish()
    ctx.out(f"exported {report.folders} folders, {report.messages:,} messages "
            f"({size_text(report.nbytes)}) into {args.dest}")
    if report.dropped_keywords:
        ctx.out(f"{report.dropped_keywords:,} keywords not written (Maildir holds 26 per "
                "folder)")
    return 0
