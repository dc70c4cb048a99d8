"""The exception tree of Mailstead. Errors that reach a client carry the reply it gets."""

from __future__ import annotations

from mailstead.core.reply import Reply


class MailsteadError(Exception):
    """Base of every error Mailstead raises on purpose."""


class ConfigError(MailsteadError):
    """The configuration file or a command-line value is wrong; the message says what to do."""


class StoreError(MailsteadError):
    """The store refused or failed an operation."""


class CorruptData(StoreError):
    """Stored data failed a check (a body whose SHA-256 differs from its name, a malformed
    database page): retrying cannot help, so clients get a permanent error and the admin a
    log line that says to run ``mailstead verify``."""


class DiskFull(StoreError):
    """The data directory's filesystem is below its free-space reserve (or full): new mail is
    refused for now (a temporary error), deletions still proceed."""


class NotFound(StoreError):
    """The named domain, account, alias or mailbox does not exist."""


class AlreadyExists(StoreError):
    """The named domain, account or alias exists already."""


class LimitExceeded(StoreError):
    """The change would take an account past one of its limits (such as the number of
    mailboxes); nothing was changed."""


class InUse(StoreError):
    """The object cannot be removed while others depend on it (a domain with accounts)."""


class ProtocolReplyError(MailsteadError):
    """A failure with the exact reply to send to the client."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply
