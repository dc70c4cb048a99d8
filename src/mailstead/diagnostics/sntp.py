"""A minimal SNTP client (RFC 4330) for the clock-skew check: one request, one answer, the
offset of our clock. SNTP over UDP was chosen over an HTTP Date header because it gives
sub-second precision, corrects for the round trip, and needs no web server trusted for time.

``request``/``parse_reply`` are pure (the clock values are passed in); ``query`` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from dataclasses import dataclass

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
PACKET_SIZE = 48  # RFC 4330 section 4: the NTP header without extensions or MAC


class SntpError(Exception):
    """No usable answer; the text says why."""


def _to_ntp(unix: float) -> bytes:
    seconds = int(unix) + NTP_EPOCH_OFFSET
    fraction = int((unix % 1) * 2**32) & 0xFFFFFFFF
    return struct.pack("!II", seconds & 0xFFFFFFFF, fraction)


def _from_ntp(data: bytes) -> float:
    seconds, fraction = struct.unpack("!II", data)
    return float(seconds) - NTP_EPOCH_OFFSET + float(fraction) / 2**32


def request(now: float, nonce: bytes = b"") -> bytes:
    """A client request (RFC 4330 section 5): LI 0, version 4, mode 3, with ``now`` as the
    transmit timestamp; ``nonce`` (up to 2 bytes, a 15 microsecond change) replaces its low
    fraction bits so a forged answer cannot guess the originate timestamp it must echo."""
    transmit = bytearray(_to_ntp(now))
    if nonce:
        transmit[8 - len(nonce[:2]) :] = nonce[:2]
    return bytes([0x23]) + bytes(39) + bytes(transmit)


@dataclass(frozen=True, slots=True)
class SntpReply:
    """The server's stratum and our clock's offset (positive: our clock is behind)."""

    stratum: int
    offset: float
    round_trip: float


def parse_reply(data: bytes, sent: bytes, received_at: float) -> SntpReply:
    """Check an answer against RFC 4330 section 5 and compute the offset; ``sent`` is our
    request, ``received_at`` our clock when the answer arrived. Raises SntpError."""
    if len(data) < PACKET_SIZE:
        raise SntpError(f"short answer ({len(data)} bytes)")
    mode = data[0] & 0x07
    version = (data[0] >> 3) & 0x07
    stratum = data[1]
    if mode != 4 or version not in (3, 4):
        raise SntpError(f"not a server answer (mode {mode}, version {version})")
    if data[24:32] != sent[40:48]:
        raise SntpError("the answer does not echo our request (originate timestamp)")
    if stratum == 0:
        code = data[12:16].decode("ascii", "replace")
        raise SntpError(f"the server refused (kiss-o'-death {code!r})")
    if (data[0] >> 6) == 3:
        raise SntpError("the server's clock is not synchronised (leap indicator 3)")
    t1 = _from_ntp(sent[40:48])
    t2 = _from_ntp(data[32:40])
    t3 = _from_ntp(data[40:48])
    if t3 == -NTP_EPOCH_OFFSET:
        raise SntpError("the answer has no transmit timestamp")
    t4 = received_at
    return SntpReply(stratum, ((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2))


class _Once(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[tuple[bytes, float]] = (
            asyncio.get_running_loop().create_future()
        )

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.answer.done():
            self.answer.set_result((data, time.time()))

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def query(host: str, port: int = 123, timeout: float = 5.0) -> SntpReply:
    """Ask ``host`` once; raises SntpError (no answer, refused, malformed)."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Once, remote_addr=(host, port)
        )
    except OSError as exc:
        raise SntpError(f"{host}:{port}: {exc.strerror or exc}") from None
    try:
        sent = request(time.time(), os.urandom(2))
        transport.sendto(sent)
        try:
            data, received_at = await asyncio.wait_for(proto.answer, timeout)
        except TimeoutError:
            raise SntpError(f"{host}:{port}: no answer within {timeout:g} s") from None
        except OSError as exc:
            raise SntpError(f"{host}:{port}: {exc.strerror or exc}") from None
        return parse_reply(data, sent, received_at)
    finally:
        with contextlib.suppress(Exception):
            transport.close()
