"""SNTP packets (RFC 4330) built and checked byte for byte, and the report rendering."""

from __future__ import annotations

import json
import struct

import pytest

from mailstead.diagnostics import sntp
from mailstead.diagnostics.model import (
    Check,
    Status,
    exit_status,
    fail,
    passed,
    printable,
    render_json,
    render_text,
    warn,
)


def _answer(sent: bytes, server_time: float, *, mode: int = 4, stratum: int = 2,
            leap: int = 0, echo: bytes | None = None) -> bytes:
    seconds = server_time + sntp.NTP_EPOCH_OFFSET
    stamp = struct.pack("!II", int(seconds), int((seconds % 1) * 2**32))
    first = (leap << 6) | (4 << 3) | mode
    return bytes([first, stratum, 6, 0]) + bytes(8) + b"GPS\0" + stamp + \
        (echo if echo is not None else sent[40:48]) + stamp + stamp


def test_request_layout() -> None:
    packet = sntp.request(1_700_000_000.5, b"\x01\x02")
    assert len(packet) == 48
    assert packet[0] == 0x23  # LI 0, version 4, mode 3 (client)
    seconds, fraction = struct.unpack("!II", packet[40:48])
    assert packet[1:40] == bytes(39)
    assert seconds == 1_700_000_000 + sntp.NTP_EPOCH_OFFSET
    assert fraction >> 32 == 0
    assert packet[46:48] == b"\x01\x02"
    assert packet[44] == 0x80  # the half second is kept


def test_offset_of_a_fast_server() -> None:
    sent = sntp.request(1000.0)
    reply = sntp.parse_reply(_answer(sent, 1100.0), sent, 1000.0)
    assert reply.offset == pytest.approx(100.0, abs=0.01)
    assert reply.stratum == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": 3}, "not a server answer"),
    ({"stratum": 0}, "kiss-o'-death"),
    ({"leap": 3}, "not synchronised"),
    ({"echo": b"\0" * 8}, "does not echo"),
])
def test_bad_answers_are_refused(kwargs: dict[str, int | bytes], message: str) -> None:
    sent = sntp.request(1000.0, b"abcd")
    with pytest.raises(sntp.SntpError, match=message):
        sntp.parse_reply(_answer(sent, 1000.0, **kwargs), sent, 1000.0)  # type: ignore[arg-type]


def test_short_answer() -> None:
    with pytest.raises(sntp.SntpError, match="short answer"):
        sntp.parse_reply(b"\x24" * 20, sntp.request(1.0), 1.0)


def test_render_text_and_exit_status() -> None:
    checks = [passed("disk space", "plenty"), warn("clock", "off by 3 s", "run chrony"),
              fail("dns x MX", "none", "publish one")]
    text = render_text(checks)
    assert text.splitlines() == [
        "PASS  disk space: plenty",
        "WARN  clock: off by 3 s",
        "      fix: run chrony",
        "FAIL  dns x MX: none",
        "      fix: publish one",
        "1 passed, 1 warning(s), 1 failed",
    ]
    assert exit_status(checks) == 1
    assert exit_status(checks[:2]) == 0
    doc = json.loads(render_json(checks))
    assert doc["ok"] is False
    assert doc["checks"][1] == {"name": "clock", "status": "WARN", "why": "off by 3 s",
                                "fix": "run chrony"}


def test_hostile_text_cannot_forge_lines() -> None:
    check = Check("listener", Status.FAIL, "said: bad\r\nPASS  everything: fine", "x")
    assert render_text([check]).count("\n") == 3
    assert printable("a\x1b[31mb" + "z" * 400).startswith("a [31mb")
    assert len(printable("z" * 1000)) == 300
