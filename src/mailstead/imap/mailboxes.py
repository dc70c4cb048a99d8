"""SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE and NAMESPACE.

LIST, LSUB and STATUS live in ``listing.py`` (re-exported here for the dispatch table).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from mailstead.core.errors import AlreadyExists, LimitExceeded
from mailstead.imap import names, objectid, recent
from mailstead.imap.base import CommandFailed, State
from mailstead.imap.listing import list_command, status
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import Command, MailboxArgs, RenameArgs
from mailstead.proto.imap.selected import SelectedView
from mailstead.storage.interfaces import MailboxInfo

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

__all__ = ["create", "delete", "list_command", "namespace", "rename", "select", "status",
           "subscribe"]

# RFC 6154 section 2: the attributes CREATE (USE (...)) may set; \All and \Flagged would need
# virtual mailboxes, which we do not have.
CREATABLE_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")


def account_id(s: IMAPSession) -> int:
    assert s.account is not None  # the dispatch table allows these commands only after login
    return s.account.id


def mailbox_arg(s: IMAPSession, cmd: Command) -> tuple[MailboxArgs, str]:
    """The command's mailbox argument and its stored name (raises MailboxNameError)."""
    args = cmd.args
    if not isinstance(args, MailboxArgs):
        raise CommandFailed("BAD", f"{cmd.name} needs a mailbox name")
    return args, names.from_wire(args.raw, utf8=s.utf8)


async def existing(s: IMAPSession, name: str) -> MailboxInfo:
    info = await s.ctx.store.get_mailbox(account_id(s), name)
    if info is None:
        raise CommandFailed("NO", "No such mailbox", "NONEXISTENT")
    return info


def too_many(s: IMAPSession) -> CommandFailed:
    """RFC 9051 section 7.1: LIMIT, "the operation ran up against an implementation limit"."""
    most = s.settings.max_mailboxes_per_account
    return CommandFailed("NO", f"Too many mailboxes: an account may have {most}", "LIMIT")


async def ensure_parents(s: IMAPSession, name: str) -> None:
    """Create the missing levels above ``name`` (RFC 9051 section 6.3.4); each counts
    toward the account's mailbox limit."""
    store, acct = s.ctx.store, account_id(s)
    limit = s.settings.max_mailboxes_per_account
    for parent in names.parent_names(name):
        if await store.get_mailbox(acct, parent) is None:
            # Created meanwhile by another session: just as good.
            with contextlib.suppress(AlreadyExists):
                await store.create_mailbox(acct, parent, limit=limit)


