"""Import from another IMAP server: every folder with its messages byte for byte, flags,
keywords and internal dates, into an ``ImportSink``.

The client is stdlib ``imaplib`` run in a worker thread, hardened: every read has a timeout,
a literal larger than the announced message size (or than ``max_message``) ends the
connection, and messages are fetched in UID batches bounded by their RFC822.SIZE, so memory
stays bounded whatever the mailbox size. While one batch is committed into the sink (its
messages concurrently, so group commit shares the fsyncs) the next batch is being fetched.
The source is only read: BODY.PEEK[] never sets \\Seen (RFC 3501 section 6.4.5), and
folders are opened with EXAMINE.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailstead.core.certs import client_context, der_fingerprint
from mailstead.core.errors import MailsteadError, StoreError
from mailstead.core.secret import Secret
from mailstead.interchange.folders import (
    FolderPlan,
    ListingError,
    SourceFolder,
    parse_list,
    plan_folders,
)
from mailstead.interchange.sink import ImportItem, ImportSink

Security = Literal["ssl", "starttls"]
# Batches: at most this many octets (by RFC822.SIZE) or messages per UID FETCH.
BATCH_BYTES = 8 * 1024 * 1024
BATCH_MESSAGES = 500
MAX_MESSAGE = 256 * 1024 * 1024
Progress = Callable[[int, int, str], None]


class ImapImportError(MailsteadError):
    """The source server cannot be used (connection, TLS, login, a broken answer)."""


@dataclass(frozen=True, slots=True)
class ImapSource:
    """Where to import from and how to connect."""

    host: str
    port: int
    security: Security
    user: str
    password: Secret
    ca_file: Path | None = None
    timeout: float = 60.0

    @property
    def uri(self) -> str:
        return f"imap://{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One message of a UID FETCH response."""

    uid: int
    flags: tuple[str, ...]
    internal_date: float | None
    data: bytes | None


@dataclass
class ImapSummary:
    """What the listing showed beyond the sink's counts: folders left out and why."""

    skipped_folders: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    total_bytes: int = 0


class FetchParseError(ValueError):
    """A FETCH response that is not RFC 3501 section 7.4.2."""


_UID = re.compile(rb"\bUID\s+(\d+)", re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE\s+(\d+)", re.IGNORECASE)
_FLAGS = re.compile(rb"\bFLAGS\s+\(([^()]*)\)", re.IGNORECASE)
_DATE = re.compile(rb'\bINTERNALDATE\s+"([^"]{1,64})"', re.IGNORECASE)
_BODY_LITERAL = re.compile(rb"\bBODY\[\]\s+\{(\d+)\}\s*$", re.IGNORECASE)
_FETCH_LINE = re.compile(rb"\d+ \(")
_UIDVALIDITY = re.compile(rb"\bUIDVALIDITY\s+(\d+)", re.IGNORECASE)


def parse_internal_date(text: bytes) -> float | None:
    """RFC 3501 section 9 date-time ``"17-Jul-1996 02:44:25 -0700"`` as Unix time."""
    try:
        value = dt.datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (UnicodeDecodeError, ValueError):
        return None
    return value.timestamp()


def parse_fetch(items: Sequence[Any]) -> list[FetchedMessage]:
    """The messages of imaplib's UID FETCH data: a message is a tuple (text before the
    literal, the literal) followed by the rest of its text, or a plain line without a body.
    Unknown pieces (untagged EXPUNGE/EXISTS between them) are ignored."""
    out: list[FetchedMessage] = []
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], bytes) or not isinstance(item[1], bytes):
                raise FetchParseError("a FETCH item of an unknown shape")
            head, literal = item
            text = head
            # The attributes after the body literal come as the next bytes piece.
            if index < len(items) and isinstance(items[index], bytes):
                text += b" " + items[index]
                index += 1
            if not _BODY_LITERAL.search(head):
                continue  # a literal that is not the body (a quoted flag as a literal?)
            out.append(_message(text, literal))
        elif isinstance(item, bytes):
            if _FETCH_LINE.match(item) and _UID.search(item):
                out.append(_message(item, None))
        elif item is not None:
            raise FetchParseError("a FETCH item of an unknown type")
    return out


