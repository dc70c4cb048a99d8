"""The IMAP command parser: a ``CommandFrame`` in, an ``ast.Command`` out (sans-I/O).

Covers the command grammar of RFC 9051 section 9 and RFC 3501 section 9 with the extensions
we advertise. Anything malformed raises ``ParseError`` and nothing else, so the session can
always answer BAD and carry on. FETCH and SEARCH/SORT/THREAD arguments live in their own
modules; the terminals in ``parser_lex``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mailstead.proto.imap.ast import (
    AppendArgs,
    AppendMessage,
    AuthenticateArgs,
    CancelUpdateArgs,
    CatenatePart,
    Command,
    CommandArgs,
    CompressArgs,
    CopyArgs,
    EnableArgs,
    ExpungeArgs,
    IdArgs,
    ListArgs,
    LoginArgs,
    MailboxArgs,
    QresyncParams,
    QuotaArgs,
    RenameArgs,
    ReplaceArgs,
    SequenceSet,
    StatusArgs,
    StoreArgs,
)
from mailstead.proto.imap.framing import CommandFrame
from mailstead.proto.imap.parser_fetch import fetch_args
from mailstead.proto.imap.parser_lex import MAX_NUMBER64, ParseError, Reader
from mailstead.proto.imap.parser_notify import notify_args
from mailstead.proto.imap.parser_search import search_args, sort_args, thread_args

__all__ = ["ParseError", "parse_command"]

# RFC 9051 section 9: tag = 1*<any ASTRING-CHAR except "+">.
_TAG = re.compile(rb"[\x21\x23-\x24\x26-\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")
# RFC 9051 section 9: base64 = *(4base64-char) [base64-terminal]; initial-resp adds "=".
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_STATUS_ITEMS = frozenset({
    "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
    "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID",  # MAILBOXID: RFC 8474 section 4.3
})
# RFC 5258 section 3 selection options, SPECIAL-USE from RFC 6154 section 3.
_LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
# RFC 6154 section 2: use-attr, in canonical capitalisation.
_USE_ATTRS = {
    a.upper(): a
    for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
# RFC 2971 section 3.3: at most 30 pairs, fields up to 30 octets, values up to 1024.
_ID_MAX_PAIRS, _ID_MAX_FIELD, _ID_MAX_VALUE = 30, 30, 1024
_UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT",
                           "THREAD", "REPLACE"})
_NO_ARGS = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "IDLE", "CHECK", "CLOSE",
                      "UNSELECT", "NAMESPACE", "EXPUNGE"})


def parse_command(frame: CommandFrame) -> Command:
    """Parse one framed command; raises ``ParseError`` (tag None if the tag is unreadable)."""
    r = Reader(frame)
    m = _TAG.match(r.line)
    if m is None:
        raise ParseError(None, "missing or invalid tag")
    r.pos = m.end()
    if r.peek() not in (0x20, None):
        raise ParseError(None, "invalid character in tag")
    tag = m.group().decode("ascii")
    r.tag = tag
    r.sp()
    name = r.keyword()
    uid = name == "UID"
    if uid:
        r.sp()
        name = r.keyword()
        if name not in _UID_COMMANDS:
            raise r.error(f"UID {name[:40]} is not a command")
    if name in _NO_ARGS and not (uid and name == "EXPUNGE"):
        r.end()
        return Command(tag, name, uid)
    handler = _HANDLERS.get(name)
    if handler is None:
        raise r.error(f"unknown command {name[:40]}")
    args = handler(r, uid)
    r.end()
    return Command(tag, name, uid, args)


# ------------------------------------------------------------------ authentication


def _login(r: Reader, uid: bool) -> LoginArgs:
    """login = "LOGIN" SP userid SP password (both astring)."""
    r.sp()
    user = r.text_utf8(r.astring(), "user name")
    r.sp()
    password = r.text_utf8(r.astring(), "password")
    return LoginArgs(user, password)


def _authenticate(r: Reader, uid: bool) -> AuthenticateArgs:
    """authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp] (RFC 9051, RFC 4959)."""
    r.sp()
    mechanism = r.keyword()
    initial: bytes | None = None
    if r.maybe_sp():
        word = r.word() or b""
        if word != b"=" and not _BASE64.fullmatch(word):
            raise r.error("initial response is not base64")
        r.pos += len(word)
        initial = word
    return AuthenticateArgs(mechanism, initial)


def _enable(r: Reader, uid: bool) -> EnableArgs:
    """enable = "ENABLE" 1*(SP capability) (RFC 5161 section 4)."""
    caps = []
    r.sp()
    caps.append(r.keyword())
    while r.maybe_sp():
        caps.append(r.keyword())
    return EnableArgs(tuple(dict.fromkeys(caps)))


def _compress(r: Reader, uid: bool) -> CompressArgs:
    """compress = "COMPRESS" SP algorithm (RFC 4978 section 3)."""
    r.sp()
    return CompressArgs(r.keyword())


# ------------------------------------------------------------------ mailboxes


def _mailbox_only(r: Reader, uid: bool) -> MailboxArgs:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE: SP mailbox."""
    r.sp()
    name, raw = r.mailbox()
    return MailboxArgs(name, raw)


