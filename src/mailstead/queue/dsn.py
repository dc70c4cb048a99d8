"""Delivery status notifications: the bounce and delay-warning messages sent to a sender.

RFC 3464 (message/delivery-status) inside an RFC 6522 multipart/report, with the original
header section attached (text/rfc822-headers; RFC 6533 global variants when any address or
header is UTF-8). Sent from ``MAILER-DAEMON@hostname`` with the null reverse-path (RFC 5321
section 4.5.5) so no notification can ever bounce back and loop. Everything taken from the
network (remote replies, addresses, original headers) is sanitised so it cannot add header
fields or MIME parts.
"""

from __future__ import annotations

import logging
import quopri
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from mailstead.core.address import AddressError, parse_address
from mailstead.core.dsn import MessageDsn, RecipientDsn, xtext_encode
from mailstead.core.errors import StoreError
from mailstead.core.message import summarize
from mailstead.core.reply import Reply
from mailstead.delivery.recipients import RecipientResolver, Verdict
from mailstead.delivery.service import QueueIds
from mailstead.mailauth.srs import Srs
from mailstead.observability.log import log_event
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, QueueEntry, Store

log = logging.getLogger("mailstead.queue")

# RFC 3464 section 2.3.6: the diagnostic is one line (folding allowed); remote servers can
# send up to 512 octets per reply line and many lines (RFC 5321 section 4.5.3.1.5), so it is
# cut to a length a person can read.
MAX_DIAGNOSTIC = 1000
# The original header section attached (RFC 3462 text/rfc822-headers); a hostile message
# with megabytes of headers must not make every DSN huge.
MAX_ATTACHED_HEADERS = 64 * 1024
# RET=FULL (RFC 3461 section 4.3) returns the whole message in a failure DSN; a larger one
# comes back as headers only, which section 4.3 allows ("MAY ... return only the headers").
MAX_RETURNED = 10 * 1024 * 1024
_CTRL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """What happened to one recipient, as the DSN reports it."""

    rcpt: str
    action: str  # "failed" | "delayed" | "delivered" | "relayed" (RFC 3464 section 2.3.3)
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote reply, e.g. "550 5.1.1 No such user"
    remote_mta: str | None = None  # the host that gave it
    last_attempt: float | None = None
    retry_until: float | None = None  # delayed: when the server gives up (section 2.3.9)
    reason: str | None = None  # plain words for the human part when there is no reply
    orcpt: str | None = None  # ORCPT= of the RCPT, "addr-type;address" (RFC 3461 4.2)


