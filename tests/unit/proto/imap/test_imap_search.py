"""SEARCH keys one by one over a small mailbox, and the SEARCH/ESEARCH responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.message import summarize
from mailstead.proto.imap.ast import SearchKey, SeqRange, SequenceSet
from mailstead.proto.imap.search import (
    SearchError,
    esearch_modseq,
    esearch_response,
    evaluate,
    highest_modseq,
    search_response,
    text_queries,
    uses_modseq,
)
from mailstead.storage.interfaces import MessageInfo

DAY = 86400.0
T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC).timestamp()


def message(uid: int, headers: str, *, flags: tuple[str, ...] = (), size: int = 100,
            modseq: int = 1, when: float = T0) -> MessageInfo:
    s = summarize(headers.encode() + b"\r\n\r\nbody")
    return MessageInfo(uid, 1, uid, modseq, flags, when, size, "00", s.envelope, s.bodystructure)


MAILBOX = [
    message(3, "From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: Hello there\r\n"
            "Date: Sat, 9 Mar 2024 23:30:00 -0800", flags=("\\Seen", "\\Answered"),
            size=500, modseq=10, when=T0 - DAY),
    message(5, "From: =?utf-8?q?J=C3=B6rg?= <joerg@x.test>\r\nCc: carol@c.test\r\n"
            "Subject: =?utf-8?b?w5xiZXIgZGVu?=\r\nDate: Sun, 10 Mar 2024 08:00:00 +0000",
            flags=("\\Flagged", "$Work"), size=2000, modseq=20),
    message(9, "From: dave@d.test\r\nBcc: eve@e.test\r\nSubject: report",
            flags=("\\Deleted", "\\Draft"), size=100, modseq=30, when=T0 + DAY),
]


def run(key: SearchKey, **kwargs: Any) -> list[int]:
    return evaluate(key, MAILBOX, **kwargs)


def k(name: str, **kwargs: Any) -> SearchKey:
    return SearchKey(name, **kwargs)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (k("ALL"), [1, 2, 3]),
        (k("SEEN"), [1]),
        (k("UNSEEN"), [2, 3]),
        (k("ANSWERED"), [1]),
        (k("UNANSWERED"), [2, 3]),
        (k("FLAGGED"), [2]),
        (k("UNFLAGGED"), [1, 3]),
        (k("DELETED"), [3]),
        (k("UNDELETED"), [1, 2]),
        (k("DRAFT"), [3]),
        (k("UNDRAFT"), [1, 2]),
        (k("KEYWORD", text="$work"), [2]),
        (k("UNKEYWORD", text="$Work"), [1, 3]),
        (k("LARGER", number=500), [2]),
        (k("SMALLER", number=500), [3]),
        (k("MODSEQ", number=20), [2, 3]),
    ],
)
def test_flag_size_and_modseq_keys(key: SearchKey, expected: list[int]) -> None:
    assert run(key) == expected


def test_recent_new_old() -> None:
    assert run(k("RECENT"), recent={5, 9}) == [2, 3]
    assert run(k("NEW"), recent={3, 5}) == [2]  # recent and unseen
    assert run(k("OLD"), recent={5}) == [1, 3]
    assert run(k("RECENT")) == []


def test_internal_date_keys_use_the_server_zone() -> None:
    on = datetime(2024, 3, 10)
    assert run(k("ON", date=on)) == [2]
    assert run(k("BEFORE", date=on)) == [1]
    assert run(k("SINCE", date=on)) == [2, 3]
    # At UTC-13 every message arrived the day before: message 2 (12:00 UTC on the 10th)
    # arrived at 23:00 on the 9th.
    far_west = timezone(timedelta(hours=-13))
    assert run(k("ON", date=datetime(2024, 3, 9)), tz=far_west) == [2]


def test_sent_date_keys_use_the_header_date_as_written() -> None:
    # Message 1 says 23:30 on the 9th at -0800 (the 10th in UTC): it was sent on the 9th.
    assert run(k("SENTON", date=datetime(2024, 3, 9))) == [1]
    assert run(k("SENTBEFORE", date=datetime(2024, 3, 10))) == [1]
    # Message 3 has no Date: its internal date (the 11th) stands in.
    assert run(k("SENTSINCE", date=datetime(2024, 3, 10))) == [2, 3]
    assert run(k("SENTON", date=datetime(2024, 3, 11))) == [3]


def test_header_keys_match_decoded_substrings_case_insensitively() -> None:
    assert run(k("FROM", text="ALICE@A")) == [1]
    assert run(k("FROM", text="jörg")) == [2]
    assert run(k("FROM", text="=?utf-8?q?J")) == [2]  # the raw form matches too
    assert run(k("TO", text="bob")) == [1]
    assert run(k("CC", text="carol@c.test")) == [2]
    assert run(k("BCC", text="EVE")) == [3]
    assert run(k("SUBJECT", text="über")) == [2]
    assert run(k("SUBJECT", text="hello THERE")) == [1]
    assert run(k("SUBJECT", text="")) == [1, 2, 3]
    assert run(k("FROM", text="nobody")) == []


def test_full_text_keys_use_the_callers_results() -> None:
    key = k("OR", children=(k("BODY", text="invoice"),
                            k("HEADER", header="List-Id", text="dev")))
    assert text_queries(key) == {("body", "invoice"), ("header:LIST-ID", "dev")}
    texts = {("body", "invoice"): {9}, ("header:LIST-ID", "dev"): {3}}
    assert run(key, text_results=texts) == [1, 3]
    assert run(k("TEXT", text="x"), text_results={("text", "x"): set()}) == []
    with pytest.raises(SearchError, match="no full-text result"):
        run(k("TEXT", text="y"), text_results=texts)


def test_uid_and_sequence_sets() -> None:
    star = SequenceSet((SeqRange(6, None),))
    assert run(k("UID", seqset=star)) == [3]
    assert run(k("UID", seqset=SequenceSet((SeqRange(4, 5), SeqRange(1, 3))))) == [1, 2]
    assert run(k("UID", seqset=star), largest_uid=20) == [3]  # 6:20
    assert run(k("SEQSET", seqset=SequenceSet((SeqRange(None, 2),)))) == [2, 3]
    assert run(k("SEQSET", seqset=SequenceSet((SeqRange(1, 1),)))) == [1]
    assert run(k("UID", seqset=SequenceSet(saved=True)), saved={5}) == [2]
    assert run(k("SEQSET", seqset=SequenceSet(saved=True)), saved={3, 9}) == [1, 3]
    assert evaluate(k("UID", seqset=star), []) == []


def test_boolean_keys() -> None:
    assert run(k("NOT", children=(k("SEEN"),))) == [2, 3]
    assert run(k("OR", children=(k("SEEN"), k("DRAFT")))) == [1, 3]
    assert run(k("AND", children=(k("UNSEEN"), k("SMALLER", number=1000)))) == [3]
    assert run(k("AND", children=())) == [1, 2, 3]


def test_malformed_keys_are_refused() -> None:
    deep = k("ALL")
    for _ in range(300):
        deep = k("NOT", children=(deep,))
    with pytest.raises(SearchError, match="deeply"):
        run(deep)
    with pytest.raises(SearchError, match="unknown"):
        run(k("FUZZY"))
    with pytest.raises(SearchError):
        run(k("OR", children=(k("ALL"),)))
    with pytest.raises(SearchError):
        run(k("LARGER"))
    with pytest.raises(SearchError):
        run(k("BEFORE"))


def test_modseq_helpers() -> None:
    key = k("AND", children=(k("SEEN"), k("MODSEQ", number=5)))
    assert uses_modseq(key)
    assert not uses_modseq(k("SEEN"))
    assert highest_modseq(MAILBOX, [1, 3]) == 30
    assert highest_modseq(MAILBOX, []) is None


def test_search_response() -> None:
    assert search_response([2, 3, 6]) == b"* SEARCH 2 3 6\r\n"
    assert search_response([]) == b"* SEARCH\r\n"
    assert search_response([2, 5], modseq=917162500) == b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"
    assert search_response([], modseq=9) == b"* SEARCH\r\n"


def test_esearch_response() -> None:
    found = [2, 10, 11]
    assert esearch_response(found, ["MIN", "COUNT"], tag="A282", uid=False) == (
        b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'
    )
    assert esearch_response(found, [], tag="A283", uid=True) == (
        b'* ESEARCH (TAG "A283") UID ALL 2,10:11\r\n'
    )
    assert esearch_response([], ["MIN", "MAX", "ALL", "COUNT"], tag="A", uid=False) == (
        b'* ESEARCH (TAG "A") COUNT 0\r\n'
    )
    assert esearch_response(
        found, ["max", "MAX", "SAVE"], tag=None, uid=False, modseqs=[9, 7, 5]
    ) == b"* ESEARCH MAX 11 MODSEQ 5\r\n"
    assert esearch_response([], ["MIN"], tag=None, uid=False, modseqs=[]) == b"* ESEARCH\r\n"


def test_esearch_modseq_is_that_of_what_is_returned() -> None:
    # RFC 4731 section 3.2: MIN or MAX alone give the MODSEQ of that message; MIN and MAX
    # the higher of the two; ALL or COUNT (or no option) the highest of all matches.
    found, modseqs = [2, 10, 11], [4, 9, 6]
    assert esearch_modseq(found, modseqs, ["MIN"]) == 4
    assert esearch_modseq(found, modseqs, ["MAX"]) == 6
    assert esearch_modseq(found, modseqs, ["MIN", "MAX"]) == 6
    assert esearch_modseq(found, modseqs, ["MIN", "COUNT"]) == 9
    assert esearch_modseq(found, modseqs, ["MAX", "ALL"]) == 9
    assert esearch_modseq(found, modseqs, ["COUNT"]) == 9
    assert esearch_modseq(found, modseqs, ["ALL"]) == 9
    assert esearch_modseq([], [], ["MIN"]) is None
    with pytest.raises(ValueError, match="one MODSEQ per matched message"):
        esearch_modseq(found, [1], ["MIN"])
    assert esearch_response(found, ["MIN"], tag="t", uid=True, modseqs=modseqs) == (
        b'* ESEARCH (TAG "t") UID MIN 2 MODSEQ 4\r\n'
    )


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 2**63 - 1)), min_size=1,
                unique_by=lambda t: t[0]),
       st.lists(st.sampled_from(["MIN", "MAX", "ALL", "COUNT"]), unique=True))
def test_esearch_modseq_picks_a_returned_message(
    pairs: list[tuple[int, int]], options: list[str]
) -> None:
    pairs.sort()
    numbers, modseqs = [n for n, _ in pairs], [m for _, m in pairs]
    got = esearch_modseq(numbers, modseqs, options)
    if not {"MIN", "MAX"} & set(options) or {"ALL", "COUNT"} & set(options):
        assert got == max(modseqs)
    else:
        returned = ([modseqs[0]] if "MIN" in options else []) + (
            [modseqs[-1]] if "MAX" in options else [])
        assert got == max(returned)