async def select(s: IMAPSession, cmd: Command) -> None:
    """SELECT and EXAMINE (RFC 9051 sections 6.3.2 and 6.3.3), with CONDSTORE and QRESYNC
    parameters (RFC 7162 sections 3.1.8 and 3.2.5)."""
    args, name = mailbox_arg(s, cmd)
    if args.qresync is not None and not s.qresync:
        # RFC 7162 section 3.2.5: QRESYNC parameters without ENABLE QRESYNC are an error.
        raise CommandFailed("BAD", "ENABLE QRESYNC first", "CLIENTBUG")
    if s.view is not None:
        # RFC 9051 section 7.1 / RFC 7162 section 3.2.11: the old mailbox is closed first.
        s.close_mailbox()
        s.untagged("OK [CLOSED] Previous mailbox closed")
    read_only = cmd.name == "EXAMINE"
    info = await existing(s, name)
    if args.condstore:
        s.enabled.add("CONDSTORE")  # RFC 7162 section 3.1.8: SELECT (CONDSTORE) enables it
    # The view needs flags, MODSEQs and sizes only: no envelope or body structure JSON.
    msgs = await s.ctx.store.get_messages(info.id, None, envelope=False, bodystructure=False)
    uidnext = max(info.uidnext, msgs[-1].uid + 1 if msgs else 1)
    # RFC 3501 section 6.3.2: EXAMINE must not take \Recent away from other sessions.
    recent_from = await recent.at_select(s.ctx.store, info.id, uidnext, read_only=read_only,
                                         rev2=s.rev2)
    view = SelectedView.open(info, msgs, read_only=read_only, recent_from=recent_from)
    view.uidnext = uidnext
    view.highestmodseq = max([info.highestmodseq, *(m.modseq for m in msgs)])
    view.condstore, view.qresync, view.show_recent = s.condstore, s.qresync, not s.rev2
    view.uidonly = s.uidonly
    # RFC 9051 section 7.3.5: FLAGS lists every keyword in use in the mailbox, and section
    # 7.1 PERMANENTFLAGS adds "\\*": new keywords may be created.
    for line in view.flag_lines():
        s.raw(line)
    s.untagged(f"{view.exists} EXISTS")
    if not s.rev2:
        # RFC 3501 section 6.3.1: RECENT and the first unseen message (IMAP4rev1 only).
        s.untagged(f"{len(view.recent)} RECENT")
        unseen = next((i for i, m in enumerate(msgs, 1) if "\\Seen" not in m.flags), None)
        if unseen is not None:
            s.untagged(f"OK [UNSEEN {unseen}] First unseen message")
    s.untagged(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
    s.untagged(f"OK [UIDNEXT {view.uidnext}] Predicted next UID")
    # RFC 7162 section 3.1.2.1: always, since every mailbox has MODSEQs (never NOMODSEQ).
    s.untagged(f"OK [HIGHESTMODSEQ {view.highestmodseq}] Highest")
    # RFC 8474 section 4.2: the MAILBOXID response code.
    s.untagged(f"OK [MAILBOXID ({objectid.mailbox_id(info)})] Ok")
    if s.rev2:
        # RFC 9051 section 6.3.2: a LIST response with the mailbox name is required.
        s.untagged(b'LIST () "/" ' + response.mailbox(info.name, utf8=True))
    if args.qresync is not None and args.qresync.uidvalidity == view.uidvalidity:
        changes = await s.ctx.store.changes_since(info.id, args.qresync.modseq)
        for line in view.resync(changes, args.qresync.known_uids):
            s.raw(line)
    s.view = view
    s.state = State.SELECTED
    code = "READ-ONLY" if read_only else "READ-WRITE"
    s.tagged(cmd.tag, "OK", f"{cmd.name} completed", code)


async def create(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.3.4; missing parents are created (``a/b/c`` makes ``a`` and
    ``a/b``); USE sets a special-use attribute (RFC 6154 section 3)."""
    args = cmd.args
    if not isinstance(args, MailboxArgs):
        raise CommandFailed("BAD", "CREATE needs a mailbox name")
    name = names.from_wire(args.raw, utf8=s.utf8, allow_trailing_delimiter=True)
    if names.is_inbox(name):
        raise CommandFailed("NO", "INBOX always exists", "ALREADYEXISTS")
    uses = list(args.use)
    special: str | None = None
    if uses:
        wanted = {u.lower(): u for u in CREATABLE_USES}
        if len(uses) > 1 or uses[0].lower() not in wanted:
            # RFC 6154 section 3: an attribute we cannot set gets NO [USEATTR].
            raise CommandFailed("NO", "Unsupported special-use attribute", "USEATTR")
        special = wanted[uses[0].lower()]
    store, acct = s.ctx.store, account_id(s)
    if await store.get_mailbox(acct, name) is not None:
        raise CommandFailed("NO", "Mailbox already exists", "ALREADYEXISTS")
    try:
        await ensure_parents(s, name)
        created = await store.create_mailbox(
            acct, name, special, limit=s.settings.max_mailboxes_per_account
        )
    except LimitExceeded:
        raise too_many(s) from None
    # RFC 8474 section 4.1: CREATE reports the new mailbox's MAILBOXID.
    await s.finish(cmd, "CREATE completed", f"MAILBOXID ({objectid.mailbox_id(created)})")


async def delete(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.3.5. INBOX cannot be deleted; children survive their parent."""
    _args, name = mailbox_arg(s, cmd)
    if names.is_inbox(name):
        raise CommandFailed("NO", "INBOX cannot be deleted", "CANNOT")
    info = await existing(s, name)
    if s.view is not None and s.view.mailbox_id == info.id:
        s.close_mailbox()
        s.untagged("OK [CLOSED] The selected mailbox is being deleted")
    await s.ctx.store.delete_mailbox(account_id(s), info.name)
    await s.finish(cmd, "DELETE completed")


async def rename(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.3.6: children move along; renaming INBOX moves its messages into
    the new mailbox and leaves INBOX empty."""
    args = cmd.args
    if not isinstance(args, RenameArgs):
        raise CommandFailed("BAD", "RENAME needs two mailbox names")
    old = names.from_wire(args.old_raw, utf8=s.utf8)
    new = names.from_wire(args.new_raw, utf8=s.utf8)
    if names.is_inbox(new):
        raise CommandFailed("NO", "INBOX already exists", "ALREADYEXISTS")
    info = await existing(s, old)
    if new == info.name or new.startswith(info.name + names.DELIMITER):
        raise CommandFailed("NO", "Cannot rename a mailbox into itself", "CANNOT")
    store, acct = s.ctx.store, account_id(s)
    if await store.get_mailbox(acct, new) is not None:
        raise CommandFailed("NO", "Target mailbox already exists", "ALREADYEXISTS")
    try:
        await ensure_parents(s, new)
        await store.rename_mailbox(
            acct, info.name, new, limit=s.settings.max_mailboxes_per_account
        )
    except LimitExceeded:
        raise too_many(s) from None
    if s.view is not None and s.view.mailbox_id == info.id:
        s.view.name = new
    await s.finish(cmd, "RENAME completed")


async def subscribe(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 sections 6.3.7 and 6.3.8; a subscription may name a mailbox that does not
    exist (yet)."""
    _args, name = mailbox_arg(s, cmd)
    most = s.settings.max_mailboxes_per_account
    try:
        # Subscriptions need not name a mailbox, so they have the same bound of their own.
        await s.ctx.store.set_subscribed(
            account_id(s), name, cmd.name == "SUBSCRIBE", limit=most
        )
    except LimitExceeded:
        raise CommandFailed(
            "NO", f"Too many subscriptions: an account may have {most}", "LIMIT"
        ) from None
    await s.finish(cmd, f"{cmd.name} completed")


async def namespace(s: IMAPSession, cmd: Command) -> None:
    """RFC 2342 / RFC 9051 section 6.3.10: one personal namespace, no others."""
    s.untagged('NAMESPACE (("" "/")) NIL NIL')
    await s.finish(cmd, "NAMESPACE completed")
