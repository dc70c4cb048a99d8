"""FETCH, STORE, COPY, MOVE, EXPUNGE, UID EXPUNGE, CLOSE, UNSELECT, CHECK and NOOP.

Everything here works on UIDs from the session's ``SelectedView``; sequence numbers are
translated once, at the start of each command, and never reach the store.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from mailstead.core.errors import CorruptData, NotFound
from mailstead.imap import names
from mailstead.imap.base import CommandFailed
from mailstead.observability.log import log_event_at
from mailstead.proto.imap import fetch as render
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import (
    Command,
    CopyArgs,
    ExpungeArgs,
    FetchArgs,
    FetchAtt,
    SequenceSet,
    StoreArgs,
)
from mailstead.proto.imap.esearch import partial_slice
from mailstead.proto.imap.selected import SelectedView
from mailstead.storage.interfaces import FlagOp, MessageInfo, Store

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

log = logging.getLogger(__name__)

# RFC 9051 section 2.3.2: the system flags a client may set (\Recent may not be stored).
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen",
                                      "\\Draft")}


def view_of(s: IMAPSession) -> SelectedView:
    assert s.view is not None  # the dispatch table allows these commands only when selected
    return s.view


def target_uids(s: IMAPSession, seqset: SequenceSet, *, uid: bool) -> list[int]:
    """The UIDs a command's set names. ``$`` is the last saved search (RFC 5182 section 2);
    a message number outside 1..EXISTS is a client error (RFC 9051 section 9, BAD)."""
    view = view_of(s)
    if seqset.saved:
        return [u for u in s.saved_search if u in view.flags]
    if not uid and not view.valid_seqset(seqset):
        raise CommandFailed("BAD", "Invalid message sequence number", "CLIENTBUG")
    return view.resolve(seqset, uid=uid)


def check_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """System flags in their canonical case, keywords as given; anything else is BAD."""
    out: list[str] = []
    for flag in flags:
        if flag.startswith("\\"):
            canonical = SYSTEM_FLAGS.get(flag.lower())
            if canonical is None:
                # RFC 9051 section 2.3.2: \Recent and unknown system flags cannot be set.
                raise CommandFailed("BAD", f"Flag {flag[:30]} cannot be stored")
            flag = canonical
        elif not response.is_flag(flag):
            raise CommandFailed("BAD", "Invalid keyword")
        if flag not in out:
            out.append(flag)
    return tuple(out)


async def noop(s: IMAPSession, cmd: Command) -> None:
    """NOOP and CHECK: the points where all pending updates are sent (RFC 9051 6.1.2)."""
    await s.finish(cmd, f"{cmd.name} completed")


async def fetch(s: IMAPSession, cmd: Command) -> None:
    """FETCH and UID FETCH (RFC 9051 section 6.4.5), with CHANGEDSINCE and VANISHED
    (RFC 7162 sections 3.1.4 and 3.2.6)."""
    args = cmd.args
    if not isinstance(args, FetchArgs):
        raise CommandFailed("BAD", "FETCH needs a sequence set and items")
    view = view_of(s)
    if args.vanished and not (cmd.uid and s.qresync and args.changed_since is not None):
        # RFC 7162 section 3.2.6: VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC.
        raise CommandFailed("BAD", "VANISHED needs UID FETCH with CHANGEDSINCE after "
                            "ENABLE QRESYNC")
    atts = list(args.atts)
    if args.changed_since is not None or any(a.name == "MODSEQ" for a in atts):
        # RFC 7162 section 3.1: both are CONDSTORE-enabling.
        s.enable_condstore()
    if args.changed_since is not None and not any(a.name == "MODSEQ" for a in atts):
        atts.append(FetchAtt("MODSEQ"))  # RFC 7162 section 3.1.4.1
    uids = target_uids(s, args.seqset, uid=cmd.uid)
    if args.partial is not None:
        # RFC 9394 section 3.3: only the messages at these positions of what the set (and
        # CHANGEDSINCE) names, -1 being the last.
        if args.changed_since is not None:
            uids = [u for u in uids if view.modseqs.get(u, 0) > args.changed_since]
        uids = partial_slice(uids, *args.partial)
    if args.vanished and args.changed_since is not None:
        changes = await s.ctx.store.changes_since(view.mailbox_id, args.changed_since)
        largest = max(view.uidnext - 1, 1)
        gone = [u for u in changes.vanished if args.seqset.contains(u, largest)]
        if gone:
            s.untagged("VANISHED (EARLIER) " + response.sequence_set(gone))
    if uids:
        await _fetch_messages(s, cmd, atts, uids, args.changed_since)
    await s.finish(cmd, f"{'UID ' if cmd.uid else ''}FETCH completed")


async def fetch_unsolicited(s: IMAPSession, atts: list[FetchAtt], uids: list[int]) -> None:
    """The FETCH responses NOTIFY's MessageNew asks for (RFC 5465 section 5.1), with the UID
    as in every unsolicited FETCH here; a damaged message is left out (logged where found)."""
    with contextlib.suppress(CommandFailed):
        await _fetch_messages(s, Command("*", "FETCH", True), atts, uids, None)


# FETCH reads and renders this many messages at a time, then hands the output on
# (IMAPSession.flush_output): memory stays bounded whatever the set names.
FETCH_BATCH = 500
# Bodies are read this many at a time, up to about this many bytes (one read each: a round
# trip per body is what a networked store would cost otherwise).
BODY_READ_COUNT = 64
BODY_READ_BYTES = 4 << 20


async def _fetch_messages(
    s: IMAPSession, cmd: Command, atts: list[FetchAtt], uids: list[int], since: int | None
) -> None:
    """Renders the FETCH responses of ``uids``, reading only those messages, in batches."""
    unknown_cte = False
    damaged: list[int] = []
    s.progress.update(0, len(uids))
    for k in range(0, len(uids), FETCH_BATCH):
        if await _fetch_batch(s, cmd, atts, uids[k : k + FETCH_BATCH], since, damaged):
            unknown_cte = True
        s.progress.update(k + FETCH_BATCH, len(uids))
        await s.flush_output()
    if damaged:
        # RFC 5530 section 3: SERVERBUG, the server cannot proceed for a reason of its own.
        # The other messages were answered; the damaged ones were left out (never sent).
        numbers = damaged if cmd.uid else [n for n in map(view_of(s).seq_of, damaged) if n]
        # A short list in the text; beyond that a count (the tagged line stays short).
        listed = (response.sequence_set(sorted(numbers)) if 0 < len(numbers) <= 20
                  else f"{len(damaged)} messages")
        raise CommandFailed("NO", f"Stored data of message(s) {listed} is damaged; the "
                            "administrator has been told", "SERVERBUG")
    if unknown_cte:
        # RFC 3516 section 4.2: a BINARY fetch of an undecodable part.
        raise CommandFailed("NO", "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")


async def _fetch_batch(
    s: IMAPSession, cmd: Command, atts: list[FetchAtt], uids: list[int], since: int | None,
    damaged: list[int],
) -> bool:
    """One batch of ``_fetch_messages``; True when a BINARY item met an unknown encoding.
    Messages whose body is damaged or lost are skipped and their UIDs put in ``damaged``."""
    view = view_of(s)
    store = s.ctx.store
    found = await store.get_messages(
        view.mailbox_id, uids,
        envelope=render.needs_envelope(atts), bodystructure=render.needs_bodystructure(atts),
    )
    msgs = {m.uid: m for m in found}
    seen_now: set[int] = set()
    if not view.read_only and render.sets_seen(atts):
        # RFC 9051 section 6.4.5: BODY[...] without PEEK sets \Seen (never in EXAMINE).
        unseen = [u for u in uids if u in msgs and "\\Seen" not in msgs[u].flags]
        if unseen:
            stored = await store.store_flags(view.mailbox_id, unseen, FlagOp.ADD, ["\\Seen"])
            for change in stored.changed:
                view.set_flags(change.uid, change.flags, change.modseq)
                seen_now.add(change.uid)
    needs_body = render.needs_body(atts)
    bodies = None
    if needs_body:  # the messages the loop below renders, in its order
        bodies = _Bodies(store, [msgs[u] for u in uids if u in msgs and view.seq_of(u) is not None
                                 and (since is None or msgs[u].modseq > since)])
    with_flags = [*atts, FetchAtt("FLAGS")]
    if s.condstore:
        with_flags.append(FetchAtt("MODSEQ"))
    unknown_cte = False
    for uid in uids:
        msg = msgs.get(uid)
        seq = view.seq_of(uid)
        if msg is None or seq is None:
            continue  # expunged by another session; its number stays until reported
        if since is not None and msg.modseq <= since:
            continue
        # Flags changed since this session last heard (by \Seen just now or by another
        # session) ride along in this FETCH (RFC 9051 section 7.5.2: unsolicited items).
        report = uid in seen_now or set(msg.flags) != set(view.flags.get(uid, ()))
        flags = view.flags[uid] if uid in seen_now else msg.flags
        if uid not in seen_now:
            view.set_flags(uid, msg.flags, msg.modseq)
        msg = _with(msg, flags, view.modseqs.get(uid, msg.modseq))
        try:
            body = await bodies.read(msg.blob) if bodies is not None else None
        except CorruptData:  # counted and logged by the store
            damaged.append(uid)
            continue
        except NotFound:  # a row whose body file is gone: the same damage
            log_event_at(log, logging.ERROR, "imap.body_missing", blob=msg.blob, uid=uid,
                         mailbox=view.mailbox_id)
            damaged.append(uid)
            continue
        if report or any(a.name == "FLAGS" for a in atts):
            # A keyword another session set and this one was not told of yet is announced
            # before it is shown (RFC 3501 section 7.2.6).
            for line in view.announce(flags):
                s.raw(line)
        result = render.render_fetch(
            msg, seq, with_flags if report else atts,
            body=body, utf8=s.utf8, uid=cmd.uid,
            recent=view.show_recent and uid in view.recent, flags=flags,
            uidfetch=s.uidonly,
        )
        if result.unknown_cte:
            unknown_cte = True
            continue
        s.raw(result.data)
    return unknown_cte


class _Bodies:
    """The bodies of ``msgs``, asked for in their order: read a group at a time
    (``BODY_READ_COUNT`` bodies, ``BODY_READ_BYTES``), one group held at once."""

    def __init__(self, store: Store, msgs: list[MessageInfo]) -> None:
        self._store = store
        self._msgs = msgs
        self._next = 0  # the first message of the next group
        self._group: dict[str, bytes] = {}

    async def read(self, blob: str) -> bytes:
        found = self._group.get(blob)
        if found is None:
            names: list[str] = []
            size = 0
            while (self._next < len(self._msgs) and len(names) < BODY_READ_COUNT
                   and (not names or size + self._msgs[self._next].size <= BODY_READ_BYTES)):
                names.append(self._msgs[self._next].blob)
                size += self._msgs[self._next].size
                self._next += 1
            if blob in names:
                self._group = await self._store.read_blobs(names)
                found = self._group.get(blob)
        # Asked out of order, or gone meanwhile: alone, with read_blob's errors.
        return found if found is not None else await self._store.read_blob(blob)


def _with(msg: MessageInfo, flags: tuple[str, ...], modseq: int) -> MessageInfo:
    return replace(msg, flags=flags, modseq=modseq)


async def store(s: IMAPSession, cmd: Command) -> None:
    """STORE and UID STORE (RFC 9051 section 6.4.6), UNCHANGEDSINCE (RFC 7162 3.1.3)."""
    args = cmd.args
    if not isinstance(args, StoreArgs):
        raise CommandFailed("BAD", "STORE needs a sequence set, an operation and flags")
    view = view_of(s)
    if view.read_only:
        raise CommandFailed("NO", "The mailbox is read-only (EXAMINE)", "CANNOT")
    flags = check_flags(args.flags)
    if args.unchanged_since is not None:
        s.enable_condstore()
    uids = target_uids(s, args.seqset, uid=cmd.uid)
    op = {"+": FlagOp.ADD, "-": FlagOp.REMOVE}.get(args.op, FlagOp.REPLACE)
    result = await s.ctx.store.store_flags(
        view.mailbox_id, uids, op, list(flags), args.unchanged_since
    )
    changed = {c.uid for c in result.changed}
    for change in result.changed:
        view.set_flags(change.uid, change.flags, change.modseq)
    # RFC 3501 section 7.2.6: a keyword this STORE created is announced in FLAGS before the
    # FETCH responses show it (even with .SILENT: a later FETCH FLAGS would show it).
    for line in view.announce(f for c in result.changed for f in c.flags):
        s.raw(line)
    modified = set(result.modified)
    for uid in uids:
        seq = view.seq_of(uid)
        if seq is None or uid in modified or uid in view.pending:
            continue
        if args.silent and not (s.condstore and uid in changed):
            continue
        parts: list[bytes] = [b"UID %d" % uid] if cmd.uid and not s.uidonly else []
        if not args.silent:
            parts.append(b"FLAGS " + response.flags(view.flags_of(uid)))
        if s.condstore:
            # RFC 7162 section 3.1.3: MODSEQ in the FETCH of every STORE, and even with
            # .SILENT for the messages it changed.
            parts.append(b"MODSEQ (%d)" % view.modseqs.get(uid, 0))
        # RFC 9586 section 3.3: a UIDONLY session gets UIDFETCH, named by UID.
        head = b"%d UIDFETCH (" % uid if s.uidonly else b"%d FETCH (" % seq
        s.untagged(head + b" ".join(parts) + b")")
    code = None
    if modified:
        numbers = sorted(modified) if cmd.uid else sorted(
            n for n in (view.seq_of(u) for u in modified) if n is not None
        )
        code = "MODIFIED " + response.sequence_set(numbers)
    await s.updates(cmd)
    s.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}STORE completed", code)


async def copy(s: IMAPSession, cmd: Command) -> None:
    """COPY (RFC 9051 section 6.4.7) and MOVE (RFC 6851), with COPYUID (RFC 4315 3)."""
    args = cmd.args
    if not isinstance(args, CopyArgs):
        raise CommandFailed("BAD", f"{cmd.name} needs a sequence set and a mailbox")
    view = view_of(s)
    move = cmd.name == "MOVE"
    if move and view.read_only:
        raise CommandFailed("NO", "The mailbox is read-only (EXAMINE)", "CANNOT")
    name = names.from_wire(args.raw, utf8=s.utf8)
    uids = target_uids(s, args.seqset, uid=cmd.uid)
    assert s.account is not None
    dest = await s.ctx.store.get_mailbox(s.account.id, name)
    if dest is None:
        # RFC 9051 section 6.4.7: TRYCREATE tells the client to CREATE and retry.
        raise CommandFailed("NO", "No such mailbox", "TRYCREATE")
    uids = [u for u in uids if u not in view.pending]
    if not uids:
        await s.finish(cmd, f"{cmd.name} completed, nothing to do")
        return
    if not move or dest.id == view.mailbox_id:
        quota = await s.ctx.store.get_quota(s.account.id)
        added = sum(view.sizes.get(u, 0) for u in uids)
        if quota.limit is not None and quota.used + added > quota.limit:
            # RFC 9208 section 4.3: over the account's storage quota.
            raise CommandFailed("NO", "Over quota", "OVERQUOTA")
    s.progress.update(0, len(uids))  # one transaction: nothing is done until all is
    pairs = await s.ctx.store.copy_messages(view.mailbox_id, uids, dest.id, move=move)
    if pairs and s.ctx.copy_hook is not None:  # returns at once, never raises
        await s.ctx.copy_hook(s.account.id, view.mailbox_id, dest.id, [p[1] for p in pairs])
    code = None
    if pairs:
        src = response.sequence_set([p[0] for p in pairs], sort=False)
        dst = response.sequence_set([p[1] for p in pairs], sort=False)
        code = f"COPYUID {dest.uidvalidity} {src} {dst}"
    if move:
        # RFC 6851 section 4.3: COPYUID goes in an untagged OK before the expunges.
        if code:
            s.untagged(f"OK [{code}] Moved")
        for line in view.expunge_now([p[0] for p in pairs]):
            s.raw(line)
        await s.finish(cmd, "MOVE completed")
        return
    await s.updates(cmd)
    s.tagged(cmd.tag, "OK", "COPY completed", code)


async def expunge(s: IMAPSession, cmd: Command) -> None:
    """EXPUNGE (RFC 9051 section 6.4.3) and UID EXPUNGE (RFC 4315 section 2.1)."""
    view = view_of(s)
    if view.read_only:
        raise CommandFailed("NO", "The mailbox is read-only (EXAMINE)", "CANNOT")
    uids: list[int] | None = None
    if cmd.uid:
        if not isinstance(cmd.args, ExpungeArgs):
            raise CommandFailed("BAD", "UID EXPUNGE needs a UID set")
        uids = target_uids(s, cmd.args.seqset, uid=True)
        if not uids:
            await s.finish(cmd, "UID EXPUNGE completed, nothing to do")
            return
    gone = await s.ctx.store.expunge(view.mailbox_id, uids)
    for line in view.expunge_now(gone):
        s.raw(line)
    await s.updates(cmd)
    code = None
    if s.condstore:
        info = await s.ctx.store.mailbox_by_id(view.mailbox_id)
        if info is not None:
            # RFC 7162 section 3.2.10 (and 3.1.2.1): the MODSEQ after the expunge.
            code = f"HIGHESTMODSEQ {max(info.highestmodseq, view.highestmodseq)}"
    s.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}EXPUNGE completed", code)


async def close(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.4.1: expunge silently (not in EXAMINE), then unselect."""
    view = view_of(s)
    if not view.read_only:
        await s.ctx.store.expunge(view.mailbox_id, None)
    s.close_mailbox()
    s.tagged(cmd.tag, "OK", "CLOSE completed")


async def unselect(s: IMAPSession, cmd: Command) -> None:
    """RFC 3691 / RFC 9051 section 6.4.2: unselect without expunging."""
    s.close_mailbox()
    s.tagged(cmd.tag, "OK", "UNSELECT completed")
