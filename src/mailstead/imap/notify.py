"""NOTIFY (RFC 5465): the session says which mailboxes and events it wants pushed.

The server runs ``wakeup`` whenever the account's change watch fires while the session
waits for its next command (and in IDLE): the store is the truth, so each wake compares
the account's mailboxes, their counts and the subscriptions with what this session last
saw, and sends what the filters ask for: ``* STATUS`` for other mailboxes (MessageNew,
MessageExpunge, FlagChange), ``* LIST`` for MailboxName and SubscriptionChange, and for the
selected mailbox the usual EXISTS/EXPUNGE/FETCH at once (SELECTED) or with expunges held
back to the next command that may carry them (SELECTED-DELAYED). The watch works across
processes and nodes (storage/watch.py, PostgreSQL LISTEN/NOTIFY), so NOTIFY does too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailstead.imap import messages, names
from mailstead.imap.base import CommandFailed
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import Command, NotifyArgs, NotifyGroup
from mailstead.storage.interfaces import MailboxInfo

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

# What we can report (RFC 5465 section 5); METADATA (RFC 5464) and ANNOTATE are not offered,
# so their events are refused with NO [BADEVENT ...] (section 3.1).
SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
_MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})


@dataclass(frozen=True, slots=True)
class _Seen:
    """One mailbox as this session last reported it."""

    name: str
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int
    unseen: int


@dataclass(slots=True)
class NotifyState:
    """An active NOTIFY SET: its groups and what was last seen of the account."""

    groups: tuple[NotifyGroup, ...]
    boxes: dict[int, _Seen] = field(default_factory=dict)
    subscribed: set[str] = field(default_factory=set)

    @property
    def selected(self) -> NotifyGroup | None:
        return next((g for g in self.groups if g.filter.startswith("SELECTED")), None)

    def wants(self, event: str) -> bool:
        return any(event in g.events for g in self.groups)


def _check(groups: tuple[NotifyGroup, ...]) -> None:
    """RFC 5465 sections 3.1 and 5: unsupported events are NO [BADEVENT]; MessageNew and
    MessageExpunge come together, FlagChange needs them, and only a SELECTED filter may
    carry fetch attributes: otherwise BAD."""
    unknown = [e for g in groups for e in g.events if e not in SUPPORTED]
    if unknown:
        raise CommandFailed("NO", f"Event {unknown[0][:40]} is not supported",
                            "BADEVENT (" + " ".join(SUPPORTED) + ")")
    if sum(1 for g in groups if g.filter.startswith("SELECTED")) > 1:
        raise CommandFailed("BAD", "SELECTED and SELECTED-DELAYED may be given once")
    for g in groups:
        events = set(g.events)
        if ("MessageNew" in events) != ("MessageExpunge" in events):
            raise CommandFailed("BAD", "MessageNew and MessageExpunge go together")
        if "FlagChange" in events and "MessageNew" not in events:
            raise CommandFailed("BAD", "FlagChange needs MessageNew and MessageExpunge")
        if g.fetch is not None and not g.filter.startswith("SELECTED"):
            raise CommandFailed("BAD", "MessageNew fetch attributes are for SELECTED only")


async def notify(s: IMAPSession, cmd: Command) -> None:
    """NOTIFY SET [STATUS] ... / NOTIFY NONE (RFC 5465 section 3)."""
    args = cmd.args
    if not isinstance(args, NotifyArgs):
        raise CommandFailed("BAD", "NOTIFY needs SET or NONE")
    if args.groups is None:
        s.notify = None
        await s.finish(cmd, "NOTIFY completed, no more events")
        return
    _check(args.groups)
    groups = tuple(
        NotifyGroup(g.filter, tuple((names.from_wire(raw, utf8=s.utf8), raw)
                                    for _, raw in g.mailboxes), g.events, g.fetch)
        for g in args.groups
    )
    state = NotifyState(groups)
    boxes = await _scan(s, state)
    if args.status:
        # RFC 5465 section 3.1: STATUS now for every mailbox with message events.
        for info in boxes.values():
            group = _group_of(s, state, info.name)
            if group is not None and _MESSAGE_EVENTS & set(group.events) \
                    and not _is_selected(s, info):
                s.raw(_status_line(s, info, state.boxes[info.id], group))
    s.notify = state
    await s.finish(cmd, "NOTIFY completed")


def _is_selected(s: IMAPSession, info: MailboxInfo) -> bool:
    return s.view is not None and s.view.mailbox_id == info.id


def _group_of(s: IMAPSession, state: NotifyState, name: str) -> NotifyGroup | None:
    """The first group whose filter takes mailbox ``name`` (RFC 5465 section 6); the
    selected mailbox belongs to a SELECTED filter when there is one."""
    for g in state.groups:
        if g.filter.startswith("SELECTED"):
            if s.view is not None and s.view.name == name:
                return g
            continue
        if g.filter == "PERSONAL":
            return g
        if g.filter == "INBOXES" and names.is_inbox(name):
            return g
        if g.filter == "SUBSCRIBED" and name in state.subscribed:
            return g
        for wanted, _raw in g.mailboxes:
            if name == wanted or (g.filter == "SUBTREE"
                                  and name.startswith(wanted + names.DELIMITER)):
                return g
    return None


async def _scan(s: IMAPSession, state: NotifyState) -> dict[int, MailboxInfo]:
    """Read the account now and make it what ``state`` has seen; returns the mailboxes."""
    assert s.account is not None
    store = s.ctx.store
    infos = {b.id: b for b in await store.list_mailboxes(s.account.id)}
    counts = await store.mailbox_counts(s.account.id) if state.wants("FlagChange") else {}
    state.subscribed = set(await store.list_subscriptions(s.account.id))
    state.boxes = {
        i: _Seen(b.name, b.uidvalidity, b.uidnext, b.messages, b.highestmodseq,
                 counts[i].unseen if i in counts else 0)
        for i, b in infos.items()
    }
    return infos


def _status_line(s: IMAPSession, info: MailboxInfo, now: _Seen, group: NotifyGroup) -> bytes:
    """``* STATUS name (MESSAGES n UIDNEXT n UIDVALIDITY n [UNSEEN n] [HIGHESTMODSEQ n])``:
    what RFC 5465 sections 5.2-5.4 name for new, expunged and re-flagged messages."""
    items = [f"MESSAGES {now.messages}", f"UIDNEXT {now.uidnext}",
             f"UIDVALIDITY {now.uidvalidity}"]
    if "FlagChange" in group.events:
        items.append(f"UNSEEN {now.unseen}")
    if s.condstore:  # RFC 7162 section 3.1.6 / RFC 5465 section 5.4
        items.append(f"HIGHESTMODSEQ {now.highestmodseq}")
    return (b"* STATUS " + response.mailbox(info.name, utf8=s.utf8)
            + b" (" + " ".join(items).encode() + b")\r\n")


def _list_line(s: IMAPSession, name: str, attrs: str, extra: bytes = b"") -> bytes:
    return (f"* LIST ({attrs}) \"/\" ".encode() + response.mailbox(name, utf8=s.utf8)
            + extra + b"\r\n")


async def wakeup(s: IMAPSession, *, in_idle: bool = False) -> None:
    """The account changed: send what the NOTIFY filters ask for (``in_idle``: the session
    is in IDLE, where the selected mailbox's updates go out in any case)."""
    state = s.notify
    if state is None or s.account is None:
        return
    before_boxes, before_subs = state.boxes, state.subscribed
    infos = await _scan(s, state)
    # MailboxName (RFC 5465 section 5.4): created, deleted and renamed mailboxes.
    for box_id, old in before_boxes.items():
        info = infos.get(box_id)
        group = _group_of(s, state, old.name)
        if group is None or "MailboxName" not in group.events:
            continue
        if info is None:
            s.raw(_list_line(s, old.name, "\\NonExistent"))
        elif info.name != old.name:
            # RFC 5465 section 5.4 and RFC 5258 section 3.3: the new name with OLDNAME.
            s.raw(_list_line(s, info.name, "", b' ("OLDNAME" ('
                             + response.mailbox(old.name, utf8=s.utf8) + b"))"))
    for box_id, info in infos.items():
        group = _group_of(s, state, info.name)
        if box_id not in before_boxes and group is not None and "MailboxName" in group.events:
            s.raw(_list_line(s, info.name, ""))
    # SubscriptionChange (RFC 5465 section 5.5).
    if state.wants("SubscriptionChange"):
        for name in sorted(state.subscribed ^ before_subs):
            group = _group_of(s, state, name)
            if group is not None and "SubscriptionChange" in group.events:
                s.raw(_list_line(s, name, "\\Subscribed" if name in state.subscribed else ""))
    # Message events of the other mailboxes, as STATUS (RFC 5465 section 5.2-5.4).
    for box_id, info in infos.items():
        prev = before_boxes.get(box_id)
        now = state.boxes[box_id]
        group = _group_of(s, state, info.name)
        if prev is None or group is None or _is_selected(s, info):
            continue
        events = set(group.events)
        moved = (prev.uidnext, prev.messages, prev.uidvalidity) != (
            now.uidnext, now.messages, now.uidvalidity)
        flagged = "FlagChange" in events and (prev.unseen != now.unseen
                                              or prev.highestmodseq != now.highestmodseq)
        if ("MessageNew" in events and moved) or flagged:
            s.raw(_status_line(s, info, now, group))
    await _selected(s, state, in_idle=in_idle)


async def _selected(s: IMAPSession, state: NotifyState, *, in_idle: bool) -> None:
    """The selected mailbox under a SELECTED filter: updates now, and the MessageNew
    fetch attributes for the new messages (RFC 5465 section 5.1)."""
    group = state.selected
    if group is None or not set(group.events) & _MESSAGE_EVENTS:
        if in_idle:
            await s.updates(None)  # IDLE as RFC 2177 has it
        return
    before = set(s.view.uids) if s.view is not None else set()
    # SELECTED-DELAYED: expunges wait for a command that may carry them (RFC 5465 section
    # 6); IDLE is one.
    await s.updates(None, expunge=in_idle or group.filter == "SELECTED")
    if s.view is None or group.fetch is None:
        return
    new = [u for u in s.view.uids if u not in before]
    if new:
        await messages.fetch_unsolicited(s, list(group.fetch), new)
