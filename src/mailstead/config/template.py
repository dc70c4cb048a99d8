"""The commented mailstead.toml that ``mailstead init`` writes.

Every setting appears, either set or commented out with its default, each with the one-line
help from the model, so the file documents itself.
"""

from __future__ import annotations

import dataclasses
import textwrap

from mailstead.config.model import SECTIONS, HostPort, ListenConfig, StoreConfig

# The ports of a --dev installation: the standard ones moved above 1024 so no privilege is
# needed, on loopback only.
DEV_PORTS: dict[str, int] = {
    "smtp": 2525,
    "submission": 2587,
    "submissions": 2465,
    "imap": 2143,
    "imaps": 2993,
    "pop3": 2110,
    "pop3s": 2995,
    "managesieve": 24190,
    "http": 8080,
}
# The IANA-registered ports (RFC 5321, 6409, 8314, 9051, 1939, 5804, 9110).
STANDARD_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "managesieve": 4190,
    "http": 80,
    "https": 443,
}


def dev_listen() -> ListenConfig:
    """Listeners of a development install: 127.0.0.1 on unprivileged ports, no https."""
    return ListenConfig(**{k: HostPort("127.0.0.1", p) for k, p in DEV_PORTS.items()})


def standard_listen() -> ListenConfig:
    """Listeners of a production install: every protocol on its standard port, all addresses."""
    return ListenConfig(**{k: HostPort("0.0.0.0", p) for k, p in STANDARD_PORTS.items()})


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 94)]


def _default_toml(value: object) -> str:
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_config(hostname: str, listen: ListenConfig, store: StoreConfig | None = None) -> str:
    """The text of a fresh mailstead.toml for ``hostname`` with the given listeners; ``store``
    (default: the embedded SQLite store) is written out when it is not the default, so
    ``mailstead init --store postgresql://...`` yields a config that points at the database."""
    store = store or StoreConfig()
    default_store = StoreConfig()
    out = [
        "# Mailstead configuration. Reference: docs/config.md; the server reads this file at",
        "# start-up. Lines starting with # are comments; uncomment a setting to change it.",
        "",
        "# The name this server greets with and has a certificate for.",
        f"hostname = {_quote(hostname)}",
        "",
    ]
    for name, cls in SECTIONS:
        out.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            out.extend(_comment(f.metadata["doc"]))
            if name == "listen":
                endpoint = getattr(listen, f.name)
                if endpoint is None:
                    out.append(f'# {f.name} = "0.0.0.0:{STANDARD_PORTS[f.name]}"   # off')
                else:
                    out.append(f"{f.name} = {_quote(str(endpoint))}")
            elif name == "tls":
                pem = "fullchain.pem" if f.name == "cert" else "privkey.pem"
                out.append(f'# {f.name} = "/etc/letsencrypt/live/{hostname}/{pem}"')
                out.append(f"#   (default: {f.metadata['default']})")
            elif name == "queue" and f.name == "smarthost":
                out.append('# [queue.smarthost."*"]   (default: none, MX routing)')
                out.append('# host = "smtp.provider.example"')
                out.append("# port = 587")
                out.append('# tls = "starttls"')
                out.append('# username = "you@provider.example"')
                out.append('# password = "..."')
            elif name == "queue" and f.name == "tls_ca_file":
                out.append('# tls_ca_file = "/etc/ssl/certs/ca-certificates.crt"')
            elif name == "queue" and f.name == "retry_schedule":
                delays = ", ".join(_default_toml(x) for x in f.default)  # type: ignore[union-attr]
                out.append(f"# {f.name} = [{delays}]")
            elif name == "security" and f.name == "trusted_networks":
                out.append('# trusted_networks = ["192.0.2.0/24"]   (default: none)')
            elif name == "store" and getattr(store, f.name) != getattr(default_store, f.name):
                out.append(f"{f.name} = {_default_toml(getattr(store, f.name))}")
            elif name == "dns":
                out.append('# nameservers = ["127.0.0.1:53"]   (default: the system resolver)')
            else:
                out.append(f"# {f.name} = {_default_toml(f.default)}")
        out.append("")
    return "\n".join(out)
