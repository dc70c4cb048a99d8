"""The composition root: config -> storage -> services -> servers. The only module that knows
every part (DESIGN.md)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailstead.accounts.installkey import open_keys
from mailstead.accounts.keys import SecurityKeyError, SecurityKeys
from mailstead.accounts.quotawarn import QuotaWarner
from mailstead.accounts.service import AccountService
from mailstead.config import Config, HostPort
from mailstead.core.budget import ByteBudget
from mailstead.core.errors import ConfigError
from mailstead.core.network import IPNetwork
from mailstead.core.nodeid import node_name
from mailstead.delivery.service import DeliveryService
from mailstead.filters.pipeline import Pipeline, Stage
from mailstead.filters.spam import JunkLearner
from mailstead.imap.context import IMAPContext
from mailstead.mailauth.srs import Srs
from mailstead.maintenance import (
    FIRST_DELAY,
    HOURLY,
    Job,
    Maintenance,
    auth_failures_job,
    greylist_job,
    sieve_events_job,
    tls_reports_job,
    web_sessions_job,
)
from mailstead.observability.log import log_event, setup_logging
from mailstead.servers.imap import IMAPListenerSettings, IMAPServer
from mailstead.servers.listener import Listener, make_tls_context
from mailstead.servers.managesieve import ManageSieveListenerSettings, ManageSieveServer
from mailstead.servers.pop3 import LeaseLock, Maildrops, POP3ListenerSettings, POP3Server
from mailstead.servers.slots import SlotPolicy
from mailstead.servers.smtp import SMTPListenerSettings, SMTPServer
from mailstead.servers.spool import SpoolLimits
from mailstead.sieve.delivery import SieveRunner
from mailstead.sieve.limits import SieveLimits
from mailstead.storage import open_store
from mailstead.storage.interfaces import Store
from mailstead.storage.space import SpaceGuard
from mailstead.web.server import WebServer, start_web

if TYPE_CHECKING:
    from mailstead.dns.resolver import DnsPythonResolver
    from mailstead.queue.workers import QueueWorkers

log = logging.getLogger("mailstead.app")

# How long a stopping server lets busy sessions finish their transaction (SIGTERM).
SHUTDOWN_GRACE = 30.0



@dataclass(frozen=True, slots=True)
class _SMTPPort:
    name: str
    submission: bool
    implicit_tls: bool


_SMTP_PORTS = (
    _SMTPPort("smtp", submission=False, implicit_tls=False),
    _SMTPPort("submission", submission=True, implicit_tls=False),
    _SMTPPort("submissions", submission=True, implicit_tls=True),
)


def _resolver(config: Config) -> DnsPythonResolver:
    """The one resolver of the process (``[dns]``): outbound routing, MTA-STS and the inbound
    checks share it, so they share its cache (issue 9)."""
    from mailstead.dns.resolver import DnsPythonResolver

    nameservers = [(ns.host, ns.port) for ns in config.dns.nameservers] or None
    return DnsPythonResolver(nameservers)


def _srs(config: Config, keys: SecurityKeys) -> Srs | None:
    """SRS for forwarded mail (``[smtp] srs``), keyed from the installation's security key
    (checked against the store at start, accounts/installkey.py) so every node makes and
    accepts the same addresses; None when turned off."""
    if not config.smtp.srs:
        return None
    import time

    return Srs(keys.srs_key(), time.time)


def _outbound(config: Config, store: Store, resolver: DnsPythonResolver,
              srs: Srs | None = None) -> QueueWorkers:
    """The outbound side (issue 5): MTA-STS, router, SMTP client, DKIM signer, ARC sealer
    and the queue workers, from ``[queue]``, over the shared ``resolver``."""
    from mailstead.mailauth.arc import ArcSealer
    from mailstead.mailauth.dkim import DkimSigner
    from mailstead.queue.client import OutboundClient, default_tls_context
    from mailstead.queue.mtasts import HttpsPolicyFetcher, MtaStsCache, TlsRptCounters
    from mailstead.queue.routing import Router, Smarthost
    from mailstead.queue.schedule import RetryPolicy
    from mailstead.queue.workers import QueueWorkers, WorkerSettings

    q = config.queue

    def verifying_context() -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=str(q.tls_ca_file) if q.tls_ca_file is not None else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996, RFC 8461 section 4.2
        return ctx

    def client_context(verify: bool) -> ssl.SSLContext:
        # Opportunistic STARTTLS does not authenticate (RFC 7435); MTA-STS enforce and
        # smarthosts verify against [queue] tls_ca_file or the system's trust store.
        return verifying_context() if verify else default_tls_context(False)

    try:
        fetch_context = verifying_context()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load queue.tls_ca_file {q.tls_ca_file}: {exc}; fix [queue] tls_ca_file"
        ) from exc
    tlsrpt = TlsRptCounters()
    mta_sts = MtaStsCache(
        resolver,
        HttpsPolicyFetcher(resolver, port=q.mta_sts_port, ssl_context=fetch_context),
        tlsrpt=tlsrpt,
    )
    smarthosts = {
        domain: Smarthost(
            host=sh.host,
            port=sh.port,
            tls=sh.tls,
            username=sh.username,
            password=sh.password,
        )
        for domain, sh in q.smarthost.items()
    }
    # MX hosts listen on [queue] remote_port (25; tests use unprivileged ports); smarthost
    # routes keep their own port.
    router = Router(resolver, smarthosts, mta_sts, own_names=(config.hostname,),
                    port=q.remote_port)
    client = OutboundClient(
        config.hostname,
        connect_timeout=q.connect_timeout,
        command_timeout=q.command_timeout,
        tls_context_factory=client_context,
        tlsrpt=tlsrpt,
        reuse_time=q.connection_reuse_time,
        max_idle=q.max_connections,
    )
    # A lease must outlast the longest attempt: every target's connection, then the commands
    # with DATA's longer final wait (RFC 5321 section 4.5.3.2), so a slow attempt is never
    # claimed twice; [queue] lease may set it (the loader checks it is not shorter).
    lease = q.lease or max(600.0, 10 * q.connect_timeout + 8 * q.command_timeout)
    settings = WorkerSettings(
        hostname=config.hostname,
        policy=RetryPolicy.from_config(q),
        max_connections=q.max_connections,
        max_per_domain=q.max_connections_per_domain,
        lease=lease,
        node=node_name(config.data_dir),
        poll_interval=min(1.0, min(q.retry_schedule) / 2),
    )
    # Issue 9: mail an alias forwards is ARC-sealed (RFC 8617) before it is DKIM-signed.
    return QueueWorkers(store, router, client, DkimSigner(store), settings, tlsrpt=tlsrpt,
                        sealer=ArcSealer(store, config.hostname), srs=srs)


def _tls_reports(config: Config, store: Store, resolver: DnsPythonResolver,
                 workers: QueueWorkers) -> Job:
    """The daily SMTP TLS reports (RFC 8460) of ``[tls_reports]``, queued for the workers."""
    from mailstead.queue.tlsreport import reporter_from_config

    reporter = (reporter_from_config(config, store, resolver, on_queued=workers.wake)
                if config.tls_reports.send else None)
    return tls_reports_job(reporter, store)


def _filters(
    config: Config, store: Store, resolver: DnsPythonResolver, jobs: list[Job] | None = None
) -> tuple[Pipeline | None, JunkLearner | None]:
    """The inbound filter pipeline of port-25 mail (issue 9): sender authentication from
    ``[auth_checks]`` over the ``[dns]`` resolver, ClamAV from ``[antivirus]``, then the spam
    filter of ``[spam]`` (built in, or rspamd); None when nothing is enabled. The learner
    (or None) is the IMAP hook that trains the spam filter on moves into and out of Junk.
    Housekeeping the filters need (greylist pruning) is appended to ``jobs``."""
    import time

    from mailstead.filters.auth import AuthStage, FailAction
    from mailstead.filters.bayes import BayesClassifier
    from mailstead.filters.clamav import ClamavStage, ClamdAddress, ClamdClient
    from mailstead.filters.dnsbl import DnsblChecker
    from mailstead.filters.greylist import Greylist, GreylistSettings
    from mailstead.filters.rspamd import RspamdFilter
    from mailstead.filters.spam import (
        BuiltinSpamFilter,
        BuiltinWeights,
        SpamFilter,
        SpamPolicy,
        SpamStage,
    )
    from mailstead.mailauth.dmarc import OrgDomains
    from mailstead.mailauth.verify import AuthVerifier

    checks = config.auth_checks
    stages: list[Stage] = []
    if checks.enable:
        verifier = AuthVerifier(
            resolver,
            OrgDomains(),
            trusted_arc_sealers=checks.trusted_arc_sealers,
        )
        stages.append(AuthStage(
            verifier,
            config.hostname,
            on_reject=FailAction(checks.dmarc_reject_action),
            on_quarantine=FailAction(checks.quarantine_action),
        ))
    av = config.antivirus
    if av.clamd:
        stages.append(ClamavStage(
            ClamdClient(ClamdAddress.parse(av.clamd), max_size=av.max_size),
            tempfail_when_down=av.on_failure == "tempfail",
        ))
    spam = config.spam
    learner: JunkLearner | None = None
    if spam.enable:
        spam_filter: SpamFilter
        if spam.rspamd:
            spam_filter = RspamdFilter(
                spam.rspamd,
                controller=spam.rspamd_controller or None,
                password=spam.rspamd_password.reveal() if spam.rspamd_password else None,
            )
        else:
            greylist = Greylist(store, time.time, GreylistSettings(
                delay=spam.greylist_delay)) if spam.greylisting else None
            if greylist is not None and jobs is not None:
                jobs.append(greylist_job(greylist))
            spam_filter = BuiltinSpamFilter(
                dnsbl=DnsblChecker(resolver, spam.dnsbl_zones) if spam.dnsbl_zones else None,
                greylist=greylist,
                bayes=BayesClassifier(store) if spam.bayes else None,
                weights=BuiltinWeights(dnsbl=spam.dnsbl_score),
            )
        stages.append(SpamStage(spam_filter, SpamPolicy(
            junk_score=spam.junk_score,
            reject_score=spam.reject_score,
            reject_to_junk=spam.reject_action == "junk",
            tempfail_when_down=spam.on_failure == "tempfail",
        )))
        if spam.rspamd or spam.bayes:
            learner = JunkLearner(store, [spam_filter])
    return (Pipeline(stages) if stages else None), learner


def _sieve_limits(config: Config) -> SieveLimits:
    sv = config.sieve
    return SieveLimits(max_script_size=sv.max_script_size, max_actions=sv.max_actions,
                       max_redirects=sv.max_redirects, max_steps=sv.max_run_steps,
                       max_cpu_seconds=sv.max_run_cpu)


def _sieve_runner(config: Config, store: Store) -> SieveRunner | None:
    """The per-account Sieve step of delivery (issue 9), from ``[sieve]``."""
    if not config.sieve.enable:
        return None
    return SieveRunner(store, config.hostname, limits=_sieve_limits(config),
                       redirects_per_day=config.sieve.redirects_per_day,
                       sender_hourly_limit=config.queue.sender_hourly_limit,
                       max_mailboxes=config.limits.max_mailboxes_per_account)


def _auth_networks(config: Config) -> tuple[IPNetwork, ...]:
    """Where a password may come before TLS besides this host itself: the trusted networks
    of ``[security]`` (core.network.secure_for_auth)."""
    return tuple(ipaddress.ip_network(n) for n in config.security.trusted_networks)


def _managesieve_listener(
    config: Config, store: Store, accounts: AccountService, tls: ssl.SSLContext,
    stopping: asyncio.Event,
) -> Listener:
    """The ManageSieve listener (RFC 5804) on ``listen.managesieve``."""
    sv = config.sieve
    address = config.listen.managesieve
    assert address is not None
    server = ManageSieveServer(
        ManageSieveListenerSettings(
            hostname=config.hostname,
            limits=_sieve_limits(config),
            max_scripts=sv.max_scripts,
            max_errors=sv.max_errors,
            idle_timeout=sv.idle_timeout,
            auth_failure_delay=sv.auth_failure_delay,
            auth_networks=_auth_networks(config),
        ),
        store, accounts, tls, stopping,
    )
    return Listener(
        "managesieve", address.host, address.port, server.session, ssl_context=None,
        max_connections=sv.max_connections, max_connections_per_ip=sv.max_connections_per_ip,
        refuse=server.refusal, policy=_slot_policy(config),
    )


def _slot_policy(config: Config) -> SlotPolicy:
    """How every mail listener shares its slots, from ``[connections]``."""
    c = config.connections
    return SlotPolicy(tls_handshake_timeout=c.tls_handshake_timeout,
                      ipv4_prefix=c.ipv4_prefix, ipv6_prefix=c.ipv6_prefix,
                      shed_above=c.shed_above)


def _maintenance(
    config: Config, store: Store, jobs: list[Job], *, interval: float = HOURLY,
    first_delay: float = FIRST_DELAY,
) -> Maintenance:
    """The hourly housekeeping task: Sieve's send log (when Sieve is on), failed logins
    (counted in the store when it is shared by nodes), expired web sessions (when this node
    serves the web pages) and ``jobs``."""
    # The nodes serving the web pages prune the web sessions (a table shared by the nodes).
    if config.listen.https is not None or config.listen.http is not None:
        jobs = [web_sessions_job(store), *jobs]
    if store.networked:
        jobs = [auth_failures_job(store, config.security.failure_window), *jobs]
    if config.sieve.enable:
        jobs = [sieve_events_job(store), *jobs]
    return Maintenance(jobs, interval=interval, first_delay=first_delay)


def _load_tls(config: Config) -> ssl.SSLContext:
    try:
        return make_tls_context(config.tls.cert, config.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {config.tls.cert} / key {config.tls.key}: {exc}; "
            "fix [tls] cert and key in the config file"
        ) from exc


async def run(config: Config) -> None:
    """Starts every configured listener and serves until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    tls = _load_tls(config)
    store = await open_store(config.data_dir, config.store)
    try:
        # Before anything starts: a node without the installation's key must not serve
        # (accounts/installkey.py), and says so in one line.
        keys = await open_keys(store, Path(config.data_dir))
    except BaseException:
        await store.close()
        raise
    stopping = asyncio.Event()
    listeners: list[Listener] = []
    web_servers: list[WebServer] = []
    workers: QueueWorkers | None = None
    maintenance: Maintenance | None = None
    accounts: AccountService | None = None
    try:
        accounts = AccountService.from_config(store, config, keys)
        resolver = _resolver(config)
        srs = _srs(config, keys)
        workers = _outbound(config, store, resolver, srs)
        jobs: list[Job] = [_tls_reports(config, store, resolver, workers)]
        pipeline, learner = _filters(config, store, resolver, jobs)
        maintenance = _maintenance(config, store, jobs)
        quota_warner = QuotaWarner(store, config.hostname)
        delivery = DeliveryService(
            store,
            config.hostname,
            sender_hourly_limit=config.queue.sender_hourly_limit,
            on_queued=workers.wake,
            filters=pipeline,
            sieve=_sieve_runner(config, store),
            notices=workers.notifier,
            srs=srs,
            quota_warner=quota_warner,
        )
        # The spool is on this node's disk whatever the store: the embedded store's guard,
        # or one of its own for the data directory of a PostgreSQL node.
        space = getattr(store, "space", None)
        if not isinstance(space, SpaceGuard):
            space = SpaceGuard(config.data_dir, reserve_mb=config.store.reserve_mb,
                               reserve_percent=config.store.reserve_percent)
        spool = SpoolLimits(config.data_dir / "tmp", config.smtp.spool_memory_budget,
                            config.smtp.spool_disk_budget, room=space.admit)
        spool.prepare()
        for port in _SMTP_PORTS:
            address: HostPort | None = getattr(config.listen, port.name)
            if address is None:
                continue
            server = SMTPServer(
                SMTPListenerSettings(
                    name=port.name,
                    hostname=config.hostname,
                    submission=port.submission,
                    implicit_tls=port.implicit_tls,
                    max_message_size=config.smtp.max_message_size,
                    max_recipients=config.smtp.max_recipients,
                    max_errors=config.smtp.max_errors,
                    idle_timeout=config.smtp.idle_timeout,
                    auth_networks=_auth_networks(config),
                ),
                delivery,
                accounts,
                tls,
                stopping,
                spool,
            )
            listeners.append(Listener(
                port.name, address.host, address.port, server.session,
                ssl_context=tls if port.implicit_tls else None,
                max_connections=config.smtp.max_connections,
                max_connections_per_ip=config.smtp.max_connections_per_ip,
                refuse=server.refusal, policy=_slot_policy(config),
            ))
        # POP3 (issue 4): 110 with STLS, 995 with implicit TLS; both share one Maildrops,
        # whose per-account lock makes a second session on either port get [IN-USE]; with
        # a store shared by nodes, the lock is a lease in it (on any node's ports).
        maildrops = Maildrops(store, LeaseLock(store) if store.networked else None)
        for name, implicit in (("pop3", False), ("pop3s", True)):
            address = getattr(config.listen, name)
            if address is None:
                continue
            pop3 = POP3Server(
                POP3ListenerSettings(
                    name=name,
                    hostname=config.hostname,
                    implicit_tls=implicit,
                    max_errors=config.pop3.max_errors,
                    idle_timeout=config.pop3.idle_timeout,
                    auth_failure_delay=config.pop3.auth_failure_delay,
                    auth_networks=_auth_networks(config),
                ),
                maildrops, accounts, tls, stopping,
            )
            listeners.append(Listener(
                name, address.host, address.port, pop3.session,
                ssl_context=tls if implicit else None,
                max_connections=config.pop3.max_connections,
                max_connections_per_ip=config.pop3.max_connections_per_ip,
                refuse=pop3.refusal, policy=_slot_policy(config),
            ))
        # ManageSieve (issue 9): port 4190, STARTTLS, users edit their Sieve scripts.
        if config.listen.managesieve is not None:
            listeners.append(_managesieve_listener(config, store, accounts, tls, stopping))
        # IMAP (issue 3): 143 with STARTTLS, 993 with implicit TLS; one IMAPContext shares
        # per-account session counts between both ports.
        spool_dir = config.data_dir / "tmp"
        spool_dir.mkdir(mode=0o700, exist_ok=True)
        imap_ctx = IMAPContext(store, accounts,
                               copy_hook=learner.on_copy if learner is not None else None,
                               spool_dir=spool_dir,
                               append_budget=ByteBudget(config.imap.append_memory),
                               quota_warner=quota_warner)
        for name, implicit in (("imap", False), ("imaps", True)):
            address = getattr(config.listen, name)
            if address is None:
                continue
            imap = IMAPServer(
                IMAPListenerSettings(
                    name=name,
                    hostname=config.hostname,
                    implicit_tls=implicit,
                    max_message_size=config.imap.max_literal or config.smtp.max_message_size,
                    max_bad_commands=config.imap.max_bad_commands,
                    max_connections_per_account=config.imap.max_connections_per_account,
                    max_mailboxes_per_account=config.limits.max_mailboxes_per_account,
                    idle_timeout=config.imap.idle_timeout,
                    command_rate=config.imap.command_rate,
                    command_burst=config.imap.command_burst,
                    compress_max_ratio=config.imap.compress_max_ratio,
                    auth_networks=_auth_networks(config),
                    progress_interval=config.imap.progress_interval,
                ),
                imap_ctx, tls, stopping,
            )
            listeners.append(Listener(
                name, address.host, address.port, imap.session,
                ssl_context=tls if implicit else None,
                max_connections=config.imap.max_connections,
                max_connections_per_ip=config.imap.max_connections_per_ip,
                refuse=imap.refusal, policy=_slot_policy(config),
            ))
        for listener in listeners:
            try:
                await listener.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {listener.host}:{listener.port} for {listener.name}: "
                    f"{exc.strerror or exc}; change [listen] {listener.name} or free the port"
                ) from exc
            assert listener.bound is not None
            host, port_no = listener.bound
            shown = f"[{host}]" if ":" in host else host
            print(f"mailstead: {listener.name} listening on {shown}:{port_no}", flush=True)
        # HTTP and HTTPS (issue 7): autoconfig, autodiscover, the Apple profile and the card,
        # told the ports the mail listeners really got; HTTPS shares the live context `tls`.
        bound = {lst.name: lst.bound[1] for lst in listeners if lst.bound is not None}
        await start_web(config, store, tls, bound, web_servers, grace=SHUTDOWN_GRACE,
                        accounts=accounts)
        for web in web_servers:
            assert web.bound is not None
            host, port_no = web.bound
            shown = f"[{host}]" if ":" in host else host
            print(f"mailstead: {web.name} listening on {shown}:{port_no}", flush=True)

        # Outbound delivery starts once the listeners are up (a DSN to a local sender needs
        # nothing else) and stops before the store closes.
        await workers.start()
        await maintenance.start()  # hourly pruning of greylist and Sieve log rows
        store.start_indexing()  # new mail is indexed for SEARCH soon after it arrives

        stop = asyncio.Event()

        def _reload() -> None:
            # Check the pair in a scratch context first: a failed load_cert_chain on the live
            # context can leave it with the new certificate and no key, and then no handshake
            # succeeds. Listeners keep the live context, so the good pair is loaded into it.
            try:
                make_tls_context(config.tls.cert, config.tls.key)
                tls.load_cert_chain(str(config.tls.cert), str(config.tls.key))
                log_event(log, "tls.reloaded", cert=str(config.tls.cert))
            except (OSError, ssl.SSLError) as exc:
                log_event(log, "tls.reload_failed", cert=str(config.tls.cert), error=str(exc),
                          note="still serving the previous certificate")

        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload)
        print("mailstead: ready", flush=True)
        # Every listener printed above: the mail protocols' and the web servers'.
        log_event(log, "server.ready", hostname=config.hostname,
                  listeners=len(listeners) + len(web_servers))
        await stop.wait()
        log_event(log, "server.stopping")
        stopping.set()
        for listener in listeners:
            listener.stop_accepting()
        for web in web_servers:
            web.stop_accepting()
        await asyncio.gather(
            workers.stop(SHUTDOWN_GRACE),
            maintenance.stop(),
            *(lst.wait_sessions(SHUTDOWN_GRACE) for lst in listeners),
            *(web.wait_stopped(SHUTDOWN_GRACE + 5) for web in web_servers),
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        for listener in listeners:
            listener.stop_accepting()
        for web in web_servers:
            web.stop_accepting()
        await asyncio.gather(*(web.wait_stopped(5) for web in web_servers))
        if workers is not None:
            await workers.stop(0)
        if maintenance is not None:
            await maintenance.stop(0)
        if accounts is not None:
            await accounts.close()  # the last audit rows
        await store.close()
        log_event(log, "server.stopped")


def serve(config: Config) -> int:
    """Runs the server in this process (uvloop when installed); returns the exit code."""
    setup_logging(config.log.level)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run(config))
    except (ConfigError, SecurityKeyError) as exc:
        print(f"mailstead: {exc}", file=sys.stderr)
        return 1
    return 0
