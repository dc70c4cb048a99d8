"""The ManageSieve listener (RFC 5804, port 4190) around the sans-I/O core.

This module never parses: bytes go into ``ManageSieveCore``, its events go to the accounts
service and the store's Sieve scripts, and the answers go back into the core (DESIGN rule 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from mailstead.accounts.service import AccountService
from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.core.network import IPNetwork, secure_for_auth
from mailstead.observability.log import log_event
from mailstead.proto.managesieve.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    ManageSieveSettings,
    ScriptRequest,
    StartTLS,
)
from mailstead.proto.managesieve.server import ManageSieveCore, response
from mailstead.servers.listener import Connection, ConnectionLost, Interrupted, Shed
from mailstead.sieve.compile import CAPABILITY_EXTENSIONS, compile_script
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.parser import SieveError
from mailstead.sieve.senders import upload_problem
from mailstead.storage.interfaces import Store

log = logging.getLogger("mailstead.managesieve")


@dataclass(frozen=True, slots=True)
class ManageSieveListenerSettings:
    hostname: str
    limits: SieveLimits
    max_scripts: int  # per account (QUOTA/MAXSCRIPTS)
    max_errors: int
    idle_timeout: float
    auth_failure_delay: float
    # Networks whose clients may send a password before TLS (core.network.secure_for_auth).
    auth_networks: tuple[IPNetwork, ...] = ()


class ManageSieveServer:
    """Runs ManageSieve sessions for one listener."""

    def __init__(
        self,
        settings: ManageSieveListenerSettings,
        store: Store,
        accounts: AccountService,
        tls: ssl.SSLContext | None,
        shutting_down: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._store = store
        self._accounts = accounts
        self._tls = tls
        self._shutting_down = shutting_down

    def refusal(self, _client_ip: str) -> bytes:
        """What a connection refused by a limit gets (RFC 5804 section 1.3: TRYLATER)."""
        return response("BYE", "Too many connections from your address", "TRYLATER")

    async def session(self, conn: Connection) -> None:
        s = self._settings
        core = ManageSieveCore(ManageSieveSettings(
            hostname=s.hostname,
            extensions=CAPABILITY_EXTENSIONS,
            tls_active=conn.tls is not None,
            starttls_available=self._tls is not None,
            auth_requires_tls=not secure_for_auth(conn.peer_ip, conn.local_ip, s.auth_networks),
            max_script_size=s.limits.max_script_size,
            max_redirects=s.limits.max_redirects,
            max_errors=s.max_errors,
        ), s.limits)
        account_id: int | None = None
        conn.write(core.data_to_send())
        while True:
            event = core.next_event()
            if event is NEED_DATA:
                out = core.data_to_send()
                if out:
                    conn.command_done()  # answered: the next command starts
                    conn.write(out)
                    await conn.drain()
                if self._shutting_down.is_set():
                    core.shutdown()
                    continue
                try:
                    # A deadline for the whole command, not moved by each byte.
                    data = await conn.read_command(s.idle_timeout)
                except TimeoutError:
                    core.timeout()
                    continue
                except Interrupted:
                    continue
                except Shed:
                    # RFC 5804 section 1.3: TRYLATER, a transient condition.
                    conn.write(response("BYE", "Idle too long, server busy", "TRYLATER"))
                    with contextlib.suppress(ConnectionLost):
                        await conn.drain()
                    return
                core.receive_data(data)
            elif event is PAUSED:
                raise RuntimeError("ManageSieve core paused without a pending decision")
            elif isinstance(event, Credentials):
                account_id = await self._login(core, conn.peer_ip, event)
                conn.authenticated = account_id is not None
            elif isinstance(event, ScriptRequest):
                if core.authenticated_as is None or account_id is None:
                    core.no("Authenticate first")
                    continue
                await self._script(core, account_id, event)
            elif isinstance(event, StartTLS):
                if self._tls is None:
                    return
                conn.write(core.data_to_send())
                await conn.drain()
                try:
                    await conn.start_tls(self._tls)
                except ConnectionLost:
                    log_event(log, "managesieve.tls_failed", client=conn.peer_ip)
                    return
                core.tls_started()
            elif isinstance(event, ConnectionClosed):
                conn.write(core.data_to_send())
                with contextlib.suppress(ConnectionLost):
                    await conn.drain()
                return

    async def _login(self, core: ManageSieveCore, client: str, event: Credentials) -> int | None:
        if event.authzid and event.authzid.lower() != event.username.lower():
            core.login_failed("Authorization identity must be the user", "AUTH-TOO-WEAK")
            return None
        result = await self._accounts.login(
            event.username, event.password, protocol="managesieve", client_ip=client,
            mechanism=event.mechanism,
        )
        if not result.ok or result.account is None:
            log_event(log, "managesieve.auth_failed", client=client, user=event.username,
                      reason=result.reason)
            if result.temporary:
                core.login_failed("Too many failed logins, try again later", "TRYLATER")
                return None
            await asyncio.sleep(self._settings.auth_failure_delay)
            core.login_failed(result.detail or "Authentication failed")
            return None
        log_event(log, "managesieve.login", client=client, user=result.account.address)
        core.login_ok(result.account.address)
        return result.account.id

    async def _script(self, core: ManageSieveCore, account_id: int, req: ScriptRequest) -> None:
        store = self._store
        args = req.args
        try:
            if req.command == "LISTSCRIPTS":
                scripts = await store.list_sieve_scripts(account_id)
                core.script_list([(sc.name, sc.active) for sc in scripts])
            elif req.command == "GETSCRIPT":
                script = await store.get_sieve_script(account_id, args[0])
                if script is None:
                    core.no("There is no script by that name", "NONEXISTENT")
                else:
                    core.script(script.content)
            elif req.command == "CHECKSCRIPT":
                problem = await self._owner_problem(core, args[0])
                if problem is not None:
                    core.no(problem)
                else:
                    core.ok("Script is valid")
            elif req.command == "PUTSCRIPT":
                problem = await self._owner_problem(core, args[1])
                if problem is not None:
                    core.no(problem)
                    return
                if not await self._room(account_id, args[0]):
                    core.no("Too many scripts", "QUOTA/MAXSCRIPTS")
                    return
                await store.put_sieve_script(account_id, args[0], args[1])
                core.ok("Putscript completed")
            elif req.command == "HAVESPACE":
                if not await self._room(account_id, args[0]):
                    core.no("Too many scripts", "QUOTA/MAXSCRIPTS")
                else:
                    core.ok("Putscript would succeed")
            elif req.command == "SETACTIVE":
                await store.set_active_sieve_script(account_id, args[0] or None)
                core.ok("Setactive completed")
            elif req.command == "DELETESCRIPT":
                await store.delete_sieve_script(account_id, args[0])
                core.ok("Deletescript completed")
            elif req.command == "RENAMESCRIPT":
                await store.rename_sieve_script(account_id, args[0], args[1])
                core.ok("Renamescript completed")
            else:
                core.no("Not supported")
        except NotFound:
            core.no("There is no script by that name", "NONEXISTENT")
        except InUse:
            core.no("You may not delete the active script", "ACTIVE")
        except AlreadyExists:
            core.no("A script by that name exists already", "ALREADYEXISTS")
        except StoreError as exc:
            log_event(log, "managesieve.store_failed", error=str(exc))
            core.no("Temporary storage failure, try again later", "TRYLATER")

    async def _owner_problem(self, core: ManageSieveCore, content: str) -> str | None:
        """Why the (compiled) script may not be stored for this account: a vacation :from or
        :addresses it does not own, a :mime reason setting other header fields."""
        assert core.authenticated_as is not None
        try:
            script = compile_script(content, self._settings.limits)
        except SieveError as exc:  # the core compiled it already; kept for safety
            return str(exc)
        return await upload_problem(self._store, core.authenticated_as, script)

    async def _room(self, account_id: int, name: str) -> bool:
        scripts = await self._store.list_sieve_scripts(account_id)
        names = {sc.name for sc in scripts}
        return name in names or len(names) < self._settings.max_scripts
