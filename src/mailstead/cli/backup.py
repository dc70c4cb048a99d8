"""``mailstead backup DEST`` (online snapshot, incremental), ``backup --verify DEST`` and
``mailstead restore SRC --data-dir DIR``; the work is in ``storage/sqlite/backup.py``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

from mailstead.cli.context import CommandError, Context
from mailstead.cli.progress import ProgressBar, size_text
from mailstead.config.loader import load_config
from mailstead.config.model import CONFIG_FILE_NAME
from mailstead.config.values import BadValue, parse_dsn
from mailstead.storage import backup as layout
from mailstead.storage.backup import BackupError, CheckReport

SHOWN = 20

BACKUP_DESCRIPTION = """\
Take a consistent snapshot of this installation while `mailstead serve` runs: the database
(SQLite's online backup API: one moment, whatever the server writes meanwhile), then every
message body that snapshot refers to, plus mailstead.toml, security.key, node-id, tls/ and
every other file of the data directory. Layout of DEST:

  DEST/blobs/ab/cd/<sha256>        bodies, shared by all snapshots
  DEST/snapshots/<UTC time>/       manifest.json (SHA-256 and size of every file, versions,
                                   backend, time, counts), mailstead.db, files/...

Incremental by default: a body already in DEST/blobs is not copied again (a name is the
SHA-256 of its content); --full re-checks every body there and re-copies any that differ. A
snapshot is written under snapshots/.partial-* and renamed at the end, so an interrupted
backup never looks complete. With --verify, check a snapshot (the newest, or --snapshot)
without restoring it: every file against the manifest, PRAGMA integrity_check of its
database, every body it needs present in DEST/blobs with its SHA-256; exit 1 on any fault.
On PostgreSQL the snapshot holds database/<table>.copy instead of mailstead.db: every table
(bodies included) dumped with binary COPY in one REPEATABLE READ READ ONLY transaction, so it
is one consistent moment while the nodes go on writing; DEST/blobs is not used."""

BACKUP_EPILOG = """\
examples:
  mailstead backup --data-dir /var/lib/mailstead /srv/backup/mail
  mailstead backup --verify /srv/backup/mail"""

RESTORE_DESCRIPTION = """\
Restore a snapshot made by `mailstead backup` (the newest in SRC, or --snapshot NAME) into an
empty or not yet existing data directory, checking every file against the manifest and every
body against its SHA-256 while copying. Then start it with `mailstead serve --data-dir DIR`;
`mailstead verify --data-dir DIR` checks it. A body missing or damaged in the backup is left
out and named, and the exit code is 1. A PostgreSQL backup is loaded into the empty database
given with --store DSN (the restored mailstead.toml then names it) or the one its config
names."""

RESTORE_EPILOG = """\
examples:
  mailstead restore /srv/backup/mail --data-dir /var/lib/mailstead-restored
  mailstead restore /srv/backup/mail --data-dir /var/lib/mailstead \\
      --store postgresql://mail@db.example.test/mail_restored"""


def _bar(ctx: Context, unit: str) -> tuple[ProgressBar, Callable[[int, int], None]]:
    bar = ProgressBar(ctx.stderr, unit=unit)

    def tick(items: int, nbytes: int) -> None:
        bar.advance(items, nbytes)

    return bar, tick


def _print_faults(ctx: Context, report: CheckReport) -> None:
    for line in report.bad_files[:SHOWN]:
        ctx.out(f"  file {line}")
    for line in report.database[:SHOWN]:
        ctx.out(f"  database {line}")
    for kind, names in (("missing", report.missing), ("damaged", report.damaged)):
        for name in names[:SHOWN]:
            ctx.out(f"  {kind} body {name}")
        if len(names) > SHOWN:
            ctx.out(f"  ... and {len(names) - SHOWN} more {kind}")


def backup(ctx: Context, args: argparse.Namespace) -> int:
    from mailstead.storage.sqlite.backup import take_backup, verify_backup

    dest = Path(args.dest).expanduser()
    try:
        if args.verify:
            snapshot = layout.pick_snapshot(dest, args.snapshot)
            if layout.load_manifest(snapshot).backend == "postgresql":
                from mailstead.storage.postgres.backup import verify_backup as verify_pg

                report = verify_pg(dest, snapshot.name)
            else:
                bar, tick = _bar(ctx, "bodies")
                report = verify_backup(dest, snapshot.name, tick)
            ctx.out(f"snapshot {report.snapshot}: {report.files} files, {report.blobs:,} "
                    f"bodies checked")
            _print_faults(ctx, report)
            if report.ok:
                ctx.out("backup --verify: the backup is sound")
                return 0
            ctx.out("backup --verify: the backup is damaged")
            return 1
        if args.snapshot:
            raise CommandError("--snapshot goes with --verify")
        data_dir = ctx.existing_data_dir(args.data_dir)
        config = load_config(data_dir)
        if config.store.backend == "postgresql":
            return _backup_pg(ctx, config.store.dsn, data_dir, dest)
        bar, tick = _bar(ctx, "bodies")
        done = take_backup(data_dir, dest, full=args.full, tick=tick)
        bar.finish()
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"backup failed: {exc.strerror or exc} ({exc.filename})") from None
    rate = done.blobs / done.seconds if done.seconds > 0 else 0.0
    ctx.out(f"snapshot {done.snapshot}")
    ctx.out(f"{done.files} files, {done.blobs:,} bodies: {done.copied:,} copied "
            f"({size_text(done.copied_bytes)}), {done.present:,} already there; "
            f"{done.counts.get('accounts', 0):,} account(s), "
            f"{done.counts.get('messages', 0):,} messages; {done.seconds:.1f} s "
            f"({rate:,.0f} bodies/s)")
    return 0