def one_line(text: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """``text`` with every control character (CR, LF, NUL...) turned into a space."""
    flat = _CTRL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def status_of(reply: Reply) -> str:
    """The RFC 3463 status of a reply: its enhanced code when well-formed and of the same
    class as the basic code, else the class alone (``X.0.0``, RFC 3463 section 3.1)."""
    klass = str(reply.code)[0] if 200 <= reply.code < 600 else "4"
    enhanced = reply.enhanced or ""
    if _ENHANCED.match(enhanced) and enhanced[0] == klass:
        return enhanced
    return f"{klass}.0.0"


def _date(ts: float) -> str:
    """An RFC 5322 date; a time outside what datetime can show is clamped, never raised."""
    try:
        return format_datetime(datetime.fromtimestamp(ts, UTC))
    except (ValueError, OverflowError, OSError):
        return format_datetime(datetime.fromtimestamp(0 if ts < 0 else 253402300799, UTC))


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces near 78 characters (RFC 5322 section 2.2.3)."""
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}:"
    for word in words:
        if len(current) + 1 + len(word) > 78 and current.strip() != f"{name}:":
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def header_section(data: bytes) -> bytes:
    """The original header section (without the blank line), CRLF line ends, capped."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[:end]
    if len(head) > MAX_ATTACHED_HEADERS:
        cut = head.rfind(b"\n", 0, MAX_ATTACHED_HEADERS)
        head = head[: cut if cut > 0 else MAX_ATTACHED_HEADERS]
    lines = re.split(rb"\r\n|\r|\n", head)
    return b"".join(line + b"\r\n" for line in lines if line or lines)


def _explain(r: DsnRecipient, hostname: str) -> str:
    who = r.remote_mta or hostname
    said = (
        f"\n    The server {who} answered:\n      {one_line(r.diagnostic)}" if r.diagnostic else ""
    )
    why = f"\n    Reason: {one_line(r.reason)}" if r.reason else ""
    return f"  <{one_line(r.rcpt, 500)}>{said}{why}\n"


def _advice(recipients: Sequence[DsnRecipient]) -> str:
    statuses = {r.status for r in recipients}
    if all(r.action in _SUCCESS for r in recipients):
        return "Nothing: this notice only confirms what you asked to know."
    if any(r.action == "delayed" for r in recipients):
        return (
            "You do not need to do anything yet: the server keeps trying and will tell you if "
            "it gives up. If the message is urgent, reach the recipient some other way."
        )
    if any(s.startswith("5.1.") for s in statuses):
        return (
            "Check the address for typing mistakes and send the message again. If the address "
            "is right, the mailbox does not exist any more: reach the recipient some other way."
        )
    if any(s.startswith("5.7.") for s in statuses):
        return (
            "The receiving side refused the message by policy (often spam filtering or a "
            "sender restriction). Forward this notice to your mail administrator."
        )
    if any(s.startswith("4.") for s in statuses):
        return (
            "The receiving server could not be reached or kept refusing for the whole time "
            "the message was kept. Try again later, or reach the recipient some other way."
        )
    return (
        "The message was not delivered and will not be retried. If the reason is not clear, "
        "forward this notice to your mail administrator."
    )


_SUCCESS = ("delivered", "relayed", "expanded")


def _human_text(hostname: str, queue_id: str, recipients: Sequence[DsnRecipient]) -> str:
    failed = [r for r in recipients if r.action == "failed"]
    delayed = [r for r in recipients if r.action == "delayed"]
    delivered = [r for r in recipients if r.action == "delivered"]
    relayed = [r for r in recipients if r.action == "relayed"]
    expanded = [r for r in recipients if r.action == "expanded"]
    parts = [f"This is the mail system at {hostname}.\n"]
    if expanded:
        parts.append("\nYour message reached the following address(es), which forward it to "
                     "several recipients; you will not be told of each delivery.\n\n")
        parts.extend(f"  <{one_line(r.rcpt, 500)}>\n" for r in expanded)
    if delivered:
        parts.append("\nYour message was delivered to the mailbox of the following "
                     "recipient(s), as you asked to be told.\n\n")
        parts.extend(f"  <{one_line(r.rcpt, 500)}>\n" for r in delivered)
    if relayed:
        # RFC 3461 section 6.2.2.2: the next server does not do DSN, so no further notice
        # will come; say what is known.
        parts.append("\nYour message was passed on to the following recipient(s)' server, "
                     "which does not send delivery notices: you will not hear more about "
                     "it.\n\n")
        parts.extend(_explain(r, hostname) for r in relayed)
    if failed:
        parts.append(
            "\nYour message could not be delivered to the following recipient(s). "
            "It will not be retried.\n\n"
        )
        parts.extend(_explain(r, hostname) for r in failed)
    if delayed:
        parts.append(
            "\nYour message has not been delivered yet to the following recipient(s). "
            "Delivery is still being retried.\n\n"
        )
        for r in delayed:
            parts.append(_explain(r, hostname))
            if r.retry_until is not None:
                parts.append(f"    The server gives up at {_date(r.retry_until)}.\n")
    parts.append(f"\nWhat to do: {_advice(recipients)}\n")
    parts.append(
        f"\nThe headers of your message are attached. Queue ID: {queue_id}.\n"
        "This notice was generated automatically; replies to it are not read.\n"
    )
    return "".join(parts)


def _recipient_fields(r: DsnRecipient, utf8: bool) -> str:
    """The per-recipient fields (RFC 3464 section 2.3)."""
    rcpt = one_line(r.rcpt, 500)
    addr_type = "utf-8" if utf8 and not rcpt.isascii() else "rfc822"  # RFC 6533 section 3
    out = ""
    if r.orcpt:
        # RFC 3464 section 2.3.1: the ORCPT the sender gave, as given (RFC 3461 6.3).
        orcpt_type, _, orcpt = r.orcpt.partition(";")
        out += _fold("Original-Recipient", f"{one_line(orcpt_type, 40)}; {one_line(orcpt, 500)}")
    out += _fold("Final-Recipient", f"{addr_type}; {rcpt}")
    out += f"Action: {r.action}\r\n"
    out += f"Status: {r.status}\r\n"
    if r.remote_mta:
        out += _fold("Remote-MTA", f"dns; {one_line(r.remote_mta, 255)}")
    if r.diagnostic:
        out += _fold("Diagnostic-Code", f"smtp; {one_line(r.diagnostic)}")
    if r.last_attempt is not None:
        out += f"Last-Attempt-Date: {_date(r.last_attempt)}\r\n"
    if r.retry_until is not None and r.action == "delayed":
        out += f"Will-Retry-Until: {_date(r.retry_until)}\r\n"
    return out


def build_dsn(
    *,
    hostname: str,
    sender: str,
    queue_id: str,
    arrival: float,
    original: bytes,
    recipients: Sequence[DsnRecipient],
    now: float,
    envelope: MessageDsn | None = None,
) -> bytes:
    """The complete DSN message (CRLF line ends) to ``sender`` about ``recipients`` of the
    message ``original``. ``sender`` must not be empty: a null-sender message gets no DSN.
    ``envelope``: the message's RET= (FULL returns the whole message in a failure notice,
    HDRS or none the header section, RFC 3461 section 4.3) and ENVID= (reported as
    Original-Envelope-Id, RFC 3464 section 2.2.1)."""
    if not sender:
        raise ValueError("no DSN for a message with the null reverse-path (RFC 5321 4.5.5)")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    headers = header_section(original)
    utf8 = (
        not headers.isascii()
        or not sender.isascii()
        or any(not r.rcpt.isascii() for r in recipients)
    )
    boundary = f"=_{queue_id}_{secrets.token_hex(12)}"
    delayed = all(r.action == "delayed" for r in recipients)
    succeeded = all(r.action in _SUCCESS for r in recipients)
    subject = (
        "Successful Mail Delivery Report" if succeeded
        else "Delayed Mail (still being retried)" if delayed
        else "Undelivered Mail Returned to Sender"
    )
    full = (
        envelope is not None and envelope.ret == "FULL"
        and any(r.action == "failed" for r in recipients) and 0 < len(original) <= MAX_RETURNED
    )
    text = _human_text(hostname, queue_id, recipients)
    body_text = quopri.encodestring(text.replace("\n", "\r\n").encode("utf-8"))
    status = ""
    if envelope is not None and envelope.envid is not None:
        # RFC 3464 section 2.2.1: the ENVID, in xtext as it came (RFC 3461 section 4.4).
        status += _fold("Original-Envelope-Id", xtext_encode(envelope.envid))
    status += f"Reporting-MTA: dns; {hostname}\r\n"
    status += f"X-Mailstead-Queue-ID: {queue_id}\r\n"
    status += f"Arrival-Date: {_date(arrival)}\r\n"
    for r in recipients:
        status += "\r\n" + _recipient_fields(r, utf8)
    # RFC 6533 sections 6.2 and 6.3: the global types carry UTF-8 fields and headers.
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers_type = "message/global-headers" if not headers.isascii() else "text/rfc822-headers"
    top = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
        + _fold("To", f"<{one_line(sender, 500)}>")
        + f"Subject: {subject}\r\n"
        + f"Date: {_date(now)}\r\n"
        + f"Message-ID: <{queue_id}.{secrets.token_hex(8)}@{hostname}>\r\n"
        # RFC 3834 section 5: automatic responders must not answer this.
        + "Auto-Submitted: auto-replied\r\n"
        + "MIME-Version: 1.0\r\n"
        + "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        + f' boundary="{boundary}"\r\n'
        + "\r\n"
        + "This is a MIME-encapsulated delivery status notification.\r\n"
    )
    out = top.encode("utf-8")
    out += (
        f"\r\n--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Description: Notification\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode()
    out += body_text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n"
    out += (
        f"\r\n--{boundary}\r\n"
        f"Content-Type: {status_type}\r\n"
        "Content-Description: Delivery report\r\n\r\n"
    ).encode()
    out += status.encode("utf-8")
    if full:
        # RFC 3462 section 3: the third part may be the whole message; RFC 6533 section 6.1
        # names message/global for a message with UTF-8 headers.
        returned_type = "message/global" if not headers.isascii() else "message/rfc822"
        out += (
            f"\r\n--{boundary}\r\n"
            f"Content-Type: {returned_type}\r\n"
            "Content-Description: Undelivered message\r\n\r\n"
        ).encode()
        out += _crlf(original)
    else:
        out += (
            f"\r\n--{boundary}\r\n"
            f"Content-Type: {headers_type}\r\n"
            "Content-Description: Undelivered message headers\r\n\r\n"
        ).encode()
        out += headers
    out += f"\r\n--{boundary}--\r\n".encode()
    return out


def _crlf(data: bytes) -> bytes:
    """``data`` with CRLF line ends, ending in one, so the closing boundary starts a line."""
    fixed = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return fixed if fixed.endswith(b"\r\n") else fixed + b"\r\n"


class Notifier:
    """Puts generated mail (DSNs, locally re-delivered queue rows) through the normal path:
    local accounts get it in their INBOX, outside addresses get queue rows, in one atomic
    ``accept_message`` (DESIGN rule 6)."""

    def __init__(
        self,
        store: Store,
        hostname: str,
        *,
        clock: Callable[[], float] = time.time,
        on_queued: Callable[[], None] | None = None,
        srs: Srs | None = None,
    ) -> None:
        """``srs``: a DSN to an SRS0 sender of ours goes to the sender it stands for."""
        self._store = store
        self._hostname = hostname
        self._clock = clock
        self._on_queued = on_queued
        self._resolver = RecipientResolver(store, hostname, srs)
        self._ids = QueueIds(clock, secrets.randbelow(30**5))

    async def inject(
        self, data: bytes, mail_from: str, accounts: dict[int, str], remote: Sequence[str]
    ) -> str:
        """Makes ``data`` durable for ``accounts`` and queues it for ``remote``; returns its
        queue ID. Raises StoreError when nothing was written."""
        now = self._clock()
        summary = summarize(data)
        queue_id = self._ids.next()
        await self._store.accept_message(
            IncomingMessage(
                data=data,
                queue_id=queue_id,
                mail_from=mail_from,
                local=[LocalDelivery(account_id=a) for a in accounts],
                remote=list(remote),
                internal_date=now,
                envelope=summary.envelope,
                bodystructure=summary.bodystructure,
                thread_keys=summary.thread_keys,
            )
        )
        if remote and self._on_queued is not None:
            self._on_queued()
        return queue_id

    async def send(self, first: QueueEntry, recipients: Sequence[DsnRecipient]) -> str:
        """Builds one DSN about ``recipients`` of the message of ``first`` and sends it to its
        sender with the null reverse-path; returns the DSN's queue ID, "" when there is no
        one to tell (null sender, or a local sender that no longer exists)."""
        if not first.mail_from or not recipients:
            return ""  # RFC 5321 section 4.5.5: never a notification about a notification
        try:
            original = await self._store.read_blob(first.blob)
        except StoreError:
            original = b""
        dsn = build_dsn(
            hostname=self._hostname,
            sender=first.mail_from,
            queue_id=first.queue_id,
            arrival=first.created_at,
            original=original,
            recipients=recipients,
            now=self._clock(),
            envelope=first.envelope_dsn,
        )
        return await self._send_dsn(dsn, first.mail_from, first.queue_id, recipients)

    async def delivered(
        self, queue_id: str, mail_from: str, arrival: float, data: bytes,
        recipients: Sequence[tuple[str, RecipientDsn, str]], envelope_dsn: MessageDsn | None,
    ) -> None:
        """The success DSN for recipients that asked NOTIFY=SUCCESS and were delivered here
        ("delivered", RFC 3461 section 6.2.2.1) or expanded by an alias to several addresses
        ("expanded", section 6.2.7.3); ``delivery.service.SuccessNotices``."""
        now = self._clock()
        report = [
            DsnRecipient(rcpt=rcpt, action=action, status="2.0.0", last_attempt=now,
                         orcpt=dsn.orcpt)
            for rcpt, dsn, action in recipients
        ]
        if not mail_from or not report:
            return
        dsn = build_dsn(hostname=self._hostname, sender=mail_from, queue_id=queue_id,
                        arrival=arrival, original=data, recipients=report, now=now,
                        envelope=envelope_dsn)
        await self._send_dsn(dsn, mail_from, queue_id, report)

    async def _send_dsn(
        self, dsn: bytes, mail_from: str, about: str, recipients: Sequence[DsnRecipient]
    ) -> str:
        """Sends the DSN ``dsn`` to ``mail_from`` with the null reverse-path; its queue ID,
        or "" when the sender's address does not exist."""
        try:
            res = await self._resolver.resolve(parse_address(mail_from))
        except AddressError:
            res = None
        accounts: dict[int, str] = {}
        remote: list[str] = []
        if res is not None and res.verdict in (Verdict.LOCAL, Verdict.NOT_LOCAL):
            accounts, remote = res.accounts, res.remote
        if not accounts and not remote:
            log_event(
                log,
                "queue.dsn_undeliverable",
                queue_id=about,
                note="the sender's address does not exist",
            )
            return ""
        # RFC 5321 section 4.5.5: notifications are sent with the null reverse-path.
        queue_id = await self.inject(dsn, "", accounts, remote)
        log_event(
            log,
            "queue.dsn",
            queue_id=about,
            dsn=queue_id,
            failed=sum(r.action == "failed" for r in recipients),
            delayed=sum(r.action == "delayed" for r in recipients),
            succeeded=sum(r.action in _SUCCESS for r in recipients),
        )
        return queue_id
