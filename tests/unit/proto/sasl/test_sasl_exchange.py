"""SaslExchange and LineSasl: the line-protocol SASL glue shared by SMTP, POP3 and IMAP
(RFC 4954 section 4, RFC 5034 section 4, RFC 9051 section 6.2.2, RFC 4959)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.secret import Secret
from mailstead.proto.sasl import (
    AuthArgument,
    Authenticated,
    Cancelled,
    Continue,
    LineSasl,
    Malformed,
    Outcome,
    Rejected,
    SaslExchange,
    SaslServer,
    Unsupported,
    split_auth_argument,
)

USERNAME_B64 = b"VXNlcm5hbWU6"  # base64("Username:"), draft-murchison-sasl-login section 2
PASSWORD_B64 = b"UGFzc3dvcmQ6"  # base64("Password:")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# ------------------------------------------------------------------ split_auth_argument


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("PLAIN", AuthArgument("PLAIN", None)),
        ("plain AGEAYg==", AuthArgument("plain", "AGEAYg==")),
        ("LOGIN =", AuthArgument("LOGIN", "=")),
        ("X *", AuthArgument("X", "*")),  # the exchange, not the splitter, judges the data
    ],
)
def test_split_auth_argument(arg: str, expected: AuthArgument) -> None:
    assert split_auth_argument(arg) == expected


@pytest.mark.parametrize(
    "arg", ["", " ", " PLAIN", "PLAIN ", "PLAIN  AGE=", "PLAIN a b"]
)
def test_split_auth_argument_rejects_bad_grammar(arg: str) -> None:
    # RFC 4954 section 4: "AUTH" SP sasl-mech [SP initial-response], single spaces only.
    assert split_auth_argument(arg) is None


# ------------------------------------------------------------------ start


def test_plain_with_initial_response() -> None:
    ex = SaslExchange()
    assert ex.start("PLAIN", "AGFsaWNlAHB3") == Authenticated("PLAIN", "", "alice", Secret("pw"))
    assert not ex.in_progress


def test_initial_response_may_be_bytes_and_mechanism_any_case() -> None:
    ex = SaslExchange()
    outcome = ex.start("pLaIn", b64(b"admin\0alice\0pw"))
    assert outcome == Authenticated("PLAIN", "admin", "alice", Secret("pw"))


def test_plain_without_initial_response_gets_an_empty_challenge() -> None:
    ex = SaslExchange()
    # RFC 4616 section 2: the server sends an empty challenge, "334 " / "+ " on the wire.
    assert ex.start("PLAIN", None) == Continue(b"")
    assert ex.in_progress
    assert ex.respond(b64("zé\0jörg\0pässword".encode())) == Authenticated(
        "PLAIN", "zé", "jörg", Secret("pässword")
    )
    assert not ex.in_progress


def test_equals_sign_is_the_empty_initial_response() -> None:
    ex = SaslExchange()
    # PLAIN: an empty message has no NULs, so the mechanism rejects it.
    assert ex.start("PLAIN", "=") == Rejected(
        "PLAIN message must contain exactly two NUL separators"
    )
    # LOGIN defines no initial response: an empty one asks for the username.
    assert ex.start("LOGIN", "=") == Continue(USERNAME_B64)
    assert ex.start("LOGIN", b"=") == Continue(USERNAME_B64)


def test_login_dialogue() -> None:
    ex = SaslExchange()
    assert ex.start("LOGIN", None) == Continue(USERNAME_B64)
    assert ex.respond(b64(b"alice")) == Continue(PASSWORD_B64)
    assert ex.respond(b64(b"pw")) == Authenticated("LOGIN", "", "alice", Secret("pw"))
    assert ex.start("LOGIN", b64(b"alice").decode()) == Continue(PASSWORD_B64)
    assert ex.respond(b64(b"")) == Rejected("empty password")


@pytest.mark.parametrize(
    "mechanism", ["CRAM-MD5", "", "GSSAPI", "pla\u0131n", "PLAIN\x00", "PLAIN\tx"]
)
def test_unsupported_mechanisms(mechanism: str) -> None:
    ex = SaslExchange()
    assert ex.start(mechanism, "AGEAYg==") == Unsupported(mechanism)
    assert not ex.in_progress


def test_unsupported_name_is_cut_for_logs_and_restricted_offer() -> None:
    assert SaslExchange().start("X" * 5000, None) == Unsupported("X" * 20)
    only_plain = SaslExchange(("plain", "GSSAPI"))
    assert only_plain.mechanisms == ("PLAIN",)
    assert only_plain.start("LOGIN", None) == Unsupported("LOGIN")


@pytest.mark.parametrize(
    "initial", ["AGE", "AG E=", "*", "AGEAYg==\r", "AGEAYg", "AGEAYg==\u00e9", b"\xff\xfe=="]
)
def test_bad_base64_initial_response_is_malformed(initial: str | bytes) -> None:
    ex = SaslExchange()
    assert ex.start("PLAIN", initial) == Malformed("invalid base64 in the initial response")
    assert not ex.in_progress


def test_mechanism_is_checked_before_the_initial_response() -> None:
    # RFC 4954 section 4: an unknown mechanism is 504 whatever follows it.
    assert SaslExchange().start("CRAM-MD5", "!!!") == Unsupported("CRAM-MD5")


def test_a_new_start_abandons_the_exchange_in_progress() -> None:
    ex = SaslExchange()
    assert ex.start("LOGIN", b64(b"mallory").decode()) == Continue(PASSWORD_B64)
    assert ex.start("PLAIN", None) == Continue(b"")
    # The LOGIN username is gone: this line is read as a PLAIN message.
    assert ex.respond(b64(b"pw")) == Rejected(
        "PLAIN message must contain exactly two NUL separators"
    )


# ------------------------------------------------------------------ respond


def test_star_cancels() -> None:
    ex = SaslExchange()
    ex.start("LOGIN", None)
    assert ex.respond(b"*") == Cancelled()
    assert not ex.in_progress


@pytest.mark.parametrize("line", [b" *", b"* ", b"**", b"%%%", b"AGE", b"AGEAYg== ", b"\xff"])
def test_anything_else_that_is_not_base64_is_malformed_and_ends_the_exchange(line: bytes) -> None:
    ex = SaslExchange()
    ex.start("PLAIN", None)
    assert ex.respond(line) == Malformed("invalid base64 in the response")
    assert not ex.in_progress
    # The exchange is over: the next line is not taken as a PLAIN message.
    assert ex.respond(b64(b"\0alice\0pw")) == Rejected("no authentication exchange in progress")


def test_response_without_an_exchange_is_rejected() -> None:
    assert SaslExchange().respond(b64(b"\0alice\0pw")) == Rejected(
        "no authentication exchange in progress"
    )


def test_cancel_from_the_protocol() -> None:
    ex = SaslExchange()
    ex.start("PLAIN", None)
    ex.cancel()
    assert not ex.in_progress


def test_wrap_shares_the_servers_state() -> None:
    server = SaslServer(("PLAIN",))
    assert SaslExchange.wrap(server).start("PLAIN", None) == Continue(b"")
    assert server.in_progress
    again = SaslExchange.wrap(server)
    assert again.mechanisms == ("PLAIN",)
    assert again.respond(b64(b"\0alice\0pw")) == Authenticated(
        "PLAIN", "", "alice", Secret("pw")
    )
    assert not server.in_progress


# ------------------------------------------------------------------ Authenticated


@pytest.mark.parametrize(
    ("authzid", "username", "expected"),
    [("", "alice", True), ("Alice", "alice", True), ("bob", "alice", False)],
)
def test_acts_as_self(authzid: str, username: str, expected: bool) -> None:
    assert Authenticated("PLAIN", authzid, username, Secret("x")).acts_as_self is expected


def test_password_never_in_repr() -> None:
    outcome = SaslExchange().start("PLAIN", b64(b"\0alice\0hunter2"))
    assert isinstance(outcome, Authenticated)
    assert "hunter2" not in repr(outcome)
    assert outcome.password.reveal() == "hunter2"


# ------------------------------------------------------------------ LineSasl


class _Recorder(LineSasl[str]):
    """A protocol whose replies name the outcome, to watch the routing."""

    def reply(self, outcome: Outcome) -> str:
        return type(outcome).__name__

    def syntax_error(self) -> str:
        return "syntax"


def test_line_sasl_routes_grammar_and_outcomes() -> None:
    proto = _Recorder(("PLAIN", "LOGIN"))
    assert proto.mechanisms == ("PLAIN", "LOGIN")
    assert proto.start("LOGIN ") == "syntax"
    assert proto.start("") == "syntax"
    assert proto.start("CRAM-MD5") == "Unsupported"
    assert proto.start("PLAIN !!!") == "Malformed"
    assert proto.start("LOGIN") == "Continue"
    assert proto.respond(b"*") == "Cancelled"
    assert proto.start("PLAIN") == "Continue"
    proto.cancel()
    assert proto.respond(b64(b"\0a\0b")) == "Rejected"
    assert proto.start("PLAIN " + b64(b"\0a\0b").decode()) == "Done"


# ------------------------------------------------------------------ hostile input


@given(
    mechanism=st.text(max_size=30),
    initial=st.none() | st.text(max_size=60) | st.binary(max_size=60),
    lines=st.lists(st.binary(max_size=60), max_size=4),
)
def test_never_raises_and_always_ends_cleanly(
    mechanism: str, initial: str | bytes | None, lines: list[bytes]
) -> None:
    ex = SaslExchange()
    outcome = ex.start(mechanism, initial)
    for line in [*lines, b"*"]:
        assert isinstance(
            outcome, Continue | Authenticated | Cancelled | Malformed | Unsupported | Rejected
        )
        # Only a challenge keeps the exchange open.
        assert ex.in_progress is isinstance(outcome, Continue)
        if isinstance(outcome, Continue):
            base64.b64decode(outcome.challenge, validate=True)
        outcome = ex.respond(line)
    assert not ex.in_progress


# RFC 4648 section 4 with padding and nothing else: no whitespace, no line breaks.
STRICT_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@given(
    st.binary(max_size=80)
    | st.text("ABCDEFGHabcdefgh012+/= \t\r\n", max_size=40).map(str.encode)
)
def test_malformed_exactly_when_not_strict_base64(line: bytes) -> None:
    ex = SaslExchange()
    ex.start("PLAIN", None)
    outcome = ex.respond(line)
    if line == b"*":
        assert outcome == Cancelled()
    else:
        assert isinstance(outcome, Malformed) is (STRICT_BASE64.fullmatch(line) is None)
