"""ENVELOPE address lists in RFC 3501 section 7.4.2 form: group start ``(NIL NIL name NIL)``,
group end ``(NIL NIL NIL NIL)``, and nothing invented for a display name that has no
address; the submission check still sees such names (``strays``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core.message import STRAY, parse_address_list, parse_header, summarize
from mailstead.delivery.authorship import authors
from mailstead.proto.imap.fetch import render_envelope

Address = list[str | None]
START = [None, None, "group", None]
END: Address = [None, None, None, None]


@pytest.mark.parametrize(("value", "expected"), [
    ("undisclosed-recipients:;", [[None, None, "undisclosed-recipients", None], END]),
    ("group: a@b.test, c@d.test;, e@f.test",
     [START, [None, None, "a", "b.test"], [None, None, "c", "d.test"], END,
      [None, None, "e", "f.test"]]),
    ('"foo" , x@y.test', [[None, None, "x", "y.test"]]),
    ('x@y.test, "foo"', [[None, None, "x", "y.test"]]),
    ('"Foo Bar" <>, x@y.test', [[None, None, "x", "y.test"]]),
    ("just words, x@y.test", [[None, None, "x", "y.test"]]),
    ("(only a comment), x@y.test", [[None, None, "x", "y.test"]]),
    ('group: "foo";', [START, END]),
    ('empty:;, "stray name"', [[None, None, "empty", None], END]),
    ('group: "n" <>, a@b.test; "tail"', [START, [None, None, "a", "b.test"], END]),
    ("group: a@b.test", [START, [None, None, "a", "b.test"], END]),  # unterminated group
    # A single dot-atom is a local part (RFC 822 local mail), not a display name: its
    # missing host is filled so that a NIL host never fakes a group marker.
    ("postmaster", [[None, None, "postmaster", "MISSING_DOMAIN"]]),
    ("first.last, <solo>", [[None, None, "first.last", "MISSING_DOMAIN"],
                            [None, None, "solo", "MISSING_DOMAIN"]]),
    ('"Al" <a@b.test>', [["Al", None, "a", "b.test"]]),
    ('"foo"', []),
])
def test_address_lists(value: str, expected: list[Address]) -> None:
    assert parse_address_list(value) == expected


def test_strays_are_kept_on_request() -> None:
    assert parse_address_list('"foo" , x@y.test, "n" <>', strays=True) == [
        ["foo", None, *STRAY], [None, None, "x", "y.test"], ["n", None, *STRAY]]


def test_envelope_bytes() -> None:
    message = (b"From: Alice <alice@example.test>\r\nTo: undisclosed-recipients:;\r\n"
               b"Cc: group: a@b.test, c@d.test;, e@f.test\r\nBcc: \"foo\" , x@y.test\r\n"
               b"Reply-To: \"only a name\"\r\nSubject: s\r\n\r\nbody\r\n")
    alice = b'(("Alice" NIL "alice" "example.test"))'
    # Reply-To with only a name is "present but empty" (RFC 3501 section 7.4.2): From's.
    assert render_envelope(summarize(message).envelope) == (
        b'(NIL "s" ' + alice + b" " + alice + b" " + alice + b" "
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "group" NIL)(NIL NIL "a" "b.test")(NIL NIL "c" "d.test")(NIL NIL NIL NIL)'
        b'(NIL NIL "e" "f.test")) ((NIL NIL "x" "y.test")) NIL NIL)'
    )


@pytest.mark.parametrize("value", [b'"foo"', b'Alice <alice@a.test>, "ceo@bank.test"',
                                   b'alice@a.test, "n" <>'])
def test_submission_still_refuses_a_name_without_an_address(value: bytes) -> None:
    assert not hasattr(authors(parse_header(b"From: " + value + b"\r\n\r\nx\r\n")), "authors")


_MAILBOX = st.sampled_from(["a@b.test", "Al <al@c.test>", "x.y@z.test (c)", "<r@s.test>"])
_STRAY = st.sampled_from(['"foo"', "two words", '"n" <>', "(comment)", '"q\\"x"'])
_GROUP = st.builds(lambda name, members: f"{name}: {', '.join(members)};",
                   st.sampled_from(["g", "undisclosed-recipients", '"Quoted Group"']),
                   st.lists(st.one_of(_MAILBOX, _STRAY), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_MAILBOX, _STRAY, _GROUP), max_size=6))
def test_groups_balance_and_nothing_is_invented(items: list[str]) -> None:
    out = parse_address_list(", ".join(items))
    depth = 0
    for name, _route, mailbox, host in out:
        assert (mailbox, host) != STRAY
        if host is None:  # a marker: a start carries the name, an end carries nothing
            assert name is None
            depth += 1 if mailbox is not None else -1
            assert depth in (0, 1)
        else:
            assert mailbox
            assert mailbox != "MISSING_MAILBOX"
    assert depth == 0
    # Every mailbox written (each has one "@") comes out once; nothing else does.
    assert sum(1 for a in out if a[3] is not None) == ", ".join(items).count("@")
