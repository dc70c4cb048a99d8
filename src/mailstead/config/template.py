"""The commented mailstead.toml that ``mailstead init`` writes.

Every setting appears, either set or commented out with its default, each with the one-line
help from the model, so the file documents itself.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

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


def toml_value(value: object) -> str | None:
    """A default as TOML (so uncommenting its line changes nothing), or None when TOML cannot
    say it (an unset optional value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str | Path | HostPort):
        return _quote(str(value))
    if isinstance(value, tuple | list):
        items = [toml_value(item) for item in value]
        if any(item is None for item in items):
            return None
        return "[" + ", ".join(item for item in items if item is not None) + "]"
    return None


def _unset(name: str, example: str | None = None) -> str:
    """The line of a setting that is unset by default: not ``# key = value``, which would
    change the config when uncommented."""
    if example is None:
        return f"# ({name} is not set by default)"
    return f"# ({name} is not set by default) for example: {name} = {example}"


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
            out.extend(_setting(name, f, listen, store, default_store, hostname))
        out.append("")
    return "\n".join(out)


def _setting(section: str, f: dataclasses.Field[object], listen: ListenConfig,
             store: StoreConfig, default_store: StoreConfig, hostname: str) -> list[str]:
    """The line(s) of one setting: its value where init chose one, else its default as a
    commented TOML line, else (unset by default) an example that is not a setting line."""
    if section == "listen":
        endpoint = getattr(listen, f.name)
        if endpoint is None:
            return [f"# ({f.name} is off) to turn it on: "
                    f"{f.name} = {_quote(f'0.0.0.0:{STANDARD_PORTS[f.name]}')}"]
        return [f"{f.name} = {_quote(str(endpoint))}"]
    if section == "store" and getattr(store, f.name) != getattr(default_store, f.name):
        return [f"{f.name} = {toml_value(getattr(store, f.name))}"]
    examples = {
        ("tls", "cert"): _quote(f"/etc/letsencrypt/live/{hostname}/fullchain.pem"),
        ("tls", "key"): _quote(f"/etc/letsencrypt/live/{hostname}/privkey.pem"),
        ("queue", "tls_ca_file"): _quote("/etc/ssl/certs/ca-certificates.crt"),
        ("limits", "default_quota"): _quote("2G"),
    }
    if (section, f.name) in examples:
        line = _unset(f.name, examples[section, f.name])
        note = f.metadata.get("default")
        return [line, f"#   (default: {note})"] if note else [line]
    if section == "queue" and f.name == "smarthost":
        return [_unset(f.name) + ": mail goes to each domain's MX. To relay through a provider:",
                '#   [queue.smarthost."*"]',
                '#   host = "smtp.provider.example"',
                "#   port = 587",
                '#   tls = "starttls"',
                '#   username = "you@provider.example"',
                '#   password = "..."']
    if f.default_factory is not dataclasses.MISSING:
        default: object = f.default_factory()
    else:
        default = f.default
    text = toml_value(default)
    if text is None:
        return [_unset(f.name)]
    return [f"# {f.name} = {text}"]