def _message(text: bytes, data: bytes | None) -> FetchedMessage:
    uid = _UID.search(text)
    if uid is None:
        raise FetchParseError("a FETCH response without UID")
    flags = _FLAGS.search(text)
    date = _DATE.search(text)
    names = flags.group(1).decode("utf-8", "replace").split() if flags else []
    return FetchedMessage(
        uid=int(uid.group(1)),
        flags=tuple(f for f in names if f.lower() != "\\recent"),
        internal_date=parse_internal_date(date.group(1)) if date else None,
        data=data,
    )


def parse_sizes(items: Sequence[Any]) -> list[tuple[int, int]]:
    """(UID, RFC822.SIZE) of each line of a ``UID FETCH 1:* (UID RFC822.SIZE)`` answer."""
    out: list[tuple[int, int]] = []
    for item in items:
        if not isinstance(item, bytes):
            continue
        uid, size = _UID.search(item), _SIZE.search(item)
        if uid and size:
            out.append((int(uid.group(1)), int(size.group(1))))
    return out


def uid_set(uids: Sequence[int]) -> str:
    """A UID set in ranges (RFC 3501 section 9 sequence-set): 1,2,3,7 -> "1:3,7"."""
    parts: list[str] = []
    start = prev = -1
    for uid in sorted(uids):
        if uid == prev + 1:
            prev = uid
            continue
        if start >= 0:
            parts.append(f"{start}:{prev}" if prev > start else str(start))
        start = prev = uid
    if start >= 0:
        parts.append(f"{start}:{prev}" if prev > start else str(start))
    return ",".join(parts)


def batches(sizes: Iterable[tuple[int, int]], *, max_bytes: int = BATCH_BYTES,
            max_count: int = BATCH_MESSAGES) -> list[list[tuple[int, int]]]:
    """(UID, size) pairs in order, cut into batches bounded by octets and count; a message
    larger than ``max_bytes`` is a batch of its own."""
    out: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    total = 0
    for uid, size in sizes:
        if current and (total + size > max_bytes or len(current) >= max_count):
            out.append(current)
            current, total = [], 0
        current.append((uid, size))
        total += size
    if current:
        out.append(current)
    return out


def login_refused(source: ImapSource, text: str) -> str:
    """The one line for a refused login, with the advice most people need."""
    return (
        f"{source.host}:{source.port} refused the login of {source.user!r}"
        f"{': ' + text if text else ''}. Check the user name and password; with two-factor "
        "authentication on, iCloud, Gmail, Outlook and mail.com refuse the account password "
        "over IMAP and need an app password, made in the provider's account settings"
    )


class _Capped(imaplib.IMAP4):
    """imaplib with a cap on literals: a hostile server cannot make us buffer gigabytes."""

    max_literal = MAX_MESSAGE

    def read(self, size: int) -> bytes:
        if size > self.max_literal:
            raise imaplib.IMAP4.abort(
                f"the server sent a literal of {size:,} octets (at most "
                f"{self.max_literal:,} expected)"
            )
        return super().read(size)


class _PlainClient(_Capped):
    """Port 143, upgraded with STARTTLS before the login."""


class _SslClient(_Capped, imaplib.IMAP4_SSL):
    """Port 993: TLS from the first byte (RFC 8314 section 3.3)."""


