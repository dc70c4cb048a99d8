"""The pure selected-mailbox view: numbering, pending expunges, EXISTS/EXPUNGE/VANISHED/FETCH."""

from __future__ import annotations

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
