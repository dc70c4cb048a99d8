"""NOTIFY arguments (RFC 5465 section 8):

    notify          = "NOTIFY" SP (notify-set / notify-none)
    notify-set      = "SET" [status-indicator] SP event-groups
    status-indicator = SP "STATUS"
    event-groups    = event-group *(SP event-group)
    event-group     = "(" filter-mailboxes SP events ")"
    filter-mailboxes = "SELECTED" / "SELECTED-DELAYED" / "INBOXES" / "PERSONAL" /
                      "SUBSCRIBED" / ("SUBTREE" SP one-or-more-mailbox) /
                      ("MAILBOXES" SP one-or-more-mailbox)
    events          = ("(" event *(SP event) ")") / "NONE"
    event           = message-event / mailbox-event / user-event / event-ext
    message-event   = ("MessageNew" [SP "(" fetch-att *(SP fetch-att) ")"]) /
                      "MessageExpunge" / "FlagChange" / "AnnotationChange"

Which events the server supports is the command's business (NO [BADEVENT]); the parser
keeps every event name it reads, in the canonical spelling when it knows it.
"""

from __future__ import annotations

from mailstead.proto.imap.ast import FetchAtt, NotifyArgs, NotifyGroup
from mailstead.proto.imap.parser_fetch import fetch_att
from mailstead.proto.imap.parser_lex import Reader

FILTERS = frozenset({"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED",
                     "SUBTREE", "MAILBOXES"})
KNOWN_EVENTS = {
    e.upper(): e for e in (
        "MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
        "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange",
    )
}
# A hostile client must not make the server hold unbounded filters.
MAX_GROUPS = 64
MAX_MAILBOXES = 1000
MAX_FETCH_ATTS = 64


def _mailboxes(r: Reader) -> tuple[tuple[str, bytes], ...]:
    """one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"."""
    if not r.take(b"("):
        return (r.mailbox(),)
    out = [r.mailbox()]
    while not r.take(b")"):
        r.sp()
        out.append(r.mailbox())
        if len(out) > MAX_MAILBOXES:
            raise r.error(f"more than {MAX_MAILBOXES} mailboxes in one NOTIFY filter")
    return tuple(out)


def _fetch_atts(r: Reader) -> tuple[FetchAtt, ...]:
    r.expect(b"(")
    atts = [fetch_att(r)]
    while not r.take(b")"):
        r.sp()
        atts.append(fetch_att(r))
        if len(atts) > MAX_FETCH_ATTS:
            raise r.error("too many fetch attributes for MessageNew")
    return tuple(atts)


def _group(r: Reader) -> NotifyGroup:
    r.expect(b"(")
    name = r.keyword()
    if name not in FILTERS:
        raise r.error(f"unknown NOTIFY filter {name[:40]}")
    mailboxes: tuple[tuple[str, bytes], ...] = ()
    if name in ("SUBTREE", "MAILBOXES"):
        r.sp()
        mailboxes = _mailboxes(r)
    r.sp()
    events: list[str] = []
    fetch: tuple[FetchAtt, ...] | None = None
    if r.take(b"("):
        while True:
            word = r.keyword()
            event = KNOWN_EVENTS.get(word, word)
            if event == "MessageNew" and r.line[r.pos : r.pos + 2] == b" (":
                r.sp()
                fetch = _fetch_atts(r)
            events.append(event)
            if r.take(b")"):
                break
            r.sp()
    elif r.keyword() != "NONE":
        raise r.error("expected a list of events or NONE")
    r.expect(b")")
    return NotifyGroup(name, mailboxes, tuple(dict.fromkeys(events)), fetch)


def notify_args(r: Reader) -> NotifyArgs:
    """NOTIFY NONE, or NOTIFY SET [STATUS] with its event groups."""
    r.sp()
    verb = r.keyword()
    if verb == "NONE":
        return NotifyArgs(None)
    if verb != "SET":
        raise r.error("expected NOTIFY SET or NOTIFY NONE")
    r.sp()
    status = False
    if r.word() is not None:
        if r.keyword() != "STATUS":
            raise r.error("expected STATUS or an event group")
        status = True
        r.sp()
    groups = [_group(r)]
    while r.maybe_sp():
        groups.append(_group(r))
        if len(groups) > MAX_GROUPS:
            raise r.error(f"more than {MAX_GROUPS} NOTIFY event groups")
    return NotifyArgs(tuple(groups), status)