def _select(r: Reader, uid: bool) -> MailboxArgs:
    """select = "SELECT" SP mailbox [select-params] (RFC 4466, RFC 7162 sections 3.1.8
    and 3.2.5)."""
    r.sp()
    name, raw = r.mailbox()
    condstore = False
    qresync: QresyncParams | None = None
    if r.maybe_sp():
        r.expect(b"(")
        while True:
            param = r.keyword()
            if param == "CONDSTORE" and not condstore:
                condstore = True
            elif param == "QRESYNC" and qresync is None:
                r.sp()
                qresync = _qresync(r)
            else:
                raise r.error(f"unknown or repeated SELECT parameter {param[:40]}")
            if r.take(b")"):
                break
            r.sp()
    return MailboxArgs(name, raw, condstore=condstore, qresync=qresync)


def _qresync(r: Reader) -> QresyncParams:
    """``"(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"``
    (RFC 7162 section 3.2.5); "*" is not allowed in any of the sets."""
    r.expect(b"(")
    uidvalidity = r.number(nonzero=True)
    r.sp()
    modseq = r.number(limit=MAX_NUMBER64, nonzero=True)
    known = None
    match = None
    if r.maybe_sp():
        if r.peek() != 0x28:
            known = r.sequence_set(star=False, saved=False)
            if r.maybe_sp():
                match = _seq_match(r)
        else:
            match = _seq_match(r)
    r.expect(b")")
    return QresyncParams(uidvalidity, modseq, known, match)


def _seq_match(r: Reader) -> tuple[SequenceSet, SequenceSet]:
    """seq-match-data = "(" known-sequence-set SP known-uid-set ")" (RFC 7162 3.2.5)."""
    r.expect(b"(")
    seqs = r.sequence_set(star=False, saved=False)
    r.sp()
    uids = r.sequence_set(star=False, saved=False)
    r.expect(b")")
    return seqs, uids


def _create(r: Reader, uid: bool) -> MailboxArgs:
    """create = "CREATE" SP mailbox [create-params]; create-param "USE" (RFC 6154 sec. 3)."""
    r.sp()
    name, raw = r.mailbox()
    use: list[str] = []
    if r.maybe_sp():
        r.expect(b"(")
        param = r.keyword()
        if param != "USE":
            raise r.error(f"unknown CREATE parameter {param[:40]}")
        r.sp()
        r.expect(b"(")
        while not r.take(b")"):
            if use:
                r.sp()
            r.expect(b"\\")
            attr = "\\" + r.atom()
            use.append(_USE_ATTRS.get(attr.upper(), attr))
        r.expect(b")")
    return MailboxArgs(name, raw, use=tuple(dict.fromkeys(use)))


