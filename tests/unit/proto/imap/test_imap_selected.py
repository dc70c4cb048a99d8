"""The pure selected-mailbox view: numbering, pending expunges, EXISTS/EXPUNGE/VANISHED/FETCH."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.proto.imap.ast import SeqRange, SequenceSet
from mailstead.proto.imap.selected import SelectedView
from mailstead.storage.interfaces import MailboxChanges, MailboxInfo, MessageInfo

INFO = MailboxInfo(7, 1, "INBOX", None, 1234, 6, 20, 5)


def msg(uid: int, flags: tuple[str, ...] = (), modseq: int = 10) -> MessageInfo:
    return MessageInfo(uid, 7, uid, modseq, flags, 0.0, 100 + uid, "b", "{}", "{}")


def view(read_only: bool = False, recent_from: int = 100) -> SelectedView:
    msgs = [msg(u) for u in (1, 2, 3, 4, 5)]
    return SelectedView.open(INFO, msgs, read_only=read_only, recent_from=recent_from)


def changes(
    changed: tuple[MessageInfo, ...] = (), vanished: tuple[int, ...] = (),
    uidvalidity: int = 1234, highest: int = 30,
) -> MailboxChanges:
    return MailboxChanges(uidvalidity, 10, highest, changed, vanished)


def seqset(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(SeqRange(lo, hi) for lo, hi in ranges))


def test_open_numbers_messages_and_marks_recent() -> None:
    v = view(recent_from=4)
    assert v.exists == 5
    assert [v.seq_of(u) for u in (1, 5, 9)] == [1, 5, None]
    assert v.recent == {4, 5}
    assert v.flags_of(4) == ("\\Recent",)
    v.show_recent = False  # IMAP4rev2 sessions never see \Recent
    assert v.flags_of(4) == ()


def test_resolve_message_numbers_and_uids() -> None:
    v = view()
    assert v.resolve(seqset((2, 3), (5, None)), uid=False) == [2, 3, 5]
    assert v.resolve(seqset((4, 1000)), uid=True) == [4, 5]
    assert v.resolve(seqset((900, None)), uid=True) == [5]  # "n:*" names the last UID
    assert v.valid_seqset(seqset((1, None)))
    assert not v.valid_seqset(seqset((6, 6)))
    assert not v.valid_seqset(seqset((0, 2)))


def test_new_messages_give_one_exists() -> None:
    v = view()
    out = v.apply(changes((msg(6), msg(7))), allow_expunge=True)
    assert out == [b"* 7 EXISTS\r\n"]
    assert v.uids[-2:] == [6, 7]
    assert v.apply(changes((msg(6), msg(7))), allow_expunge=True) == []


def test_flag_change_by_another_session_gives_fetch() -> None:
    v = view()
    out = v.apply(changes((msg(2, ("\\Seen",), 25),)), allow_expunge=True)
    assert out == [b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n"]
    v.condstore = True
    out = v.apply(changes((msg(2, ("\\Seen", "\\Flagged"), 26),)), allow_expunge=True)
    assert out == [b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Flagged) MODSEQ (26))\r\n"]


def test_own_store_is_not_reported_again() -> None:
    v = view()
    v.set_flags(3, ("\\Deleted",), 40)
    assert v.apply(changes((msg(3, ("\\Deleted",), 40),)), allow_expunge=True) == []


def test_expunge_is_deferred_during_fetch_store_search() -> None:
    """RFC 9051 section 7.5.1: numbers do not shift while a FETCH/STORE/SEARCH runs."""
    v = view()
    assert v.apply(changes(vanished=(2, 4)), allow_expunge=False) == []
    assert v.exists == 5
    assert v.seq_of(4) == 4
    assert v.pending == {2, 4}
    # Later (e.g. NOOP) they are reported highest first, so each number is still valid.
    out = v.apply(changes(), allow_expunge=True)
    assert out == [b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert v.uids == [1, 3, 5]
    assert v.pending == set()


def test_exists_never_shrinks_with_pending_expunges() -> None:
    v = view()
    out = v.apply(changes((msg(6),), vanished=(1,)), allow_expunge=False)
    assert out == [b"* 6 EXISTS\r\n"]
    out = v.apply(changes(), allow_expunge=True)
    assert out == [b"* 1 EXPUNGE\r\n"]
    assert v.exists == 5


def test_qresync_reports_vanished() -> None:
    v = view()
    v.qresync = True
    out = v.apply(changes(vanished=(2, 3, 5)), allow_expunge=True)
    assert out == [b"* VANISHED 2:3,5\r\n"]
    assert v.uids == [1, 4]


def test_new_and_vanished_in_one_batch_is_not_shown() -> None:
    v = view()
    assert v.apply(changes((msg(6),), vanished=(6,)), allow_expunge=True) == []
    assert v.exists == 5


def test_uidvalidity_change_invalidates() -> None:
    v = view()
    assert v.apply(changes(uidvalidity=99), allow_expunge=True) == []
    assert v.invalid


def test_own_expunge_reports_immediately() -> None:
    v = view()
    assert v.expunge_now([1, 5]) == [b"* 5 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n"]
    assert v.uids == [2, 3, 4]
    assert v.seq_of(4) == 3
    assert v.sizes.get(1) is None


def test_resync_sends_vanished_earlier_and_changed_flags() -> None:
    v = view()
    v.qresync = v.condstore = True
    ch = changes((msg(3, ("\\Seen",), 25),), vanished=(8, 9, 40))
    known = seqset((1, 10))
    out = v.resync(ch, known)
    assert out == [
        b"* VANISHED (EARLIER) 8:9\r\n",
        b"* 3 FETCH (UID 3 FLAGS () MODSEQ (10))\r\n",
    ]


# ---------------------------------------------------------------- keywords announced first


def test_open_knows_every_keyword_in_use() -> None:
    v = SelectedView.open(INFO, [msg(1, ("\\Seen", "$Work")), msg(2, ("$work", "NIL"))],
                          read_only=False, recent_from=100)
    flags_line, permanent = v.flag_lines()
    assert flags_line == (b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work"
                          b" NIL)\r\n")
    assert permanent.startswith(b"* OK [PERMANENTFLAGS (\\Answered")
    assert b"NIL \\*)]" in permanent
    ro = SelectedView.open(INFO, [msg(1, ("$Work",))], read_only=True, recent_from=100)
    assert ro.flag_lines()[1] == b"* OK [PERMANENTFLAGS ()] Flags permitted\r\n"


def test_a_new_keyword_is_announced_once_before_its_fetch() -> None:
    v = view()
    out = v.apply(changes((msg(2, ("$Foo",), modseq=21),)), allow_expunge=True)
    assert [line[:12] for line in out] == [b"* FLAGS (\\An", b"* OK [PERMAN", b"* 2 FETCH (U"]
    assert b" $Foo)" in out[0]
    assert b" $Foo \\*)]" in out[1]
    # Known now (in any case): the next change with it is a FETCH alone.
    out = v.apply(changes((msg(3, ("$FOO",), modseq=22),)), allow_expunge=True)
    assert out == [b"* 3 FETCH (UID 3 FLAGS ($FOO))\r\n"]
    assert v.announce(["\\Seen", "$foo"]) == []


def test_a_new_message_with_a_keyword_is_announced_before_exists() -> None:
    v = view()
    out = v.apply(changes((msg(6, ("NIL", "\\Seen")),)), allow_expunge=True)
    assert out[0].startswith(b"* FLAGS (")
    assert b" NIL)" in out[0]
    assert out[1].startswith(b"* OK [PERMANENTFLAGS")
    assert out[2:] == [b"* 6 EXISTS\r\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.lists(st.sampled_from(
    ["\\Seen", "\\Deleted", "$A", "$a", "$B", "NIL", "Junk", "$Label1"]), max_size=4)),
    max_size=12))
def test_no_fetch_ever_shows_an_unannounced_keyword(
        steps: list[tuple[int, list[str]]]) -> None:
    """Whatever flags other sessions set on old and new messages, each keyword a FETCH line
    shows was in a FLAGS line before it (or in the FLAGS of the SELECT)."""
    v = view()
    told = {k.lower() for k in v.keywords}
    modseq = 20
    for uid, flags in steps:
        modseq += 1
        for line in v.apply(changes((msg(uid, tuple(flags), modseq=modseq),)),
                            allow_expunge=True):
            if line.startswith(b"* FLAGS ("):
                told |= {f.lower() for f in line[9:-3].decode().split()}
            elif b" FETCH " in line:
                shown = line.split(b"FLAGS (", 1)[1].split(b")", 1)[0].decode().split()
                assert {f.lower() for f in shown if not f.startswith("\\")} <= told, line
