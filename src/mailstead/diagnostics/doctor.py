"""``doctor``: every server-side check in a fixed order, run concurrently where they wait on
the network, as one list of findings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from mailstead.config.model import Config
from mailstead.diagnostics import checks_dns as dnsc
from mailstead.diagnostics import checks_server as srv
from mailstead.diagnostics.lookup import Lookup
from mailstead.diagnostics.model import Check, fail, printable
from mailstead.storage.interfaces import Store


def lookup_for(config: Config) -> Lookup:
    """DNS through the configured nameservers ([dns]), else the system's."""
    servers = [(hp.host, hp.port) for hp in config.dns.nameservers]
    return Lookup(servers or None)


async def _guard(name: str, work: Awaitable[list[Check]]) -> list[Check]:
    """A check that crashes (a bug, a store error) is a FAIL finding, not the end of the run."""
    try:
        return await work
    except Exception as exc:  # the report must finish whatever one check runs into
        return [fail(name, f"the check itself failed: {type(exc).__name__}: "
                     f"{printable(str(exc))}", "report this as a bug, with the output")]


async def _one(work: Awaitable[Check | None]) -> list[Check]:
    found = await work
    return [] if found is None else [found]


async def _many(works: Sequence[Awaitable[Check]]) -> list[Check]:
    return list(await asyncio.gather(*works))


async def _domain_checks(lookup: Lookup, config: Config, store: Store, domain: str,
                         ours: list[str]) -> list[Check]:
    host = config.hostname
    keys = await store.dkim_keys(domain)
    parts = await asyncio.gather(
        _one(dnsc.check_mx(lookup, domain, host, ours)),
        _one(dnsc.check_spf(lookup, domain, host, ours)),
        dnsc.check_dkim(lookup, domain, keys),
        _one(dnsc.check_dmarc(lookup, domain)),
        _one(dnsc.check_mta_sts(lookup, config, domain)),
        dnsc.check_client_names(lookup, config, domain),
    )
    return [c for part in parts for c in part]


async def run_doctor(config: Config, store: Store, *, lookup: Lookup | None = None,
                     timeout: float = 10.0) -> list[Check]:
    """Every check, listeners first, then certificate, DNS, blocklists, outbound, queue,
    disk and clock."""
    lookup = lookup or lookup_for(config)
    listeners = _many([srv.check_listener(config, name, ep, timeout)
                       for name, ep in config.listen.items()])
    host_check, dns_addresses = await dnsc.check_host_addresses(lookup, config.hostname)
    ours = list(dict.fromkeys([*dns_addresses, *srv.listener_addresses(config)]))
    domains = await store.list_domains()
    per_domain = [_guard(f"dns {d}", _domain_checks(lookup, config, store, d, ours))
                  for d in domains]
    ptr = _many([dnsc.check_ptr(lookup, config.hostname, ip) for ip in ours])
    dnsbl = _many([dnsc.check_dnsbl(lookup, ip, zone)
                   for ip in ours for zone in config.doctor.dnsbl_zones])
    parts = await asyncio.gather(
        _guard("listeners", listeners),
        _guard("certificate", asyncio.to_thread(srv.check_certificate, config)),
        *per_domain,
        _guard("reverse dns", ptr),
        _guard("blocklists", dnsbl),
        _guard("outbound port 25", _one(srv.check_outbound_port25(config, timeout))),
        _guard("queue", _queue(store)),
        _guard("disk space", _one(asyncio.to_thread(
            srv.check_disk, config.data_dir,
            # The reserve guards the embedded store only (PostgreSQL has its own disk).
            config.store.reserve_mb if config.store.backend == "sqlite" else 0,
            config.store.reserve_percent))),
        _guard("clock", _one(srv.check_clock(config, timeout))),
    )
    listener_checks, cert_checks, *rest = parts
    return [*listener_checks, *cert_checks, host_check, *(c for part in rest for c in part)]


async def _queue(store: Store) -> list[Check]:
    return [srv.check_queue(await store.list_queue())]
