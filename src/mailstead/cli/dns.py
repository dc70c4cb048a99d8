"""``mailstead dns DOMAIN``: every DNS record the administrator must publish, as zone-file
text, from this installation's configuration and the domain's DKIM keys."""

from __future__ import annotations

import argparse
import ipaddress

from mailstead.cli.context import CommandError, Context
from mailstead.cli.dkim import local_domain, with_store
from mailstead.config.loader import load_config
from mailstead.config.model import Config, HostPort
from mailstead.mailauth.records import IPAddress, Services, domain_records, render_zone
from mailstead.mailauth.stspolicy import mta_sts_mode, our_policy
from mailstead.storage.interfaces import Store


def _port(hp: HostPort | None) -> int | None:
    return None if hp is None else hp.port


def services_of(config: Config) -> Services:
    """The client-facing ports of the configured listeners (None where a listener is off)."""
    listen = config.listen
    return Services(
        submission=_port(listen.submission),
        submissions=_port(listen.submissions),
        imap=_port(listen.imap),
        imaps=_port(listen.imaps),
        pop3=_port(listen.pop3),
        pop3s=_port(listen.pop3s),
        https=_port(listen.https),
    )


def public_addresses(config: Config, given: list[str]) -> list[IPAddress]:
    """``--address`` values, else the globally routable addresses the listeners bind to."""
    out: list[IPAddress] = []
    if given:
        for text in given:
            try:
                out.append(ipaddress.ip_address(text))
            except ValueError:
                raise CommandError(f"--address: {text!r} is not an IP address") from None
    else:
        for name in ("smtp", "submission", "submissions", "imap", "imaps"):
            hp: HostPort | None = getattr(config.listen, name)
            try:
                ip = ipaddress.ip_address(hp.host) if hp is not None else None
            except ValueError:
                ip = None
            if ip is not None and ip.is_global:
                out.append(ip)
    return list(dict.fromkeys(out))


def dns(ctx: Context, args: argparse.Namespace) -> int:
    config = load_config(ctx.existing_data_dir(args.data_dir))
    ascii_name, domain = local_domain(args.domain)
    addresses = public_addresses(config, args.address or [])

    async def action(store: Store) -> None:
        keys = await store.dkim_keys(domain)
        sections = domain_records(
            ascii_name,
            config.hostname,
            keys,
            services=services_of(config),
            addresses=addresses,
            mta_sts_mode=mta_sts_mode(config),
            mta_sts_policy_text=our_policy(config),
        )
        ctx.stdout.write(render_zone(ascii_name, sections))

    return with_store(ctx, args, domain, action)
