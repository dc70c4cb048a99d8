"""The IMAP command parser: one test per command form, real client lines, and refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailstead.proto.imap.ast import (
    AppendArgs,
    AuthenticateArgs,
    Command,
    CompressArgs,
    CopyArgs,
    EnableArgs,
    ExpungeArgs,
    FetchArgs,
    FetchAtt,
    IdArgs,
    ListArgs,
    LoginArgs,
    MailboxArgs,
    Partial,
    QresyncParams,
    QuotaArgs,
    RenameArgs,
    SearchArgs,
    SearchKey,
    Section,
    SeqRange,
    SequenceSet,
    StatusArgs,
    StoreArgs,
)
from mailstead.proto.imap.framing import NEED_DATA, CommandFrame, CommandFramer
from mailstead.proto.imap.parser import ParseError, parse_command


def frame(wire: bytes) -> CommandFrame:
    framer = CommandFramer()
    framer.receive_data(wire)
    frames = []
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, CommandFrame):
            frames.append(event)
    assert len(frames) == 1, frames
    return frames[0]


def parse(wire: bytes) -> Command:
    return parse_command(frame(wire + b"\r\n"))


def bad(wire: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(wire)
    return info.value


def seq(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(SeqRange(lo, hi) for lo, hi in ranges))


def args(wire: bytes) -> object:
    return parse(wire).args


# ------------------------------------------------------------------ tags and names


@pytest.mark.parametrize(
    "name", ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "IDLE", "CHECK", "CLOSE", "UNSELECT",
             "NAMESPACE", "EXPUNGE"],
)
def test_commands_without_arguments(name: str) -> None:
    assert parse(b"A1 " + name.lower().encode()) == Command("A1", name)
    assert bad(b"A1 " + name.encode() + b" extra").tag == "A1"


def test_tag_grammar() -> None:
    assert parse(b"a]b.1 NOOP").tag == "a]b.1"  # "]" is an ASTRING-CHAR
    for line in (b"+a NOOP", b"a+ NOOP", b"* NOOP", b'"a" NOOP', b"a(b NOOP", b" NOOP", b""):
        assert bad(line).tag is None
    assert bad(b"a{ NOOP").tag is None


def test_missing_or_unknown_command() -> None:
    assert bad(b"a").tag == "a"
    assert bad(b"a ").tag == "a"
    err = bad(b"a FROB x")
    assert (err.tag, err.status, "unknown command" in err.text) == ("a", "BAD", True)
    assert bad(b"a  NOOP").tag == "a"  # one space exactly
    assert bad(b"a UID NOOP").tag == "a"
    assert bad(b"a UID").tag == "a"


# ------------------------------------------------------------------ authentication


def test_login_forms() -> None:
    assert args(b"a LOGIN bob secret") == LoginArgs("bob", "secret")
    assert args(b'a login "b\\"o\\\\b" "p w"') == LoginArgs('b"o\\b', "p w")
    assert args(b"a LOGIN {3}\r\nbob {5+}\r\np\"w\\d") == LoginArgs("bob", 'p"w\\d')
    assert args('a LOGIN "jürgen" "pässword"'.encode()) == LoginArgs("jürgen", "pässword")


def test_login_refusals() -> None:
    assert bad(b"a LOGIN bob").tag == "a"
    assert bad(b"a LOGIN bob p w").tag == "a"
    assert bad(b'a LOGIN "bob\\n" x').tag == "a"  # only \" and \\ escapes
    assert bad(b'a LOGIN "bo').tag == "a"
    assert bad(b'a LOGIN "\xff" x').tag == "a"  # 8-bit quoted must be UTF-8
    assert bad(b"a LOGIN {3}\r\nb\x00b pw").tag == "a"  # NUL in a normal literal
    assert bad(b"a LOGIN ~{3}\r\nbob pw").tag == "a"  # literal8 only where allowed
    assert bad(b"a LOGIN b\x01b pw").tag == "a"  # CTL in an atom


def test_authenticate_with_and_without_sasl_ir() -> None:
    assert args(b"a AUTHENTICATE plain") == AuthenticateArgs("PLAIN", None)
    assert args(b"a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=") == AuthenticateArgs(
        "PLAIN", b"AGJvYgBzZWNyZXQ="
    )
    assert args(b"a AUTHENTICATE EXTERNAL =") == AuthenticateArgs("EXTERNAL", b"=")
    assert bad(b"a AUTHENTICATE PLAIN AGJ").tag == "a"
    assert bad(b"a AUTHENTICATE PLAIN ====").tag == "a"
    assert bad(b"a AUTHENTICATE").tag == "a"


def test_enable_and_compress() -> None:
    assert args(b"a ENABLE qresync CONDSTORE UTF8=ACCEPT") == EnableArgs(
        ("QRESYNC", "CONDSTORE", "UTF8=ACCEPT")
    )
    assert bad(b"a ENABLE").tag == "a"
    assert args(b"a COMPRESS deflate") == CompressArgs("DEFLATE")
    assert bad(b"a COMPRESS").tag == "a"


def test_id_forms() -> None:
    # Thunderbird and iOS both send ID right after login.
    got = args(b'a ID ("name" "Thunderbird" "version" "115.3.1" "vendor" NIL)')
    assert got == IdArgs({"name": "Thunderbird", "version": "115.3.1", "vendor": None})
    assert args(b"a ID NIL") == IdArgs(None)
    assert args(b"a ID ()") == IdArgs({})
    assert bad(b'a ID ("name")').tag == "a"
    assert bad(b'a ID ("name" "x" "NAME" "y")').tag == "a"  # a field given twice
    assert bad(b'a ID ("' + b"f" * 31 + b'" "x")').tag == "a"  # RFC 2971 section 3.3
    many = b" ".join(b'"f%d" "v"' % i for i in range(31))
    assert bad(b"a ID (" + many + b")").tag == "a"


# ------------------------------------------------------------------ mailboxes


def test_select_and_examine() -> None:
    assert args(b"a SELECT inbox") == MailboxArgs("INBOX", b"inbox")
    assert parse(b"a EXAMINE Archive").name == "EXAMINE"
    assert args(b"a SELECT INBOX (CONDSTORE)") == MailboxArgs("INBOX", b"INBOX", condstore=True)
    got = args(
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 "
        b"(1,3:5 41,43:45)))"
    )
    assert got == MailboxArgs(
        "INBOX", b"INBOX", qresync=QresyncParams(
            67890007, 20050715194045000, seq((41, 41), (43, 211), (214, 541)),
            (seq((1, 1), (3, 5)), seq((41, 41), (43, 45))),
        )
    )
    assert args(b"a SELECT x (QRESYNC (1 2))") == MailboxArgs(
        "x", b"x", qresync=QresyncParams(1, 2)
    )
    assert args(b"a SELECT x (QRESYNC (1 2 (1 5)))") == MailboxArgs(
        "x", b"x", qresync=QresyncParams(1, 2, None, (seq((1, 1)), seq((5, 5))))
    )


def test_select_refusals() -> None:
    for line in (b"a SELECT", b"a SELECT x ()", b"a SELECT x (FOO)",
                 b"a SELECT x (CONDSTORE CONDSTORE)", b"a SELECT x (QRESYNC (0 2))",
                 b"a SELECT x (QRESYNC (1 0))", b"a SELECT x (QRESYNC (1 2 1:*))",
                 b"a SELECT x (QRESYNC (1 2 $))", b"a SELECT x y"):
        assert bad(line).tag == "a", line


def test_mailbox_names_raw_and_decoded() -> None:
    assert args('a CREATE "Entwürfe/Ärger"'.encode()) == MailboxArgs(
        "Entwürfe/Ärger", "Entwürfe/Ärger".encode()
    )
    assert args(b"a CREATE &AMQ-rger") == MailboxArgs("&AMQ-rger", b"&AMQ-rger")
    assert args(b'a DELETE "INBOX/x"') == MailboxArgs("INBOX/x", b"INBOX/x")
    assert args(b"a DELETE InBoX") == MailboxArgs("INBOX", b"InBoX")
    assert args(b"a SUBSCRIBE {5}\r\na]b c") == MailboxArgs("a]b c", b"a]b c")
    assert parse(b"a UNSUBSCRIBE x").name == "UNSUBSCRIBE"
    assert bad(b"a DELETE {2}\r\n\xff\xfe").tag == "a"  # not UTF-8
    assert bad(b"a DELETE a%b").tag == "a"  # wildcards only in list-mailbox
    assert bad(b"a DELETE a*").tag == "a"


def test_create_special_use() -> None:
    assert args(b"a CREATE Spam (USE (\\junk))") == MailboxArgs("Spam", b"Spam", use=("\\Junk",))
    assert args(b"a CREATE S (USE (\\Sent \\Archive))") == MailboxArgs(
        "S", b"S", use=("\\Sent", "\\Archive")
    )
    assert args(b"a CREATE S (USE ())") == MailboxArgs("S", b"S")
    assert bad(b"a CREATE S (USE (Junk))").tag == "a"
    assert bad(b"a CREATE S (FOO (\\Junk))").tag == "a"


def test_rename() -> None:
    assert args(b'a RENAME "Old box" New') == RenameArgs("Old box", b"Old box", "New", b"New")
    assert bad(b"a RENAME x").tag == "a"


def test_status() -> None:
    assert args(b"a STATUS blurdybloop (UIDNEXT MESSAGES size highestmodseq)") == StatusArgs(
        "blurdybloop", b"blurdybloop", ("UIDNEXT", "MESSAGES", "SIZE", "HIGHESTMODSEQ")
    )
    assert bad(b"a STATUS x ()").tag == "a"
    assert bad(b"a STATUS x (FOO)").tag == "a"
    assert bad(b"a STATUS x MESSAGES").tag == "a"


def test_list_basic_and_lsub() -> None:
    # RFC 9051 section 9: list-mailbox = 1*list-char / string, and list-char includes the
    # wildcards, so a bare "*" is a whole pattern (imaplib's default ``LIST "" *``).
    assert args(b'a LIST "" *') == ListArgs(b"", (b"*",))
    assert args(b'a LIST "" %') == ListArgs(b"", (b"%",))
    assert args(b'a LSUB "" *') == ListArgs(b"", (b"*",), lsub=True)
    assert args(b'a LIST "" (* %)') == ListArgs(b"", (b"*", b"%"))
    assert args(b'a LIST "" * RETURN (CHILDREN)') == ListArgs(b"", (b"*",), (), ("CHILDREN",))
    assert args(b'a LIST "" "*"') == ListArgs(b"", (b"*",))
    assert args(b"a LIST ~/Mail/ %") == ListArgs(b"~/Mail/", (b"%",))
    assert args(b'a LIST "" INBOX/%/x*') == ListArgs(b"", (b"INBOX/%/x*",))
    assert args(b'a LSUB "#news." "comp.mail.*"') == ListArgs(
        b"#news.", (b"comp.mail.*",), lsub=True
    )


def test_list_extended() -> None:
    # RFC 5258 section 5 examples, RFC 5819 and RFC 6154.
    got = args(b'A01 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "%/%") RETURN (CHILDREN)')
    assert got == ListArgs(b"", (b"INBOX", b"%/%"), ("SUBSCRIBED", "RECURSIVEMATCH"),
                           ("CHILDREN",))
    got = args(b'a LIST "" % RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN) SUBSCRIBED)')
    assert got == ListArgs(b"", (b"%",), (), ("SPECIAL-USE", "SUBSCRIBED"),
                           ("MESSAGES", "UNSEEN"))
    assert args(b'a LIST (special-use) "" "*"') == ListArgs(b"", (b"*",), ("SPECIAL-USE",))
    assert args(b'a LIST () "" % RETURN ()') == ListArgs(b"", (b"%",))


def test_list_refusals() -> None:
    for line in (b'a LIST (RECURSIVEMATCH) "" %', b'a LIST (FOO) "" %',
                 b'a LIST "" % RETURN (FOO)', b'a LIST "" () ', b'a LIST ""',
                 b'a LIST "" % (CHILDREN)', b'a LIST "" % RETURN (STATUS ())',
                 b'a LSUB "" % x', b"a LIST * *", b'a LIST "" *)', b'a LIST "" * x'):
        assert bad(line).tag == "a", line


def test_getquota_setquota() -> None:
    assert args(b'a GETQUOTA ""') == QuotaArgs("")
    assert args(b"a GETQUOTAROOT inbox") == QuotaArgs("INBOX")
    assert args(b'a SETQUOTA "" (STORAGE 512 message 1000)') == QuotaArgs(
        "", (("STORAGE", 512), ("MESSAGE", 1000))
    )
    assert args(b'a SETQUOTA "" ()') == QuotaArgs("")
    assert bad(b'a SETQUOTA "" (STORAGE)').tag == "a"
    assert bad(b'a SETQUOTA "" (STORAGE 1 STORAGE 2)').tag == "a"


# ------------------------------------------------------------------ APPEND


def test_append_forms() -> None:
    assert args(b"a APPEND INBOX {5}\r\nhello") == AppendArgs(
        "INBOX", b"INBOX", (), None, b"hello"
    )
    got = args(b'A003 APPEND saved-messages (\\Seen $Forwarded) "17-Jul-1996 02:44:25 -0700" '
               b"{7+}\r\nHello\r\n")
    assert got == AppendArgs(
        "saved-messages", b"saved-messages", ("\\Seen", "$Forwarded"),
        datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7))), b"Hello\r\n",
    )
    assert args(b'a APPEND x " 7-Jul-1996 02:44:25 +0130" {1}\r\nx') == AppendArgs(
        "x", b"x", (), datetime(1996, 7, 7, 2, 44, 25,
                                tzinfo=timezone(timedelta(hours=1, minutes=30))), b"x"
    )
    assert args(b"a APPEND x () ~{3}\r\n\x00\xff\x01") == AppendArgs(
        "x", b"x", (), None, b"\x00\xff\x01", binary=True
    )
    got_utf8 = args(b"a APPEND x UTF8 (~{3}\r\n\xc3\xa9!)")
    assert got_utf8 == AppendArgs("x", b"x", (), None, b"\xc3\xa9!", utf8=True)


def test_append_refusals() -> None:
    for line in (
        b"a APPEND x hello",  # the message must be a literal
        b"a APPEND x {2}\r\na\x00",  # NUL needs literal8
        b"a APPEND x (\\Recent) {1}\r\nx",  # RFC 9051: \Recent cannot be set
        b"a APPEND x (\\Foo) {1}\r\nx",
        b'a APPEND x "17-Jul-1996 02:44:25" {1}\r\nx',  # zone missing
        b'a APPEND x "31-Feb-1996 02:44:25 +0000" {1}\r\nx',
        b'a APPEND x "17-Jul-1996 24:00:00 +0000" {1}\r\nx',
        b'a APPEND x "17-Jux-1996 02:44:25 +0000" {1}\r\nx',
        b'a APPEND x "17-Jul-1996 02:44:25 +0060" {1}\r\nx',
        b"a APPEND x UTF8 ({1}\r\nx)",  # RFC 6855: literal8 required
        b"a APPEND x UTF8 (~{1}\r\nx",
        b"a APPEND x {1}\r\nx y",  # RFC 3502: each further message is a literal too
        b"a APPEND x",
    ):
        assert bad(line).tag == "a", line


# ------------------------------------------------------------------ FETCH


def test_fetch_thunderbird_header_fetch() -> None:
    got = parse(
        b"a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
        b"Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
        b"Content-Type Reply-To)])"
    )
    fields = ("FROM", "TO", "CC", "BCC", "SUBJECT", "DATE", "MESSAGE-ID", "PRIORITY",
              "X-PRIORITY", "REFERENCES", "NEWSGROUPS", "IN-REPLY-TO", "CONTENT-TYPE",
              "REPLY-TO")
    assert got == Command("a", "FETCH", True, FetchArgs(seq((1, None)), (
        FetchAtt("UID"), FetchAtt("RFC822.SIZE"), FetchAtt("FLAGS"),
        FetchAtt("BODY[]", Section((), "HEADER.FIELDS", fields), peek=True),
    )))


def test_fetch_macros() -> None:
    names = [a.name for a in args(b"a FETCH 1 ALL").atts]  # type: ignore[attr-defined]
    assert names == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    names = [a.name for a in args(b"a FETCH 1 fast").atts]  # type: ignore[attr-defined]
    assert names == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    names = [a.name for a in args(b"a FETCH 1 FULL").atts]  # type: ignore[attr-defined]
    assert names == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    assert bad(b"a FETCH 1 (ALL)").tag == "a"  # macros only alone


def test_fetch_every_attribute() -> None:
    got = args(
        b"a FETCH 2:4 (envelope FLAGS INTERNALDATE RFC822.SIZE UID BODYSTRUCTURE BODY MODSEQ "
        b"RFC822 RFC822.HEADER RFC822.TEXT SAVEDATE EMAILID THREADID BODY[] BODY.PEEK[TEXT] "
        b"BODY[1.2.MIME] BODY[3.HEADER.FIELDS.NOT (X-A)] BODY[]<0.2048> BINARY[1.2]<0.100> "
        b"BINARY.PEEK[] BINARY.SIZE[4] BODY[2]<10.1> body[header])"
    )
    assert got == FetchArgs(seq((2, 4)), (
        FetchAtt("ENVELOPE"), FetchAtt("FLAGS"), FetchAtt("INTERNALDATE"),
        FetchAtt("RFC822.SIZE"), FetchAtt("UID"), FetchAtt("BODYSTRUCTURE"), FetchAtt("BODY"),
        FetchAtt("MODSEQ"), FetchAtt("RFC822"), FetchAtt("RFC822.HEADER"),
        FetchAtt("RFC822.TEXT"), FetchAtt("SAVEDATE"), FetchAtt("EMAILID"),
        FetchAtt("THREADID"), FetchAtt("BODY[]", Section()),
        FetchAtt("BODY[]", Section((), "TEXT"), peek=True),
        FetchAtt("BODY[]", Section((1, 2), "MIME")),
        FetchAtt("BODY[]", Section((3,), "HEADER.FIELDS.NOT", ("X-A",))),
        FetchAtt("BODY[]", Section(), Partial(0, 2048)),
        FetchAtt("BINARY[]", Section((1, 2)), Partial(0, 100)),
        FetchAtt("BINARY[]", Section(), peek=True),
        FetchAtt("BINARY.SIZE", Section((4,))),
        FetchAtt("BODY[]", Section((2,)), Partial(10, 1)),
        FetchAtt("BODY[]", Section((), "HEADER")),
    ))


def test_fetch_single_attribute_and_modifiers() -> None:
    assert args(b"a FETCH * FLAGS") == FetchArgs(seq((None, None)), (FetchAtt("FLAGS"),))
    got = parse(b"a UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert got.args == FetchArgs(seq((300, 500)), (FetchAtt("FLAGS"),), 12345, True)
    got = parse(b"a FETCH 1:* (FLAGS) (changedsince 7)")
    assert got.args == FetchArgs(seq((1, None)), (FetchAtt("FLAGS"),), 7)


def test_fetch_refusals() -> None:
    for line in (
        b"a FETCH 0 FLAGS", b"a FETCH 1: FLAGS", b"a FETCH 1,,2 FLAGS", b"a FETCH -1 FLAGS",
        b"a FETCH 4294967296 FLAGS", b"a FETCH 1 (FLAGS", b"a FETCH 1 ()", b"a FETCH 1 FOO",
        b"a FETCH 1 BODY.PEEK", b"a FETCH 1 BODY[MIME]", b"a FETCH 1 BODY[0]",
        b"a FETCH 1 BODY[1.]", b"a FETCH 1 BODY[HEADER.FIELDS ()]",
        b"a FETCH 1 BODY[HEADER.FIELDS (a:b)]", b"a FETCH 1 BODY[FOO]", b"a FETCH 1 BODY[1",
        b"a FETCH 1 BODY[]<0.0>", b"a FETCH 1 BODY[]<1>", b"a FETCH 1 BINARY[TEXT]",
        b"a FETCH 1 BINARY.SIZE[1]<0.1>", b"a FETCH 1 BINARY", b"a FETCH 1 (FLAGS)  ",
        b"a FETCH 1 (FLAGS) (VANISHED)",  # VANISHED needs UID FETCH
        b"a UID FETCH 1 (FLAGS) (VANISHED)",  # ... and CHANGEDSINCE (RFC 7162 3.2.6)
        b"a FETCH 1 (FLAGS) (CHANGEDSINCE 0)", b"a FETCH 1 (FLAGS) (FOO)",
        b"a FETCH 1 (FLAGS) ()", b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        b"a FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)", b"a FETCH 1",
        b"a FETCH " + b"1" * 30 + b" FLAGS",
    ):
        assert bad(line).tag == "a", line


# ------------------------------------------------------------------ STORE, COPY, MOVE, EXPUNGE


def test_store_forms() -> None:
    assert args(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == StoreArgs(
        seq((2, 4)), "+", False, ("\\Deleted",)
    )
    assert args(b"a STORE 1 -flags.silent \\SEEN $Junk") == StoreArgs(
        seq((1, 1)), "-", True, ("\\Seen", "$Junk")
    )
    assert args(b"a STORE 1 FLAGS ()") == StoreArgs(seq((1, 1)), "", False, ())
    got = parse(b"a UID STORE 1,3 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)")
    assert got.uid
    assert got.args == StoreArgs(seq((1, 1), (3, 3)), "+", True, ("\\Deleted",),
                                             320162338)
    assert args(b"a STORE $ (UNCHANGEDSINCE 0) FLAGS (x)") == StoreArgs(
        SequenceSet(saved=True), "", False, ("x",), 0
    )


def test_store_refusals() -> None:
    for line in (b"a STORE 1 FLAGS", b"a STORE 1 +FLAG (x)", b"a STORE 1 *FLAGS (x)",
                 b"a STORE 1 FLAGS (\\Recent)", b"a STORE 1 FLAGS (\\*)",
                 b"a STORE 1 (UNCHANGEDSINCE) FLAGS (x)", b"a STORE 1 (FOO 1) FLAGS (x)",
                 b"a STORE 1 FLAGS (a b", b"a STORE 1 FLAGS ((a))", b'a STORE 1 FLAGS ("a")'):
        assert bad(line).tag == "a", line


def test_copy_move_expunge() -> None:
    assert args(b"a COPY 2:4 MEETING") == CopyArgs(seq((2, 4)), "MEETING", b"MEETING")
    got = parse(b'a UID MOVE 42:69 "Deleted Items"')
    assert (got.name, got.uid) == ("MOVE", True)
    assert got.args == CopyArgs(seq((42, 69)), "Deleted Items", b"Deleted Items")
    got = parse(b"a UID EXPUNGE 3000:3002,5")
    assert got == Command("a", "EXPUNGE", True, ExpungeArgs(seq((3000, 3002), (5, 5))))
    assert bad(b"a UID EXPUNGE").tag == "a"
    assert bad(b"a COPY 1").tag == "a"


def test_sequence_sets() -> None:
    assert bad(b"a FETCH 1:*,3,5:7,*:4,$ FLAGS").tag == "a"  # $ only alone
    got = args(b"a FETCH 1:*,3,5:7,*:4 FLAGS")
    assert got.seqset == seq((1, None), (3, 3), (5, 7), (None, 4))  # type: ignore[attr-defined]
    assert args(b"a FETCH $ UID").seqset == SequenceSet(saved=True)  # type: ignore[attr-defined]
    assert args(b"a FETCH 4294967295 UID").seqset == seq(  # type: ignore[attr-defined]
        (4294967295, 4294967295)
    )


# ------------------------------------------------------------------ SEARCH, SORT, THREAD


def key(wire: bytes) -> SearchKey:
    got = args(b"a SEARCH " + wire)
    assert isinstance(got, SearchArgs)
    return got.key


def test_search_simple_keys() -> None:
    for name in ("ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT",
                 "SEEN", "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"):
        assert key(name.lower().encode()) == SearchKey(name)


def test_search_keys_with_arguments() -> None:
    for name in ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"):
        assert key(name.encode() + b' "a b"') == SearchKey(name, text="a b")
    for name in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
        assert key(name.encode() + b" 1-Feb-1994") == SearchKey(name, date=datetime(1994, 2, 1))
    assert key(b'SINCE "21-feb-2024"') == SearchKey("SINCE", date=datetime(2024, 2, 21))
    assert key(b"KEYWORD $Forwarded") == SearchKey("KEYWORD", text="$Forwarded")
    assert key(b"UNKEYWORD x") == SearchKey("UNKEYWORD", text="x")
    assert key(b'HEADER Message-ID "<a@b.test>"') == SearchKey(
        "HEADER", header="Message-ID", text="<a@b.test>"
    )
    assert key(b"LARGER 10000") == SearchKey("LARGER", number=10000)
    assert key(b"SMALLER 5") == SearchKey("SMALLER", number=5)
    assert key(b"UID 1:*") == SearchKey("UID", seqset=seq((1, None)))
    assert key(b"2,4:5") == SearchKey("SEQSET", seqset=seq((2, 2), (4, 5)))
    assert key(b"$") == SearchKey("SEQSET", seqset=SequenceSet(saved=True))
    assert key(b"MODSEQ 620162338") == SearchKey("MODSEQ", number=620162338)
    assert key(b'MODSEQ "/flags/\\\\draft" all 0') == SearchKey("MODSEQ", number=0)


def test_search_nesting() -> None:
    assert key(b"OR FROM a NOT (SEEN DELETED)") == SearchKey("OR", children=(
        SearchKey("FROM", text="a"),
        SearchKey("NOT", children=(SearchKey("AND", children=(SearchKey("SEEN"),
                                                              SearchKey("DELETED"))),)),
    ))
    assert key(b"DELETED FROM \"SMITH\" SINCE 1-Feb-1994") == SearchKey("AND", children=(
        SearchKey("DELETED"), SearchKey("FROM", text="SMITH"),
        SearchKey("SINCE", date=datetime(1994, 2, 1)),
    ))


def test_search_charset_return_and_literals() -> None:
    got = args(b"a SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX")
    assert got == SearchArgs(SearchKey("TEXT", text="XXXXXX"), "UTF-8")
    got = args("a SEARCH SUBJECT \"Grüße\"".encode())
    assert got == SearchArgs(SearchKey("SUBJECT", text="Grüße"))
    got = args(b"a SEARCH CHARSET ISO-8859-1 SUBJECT {2}\r\n\xe9t")
    assert got == SearchArgs(SearchKey("SUBJECT", text="ét"), "ISO-8859-1")
    got = args(b"a SEARCH RETURN (MIN COUNT save) UNSEEN")
    assert got == SearchArgs(SearchKey("UNSEEN"), returns=("MIN", "COUNT", "SAVE"))
    got = args(b"a SEARCH RETURN () CHARSET \"us-ascii\" ALL")
    assert got == SearchArgs(SearchKey("ALL"), "US-ASCII", ("ALL",))
    assert parse(b"a UID SEARCH UID 5:*").uid


def test_search_unknown_charset_is_no_badcharset() -> None:
    err = bad(b"a SEARCH CHARSET X-NOPE TEXT x")
    assert (err.tag, err.status, err.code) == ("a", "NO", "BADCHARSET (US-ASCII UTF-8)")
    assert bad(b"a SEARCH CHARSET rot13 TEXT x").status == "NO"
    assert bad(b"a SEARCH CHARSET UTF-8 TEXT {1}\r\n\xff").status == "BAD"


def test_search_refusals() -> None:
    for line in (
        b"a SEARCH", b"a SEARCH ", b"a SEARCH FOO", b"a SEARCH FROM", b"a SEARCH (SEEN",
        b"a SEARCH ()", b"a SEARCH OR SEEN", b"a SEARCH NOT", b"a SEARCH SINCE 32-Jan-2020",
        b"a SEARCH SINCE 1-Jan-20", b"a SEARCH SINCE 1-January-2020", b"a SEARCH LARGER x",
        b"a SEARCH 0", b"a SEARCH UID 0:5", b"a SEARCH KEYWORD \\Seen",
        b"a SEARCH RETURN (FOO) ALL", b"a SEARCH RETURN ALL", b"a SEARCH CHARSET UTF-8",
        b'a SEARCH MODSEQ "/foo/x" all 1', b'a SEARCH MODSEQ "/flags/x" every 1',
        b"a SEARCH SEEN  UNSEEN", b"a SEARCH SEEN)", b"a SEARCH HEADER Subject",
    ):
        assert bad(line).tag == "a", line


def test_search_depth_is_capped() -> None:
    assert bad(b"a SEARCH " + b"(" * 100 + b"ALL" + b")" * 100).tag == "a"
    assert bad(b"a SEARCH " + b"NOT " * 100 + b"ALL").tag == "a"
    assert bad(b"a SEARCH " + b"OR ALL " * 100 + b"ALL").tag == "a"
    assert key(b"(" * 60 + b"ALL" + b")" * 60).name == "AND"


def test_sort_and_thread() -> None:
    got = parse(b"a UID SORT (REVERSE ARRIVAL subject) UTF-8 ALL")
    assert got == Command("a", "SORT", True, SearchArgs(
        SearchKey("ALL"), "UTF-8", sort=("REVERSE ARRIVAL", "SUBJECT")
    ))
    got = parse(b"a THREAD REFERENCES US-ASCII SINCE 1-Feb-1994 UNSEEN")
    assert got.args == SearchArgs(
        SearchKey("AND", children=(SearchKey("SINCE", date=datetime(1994, 2, 1)),
                                   SearchKey("UNSEEN"))),
        "US-ASCII", algorithm="REFERENCES",
    )
    for line in (b"a SORT (DATE) ALL", b"a SORT () UTF-8 ALL", b"a SORT (FOO) UTF-8 ALL",
                 b"a SORT (REVERSE) UTF-8 ALL", b"a THREAD REFERENCES ALL", b"a THREAD"):
        assert bad(line).tag == "a", line


# ------------------------------------------------------------------ real clients


@pytest.mark.parametrize(
    "line",
    [
        # Thunderbird
        b"1 capability",
        b"3 select \"INBOX\" (CONDSTORE)",
        b"5 UID fetch 1:* (FLAGS) (CHANGEDSINCE 34)",
        b"7 UID fetch 42 (UID RFC822.SIZE FLAGS BODY.PEEK[])",
        b"9 UID store 42 +Flags (\\Seen)",
        b'11 list (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)',
        b'13 getquotaroot "INBOX"',
        b"15 UID fetch 5:10 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
        b"Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
        b"Content-Type Reply-To)])",
        # iOS Mail
        b'2 ID ("name" "iPhone Mail" "version" "21E236" "os" "iOS" "os-version" "17.4.1 '
        b'(21E236)")',
        b'3 LIST "" ""',
        b'4 LIST "" "*" RETURN (CHILDREN SPECIAL-USE)',
        b'5 STATUS "INBOX" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)',
        b"6 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",
        b"7 UID SEARCH 1:* NOT DELETED",
        b"8 UID FETCH 89 (BODYSTRUCTURE BODY.PEEK[HEADER])",
        b"9 UID FETCH 89 (BODY.PEEK[1]<0.32768>)",
        # mbsync (isync)
        b"1 LOGIN \"user@example.test\" \"pass\"",
        b"3 UID FETCH 1:1000000000 (UID FLAGS)",
        b"4 UID FETCH 17 (BODY.PEEK[HEADER.FIELDS (X-TUID)])",
        b"5 UID STORE 17 +FLAGS.SILENT (\\Deleted)",
        b'6 APPEND "Archive" (\\Seen) "01-Jan-2024 12:00:00 +0000" {3+}\r\nabc',
        b"7 UID EXPUNGE 17",
        b"8 CREATE \"Archive/2024\"",
        # Outlook
        b"A1 NAMESPACE",
        b'A2 LIST "" "%"',
        b'A3 LSUB "" "*"',
        b"A4 SELECT \"Sent Items\"",
        b"A5 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
        b"(DATE FROM SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE IN-REPLY-TO REPLY-TO "
        b"LINES LIST-POST X-LABEL)])",
        b"A6 UID SEARCH SINCE 13-Mar-2024",
        b"A7 IDLE",
        # mutt
        b"a0003 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
        b"(DATE FROM SENDER SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE "
        b"CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST X-LABEL X-ORIGINAL-TO)])",
        b"a0004 UID SEARCH CHARSET UTF-8 OR SUBJECT foo FROM foo",
    ],
)
def test_real_client_lines(line: bytes) -> None:
    command = parse(line)
    assert command.tag == line.split(b" ")[0].decode()
