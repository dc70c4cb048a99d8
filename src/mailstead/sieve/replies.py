"""The messages Sieve sends on its own: vacation replies (RFC 5230 section 5) and reject
notices (RFC 5429 section 2.1, an RFC 8098 MDN), and the rules for when a vacation reply
must not go out (RFC 5230 sections 4.5 and 4.6, RFC 3834 section 2)."""

from __future__ import annotations

import email.policy
import email.utils
import secrets
from email.message import EmailMessage

from mailstead.sieve.actions import Vacation
from mailstead.sieve.message import MessageView

# RFC 5230 section 4.6 (and RFC 3834 section 2): senders that are robots, not people.
_ROBOT_LOCALS = ("mailer-daemon", "listserv", "majordomo", "postmaster")
# RFC 2369 and RFC 2919: a message carrying any of these came through a list.
_LIST_FIELDS = ("list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post",
                "list-owner", "list-archive")
# Recipient fields a vacation reply looks for the user's address in (RFC 5230 section 4.5).
_RCPT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_POLICY = email.policy.SMTP.clone(max_line_length=78)


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def vacation_refusal(msg: MessageView, sender: str, own: set[str]) -> str | None:
    """Why no vacation reply may go to ``sender`` for ``msg`` (None: it may). ``own`` holds
    the user's addresses, lower-cased."""
    if not sender:
        return "null sender"  # RFC 5230 section 4.6: never to <>
    local = sender.rpartition("@")[0].lower()
    if local in _ROBOT_LOCALS or local.startswith("owner-") or local.endswith("-request"):
        return "sender is a robot address"
    if sender.lower() in own:
        return "sender is the user"
    for value in msg.headers("auto-submitted"):
        # RFC 3834 section 5: anything but "no" is automatic; never answer it.
        if value.split(";")[0].strip().lower() != "no":
            return "auto-submitted"
    if any(msg.raw_headers(name) for name in _LIST_FIELDS):
        return "list mail"
    for value in msg.headers("precedence"):
        if value.strip().lower() in ("bulk", "junk", "list"):
            return "bulk precedence"
    named = {a.lower() for name in _RCPT_FIELDS for a in msg.addresses(name)}
    if not named & own:
        # RFC 5230 section 4.5: only reply when the user is named as a recipient.
        return "user not among the recipients"
    return None


def vacation_message(
    action: Vacation, msg: MessageView, sender: str, account: str, hostname: str, now: float
) -> bytes:
    """The reply to ``sender`` (RFC 5230 section 5; RFC 3834 section 3)."""
    original = _one_line(msg.headers("subject")[0]) if msg.headers("subject") else ""
    # RFC 5230 section 5.2: the default subject is "Auto:" and the original subject.
    subject = _one_line(action.subject) if action.subject else f"Auto: {original}".strip()
    reply = EmailMessage(policy=_POLICY)
    # The From is rebuilt from the one address :from names (checked to be the account's),
    # so nothing else in the value reaches the header.
    name, addr = email.utils.parseaddr(_one_line(action.from_ or ""))
    reply["From"] = email.utils.formataddr((name, addr)) if addr else account
    reply["To"] = sender
    reply["Subject"] = subject or "Auto-reply"
    reply["Date"] = email.utils.formatdate(now)
    reply["Message-ID"] = f"<vacation.{secrets.token_hex(12)}@{hostname}>"
    reply["Auto-Submitted"] = "auto-replied"  # RFC 3834 section 5, RFC 5230 section 5.7
    msgid = _one_line(msg.raw_headers("message-id")[0], 998) if msg.raw_headers(
        "message-id") else ""
    if msgid:
        # RFC 5230 section 5.3 and 5.4: In-Reply-To and References link the reply.
        refs = _one_line(msg.raw_headers("references")[0], 900) if msg.raw_headers(
            "references") else ""
        reply["In-Reply-To"] = msgid
        reply["References"] = f"{refs} {msgid}".strip()
    if action.mime:
        # RFC 5230 section 4.4: with :mime the reason is a whole MIME entity.
        head = bytes(reply).split(b"\r\n\r\n", 1)[0] + b"\r\nMIME-Version: 1.0\r\n"
        entity = action.reason.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        return head + entity
    reply.set_content(action.reason, charset="utf-8")
    return bytes(reply)


def reject_notice(
    reason: str, msg: MessageView, sender: str, account: str, hostname: str, now: float
) -> bytes:
    """An RFC 8098 MDN telling ``sender`` the message was refused (RFC 5429 section 2.1)."""
    boundary = f"=_reject_{secrets.token_hex(8)}"
    subject = msg.headers("subject")[0] if msg.headers("subject") else ""
    original_id = msg.raw_headers("message-id")[0] if msg.raw_headers("message-id") else ""
    header_end = msg.data.find(b"\r\n\r\n")
    original_header = msg.data[: header_end + 2] if header_end >= 0 else msg.data[:64 * 1024]
    text = (f"Your message to {account} was rejected by the recipient's mail filter.\r\n\r\n"
            + reason.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n")
    head = EmailMessage(policy=_POLICY)
    head["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    head["To"] = sender
    head["Subject"] = _one_line(f"Rejected: {subject}")
    head["Date"] = email.utils.formatdate(now)
    head["Message-ID"] = f"<reject.{secrets.token_hex(12)}@{hostname}>"
    head["Auto-Submitted"] = "auto-replied"
    top = bytes(head).split(b"\r\n\r\n", 1)[0] + b"\r\n"
    mdn = (f"Reporting-UA: {hostname}; Mailstead Sieve\r\n"
           f"Final-Recipient: rfc822; {account}\r\n"
           + (f"Original-Message-ID: {_one_line(original_id, 900)}\r\n" if original_id else "")
           + "Disposition: automatic-action/MDN-sent-automatically; deleted\r\n")
    parts = (
        f"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
        f"report-type=disposition-notification;\r\n boundary=\"{boundary}\"\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
        f"--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n{mdn}\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ).encode()
    return top + parts + original_header + f"\r\n--{boundary}--\r\n".encode()


def budget_notice(account: str, hostname: str, now: float, why: str) -> bytes:
    """The note to ``account`` that its active script was stopped by the run budget and the
    message it was filtering was kept in INBOX."""
    note = EmailMessage(policy=_POLICY)
    note["From"] = f"Mail System <postmaster@{hostname}>"
    note["To"] = account
    note["Subject"] = "Your mail filter (Sieve script) was stopped"
    note["Date"] = email.utils.formatdate(now)
    note["Message-ID"] = f"<sieve-notice.{secrets.token_hex(12)}@{hostname}>"
    note["Auto-Submitted"] = "auto-generated"  # RFC 3834 section 5
    note.set_content(
        "Your active Sieve script did more work on one incoming message than this server "
        f"allows ({_one_line(why)}). The message was kept in your INBOX without filtering, "
        "and so will every message that makes the script run that long.\n\n"
        "Wildcard patterns with many \"*\" and \"?\" matched against long headers or "
        "bodies are the usual cause: make them simpler or more specific. This note is sent "
        "once; the server log has each occurrence.\n", charset="utf-8")
    return bytes(note)
