"""SASL PLAIN (RFC 4616) and LOGIN, sans-I/O."""

from __future__ import annotations

import pytest

from mailstead.core.secret import Secret
from mailstead.proto.sasl import (
    Challenge,
    Done,
    Failed,
    SaslDecodeError,
    SaslServer,
    decode_response,
    encode_challenge,
    parse_plain,
)


def test_plain_initial_response() -> None:
    server = SaslServer()
    assert server.start("plain", b"\0alice\0pw") == Done("PLAIN", "", "alice", Secret("pw"))
    assert not server.in_progress


def test_plain_challenge_then_response() -> None:
    server = SaslServer()
    assert server.start("PLAIN", None) == Challenge(b"")
    assert server.in_progress
    assert server.step("zé\0jörg\0pässword".encode()) == Done(
        "PLAIN", "zé", "jörg", Secret("pässword"))


@pytest.mark.parametrize(
    "message",
    [b"", b"\0", b"\0\0", b"a\0b", b"\0alice\0", b"\0\0pw", b"\0a\0b\0c", b"\0a\xff\0pw",
     b"\0" + b"u" * 256 + b"\0pw", b"\0u\0" + b"p" * 256],
)
def test_plain_malformed(message: bytes) -> None:
    result = parse_plain(message)
    assert isinstance(result, Failed)
    assert result.kind == "malformed"


def test_plain_limits_are_inclusive() -> None:
    assert isinstance(parse_plain(b"z" * 255 + b"\0" + b"u" * 255 + b"\0" + b"p" * 255), Done)


def test_login() -> None:
    server = SaslServer()
    assert server.start("LOGIN", None) == Challenge(b"Username:")
    assert server.step(b"alice") == Challenge(b"Password:")
    assert server.step(b"pw") == Done("LOGIN", "", "alice", Secret("pw"))


def test_login_initial_response_and_failures() -> None:
    server = SaslServer()
    assert server.start("LOGIN", b"alice") == Challenge(b"Password:")
    assert isinstance(server.step(b""), Failed)
    assert server.start("LOGIN", b"") == Challenge(b"Username:")
    assert isinstance(server.step(b"\xff"), Failed)
    assert isinstance(server.step(b"x"), Failed)  # nothing in progress any more


def test_unsupported_and_restricted_mechanisms() -> None:
    assert SaslServer().start("CRAM-MD5", None) == Failed(
        "mechanism 'CRAM-MD5' not supported", "unsupported")
    only_plain = SaslServer(("PLAIN", "GSSAPI"))
    assert only_plain.mechanisms == ("PLAIN",)
    assert isinstance(only_plain.start("LOGIN", None), Failed)


def test_cancel() -> None:
    server = SaslServer()
    server.start("LOGIN", None)
    server.cancel()
    assert not server.in_progress


def test_password_never_in_repr() -> None:
    done = parse_plain(b"\0alice\0hunter2")
    assert "hunter2" not in repr(done)


def test_base64_helpers() -> None:
    assert decode_response(b"AGEAYg==") == b"\0a\0b"
    assert decode_response(b"") == b""
    assert encode_challenge(b"Username:") == b"VXNlcm5hbWU6"
    for bad in [b"AGE", b"AG E=", b"AGE==", b"*", b"=", b"\xff\xff\xff\xff"]:
        with pytest.raises(SaslDecodeError):
            decode_response(bad)
