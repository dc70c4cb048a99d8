"""The DSN and REQUIRETLS columns of a queue row (migration 0017), the same for both backends:
from an ``IncomingMessage`` recipient to column values, and back to ``QueueEntry`` fields."""

from __future__ import annotations

from mailstead.core.dsn import MessageDsn, RecipientDsn
from mailstead.storage.interfaces import IncomingMessage

# After QUEUE_COLUMNS' fixed part, in this order.
DSN_COLUMNS = "dsn_notify, dsn_orcpt, dsn_ret, dsn_envid, requiretls"

DsnRow = tuple[str | None, str | None, str | None, str | None, int]


def row_values(msg: IncomingMessage, rcpt: str) -> DsnRow:
    """The column values of the queue row of ``rcpt``, one of ``msg.remote``."""
    rdsn = msg.dsn.get(rcpt)
    mdsn = msg.envelope_dsn
    return (
        rdsn.notify_text if rdsn is not None else None,
        rdsn.orcpt if rdsn is not None else None,
        mdsn.ret if mdsn is not None else None,
        mdsn.envid if mdsn is not None else None,
        int(msg.requiretls),
    )


def entry_fields(values: tuple[object, ...]) -> dict[str, object]:
    """The ``QueueEntry`` keyword arguments of the five ``DSN_COLUMNS`` values."""
    notify, orcpt, ret, envid, requiretls = values
    rdsn = None
    if notify is not None or orcpt is not None:
        rdsn = RecipientDsn(
            tuple(str(notify).split(",")) if notify is not None else None,
            None if orcpt is None else str(orcpt),
        )
    mdsn = None
    if ret is not None or envid is not None:
        mdsn = MessageDsn(None if ret is None else str(ret), None if envid is None else str(envid))
    return {"dsn": rdsn, "envelope_dsn": mdsn, "requiretls": bool(requiretls)}
