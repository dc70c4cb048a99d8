"""Warnings to a user whose mailbox fills up: one message to INBOX when a delivery or an APPEND
takes the account's storage past 80%, and another past 95%, of its quota.

The level last warned at is kept in the store (``swap_quota_warning``), so each crossing is
warned once whichever node delivers, and a level is warned again only after usage fell below
it. The warning is stored directly, past the quota checks: it must reach a full mailbox.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

from mailstead.core.errors import MailsteadError
from mailstead.core.message import summarize
from mailstead.core.sizes import format_size
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Quota, Store

log = logging.getLogger(__name__)

LEVELS = (80, 95)  # percent of the quota


def level(used: int, limit: int) -> int:
    """The highest warning level ``used`` has reached (0: none)."""
    reached = [p for p in LEVELS if used * 100 >= p * limit]
    return reached[-1] if reached else 0


def should_warn(warned: int, before: int, after: int) -> bool:
    """Whether reaching level ``after`` (from ``before`` just ahead of this addition) is a
    crossing to warn about, given the level ``warned`` last: a level not warned yet, or one
    that usage had fallen below since."""
    return after > 0 and after > min(warned, before)


def warning_message(address: str, quota: Quota, percent: int, hostname: str,
                    now: float) -> bytes:
    """The warning as a complete message, From the postmaster of the user's domain."""
    assert quota.limit is not None
    domain = address.rpartition("@")[2]
    used, limit = format_size(quota.used), format_size(quota.limit)
    shown = min(100, quota.used * 100 // quota.limit)
    nearly = ", and is nearly out of room" if percent >= LEVELS[-1] else ""
    lines = [
        f"Your mailbox {address} is {shown}% full: it holds {used} of the {limit} it may "
        f"hold{nearly}.",
        "New mail that does not fit is refused and its senders are told to try again later; "
        "after a few days it is returned to them.",
        "To make room, delete messages you no longer need (large attachments first), empty "
        "the Trash and Junk folders, or move old mail to your own computer. Or ask your mail "
        "administrator for a larger quota.",
    ]
    if percent < LEVELS[-1]:
        lines.append(f"You will be told again if the mailbox passes {LEVELS[-1]}%.")
    body = "\r\n\r\n".join(lines) + "\r\n"
    when = format_datetime(datetime.fromtimestamp(now, UTC))
    header = (
        f"From: Mail system <postmaster@{domain}>\r\n"
        f"To: <{address}>\r\n"
        f"Subject: Your mailbox is {percent}% full\r\n"
        f"Date: {when}\r\n"
        f"Message-ID: <quota.{secrets.token_hex(8)}@{hostname}>\r\n"
        # RFC 3834 section 5: a machine-made message; vacation responders must not answer.
        "Auto-Submitted: auto-generated\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    )
    return (header + "\r\n" + body).encode("utf-8")


class QuotaWarner:
    """Sends the warnings; call ``added`` after mail was stored for accounts."""

    def __init__(self, store: Store, hostname: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._hostname = hostname
        self._clock = clock

    async def added(self, octets: Mapping[int, int]) -> None:
        """After ``octets[account]`` more octets were stored for each account. Never raises
        for a store failure: the mail itself is stored already, the warning is a courtesy."""
        for account_id, size in octets.items():
            try:
                await self._check(account_id, size)
            except MailsteadError as exc:
                log.warning("quota warning for account %s not sent: %s", account_id, exc)

    async def _check(self, account_id: int, size: int) -> None:
        quota = await self._store.get_quota(account_id)
        if quota.limit is None:
            if quota.warned:
                await self._store.swap_quota_warning(account_id, 0)  # quota removed: re-arm
            return
        before = level(max(0, quota.used - size), quota.limit)
        after = level(quota.used, quota.limit)
        if after == quota.warned and not should_warn(quota.warned, before, after):
            return  # nothing changes: no write
        warned = await self._store.swap_quota_warning(account_id, after)
        if should_warn(warned, before, after):
            await self._send(account_id, quota, after)

    async def _send(self, account_id: int, quota: Quota, percent: int) -> None:
        account = await self._store.get_account_by_id(account_id)
        if account is None:
            return
        now = self._clock()
        data = warning_message(account.address, quota, percent, self._hostname, now)
        summary = summarize(data)
        await self._store.accept_message(IncomingMessage(
            data=data,
            queue_id="quota-" + secrets.token_hex(6),
            mail_from="",
            local=[LocalDelivery(account_id=account_id)],
            remote=[],
            internal_date=now,
            envelope=summary.envelope,
            bodystructure=summary.bodystructure,
        ))
        log.info("account %s warned at %s%% of its quota", account_id, percent)
