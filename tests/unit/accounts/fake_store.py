"""A small in-memory Store for the accounts and CLI tests (the real one has its own suite)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from mailstead.core.errors import AlreadyExists, InUse, NotFound
from mailstead.storage.interfaces import Account, Alias, address_key


class FakeStore:
    """Implements the administration half of storage.interfaces.Store in memory."""

    def __init__(self) -> None:
        self.domains: list[str] = []
        self.accounts: dict[str, Account] = {}
        self.aliases: dict[str, list[str]] = {}
        self.closed = False
        self.get_calls = 0

    async def close(self) -> None:
        self.closed = True

    async def add_domain(self, name: str) -> None:
        if name in self.domains:
            raise AlreadyExists(f"domain {name} exists already")
        self.domains.append(name)

    async def remove_domain(self, name: str) -> None:
        if name not in self.domains:
            raise NotFound(f"domain {name} is not a local domain")
        if any(a.endswith("@" + name) for a in self.accounts) or any(
            s.endswith("@" + name) for s in self.aliases
        ):
            raise InUse(f"domain {name} is in use")
        self.domains.remove(name)

    async def list_domains(self) -> list[str]:
        return list(self.domains)

    async def is_local_domain(self, name: str) -> bool:
        return name in self.domains

    async def add_account(self, address: str, password_hash: str) -> Account:
        if address.rpartition("@")[2] not in self.domains:
            raise NotFound("not local")
        if address_key(address) in self.accounts:
            raise AlreadyExists(f"account {address} exists already")
        account = Account(len(self.accounts) + 1, address, password_hash, time.time())
        self.accounts[address_key(address)] = account
        return account

    async def get_account(self, address: str) -> Account | None:
        self.get_calls += 1
        return self.accounts.get(address_key(address))

    async def get_account_by_id(self, account_id: int) -> Account | None:
        return next((a for a in self.accounts.values() if a.id == account_id), None)

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        return [
            a for a in self.accounts.values() if domain is None or a.address.endswith("@" + domain)
        ]

    async def set_password(self, address: str, password_hash: str) -> None:
        old = self.accounts.get(address_key(address))
        if old is None:
            raise NotFound(f"no account {address}")
        self.accounts[address_key(address)] = Account(
            old.id, old.address, password_hash, old.created_at
        )

    async def remove_account(self, address: str) -> None:
        if self.accounts.pop(address_key(address), None) is None:
            raise NotFound(f"no account {address}")

    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        if source.rpartition("@")[2] not in self.domains:
            raise NotFound("not local")
        current = self.aliases.setdefault(source, [])
        current.extend(t for t in targets if t not in current)

    async def get_alias(self, source: str) -> tuple[str, ...] | None:
        found = self.aliases.get(source)
        return None if found is None else tuple(found)

    async def list_aliases(self) -> list[Alias]:
        return [Alias(s, tuple(t)) for s, t in self.aliases.items()]

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        if source not in self.aliases:
            raise NotFound(f"no alias {source}")
        if not targets:
            del self.aliases[source]
            return
        for target in targets:
            if target not in self.aliases[source]:
                raise NotFound(f"alias {source} has no target {target}")
            self.aliases[source].remove(target)
        if not self.aliases[source]:
            del self.aliases[source]