def _rename(r: Reader, uid: bool) -> RenameArgs:
    """rename = "RENAME" SP mailbox SP mailbox."""
    r.sp()
    old, old_raw = r.mailbox()
    r.sp()
    new, new_raw = r.mailbox()
    return RenameArgs(old, old_raw, new, new_raw)


def _status_items(r: Reader) -> tuple[str, ...]:
    """``"(" status-att *(SP status-att) ")"`` (RFC 9051 section 6.3.11)."""
    items = r.paren_list()
    for item in items:
        if item not in _STATUS_ITEMS:
            raise r.error(f"unknown STATUS item {item[:40]}")
    return tuple(dict.fromkeys(items))


def _status(r: Reader, uid: bool) -> StatusArgs:
    """status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"."""
    r.sp()
    name, raw = r.mailbox()
    r.sp()
    return StatusArgs(name, raw, _status_items(r))


def _pattern(r: Reader) -> bytes:
    raw = r.list_mailbox()
    r.text_utf8(raw, "mailbox pattern")
    return raw


def _list(r: Reader, uid: bool) -> ListArgs:
    """list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
    (RFC 5258 section 6, RFC 5819 for STATUS, RFC 6154 for SPECIAL-USE)."""
    r.sp()
    selection: list[str] = []
    if r.take(b"("):
        while not r.take(b")"):
            if selection:
                r.sp()
            opt = r.keyword()
            if opt not in _LIST_SELECT:
                raise r.error(f"unknown LIST selection option {opt[:40]}")
            selection.append(opt)
        if "RECURSIVEMATCH" in selection and not {"SUBSCRIBED", "SPECIAL-USE"} & set(selection):
            # RFC 5258 section 3: RECURSIVEMATCH alone is a BAD.
            raise r.error("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = r.astring()
    r.text_utf8(reference, "reference name")
    r.sp()
    patterns: list[bytes] = []
    if r.take(b"("):
        patterns.append(_pattern(r))
        while not r.take(b")"):
            r.sp()
            patterns.append(_pattern(r))
    else:
        patterns.append(_pattern(r))
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if r.maybe_sp():
        if r.keyword() != "RETURN":
            raise r.error("expected RETURN")
        r.sp()
        r.expect(b"(")
        while not r.take(b")"):
            if returns or status:
                r.sp()
            opt = r.keyword()
            if opt == "STATUS" and not status:
                r.sp()
                status = _status_items(r)
            elif opt in _LIST_RETURN:
                returns.append(opt)
            else:
                raise r.error(f"unknown LIST return option {opt[:40]}")
    return ListArgs(reference, tuple(patterns), tuple(dict.fromkeys(selection)),
                    tuple(dict.fromkeys(returns)), status)


def _lsub(r: Reader, uid: bool) -> ListArgs:
    """lsub = "LSUB" SP mailbox SP list-mailbox (RFC 3501 section 6.3.9)."""
    r.sp()
    reference = r.astring()
    r.text_utf8(reference, "reference name")
    r.sp()
    return ListArgs(reference, (_pattern(r),), lsub=True)


def _append(r: Reader, uid: bool) -> AppendArgs:
    """append = "APPEND" SP mailbox 1*append-message (RFC 3502 MULTIAPPEND), where
    append-message = [SP flag-list] [SP date-time] SP append-data and append-data is a
    literal, a literal8 (RFC 3516), "UTF8" SP "(" literal8 ")" (RFC 6855 section 4) or
    "CATENATE" SP "(" cat-part *(SP cat-part) ")" (RFC 4469 section 5)."""
    r.sp()
    name, raw = r.mailbox()
    first = _append_message(r)
    more: list[AppendMessage] = []
    while r.peek() == 0x20:
        if len(more) + 1 >= MAX_MULTIAPPEND:
            # RFC 5530 section 3 LIMIT: one transaction, one writer; a bound of ours.
            raise ParseError(r.tag, f"At most {MAX_MULTIAPPEND} messages in one APPEND",
                             status="NO", code="LIMIT")
        more.append(_append_message(r))
    return AppendArgs(name, raw, first.flags, first.internal_date, first.message,
                      first.binary, first.utf8, first.spooled_size, tuple(more),
                      first.catenate)


def _replace(r: Reader, uid: bool) -> ReplaceArgs:
    """replace = "REPLACE" SP seq-number SP mailbox append-message; UID REPLACE takes a UID
    (RFC 8508 section 6)."""
    r.sp()
    number = r.number(nonzero=True)
    r.sp()
    name, raw = r.mailbox()
    m = _append_message(r)
    return ReplaceArgs(number, AppendArgs(name, raw, m.flags, m.internal_date, m.message,
                                          m.binary, m.utf8, m.spooled_size,
                                          catenate=m.catenate))


# Messages in one MULTIAPPEND (RFC 3502 sets none; they are stored in one transaction).
MAX_MULTIAPPEND = 1000
# RFC 4469 section 5: at most this many parts in one CATENATE (a bound of ours).
MAX_CATENATE_PARTS = 64


def _append_message(r: Reader) -> AppendMessage:
    """SP [flag-list SP] [date-time SP] append-data. A spooled message (the server wrote it
    to a temporary file) has only its size here."""
    r.sp()
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp()
    if r.peek() == 0x22:
        when = r.date_time()
        r.sp()
    if r.peek() in (0x7B, 0x7E):
        lit = r.literal_frame(binary_ok=True)
        return AppendMessage(flags, when, lit.data, lit.binary, False,
                             lit.size if lit.spooled else None)
    word = r.keyword()
    if word == "UTF8":
        r.sp()
        r.expect(b"(")
        if r.peek() != 0x7E:
            raise r.error("UTF8 data must be a literal8")
        lit = r.literal_frame(binary_ok=True)
        r.expect(b")")
        return AppendMessage(flags, when, lit.data, False, True,
                             lit.size if lit.spooled else None)
    if word == "CATENATE":
        r.sp()
        r.expect(b"(")
        parts: list[CatenatePart] = []
        while True:
            if len(parts) >= MAX_CATENATE_PARTS:
                raise r.error("too many CATENATE parts")
            kind = r.keyword()
            r.sp()
            if kind == "TEXT":
                if r.peek() not in (0x7B, 0x7E):
                    raise r.error("CATENATE TEXT needs a literal")
                lit = r.literal_frame(binary_ok=True)
                parts.append(CatenatePart("TEXT", lit.data, lit.size if lit.spooled else None))
            elif kind == "URL":
                parts.append(CatenatePart("URL", r.astring()))
            else:
                raise r.error("a CATENATE part is TEXT or URL")
            if r.take(b")"):
                break
            r.sp()
        return AppendMessage(flags, when, b"", catenate=tuple(parts))
    raise r.error("expected the message as a literal")


def _getquota(r: Reader, uid: bool) -> QuotaArgs:
    """getquota = "GETQUOTA" SP quota-root-name (RFC 9208 section 4.2)."""
    r.sp()
    return QuotaArgs(r.text_utf8(r.astring(), "quota root"))


def _getquotaroot(r: Reader, uid: bool) -> QuotaArgs:
    """getquotaroot = "GETQUOTAROOT" SP mailbox (RFC 9208 section 4.3)."""
    r.sp()
    return QuotaArgs(r.mailbox()[0])


def _setquota(r: Reader, uid: bool) -> QuotaArgs:
    """setquota = "SETQUOTA" SP quota-root-name SP setquota-list (RFC 9208 section 4.1)."""
    r.sp()
    root = r.text_utf8(r.astring(), "quota root")
    r.sp()
    r.expect(b"(")
    limits: dict[str, int] = {}
    while not r.take(b")"):
        if limits:
            r.sp()
        resource = r.keyword()
        r.sp()
        if resource in limits:
            raise r.error(f"resource {resource[:40]} given twice")
        limits[resource] = r.number(limit=MAX_NUMBER64)
    return QuotaArgs(root, tuple(limits.items()))


def _id(r: Reader, uid: bool) -> IdArgs:
    """id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil
    (RFC 2971 section 4)."""
    r.sp()
    if not r.take(b"("):
        if r.keyword() != "NIL":
            raise r.error("expected a parameter list or NIL")
        return IdArgs(None)
    params: dict[str, str | None] = {}
    while not r.take(b")"):
        if params:
            r.sp()
        key = r.string()
        r.sp()
        value = r.nstring()
        if len(key) > _ID_MAX_FIELD or (value is not None and len(value) > _ID_MAX_VALUE):
            raise r.error("ID field or value too long")
        field = r.text_utf8(key, "ID field")
        if field.lower() in (k.lower() for k in params):
            raise r.error("ID field given twice")
        params[field] = None if value is None else r.text_utf8(value, "ID value")
        if len(params) > _ID_MAX_PAIRS:
            raise r.error("too many ID fields")
    return IdArgs(params)


# ------------------------------------------------------------------ messages


def _expunge(r: Reader, uid: bool) -> ExpungeArgs:
    """uid-expunge = "UID EXPUNGE" SP sequence-set (RFC 4315 section 2.1)."""
    r.sp()
    return ExpungeArgs(r.sequence_set())


def _fetch(r: Reader, uid: bool) -> CommandArgs:
    r.sp()
    return fetch_args(r, uid=uid)


def _store(r: Reader, uid: bool) -> StoreArgs:
    """store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags; the modifier is
    "(" "UNCHANGEDSINCE" SP mod-sequence-valzer ")" (RFC 7162 section 3.1.3)."""
    r.sp()
    seqset = r.sequence_set()
    r.sp()
    unchanged: int | None = None
    if r.take(b"("):
        if r.keyword() != "UNCHANGEDSINCE":
            raise r.error("unknown STORE modifier")
        r.sp()
        unchanged = r.number(limit=MAX_NUMBER64)
        r.expect(b")")
        r.sp()
    op = "+" if r.take(b"+") else "-" if r.take(b"-") else ""
    item = r.keyword()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise r.error("expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        found = [r.flag()]
        while r.maybe_sp():
            found.append(r.flag())
        flags = tuple(dict.fromkeys(found))
    return StoreArgs(seqset, op, item == "FLAGS.SILENT", flags, unchanged)


def _copy(r: Reader, uid: bool) -> CopyArgs:
    """copy = "COPY" SP sequence-set SP mailbox; move likewise (RFC 6851 section 3)."""
    r.sp()
    seqset = r.sequence_set()
    r.sp()
    name, raw = r.mailbox()
    return CopyArgs(seqset, name, raw)


def _search(r: Reader, uid: bool) -> CommandArgs:
    return search_args(r)


def _sort(r: Reader, uid: bool) -> CommandArgs:
    return sort_args(r)


def _thread(r: Reader, uid: bool) -> CommandArgs:
    return thread_args(r)


def _cancelupdate(r: Reader, uid: bool) -> CancelUpdateArgs:
    """cancelupdate = "CANCELUPDATE" 1*(SP quoted) (RFC 5267 section 4.2)."""
    tags = []
    r.sp()
    tags.append(r.text_utf8(r.quoted(), "tag"))
    while r.maybe_sp():
        tags.append(r.text_utf8(r.quoted(), "tag"))
    return CancelUpdateArgs(tuple(dict.fromkeys(tags)))


_HANDLERS: dict[str, Callable[[Reader, bool], CommandArgs]] = {
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "COMPRESS": _compress,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _mailbox_only,
    "SUBSCRIBE": _mailbox_only,
    "UNSUBSCRIBE": _mailbox_only,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "REPLACE": _replace,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _getquotaroot,
    "SETQUOTA": _setquota,
    "ID": _id,
    "EXPUNGE": _expunge,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
    "CANCELUPDATE": _cancelupdate,
    "NOTIFY": lambda r, uid: notify_args(r),
}
