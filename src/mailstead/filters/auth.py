"""The sender-authentication stage: SPF, DKIM, DMARC and ARC, one Authentication-Results
field, and the DMARC policy applied (RFC 7489 section 6.6.4 with local choices)."""

from __future__ import annotations

import logging
from enum import Enum

from mailstead.core.reply import Reply
from mailstead.filters.pipeline import FilterContext, Verdict
from mailstead.mailauth.dmarc import Policy
from mailstead.mailauth.results import forged_indexes
from mailstead.mailauth.verify import AuthVerifier

log = logging.getLogger("mailstead.filters.auth")

JUNK = "Junk"


class FailAction(Enum):
    """What to do with a message whose DMARC disposition is reject or quarantine."""

    REJECT = "reject"  # 550 5.7.1 at end of DATA
    JUNK = "junk"  # deliver into the Junk mailbox
    ACCEPT = "accept"  # deliver normally (the Authentication-Results field still says fail)


class AuthStage:
    """Verifies the sender, adds our Authentication-Results field and removes any incoming
    one that claims our authserv-id (RFC 8601 section 5)."""

    name = "auth"

    def __init__(
        self,
        verifier: AuthVerifier,
        authserv_id: str,
        *,
        on_reject: FailAction = FailAction.REJECT,
        on_quarantine: FailAction = FailAction.JUNK,
        junk_mailbox: str = JUNK,
    ) -> None:
        self._verifier = verifier
        self._authserv = authserv_id
        self._actions = {Policy.REJECT: on_reject, Policy.QUARANTINE: on_quarantine}
        self._junk = junk_mailbox

    async def check(self, ctx: FilterContext) -> Verdict:
        results = await self._verifier.verify(
            client_ip=ctx.session.client_ip,
            helo=ctx.session.helo,
            mail_from=ctx.mail_from,
            data=ctx.data,
            fields=ctx.fields,
        )
        ctx.auth = results
        header = results.header(self._authserv)
        drop: frozenset[int] = frozenset()
        if b"authentication-results" in ctx.header.lower():  # rarely: then look closer
            drop = frozenset(forged_indexes(ctx.fields, self._authserv))
        dmarc = results.dmarc
        action = self._actions.get(dmarc.disposition, FailAction.ACCEPT)
        if action is FailAction.REJECT:
            log.info("dmarc reject from=%s policy=%s", dmarc.from_domain, dmarc.policy)
            # RFC 7489 section 6.6.4 / 10.3: refuse during the SMTP transaction, 5.7.1.
            return Verdict.reject(Reply(
                550, "5.7.1",
                f"Message refused: the DMARC policy of {dmarc.from_domain} says to reject "
                "mail that fails SPF and DKIM alignment"))
        if action is FailAction.JUNK:
            return Verdict.file_into(self._junk, header, drop=drop)
        return Verdict.accept(header, drop=drop)
