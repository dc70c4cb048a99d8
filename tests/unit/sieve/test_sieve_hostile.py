"""Hostile scripts and messages: compiling raises only SieveError, running never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstead.sieve.compile import compile_script
from mailstead.sieve.interpreter import Envelope, Interpreter
from mailstead.sieve.message import MessageView
from mailstead.sieve.parser import SieveError

_TOKENS = [
    "require", '["fileinto","variables","imap4flags","body","envelope","vacation","reject",'
    '"copy","mailbox"]', ";", "{", "}", "(", ")", "[", "]", ",", "if", "elsif", "else",
    "header", "address", "envelope", "body", "exists", "size", "not", "anyof", "allof",
    "true", "false", ":is", ":contains", ":matches", ":over", ":under", ":localpart",
    ":domain", ":all", ":comparator", '"i;octet"', ":text", ":raw", ":content", "fileinto",
    "keep", "discard", "stop", "redirect", "reject", "vacation", ":days", ":subject",
    ":flags", ":create", ":copy", "setflag", "addflag", "removeflag", "hasflag", "set",
    ":lower", ":length", '"*"', '"${1}"', '"${x}"', '"x"', '"a@b.test"', '"Subject"',
    '"from"', '"to"', "10", "1K", "text:\r\nhi\r\n.\r\n", "# c\r\n", "/* c */", '"\\\\"',
]
MESSAGE = (b"From: a@b.test\r\nTo: c@d.test\r\nSubject: [x] *y* ?\r\n"
           b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n--z--\r\n")


def _check(text: bytes) -> None:
    try:
        script = compile_script(text)
    except SieveError:
        return
    outcome = Interpreter().run(script, MessageView(MESSAGE), Envelope("a@b.test", "c@d.test"))
    assert isinstance(outcome.actions, tuple)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TOKENS), max_size=60))
def test_token_soup(tokens: list[str]) -> None:
    _check(" ".join(tokens).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_hostile_messages(data: bytes) -> None:
    script = compile_script(
        b'require ["body", "variables", "fileinto"];'
        b'if anyof (header :matches "subject" "*", address :domain "from" "x",'
        b' body :text :contains "a", exists "to") { fileinto "${1}x"; }')
    outcome = Interpreter().run(script, MessageView(data), Envelope("", "c@d.test"))
    assert outcome.actions


def test_huge_values_are_bounded() -> None:
    script = compile_script(
        b'require "variables"; set "a" "0123456789";'
        + b'set "a" "${a}${a}${a}${a}${a}${a}${a}${a}";' * 12 + b'if string :is "${a}" "" {}'
    )
    outcome = Interpreter().run(script, MessageView(MESSAGE), Envelope("", "c@d.test"))
    assert outcome.error is None
