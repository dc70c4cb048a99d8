"""LIST (with LIST-EXTENDED, LIST-STATUS, SPECIAL-USE and CHILDREN), LSUB and STATUS.

RFC 9051 sections 6.3.9-6.3.11, RFC 5258 (selection and return options), RFC 5819 (STATUS
in LIST), RFC 6154 (special-use attributes), RFC 3348 (child attributes).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mailstead.imap import names, objectid
from mailstead.imap.base import CommandFailed
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import Command, ListArgs, StatusArgs
from mailstead.storage.interfaces import MailboxCounts, MailboxInfo

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

STATUS_ITEMS = (
    "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
    "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID",
)
_NEEDS_MESSAGES = frozenset({"UNSEEN", "DELETED", "SIZE", "RECENT"})
# LIST looks at this many names between two turns of the other sessions.
LIST_BATCH = 500


def _account(s: IMAPSession) -> int:
    assert s.account is not None
    return s.account.id


async def status_values(
    s: IMAPSession,
    info: MailboxInfo,
    items: tuple[str, ...],
    counts: dict[int, MailboxCounts] | None = None,
) -> bytes:
    """``(MESSAGES 3 UNSEEN 1 ...)`` in the order asked (RFC 9051 section 7.3.2).
    ``counts``: the account's ``mailbox_counts``, read once for a LIST RETURN (STATUS)."""
    wanted = [i.upper() for i in items]
    needed = {i for i in wanted if i in _NEEDS_MESSAGES}
    # RFC 3501 section 6.3.10: the messages with \Recent, which STATUS does not take.
    fresh = (
        (await s.ctx.store.recent_info(info.id)).messages
        if info.messages and "RECENT" in needed else 0
    )
    if info.messages and needed - {"RECENT"} and counts is None:
        counts = await s.ctx.store.mailbox_counts(info.account_id, info.id)
    tally = (counts or {}).get(info.id, MailboxCounts(0, 0, 0))
    out: list[str] = []
    seen: set[str] = set()
    for item in wanted:
        if item in seen:
            continue
        seen.add(item)
        if item == "MESSAGES":
            value = info.messages
        elif item == "UIDNEXT":
            value = info.uidnext
        elif item == "UIDVALIDITY":
            value = info.uidvalidity
        elif item == "UNSEEN":
            value = tally.unseen
        elif item == "DELETED":  # RFC 9051 section 6.3.11
            value = tally.deleted
        elif item == "SIZE":  # RFC 8438 STATUS=SIZE
            value = tally.size
        elif item == "RECENT":
            value = fresh
        elif item == "HIGHESTMODSEQ":  # RFC 7162 section 3.1.6
            value = info.highestmodseq
        elif item == "APPENDLIMIT":  # RFC 7889 section 4
            value = s.settings.max_message_size
        elif item == "MAILBOXID":  # RFC 8474 section 4.3
            out.append(f"MAILBOXID ({objectid.mailbox_id(info)})")
            continue
        else:
            raise CommandFailed("BAD", f"Unknown STATUS item {item[:30]}")
        out.append(f"{item} {value}")
    return ("(" + " ".join(out) + ")").encode("ascii")


