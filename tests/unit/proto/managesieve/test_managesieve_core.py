"""The sans-I/O ManageSieve core, byte for byte (RFC 5804)."""

from __future__ import annotations

import base64

import pytest

from mailstead.proto.managesieve import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    ManageSieveCore,
    ManageSieveSettings,
    ScriptRequest,
    StartTLS,
    State,
)
from mailstead.proto.managesieve.framing import Atom, FrameError, Str, parse_command, quote

SETTINGS = ManageSieveSettings(hostname="mx.example.test", extensions=("fileinto", "vacation"),
                               tls_active=True, max_script_size=1000, max_errors=5)
PLAIN = base64.b64encode(b"\0alice@example.test\0secret")


def events(core: ManageSieveCore) -> list[object]:
    out: list[object] = []
    while True:
        ev = core.next_event()
        if ev is NEED_DATA or ev is PAUSED:
            return out
        out.append(ev)


def logged_in() -> ManageSieveCore:
    core = ManageSieveCore(SETTINGS)
    core.data_to_send()
    core.receive_data(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n')
    (cred,) = events(core)
    assert isinstance(cred, Credentials)
    assert cred.username == "alice@example.test"
    assert cred.password.reveal() == "secret"
    core.login_ok("alice@example.test")
    assert core.data_to_send() == b'OK "Logged in"\r\n'
    return core


def test_greeting_lists_capabilities() -> None:
    core = ManageSieveCore(SETTINGS)
    assert core.data_to_send() == (
        b'"IMPLEMENTATION" "Mailstead"\r\n"SASL" "PLAIN"\r\n"SIEVE" "fileinto vacation"\r\n'
        b'"MAXREDIRECTS" "4"\r\n"VERSION" "1.0"\r\nOK "Mailstead ManageSieve ready"\r\n'
    )


def test_starttls_discards_pipelined_input_and_resends_capabilities() -> None:
    core = ManageSieveCore(ManageSieveSettings(
        hostname="h", extensions=("fileinto",), starttls_available=True))
    greeting = core.data_to_send()
    assert b'"SASL" ""\r\n' in greeting
    assert b'"STARTTLS"\r\n' in greeting
    core.receive_data(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n')
    assert events(core) == []
    assert b"ENCRYPT-NEEDED" in core.data_to_send()
    core.receive_data(b'STARTTLS\r\nAUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n')
    assert events(core) == [StartTLS()]
    assert core.data_to_send() == b'OK "Begin TLS negotiation"\r\n'
    core.receive_data(b"LOGOUT\r\n")  # still plaintext: must be dropped
    core.tls_started()
    out = core.data_to_send()
    assert b'"SASL" "PLAIN"' in out
    assert b"STARTTLS" not in out
    assert events(core) == []  # nothing pipelined survived


def test_sasl_continuation_and_cancel() -> None:
    core = ManageSieveCore(SETTINGS)
    core.data_to_send()
    core.receive_data(b'AUTHENTICATE "PLAIN"\r\n')
    assert events(core) == []
    assert core.data_to_send() == b'""\r\n'
    core.receive_data(b'"*"\r\n')
    assert events(core) == []
    assert core.data_to_send() == b'NO "Authentication cancelled"\r\n'
    core.receive_data(b'AUTHENTICATE "PLAIN"\r\n{%d+}\r\n' % len(PLAIN) + PLAIN + b"\r\n")
    (cred,) = events(core)
    assert isinstance(cred, Credentials)
    core.login_failed()
    assert core.data_to_send().startswith(b"OK") is False


def test_script_commands_become_requests() -> None:
    core = logged_in()
    script = b'require "fileinto";\r\nfileinto "x";\r\n'
    core.receive_data(b'PUTSCRIPT "main" {%d+}\r\n' % len(script) + script + b"\r\n")
    assert events(core) == [ScriptRequest("PUTSCRIPT", ("main", script.decode()))]
    assert core.next_event() is PAUSED
    core.ok("Putscript completed")
    core.receive_data(b"LISTSCRIPTS\r\n")
    assert events(core) == [ScriptRequest("LISTSCRIPTS", ())]
    core.script_list([("main", True), ('we"ird', False)])
    assert core.data_to_send() == (b'OK "Putscript completed"\r\n"main" ACTIVE\r\n'
                                   b'"we\\"ird"\r\nOK "Listscripts completed"\r\n')
    core.receive_data(b'GETSCRIPT "main"\r\n')
    assert events(core) == [ScriptRequest("GETSCRIPT", ("main",))]
    core.script("keep;")
    assert core.data_to_send() == b'{5}\r\nkeep;\r\nOK "Getscript completed"\r\n'
    core.receive_data(b'SETACTIVE ""\r\nRENAMESCRIPT "a" "b"\r\n')
    assert events(core) == [ScriptRequest("SETACTIVE", ("",))]
    core.no("nope", "NONEXISTENT")
    assert events(core) == [ScriptRequest("RENAMESCRIPT", ("a", "b"))]
    core.ok()
    assert core.data_to_send() == b'NO (NONEXISTENT) "nope"\r\nOK "Done"\r\n'


def test_putscript_with_errors_is_refused_by_the_core() -> None:
    core = logged_in()
    core.receive_data(b'PUTSCRIPT "main" "fileinto \\"x\\";"\r\n')
    assert events(core) == []
    assert core.data_to_send() == b'NO "line 1: fileinto needs require \\"fileinto\\""\r\n'
    core.receive_data(b'CHECKSCRIPT "keep;"\r\nHAVESPACE "a" 5000\r\nHAVESPACE "a" 10\r\n')
    # A script that compiles goes to the server for the checks that need the store.
    assert events(core) == [ScriptRequest("CHECKSCRIPT", ("keep;",))]
    core.ok("Script is valid")
    assert events(core) == [ScriptRequest("HAVESPACE", ("a", "10"))]
    assert core.data_to_send() == (b'OK "Script is valid"\r\n'
                                   b'NO (QUOTA/MAXSIZE) "Script is too large"\r\n')


def test_state_and_syntax_errors() -> None:
    core = ManageSieveCore(SETTINGS)
    core.data_to_send()
    core.receive_data(b"LISTSCRIPTS\r\nNOOP \"t1\"\r\nBOGUS\r\nGETSCRIPT\r\n")
    assert events(core) == []
    assert core.data_to_send() == (
        b'NO "Authenticate first"\r\nOK (TAG "t1") "Done"\r\nNO "Syntax error: unknown '
        b'command"\r\nNO "Authenticate first"\r\n')
    core.receive_data(b"NOOP\nNOOP\r\nUNAUTHENTICATE\r\n")
    events(core)
    assert b"bare LF" in core.data_to_send()
    assert core.state is State.CLOSED  # five errors: BYE


def test_invalid_script_names() -> None:
    core = logged_in()
    core.receive_data(b'GETSCRIPT "a\x01b"\r\nDELETESCRIPT ""\r\n')
    assert events(core) == []
    assert core.data_to_send().count(b"Invalid script name") == 2


def test_oversized_literal_closes() -> None:
    core = logged_in()
    core.receive_data(b'PUTSCRIPT "x" {99999999+}\r\n')
    assert [type(e) for e in events(core)] == [ConnectionClosed]
    assert core.data_to_send().startswith(b"BYE")


def test_logout() -> None:
    core = logged_in()
    core.receive_data(b"LOGOUT\r\n")
    assert events(core) == [ConnectionClosed("logout")]
    assert core.data_to_send() == b'OK "Logout completed"\r\n'


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_input_split_anywhere(chunk: int) -> None:
    core = logged_in()
    data = b'PUTSCRIPT "m" {5+}\r\nkeep;\r\n'
    for i in range(0, len(data), chunk):
        core.receive_data(data[i:i + chunk])
        evs = events(core)
    assert evs == [ScriptRequest("PUTSCRIPT", ("m", "keep;"))]


def test_framing_helpers() -> None:
    assert parse_command(b'A "x" {2}\r\nab\r\n', 10) == (
        [Atom("A"), Str(b"x"), Str(b"ab")], 15)
    assert parse_command(b'A "x', 10) is None
    with pytest.raises(FrameError):
        parse_command(b'A "x\\q"\r\n', 10)
    assert quote("a\r\nb") == b"{4}\r\na\r\nb"
    assert quote('a"b') == b'"a\\"b"'


def test_random_garbage_never_raises() -> None:
    import random

    rng = random.Random(5804)
    for _ in range(300):
        core = logged_in()
        blob = bytes(rng.choice(b'{}"\\\r\n +0123AUTHENTICATEPUTSCRIPT\x00\xff')
                     for _ in range(rng.randint(1, 300)))
        core.receive_data(blob)
        for ev in events(core):
            if isinstance(ev, ScriptRequest):
                core.no("x")
                events(core)
        core.data_to_send()
