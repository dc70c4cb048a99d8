"""RFC 5256: base subjects, SORT criteria, ORDEREDSUBJECT and REFERENCES threading."""

from __future__ import annotations

import pytest

from mailstead.core.message import summarize
from mailstead.proto.imap.sort import (
    base_subject,
    decode_header,
    parse_criteria,
    sent_date,
    sort_messages,
)
from mailstead.proto.imap.thread import (
    ThreadNode,
    ordered_subject,
    references,
    render_threads,
    thread,
    thread_response,
)
from mailstead.storage.interfaces import MessageInfo


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "Hello", False),
        ("Re: Hello", "Hello", True),
        ("RE: re: Fwd: Hello", "Hello", True),
        ("Fw: Hello", "Hello", True),
        ("Re[2]: Hello", "Hello", True),
        ("Re [2] : Hello", "Hello", True),
        ("[list] Re: Hello", "Hello", True),
        ("[list] Hello", "Hello", False),
        ("[list]", "[list]", False),  # a blob that would leave nothing stays
        ("[a][b] [c]", "[c]", False),
        ("Hello (fwd)", "Hello", True),
        ("Hello (FWD) (fwd)  ", "Hello", True),
        ("[Fwd: Hello]", "Hello", True),
        ("[fwd: Re: [list] Hello (fwd)]", "Hello", True),
        ("  Re:   Hello\t world  ", "Hello world", True),
        ("Re:", "", True),
        ("", "", False),
        ("Reply to this", "Reply to this", False),
        ("Re Hello", "Re Hello", False),
        ("=?utf-8?q?Re=3A_caf=C3=A9?=", "caf\u00e9", True),
        ("[fwd: incomplete", "[fwd: incomplete", False),
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def test_decode_header() -> None:
    assert decode_header("=?ISO-8859-1?Q?Andr=E9?= Pirard") == "Andr\u00e9 Pirard"
    assert decode_header("=?utf-8?b?w6k=?= =?utf-8?b?w6k=?=") == "\u00e9\u00e9"  # gap dropped
    assert decode_header("=?utf-8*en?q?a_b?=") == "a b"
    assert decode_header("=?x-unknown?q?abc?=") == "=?x-unknown?q?abc?="
    assert decode_header("=?utf-8?b?!!!?=") == ""
    assert decode_header(b"caf\xc3\xa9 \xff".decode("utf-8", "surrogateescape")) == (
        "caf\u00e9 \ufffd"
    )
    assert decode_header(None) == ""


def msg(uid: int, headers: str, *, size: int = 100, when: float = 0.0) -> MessageInfo:
    s = summarize(headers.encode() + b"\r\n\r\n")
    return MessageInfo(uid, 1, uid, 1, (), when, size, "00", s.envelope, s.bodystructure)


SORTABLE = [
    msg(1, "Subject: Re: beta\r\nFrom: zed@z.test\r\nTo: Bob <bob@b.test>\r\n"
        "Date: Mon, 4 Mar 2024 10:00:00 +0000", size=300, when=40),
    msg(2, "Subject: alpha\r\nFrom: Amy <amy@a.test>\r\nCc: x@x.test\r\n"
        "Date: Mon, 4 Mar 2024 09:00:00 -0200", size=100, when=10),
    msg(3, "Subject: [list] Beta\r\nFrom: =?utf-8?q?=C3=89mile?= <m@m.test>\r\n"
        "Date: garbage", size=200, when=30),
    msg(4, "Subject: Alpha (fwd)\r\nTo: carl@c.test", size=200, when=20),
]
ITEMS = [(m.uid, m) for m in SORTABLE]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (("ARRIVAL",), [2, 4, 3, 1]),
        (("REVERSE ARRIVAL",), [1, 3, 4, 2]),
        (("SIZE",), [2, 3, 4, 1]),  # 3 and 4 tie: sequence order
        (("REVERSE SIZE",), [1, 3, 4, 2]),  # ties stay in sequence order
        (("SUBJECT",), [2, 4, 1, 3]),
        (("SUBJECT", "REVERSE ARRIVAL"), [4, 2, 1, 3]),
        (("FROM",), [4, 2, 3, 1]),  # no From sorts as empty
        (("TO",), [2, 3, 1, 4]),
        (("CC",), [1, 3, 4, 2]),
        # message 2 was sent 11:00 UTC, message 1 10:00 UTC; 3 and 4 use internal dates
        (("DATE",), [4, 3, 1, 2]),
        # "" < "AMY" < "ZED@Z.TEST" < "\xc3\x89MILE": non-ASCII octets compare as themselves
        (("DISPLAYFROM",), [4, 2, 1, 3]),
        (("DISPLAYTO",), [2, 3, 1, 4]),
        (("REVERSE", "SIZE", "ARRIVAL"), [1, 4, 3, 2]),
    ],
)
def test_sort(criteria: tuple[str, ...], expected: list[int]) -> None:
    assert sort_messages(ITEMS, criteria) == expected