def _backup_pg(ctx: Context, dsn: str, data_dir: Path, dest: Path) -> int:
    from mailstead.storage.postgres.backup import take_backup

    done = asyncio.run(take_backup(dsn, data_dir, dest))
    ctx.out(f"snapshot {done.snapshot}")
    ctx.out(f"{done.files} files, {done.tables} tables dumped ({size_text(done.copied_bytes)}); "
            f"{done.counts.get('accounts', 0):,} account(s), "
            f"{done.counts.get('messages', 0):,} messages, {done.counts.get('blobs', 0):,} "
            f"bodies; {done.seconds:.1f} s")
    return 0


def _restore_pg(ctx: Context, args: argparse.Namespace, src: Path, data_dir: Path,
                snapshot: Path) -> CheckReport:
    """A PostgreSQL snapshot goes into ``--store`` (the restored config is pointed at it),
    else into the database its own config names; either must be empty."""
    from mailstead.cli.store import switch_config
    from mailstead.storage.postgres.backup import restore_backup as restore_pg

    if args.store:
        try:
            dsn = parse_dsn(args.store)
        except BadValue as exc:
            raise CommandError(f"--store: {exc}") from None
    else:
        dsn = load_config(snapshot / layout.FILES).store.dsn
    if not dsn:
        raise CommandError("a PostgreSQL backup needs a database: give --store DSN")
    report = asyncio.run(restore_pg(src, data_dir, dsn, snapshot.name))
    if args.store:
        switch_config(data_dir / CONFIG_FILE_NAME, data_dir, dsn)
    return report


def restore(ctx: Context, args: argparse.Namespace) -> int:
    from mailstead.storage.sqlite.backup import restore_backup

    src = Path(args.src).expanduser()
    data_dir = ctx.data_dir(args.data_dir)
    bar, tick = _bar(ctx, "bodies")
    try:
        snapshot = layout.pick_snapshot(src, args.snapshot)
        if layout.load_manifest(snapshot).backend == "postgresql":
            report = _restore_pg(ctx, args, src, data_dir, snapshot)
        else:
            if args.store:
                raise CommandError("--store goes with a backup of a PostgreSQL store")
            report = restore_backup(src, data_dir, snapshot.name, tick)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"restore failed: {exc.strerror or exc} ({exc.filename})") from None
    bar.finish()
    ctx.out(f"restored snapshot {report.snapshot} into {data_dir}: {report.files} files, "
            f"{report.blobs:,} bodies")
    _print_faults(ctx, report)
    if report.ok:
        ctx.out(f"start it with: mailstead serve --data-dir {data_dir}")
        return 0
    ctx.out("restore: the backup was damaged; what is named above is not in the restored store")
    return 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
) -> None:
    """Adds ``backup`` and ``restore`` to the parser tree of cli/main.py."""
    p = add(sub, "backup", backup, "snapshot the running store, keys and config into DEST",
            description=BACKUP_DESCRIPTION, epilog=BACKUP_EPILOG)
    p.add_argument("dest", metavar="DEST", help="the backup directory (created if needed)")
    p.add_argument("--verify", action="store_true",
                   help="check a snapshot in DEST without restoring it")
    p.add_argument("--full", action="store_true",
                   help="re-check every body already in DEST and re-copy any that differ")
    p.add_argument("--snapshot", metavar="NAME", help="with --verify: this snapshot, "
                   "not the newest")
    p = add(sub, "restore", restore, "restore a backup into an empty data directory",
            description=RESTORE_DESCRIPTION, epilog=RESTORE_EPILOG)
    p.add_argument("src", metavar="SRC", help="the backup directory")
    p.add_argument("--snapshot", metavar="NAME", help="this snapshot, not the newest")
    p.add_argument("--store", metavar="DSN", help="a PostgreSQL backup: the empty database to "
                   "load it into (default: the one its config names); the restored config is "
                   "pointed at it")