async def status(s: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    if not isinstance(args, StatusArgs) or not args.items:
        raise CommandFailed("BAD", "STATUS needs a mailbox and a list of items")
    name = names.from_wire(args.raw, utf8=s.utf8)
    info = await s.ctx.store.get_mailbox(_account(s), name)
    if info is None:
        raise CommandFailed("NO", "No such mailbox", "NONEXISTENT")
    if any(item.upper() == "HIGHESTMODSEQ" for item in args.items):
        s.enable_condstore()  # RFC 7162 section 3.1: a CONDSTORE-enabling command
    values = await status_values(s, info, args.items)
    s.untagged(b"STATUS " + response.mailbox(info.name, utf8=s.utf8) + b" " + values)
    await s.finish(cmd, "STATUS completed")


def _inbox_case(name: str) -> str:
    first, sep, rest = name.partition(names.DELIMITER)
    return names.INBOX + sep + rest if names.is_inbox(first) else name


async def list_command(s: IMAPSession, cmd: Command) -> None:
    """LIST and LSUB. Every listed mailbox gets \\HasChildren or \\HasNoChildren (RFC 3348;
    RFC 5258 section 4 allows it without RETURN (CHILDREN)) and its special-use attribute
    (RFC 6154 section 2 allows it without RETURN (SPECIAL-USE))."""
    args = cmd.args
    if not isinstance(args, ListArgs):
        raise CommandFailed("BAD", f"{cmd.name} needs a reference and a pattern")
    # RFC 9051 section 6.3.9: wildcards stay, and a pattern that does not decode is
    # matched as it is rather than refused.
    reference = names.decode_pattern(args.reference, utf8=s.utf8)
    patterns = [names.decode_pattern(p, utf8=s.utf8) for p in args.patterns]
    selection = {o.upper() for o in args.selection}
    returns = {o.upper() for o in args.returns}
    if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
        # RFC 5258 section 3: RECURSIVEMATCH alone is an error.
        raise CommandFailed("BAD", "RECURSIVEMATCH needs another selection option")
    if not args.lsub and patterns == [""] and not selection:
        # RFC 9051 section 6.3.9: an empty pattern asks for the delimiter and root.
        s.untagged(b'LIST (\\Noselect) "/" ""')
        await s.finish(cmd, "LIST completed")
        return
    acct = _account(s)
    boxes = {b.name: b for b in await s.ctx.store.list_mailboxes(acct)}
    want_subs = args.lsub or "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
    subs = (
        {_inbox_case(n) for n in await s.ctx.store.list_subscriptions(acct)}
        if want_subs else set()
    )
    everything, with_children = names.hierarchy(boxes)
    regexes = [names.compile_pattern(reference, p) for p in patterns if p or reference]
    # One aggregate read for every STATUS of a LIST RETURN (STATUS ...) (RFC 5819).
    counts = (
        await s.ctx.store.mailbox_counts(acct)
        if {i.upper() for i in args.status} & (_NEEDS_MESSAGES - {"RECENT"}) else None
    )
    if args.lsub:
        _lsub(s, regexes, subs, boxes)
        await s.finish(cmd, "LSUB completed")
        return
    # The selection criteria (RFC 5258 section 3.1, RFC 6154 section 3); REMOTE selects
    # nothing here, there are no remote mailboxes.
    criteria = tuple(o for o in ("SUBSCRIBED", "SPECIAL-USE") if o in selection)
    matched: dict[str, bool] = {}

    def matches(name: str) -> bool:
        if name not in matched:
            matched[name] = any(rx.fullmatch(name) for rx in regexes)
        return matched[name]

    if criteria:
        pool = subs if "SUBSCRIBED" in criteria else everything
        selected = {n for n in pool if _meets(n, criteria, subs, boxes)}
    else:
        selected = everything
    parents: set[str] = set()
    if "RECURSIVEMATCH" in selection and criteria:
        # RFC 5258 sections 3 and 3.5: a name that matches the pattern but not the criteria
        # is still listed, with CHILDINFO, when a descendant meets the criteria but matches
        # no pattern (so is not listed itself); a descendant listed anyway needs no hint.
        for name in selected:
            if not matches(name):
                parents.update(names.parent_names(name))
    childinfo = (
        b' ("CHILDINFO" (' + b" ".join(b'"%s"' % c.encode() for c in criteria) + b"))"
    )
    for n, name in enumerate(sorted(selected | parents, key=names.sort_key), 1):
        if n % LIST_BATCH == 0:
            # Thousands of names: the output so far streams out, and other sessions get
            # their turn on the event loop between the batches.
            await s.flush_output()
            await asyncio.sleep(0)
        if not matches(name):
            continue
        info = boxes.get(name)
        attrs = _attributes(name, info, everything, with_children, name in subs,
                            show_subscribed=want_subs)
        line = (
            b"LIST (" + " ".join(attrs).encode() + b') "/" '
            + response.mailbox(name, utf8=s.utf8)
        )
        if name in parents:
            line += childinfo
        s.untagged(line)
        if args.status and info is not None:
            # RFC 5819 section 2: STATUS right after the LIST of a selectable mailbox.
            values = await status_values(s, info, args.status, counts)
            s.untagged(b"STATUS " + response.mailbox(name, utf8=s.utf8) + b" " + values)
    await s.finish(cmd, "LIST completed")


def _meets(
    name: str, criteria: tuple[str, ...], subs: set[str], boxes: dict[str, MailboxInfo]
) -> bool:
    """Whether ``name`` satisfies every selection option in ``criteria``."""
    if "SUBSCRIBED" in criteria and name not in subs:
        return False
    info = boxes.get(name)
    return "SPECIAL-USE" not in criteria or (info is not None and bool(info.special_use))


def _attributes(
    name: str,
    info: MailboxInfo | None,
    everything: set[str],
    with_children: set[str],
    subscribed: bool,
    *,
    show_subscribed: bool,
) -> list[str]:
    attrs: list[str] = []
    if info is None:
        # RFC 5258 section 3: \NonExistent implies \Noselect; an implied parent of an
        # existing mailbox is \Noselect with children (RFC 9051 section 7.3.1).
        attrs.append("\\NonExistent" if name not in everything else "\\Noselect")
    if name in everything:
        attrs.append("\\HasChildren" if name in with_children else "\\HasNoChildren")
    if show_subscribed and subscribed:
        attrs.append("\\Subscribed")
    if info is not None and info.special_use:
        attrs.append(info.special_use)
    return attrs


def _lsub(
    s: IMAPSession,
    regexes: list[names.Pattern],
    subs: set[str],
    boxes: dict[str, MailboxInfo],
) -> None:
    """RFC 3501 section 6.3.9: subscribed names; a parent matched only through ``%`` is
    listed \\Noselect."""
    shown: dict[str, bool] = {}
    for sub in subs:
        if any(rx.fullmatch(sub) for rx in regexes):
            shown[sub] = sub in boxes
        for parent in names.parent_names(sub):
            if parent not in subs and any(rx.fullmatch(parent) for rx in regexes):
                shown.setdefault(parent, False)
    for name in sorted(shown, key=names.sort_key):
        attrs = b"()" if shown[name] else b"(\\Noselect)"
        s.untagged(b"LSUB " + attrs + b' "/" ' + response.mailbox(name, utf8=s.utf8))