def test_sort_display_uses_decoded_names() -> None:
    items = [(1, msg(1, "From: =?utf-8?q?Zoe?= <a@a.test>")), (2, msg(2, "From: b@b.test"))]
    assert sort_messages(items, ["DISPLAYFROM"]) == [2, 1]  # "b@b.test" < "ZOE"
    assert sort_messages(items, ["FROM"]) == [1, 2]  # "a" < "b"


def test_sort_criteria_errors() -> None:
    assert parse_criteria(["REVERSE DATE", "SUBJECT"]) == [("DATE", True), ("SUBJECT", False)]
    for bad in (["REVERSE"], [], ["SHOESIZE"], ["DATE REVERSE"]):
        with pytest.raises(ValueError, match="criteri"):
            parse_criteria(bad)


def test_sent_date_falls_back_to_internal_date() -> None:
    assert sent_date({"date": "Thu, 1 Jan 1970 01:00:00 +0100"}, 99.0) == 0.0
    assert sent_date({"date": "99 Foo 99999 99:99"}, 99.0) == 99.0
    assert sent_date({}, 5.0) == 5.0


def node(number: int | None, *children: ThreadNode) -> ThreadNode:
    return ThreadNode(number, list(children))


def test_render_threads_rfc5256_shapes() -> None:
    roots = [node(2), node(3, node(6, node(4, node(23)), node(44, node(7, node(96)))))]
    assert render_threads(roots) == b"(2)(3 6 (4 23)(44 7 96))"
    assert render_threads([node(None, node(1), node(2))]) == b"((1)(2))"
    assert thread_response([]) == b"* THREAD\r\n"
    assert thread_response([node(1, node(2))]) == b"* THREAD (1 2)\r\n"


def test_render_of_a_very_deep_thread_does_not_recurse() -> None:
    root = current = node(1)
    for i in range(2, 20_000):
        child, leaf = node(i), node(-1)
        current.children = [leaf, child]
        current = child
    out = render_threads([root])
    assert out.startswith(b"(1 (-1)(2 (-1)(3 ")
    assert out.count(b"(") == out.count(b")")


def mid(n: int) -> str:
    return f"<m{n}@x.test>"


def threaded(uid: int, subject: str, when: float, message_id: str | None = None,
             in_reply_to: str | None = None) -> MessageInfo:
    headers = f"Subject: {subject}\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000"
    if message_id:
        headers += f"\r\nMessage-ID: {message_id}"
    if in_reply_to:
        headers += f"\r\nIn-Reply-To: {in_reply_to}"
    return msg(uid, headers, when=when)


