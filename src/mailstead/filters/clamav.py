"""Malware scanning through clamd (ClamAV's daemon) with its INSTREAM command, and the
pipeline stage refusing infected mail with 554 5.7.1.

INSTREAM (clamd(8)): ``zINSTREAM\\0``, then chunks each prefixed by its length as a 4-octet
big-endian integer, then a zero length; the answer is one NUL-terminated line:
``stream: OK``, ``stream: <signature> FOUND`` or ``<reason> ERROR``. clamd refuses streams
longer than its StreamMaxLength (25 MB by default) with an error, so larger messages are not
sent at all: they are handled like a scan that could not be made.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from mailstead.core.reply import Reply
from mailstead.filters.pipeline import FilterContext, Verdict

log = logging.getLogger("mailstead.filters.clamav")

CHUNK = 64 * 1024
MAX_SIZE = 25 * 1024 * 1024  # clamd's default StreamMaxLength
TIMEOUT = 60.0
MAX_REPLY = 4096
R_UNAVAILABLE = Reply(451, "4.7.1", "The virus scanner is unavailable, try again later")
_FOUND = re.compile(r"^stream: (.+) FOUND$")
_SIGNATURE_SAFE = re.compile(r"[^A-Za-z0-9_.:/+-]")


class ScanError(Exception):
    """clamd could not scan the message (down, timeout, an ERROR reply, too large)."""


class TooLarge(ScanError):
    """The message is over the scan limit: it is never sent, and retrying would not help."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """``signature`` is the name of the malware found, None when the message is clean."""

    signature: str | None


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """A unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str = ""
    port: int = 3310

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        """``/run/clamav/clamd.ctl`` or ``HOST:PORT`` (IPv6 literals in brackets)."""
        if text.startswith("/"):
            return cls(path=text)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected a socket path or HOST:PORT, got {text!r}")
        return cls(host=host.strip("[]"), port=int(port))


class ClamdClient:
    """Scans one message per connection (clamd's sessions add nothing for single scans)."""

    def __init__(self, address: ClamdAddress, *, max_size: int = MAX_SIZE,
                 timeout: float = TIMEOUT) -> None:
        self._address = address
        self._max = max_size
        self._timeout = timeout

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._address.path is not None:
            return await asyncio.open_unix_connection(self._address.path)
        return await asyncio.open_connection(self._address.host, self._address.port)

    async def scan(self, data: bytes) -> ScanResult:
        """Raises ScanError when no verdict could be had."""
        if len(data) > self._max:
            raise TooLarge(f"message of {len(data)} octets is over the scan limit {self._max}")
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await self._connect()
                writer.write(b"zINSTREAM\0")
                view = memoryview(data)
                for i in range(0, len(data), CHUNK):
                    chunk = view[i:i + CHUNK]
                    writer.write(len(chunk).to_bytes(4, "big"))
                    writer.write(chunk)
                    await writer.drain()
                writer.write(b"\0\0\0\0")
                await writer.drain()
                raw = await reader.read(MAX_REPLY)
        except (OSError, TimeoutError) as exc:
            raise ScanError(f"clamd: {type(exc).__name__} {exc}") from exc
        finally:
            if writer is not None:
                writer.close()
        line = raw.split(b"\0", 1)[0].strip().decode("utf-8", "replace")
        if line == "stream: OK":
            return ScanResult(None)
        found = _FOUND.match(line)
        if found:
            return ScanResult(_SIGNATURE_SAFE.sub("_", found.group(1))[:100] or "unknown")
        raise ScanError(f"clamd answered {line[:200]!r}")


class ClamavStage:
    """Refuses infected mail (554 5.7.1, naming the signature); when clamd cannot scan, the
    message is accepted and tagged ``X-Virus-Status: unchecked`` or, configured so,
    temporarily refused. Incoming ``X-Virus-*`` fields are removed so none can be forged."""

    name = "antivirus"

    def __init__(self, client: ClamdClient, *, tempfail_when_down: bool = False) -> None:
        self._client = client
        self._tempfail = tempfail_when_down

    async def check(self, ctx: FilterContext) -> Verdict:
        drop = frozenset(i for i, (name, _) in enumerate(ctx.fields)
                         if name.startswith(b"x-virus-"))
        try:
            result = await self._client.scan(ctx.data)
        except ScanError as exc:
            log.warning("virus scan failed: %s", exc)
            # A temporary failure for a too large message would make the client retry for
            # days to the same end, so that one is always accepted unscanned.
            if self._tempfail and not isinstance(exc, TooLarge):
                return Verdict.tempfail(R_UNAVAILABLE)
            return Verdict.accept(b"X-Virus-Status: unchecked\r\n", drop=drop)
        if result.signature is not None:
            log.info("malware refused signature=%s from=%s", result.signature,
                     ctx.mail_from or "<>")
            # RFC 3463: 5.7.1 "delivery not authorized, message refused" (the policy reason);
            # 554 is "transaction failed" (RFC 5321 section 4.2.3).
            return Verdict.reject(Reply(
                554, "5.7.1", f"Message refused: it contains malware ({result.signature})"))
        return Verdict.accept(b"X-Virus-Status: clean\r\n", drop=drop)