def _fingerprint(source: ImapSource) -> str:
    """The SHA-256 fingerprint of the certificate the server presents, fetched without
    verifying it, to show with the refusal."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((source.host, source.port),
                                      timeout=source.timeout) as sock:
            if source.security == "starttls":
                sock.recv(8192)
                sock.sendall(b"a STARTTLS\r\n")
                sock.recv(8192)
            with ctx.wrap_socket(sock, server_hostname=source.host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return "unknown"
    return der_fingerprint(der) if der else "unknown"


class ImapConnection:
    """One logged-in connection, each blocking call run in a worker thread."""

    def __init__(self, source: ImapSource, client: _Capped) -> None:
        self.source = source
        self.client = client

    @classmethod
    async def connect(cls, source: ImapSource, max_literal: int = MAX_MESSAGE
                      ) -> ImapConnection:
        return cls(source, await asyncio.to_thread(_connect, source, max_literal))

    async def call(self, name: str, *args: Any) -> tuple[str, list[Any]]:
        try:
            typ, data = await asyncio.to_thread(getattr(self.client, name), *args)
        except imaplib.IMAP4.error as exc:
            raise ImapImportError(
                f"{self.source.host}:{self.source.port}: {name} failed: {_printable(exc)}"
            ) from None
        except (OSError, EOFError) as exc:
            raise ImapImportError(
                f"{self.source.host}:{self.source.port}: the connection failed during {name}: "
                f"{_printable(exc) or 'timed out'}"
            ) from None
        return str(typ), list(data)

    async def close(self) -> None:
        def _close() -> None:
            with contextlib.suppress(Exception):
                if self.client.state == "SELECTED":
                    self.client.close()
            with contextlib.suppress(Exception):
                self.client.logout()
            with contextlib.suppress(Exception):
                self.client.shutdown()

        await asyncio.to_thread(_close)


def _printable(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:300]


def _connect(source: ImapSource, max_literal: int) -> _Capped:
    where = f"{source.host}:{source.port}"
    context = client_context(source.ca_file)
    client: _Capped
    try:
        if source.security == "ssl":
            client = _SslClient(source.host, source.port, ssl_context=context,
                                timeout=source.timeout)
        else:
            client = _PlainClient(source.host, source.port, timeout=source.timeout)
        client.max_literal = max_literal
    except ssl.SSLCertVerificationError as exc:
        raise ImapImportError(_untrusted(source, exc)) from None
    except ssl.SSLError as exc:
        raise ImapImportError(f"{where}: the TLS handshake failed: {_printable(exc)}") from None
    except (OSError, imaplib.IMAP4.error, EOFError) as exc:
        raise ImapImportError(
            f"cannot connect to {where}: {_printable(exc) or 'timed out'}"
        ) from None
    try:
        if source.security == "starttls":
            try:
                client.starttls(context)
            except ssl.SSLCertVerificationError as exc:
                raise ImapImportError(_untrusted(source, exc)) from None
            except (imaplib.IMAP4.error, ssl.SSLError, OSError) as exc:
                raise ImapImportError(
                    f"{where}: STARTTLS failed: {_printable(exc)}; try --ssl (port 993)"
                ) from None
        _login(client, source)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def _untrusted(source: ImapSource, exc: ssl.SSLCertVerificationError) -> str:
    return (
        f"{source.host}:{source.port}: the server's certificate is not trusted "
        f"({exc.verify_message}); its SHA-256 fingerprint is {_fingerprint(source)}. If that "
        "is the server's own certificate (ask its administrator), trust it with --ca-file "
        "FILE (the certificate or its authority, PEM)"
    )


def _login(client: _Capped, source: ImapSource) -> None:
    password = source.password.reveal()
    try:
        if (source.user + password).isascii() and "LOGINDISABLED" not in client.capabilities:
            client.login(source.user, password)
        else:
            # RFC 4616 PLAIN carries UTF-8, which LOGIN's quoted strings cannot.
            blob = b"\0" + source.user.encode() + b"\0" + password.encode()
            client.authenticate("PLAIN", lambda _challenge: blob)
    except imaplib.IMAP4.abort as exc:
        raise ImapImportError(
            f"{source.host}:{source.port}: the connection failed during login: "
            f"{_printable(exc)}"
        ) from None
    except imaplib.IMAP4.error as exc:
        text = _printable(exc)
        text = re.sub(r"^(LOGIN|AUTHENTICATE) command error: BAD \['?|'?\]$", "", text)
        raise ImapImportError(login_refused(source, text)) from None
    except OSError as exc:
        raise ImapImportError(
            f"{source.host}:{source.port}: the connection failed during login: "
            f"{_printable(exc) or 'timed out'}"
        ) from None


async def list_folders(conn: ImapConnection) -> list[SourceFolder]:
    """Every folder of the source, with RFC 6154 attributes when the server has them."""
    special = "SPECIAL-USE" in conn.client.capabilities
    if special:
        typ, data = await conn.call("_simple_command", "LIST", '""', '"*"', "RETURN",
                                    "(SPECIAL-USE)")
        typ, data = await asyncio.to_thread(conn.client._untagged_response, typ, data, "LIST")
    else:
        typ, data = await conn.call("list", '""', "*")
    if typ != "OK":
        raise ImapImportError(f"{conn.source.host}: LIST failed")
    folders: list[SourceFolder] = []
    for item in data:
        try:
            if isinstance(item, tuple) and len(item) == 2:
                folders.append(parse_list(item[0], item[1]))
            elif isinstance(item, bytes):
                folders.append(parse_list(item))
        except ListingError:
            continue  # a line we cannot read names no folder we could open either
    return folders


def _quote(wire: bytes) -> bytes:
    """A mailbox name as a quoted string (RFC 3501 section 4.3), as the server spelled it."""
    return b'"' + wire.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@dataclass
class _FolderWork:
    plan: FolderPlan
    target: str
    uidvalidity: int
    missing: list[tuple[int, int]]


async def _examine(conn: ImapConnection, folder: SourceFolder) -> tuple[int, int]:
    """EXAMINE (read-only, RFC 3501 section 6.3.2): the message count and UIDVALIDITY."""
    typ, data = await conn.call("select", _quote(folder.wire), True)
    if typ != "OK":
        raise ImapImportError(f"cannot open {folder.name!r}: {_printable(Exception(data))}")
    _, codes = await asyncio.to_thread(conn.client.response, "UIDVALIDITY")
    match = _UIDVALIDITY.search(b"UIDVALIDITY " + (codes[-1] or b"")) if codes else None
    if match is None:
        raise ImapImportError(f"{folder.name!r}: the server gave no UIDVALIDITY")
    try:
        count = int(data[0] or 0)
    except (TypeError, ValueError):
        raise ImapImportError(f"{folder.name!r}: an unreadable message count") from None
    return count, int(match.group(1))


async def _plan_folder(conn: ImapConnection, sink: ImportSink, plan: FolderPlan,
                       target: str) -> _FolderWork | None:
    count, uidvalidity = await _examine(conn, plan.source)
    sizes: list[tuple[int, int]] = []
    if count:
        typ, data = await conn.call("uid", "FETCH", "1:*", "(UID RFC822.SIZE)")
        if typ != "OK":
            raise ImapImportError(f"{plan.source.name!r}: UID FETCH of the sizes failed")
        sizes = parse_sizes(data)
    known = await sink.known(target)
    prefix = f"{uidvalidity}/"
    if known and not any(o.startswith(prefix) for o in known) and sizes:
        # RFC 3501 section 2.3.1.1: a new UIDVALIDITY means the old UIDs name nothing any
        # more (a rebuilt index, a provider's migration). Importing under the new UIDs alone
        # would copy every message a second time: match them by their bytes instead.
        released = await sink.renumbered(target, prefix)
        sink.report.notes.append(
            f"{target}: the source renumbered this folder (new UIDVALIDITY); its "
            f"{released:,} earlier messages were matched by content, not copied again")
        known = await sink.known(target)
    missing = [(uid, size) for uid, size in sizes if f"{uidvalidity}/{uid}" not in known]
    sink.report.skipped += len(sizes) - len(missing)
    return _FolderWork(plan, target, uidvalidity, missing)


async def import_imap(
    source: ImapSource,
    sink: ImportSink,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: Callable[[int, int, str], None] | None = None,
    totals: Callable[[int, int], None] | None = None,
    batch_bytes: int = BATCH_BYTES,
    max_message: int = MAX_MESSAGE,
) -> ImapSummary:
    """Copies what the sink does not have yet; raises ImapImportError when the source cannot
    be used at all, counts each message that fails in ``sink.report``."""
    summary = ImapSummary()
    conn = await ImapConnection.connect(source, max_literal=max_message + 65536)
    try:
        plans = plan_folders(await list_folders(conn), include=include, exclude=exclude)
        work: list[_FolderWork] = []
        for plan in plans:
            if plan.target is None:
                if plan.reason.startswith("skipped") or plan.reason.startswith("a name"):
                    summary.skipped_folders.append((plan.source.name, plan.reason))
                continue
            try:
                target = await sink.ensure_folder(plan.target, plan.special_use)
            except MailsteadError as exc:
                sink.fail(plan.target, "", f"the folder cannot be created: {exc}")
                continue
            if not plan.source.selectable:
                continue
            planned = await _plan_folder(conn, sink, plan, plan.target)
            if planned is not None:
                planned.target = target
                work.append(planned)
        summary.total = sum(len(w.missing) for w in work)
        summary.total_bytes = sum(size for w in work for _, size in w.missing)
        if totals is not None:
            totals(summary.total, summary.total_bytes)
        for folder in work:
            if folder.missing:
                await _copy_folder(conn, sink, folder, progress, batch_bytes, max_message)
    finally:
        await conn.close()
    return summary


async def _copy_folder(conn: ImapConnection, sink: ImportSink, work: _FolderWork,
                       progress: Callable[[int, int, str], None] | None,
                       batch_bytes: int, max_message: int) -> None:
    _, uidvalidity = await _examine(conn, work.plan.source)
    name = work.plan.target or work.target
    if uidvalidity != work.uidvalidity:
        sink.fail(name, f"{uidvalidity}/*", "the source folder was renumbered during the import")
        return
    wanted: list[tuple[int, int]] = []
    for uid, size in work.missing:
        if size > max_message:
            sink.fail(name, f"{uidvalidity}/{uid}",
                      f"larger than {max_message:,} octets ({size:,})")
        else:
            wanted.append((uid, size))
    queue: asyncio.Queue[tuple[list[tuple[int, int]], list[FetchedMessage]] | None] = (
        asyncio.Queue(maxsize=1)
    )

    async def fetch() -> None:
        # Fetches batch n+1 while batch n is committed: the connection stays busy.
        try:
            for batch in batches(wanted, max_bytes=batch_bytes):
                typ, data = await conn.call(
                    "uid", "FETCH", uid_set([u for u, _ in batch]),
                    "(UID FLAGS INTERNALDATE BODY.PEEK[])",
                )
                if typ != "OK":
                    raise ImapImportError(f"{work.plan.source.name!r}: UID FETCH failed")
                try:
                    messages = parse_fetch(data)
                except FetchParseError as exc:
                    raise ImapImportError(
                        f"{work.plan.source.name!r}: an unreadable FETCH answer ({exc})"
                    ) from None
                del data
                await queue.put((batch, messages))
        finally:
            await queue.put(None)

    fetcher = asyncio.create_task(fetch())
    try:
        while (got := await queue.get()) is not None:
            batch, messages = got
            await _commit(sink, name, uidvalidity, batch, messages, progress)
    finally:
        if not fetcher.done():
            fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetcher


async def _commit(sink: ImportSink, name: str, uidvalidity: int,
                  batch: list[tuple[int, int]], messages: list[FetchedMessage],
                  progress: Callable[[int, int, str], None] | None) -> None:
    """Adds one batch concurrently (one group commit for many messages)."""
    asked = {uid for uid, _ in batch}
    items: list[ImportItem] = []
    seen: set[int] = set()
    for msg in messages:
        origin = f"{uidvalidity}/{msg.uid}"
        if msg.uid not in asked or msg.uid in seen:
            continue  # RFC 3501 section 7.4.2: unsolicited FETCH (a flag change) is no body
        if msg.data is None:
            continue
        seen.add(msg.uid)
        if msg.internal_date is None:
            sink.fail(name, origin, "the server gave no valid INTERNALDATE")
            continue
        items.append(ImportItem(name, msg.data, msg.flags, msg.internal_date, origin))
    for uid in sorted(asked - seen):
        if not any(i.origin == f"{uidvalidity}/{uid}" for i in items):
            sink.fail(name, f"{uidvalidity}/{uid}",
                      "the server sent no body (deleted on the source during the import?)")
    results = await asyncio.gather(*(sink.add(item) for item in items), return_exceptions=True)
    for item, result in zip(items, results, strict=True):
        if isinstance(result, StoreError):
            continue  # the sink counted it with its reason
        if isinstance(result, MailsteadError):
            sink.fail(name, item.origin, str(result))
        elif isinstance(result, BaseException):
            raise result
    if progress is not None:
        progress(len(batch), sum(size for _, size in batch), name)