def test_references_with_missing_parents() -> None:
    # 1 and 3 reply to the same message we do not have (<m0>): a dummy keeps them together.
    # 2 replies to 1 through References only; 4 has no references but the same subject as a
    # thread whose root is a dummy, so it joins it; 5 is unrelated; 6's parent chain names a
    # missing grandparent.
    msgs = [
        threaded(1, "Re: plan", 0, mid(1), mid(0)),
        threaded(2, "Re: plan", 0, mid(2)),
        threaded(3, "Re: plan", 0, mid(3), mid(0)),
        threaded(4, "plan", 0, mid(4)),
        threaded(5, "other", 0, mid(5)),
        threaded(6, "Re: third", 0, mid(6)),
    ]
    refs = {2: f"{mid(0)} {mid(1)}", 6: f"{mid(90)} {mid(91)}"}
    roots = references([(m.uid, m) for m in msgs], refs)
    assert render_threads(roots) == b"((1 2)(3)(4))(5)(6)"


def test_references_subject_merge_prefers_the_original() -> None:
    msgs = [threaded(1, "Re: topic", 0, mid(1)), threaded(2, "topic", 0, mid(2))]
    assert render_threads(references([(m.uid, m) for m in msgs], {})) == b"(2 1)"
    both = [threaded(1, "topic", 0, mid(1)), threaded(2, "topic", 0, mid(2))]
    assert render_threads(references([(m.uid, m) for m in both], {})) == b"((1)(2))"


def test_references_loops_and_duplicates() -> None:
    msgs = [
        threaded(1, "a", 0, mid(1), mid(2)),
        threaded(2, "b", 0, mid(2), mid(1)),  # would close a loop: 1 stays 2's parent
        threaded(3, "c", 0, mid(1)),  # duplicate Message-ID: a thread of its own
        threaded(4, "d", 0, None, mid(3)),  # no Message-ID, replies to a missing message
        threaded(5, "e", 0, mid(5)),
    ]
    refs = {5: f"{mid(5)} {mid(5)}"}  # references itself
    roots = references([(m.uid, m) for m in msgs], refs)
    assert render_threads(roots) == b"(2 1)(3)(4)(5)"


def test_references_sorts_siblings_by_sent_date() -> None:
    def dated(uid: int, hour: int, parent: str | None) -> MessageInfo:
        headers = f"Subject: s{uid}\r\nMessage-ID: {mid(uid)}\r\n" \
                  f"Date: Thu, 1 Jan 1970 {hour:02d}:00:00 +0000"
        if parent:
            headers += f"\r\nIn-Reply-To: {parent}"
        return msg(uid, headers)

    msgs = [dated(1, 1, None), dated(2, 9, mid(1)), dated(3, 5, mid(1)), dated(4, 0, None)]
    assert render_threads(references([(m.uid, m) for m in msgs], {})) == b"(4)(1 (3)(2))"


def test_references_long_chain() -> None:
    msgs = [threaded(i, f"s{i}", i, mid(i), mid(i - 1) if i > 1 else None)
            for i in range(1, 3001)]
    out = render_threads(references([(m.uid, m) for m in msgs], {}))
    assert out == b"(" + b" ".join(b"%d" % i for i in range(1, 3001)) + b")"


def test_ordered_subject() -> None:
    msgs = [
        threaded(1, "Re: b", 50),
        threaded(2, "a", 10),
        threaded(3, "b", 30),
        threaded(4, "Re: a", 20),
        threaded(5, "Re: a", 15),
        threaded(6, "c", 5),
    ]
    items = [(m.uid, m) for m in msgs]
    # Every Date: is the same, so sequence order breaks ties: the "b" thread starts with
    # message 1 and comes first; within "a" the original (2) is the parent.
    roots = ordered_subject(items)
    assert render_threads(roots) == b"(1 3)(2 (4)(5))(6)"
    assert render_threads(thread("orderedsubject", items)) == render_threads(roots)


def test_ordered_subject_by_internal_date() -> None:
    msgs = [msg(i, f"Subject: {s}", when=w) for i, (s, w) in
            enumerate([("Re: b", 50), ("a", 10), ("b", 30), ("Re: a", 20), ("c", 5)], 1)]
    items = [(m.uid, m) for m in msgs]
    assert render_threads(ordered_subject(items)) == b"(5)(2 4)(3 1)"


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        thread("X-MAGIC", [])
