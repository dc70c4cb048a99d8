"""Parsers for single config values; each raises BadValue with what was expected and what came.

They take the raw value tomllib produced (any type) so that a string where a number belongs,
or a bool where a number belongs (``True`` is an ``int`` in Python), is refused, not coerced.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from urllib.parse import urlsplit

from mailstead.accounts.names import DomainNameError, ascii_domain
from mailstead.config.model import LOG_LEVELS, SMARTHOST_TLS, HostPort, SmarthostConfig
from mailstead.core.secret import Secret
from mailstead.core.sizes import parse_size

MAX_VALUE_SHOWN = 60


class BadValue(ValueError):
    """A value has the wrong type or is out of range; the loader adds the file, line and key."""


def shown(value: object) -> str:
    """The offending value as it appears in the message: JSON-ish quoting, shortened."""
    if isinstance(value, str):
        text = value if len(value) <= MAX_VALUE_SHOWN else value[:MAX_VALUE_SHOWN] + "..."
        out = []
        for ch in text:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch.isprintable():
                out.append(ch)
            else:  # control and line-separator characters would break the one-line message
                out.append(f"\\u{ord(ch):04x}")
        return '"' + "".join(out) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _split_host_port(text: str) -> tuple[str, str | None]:
    """Split "host:port", "[v6]:port", "host" or "[v6]"; the port is None when absent."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        host, rest = text[1:end], text[end + 1 :]
        if ipaddress.ip_address(host).version != 6:
            raise ValueError("only IPv6 addresses go in brackets")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError("junk after ]")
        return host, rest[1:]
    if text.count(":") > 1:
        raise ValueError("IPv6 addresses must be written in brackets, e.g. [::1]:25")
    if ":" in text:
        host, port = text.split(":")
        return host, port
    return text, None


def _port(text: str, lowest: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise ValueError("bad port")
    port = int(text)
    if not lowest <= port <= 65535:
        raise ValueError("port out of range")
    return port


def _check_host(host: str, *, ip_only: bool) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if ip_only:
            raise
    if host == "localhost":
        return host
    return ascii_domain(host)


def parse_listen(value: object) -> HostPort:
    """A listener address "host:port"; port 0 lets the OS pick a free port."""
    expected = 'expected "host:port" with port 0-65535 (0: any free port)'
    if not isinstance(value, str):
        raise BadValue(f"{expected}, got {shown(value)}")
    try:
        host, port = _split_host_port(value.strip())
        if port is None:
            raise ValueError("no port")
        return HostPort(_check_host(host, ip_only=False), _port(port, 0))
    except (ValueError, DomainNameError):
        raise BadValue(f"{expected}, got {shown(value)}") from None


def parse_nameserver(value: object) -> HostPort:
    """A resolver "ip" or "ip:port" (port 53 when absent, RFC 1035 section 4.2)."""
    expected = 'expected an IP address with optional ":port" (1-65535)'
    if not isinstance(value, str):
        raise BadValue(f"{expected}, got {shown(value)}")
    try:
        text = value.strip()
        if text.count(":") > 1 and not text.startswith("["):
            return HostPort(str(ipaddress.IPv6Address(text)), 53)  # a bare IPv6 address
        host, port = _split_host_port(text)
        return HostPort(_check_host(host, ip_only=True), 53 if port is None else _port(port, 1))
    except ValueError:
        raise BadValue(f"{expected}, got {shown(value)}") from None


def parse_nameservers(value: object) -> tuple[HostPort, ...]:
    """An array of nameservers; empty means the system resolver, as when the key is absent."""
    if not isinstance(value, list):
        raise BadValue(f'expected an array like ["127.0.0.1:53"], got {shown(value)}')
    out = []
    for index, item in enumerate(value, start=1):
        try:
            out.append(parse_nameserver(item))
        except BadValue as exc:
            raise BadValue(f"item {index}: {exc}") from None
    return tuple(out)


def parse_hostname(value: object) -> str:
    """The server's own fully qualified name, returned in ASCII (A-label) lower-case form."""
    if not isinstance(value, str):
        raise BadValue(f'expected a domain name like "mail.example.org", got {shown(value)}')
    try:
        return ascii_domain(value)
    except DomainNameError as exc:
        raise BadValue(str(exc)) from None


def parse_path(value: object) -> Path:
    """A file path; relative paths are resolved against the data directory by the loader."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise BadValue(f"expected a file path, got {shown(value)}")
    return Path(value).expanduser()


def parse_int(value: object, low: int, high: int) -> int:
    """An integer in [low, high]; TOML booleans and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadValue(f"expected an integer from {low} to {high}, got {shown(value)}")
    return value


def parse_quota(value: object) -> int | None:
    """A mailbox size: octets as an integer, or a string such as "2G", "500M" or "none"."""
    if isinstance(value, bool):
        raise BadValue(f"expected a size such as \"2G\" or \"none\", got {shown(value)}")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise BadValue(f"expected a size such as \"2G\" or \"none\", got {shown(value)}")
    try:
        return parse_size(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def parse_seconds(value: object, low: float, high: float) -> float:
    """A duration in seconds, integer or float, in [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise BadValue(f"expected a number of seconds from {low:g} to {high:g}, got {shown(value)}")
    return float(value)


STORE_BACKENDS = ("sqlite", "postgresql")


def parse_backend(value: object) -> str:
    """The store backend name, case-insensitive."""
    if not isinstance(value, str) or value.strip().lower() not in STORE_BACKENDS:
        raise BadValue(f"expected one of {', '.join(STORE_BACKENDS)}, got {shown(value)}")
    return value.strip().lower()


def parse_dsn(value: object) -> str:
    """A PostgreSQL connection URI (``postgresql://`` or ``postgres://``), or empty."""
    if not isinstance(value, str):
        raise BadValue(f"expected a string, got {shown(value)}")
    text = value.strip()
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise BadValue(
            f"expected a URI like postgresql://USER@HOST/DATABASE, got {shown(value)}"
        )
    return text


def parse_level(value: object) -> str:
    """A log level name, case-insensitive."""
    if not isinstance(value, str) or value.strip().lower() not in LOG_LEVELS:
        raise BadValue(f"expected one of {', '.join(LOG_LEVELS)}, got {shown(value)}")
    return value.strip().lower()


def parse_schedule(value: object) -> tuple[float, ...]:
    """The retry delays: a non-empty array of 1 to 100 numbers of seconds, each 1 s to 7 days."""
    if not isinstance(value, list) or not 1 <= len(value) <= 100:
        raise BadValue(
            f"expected an array of 1 to 100 delays in seconds like [300, 900], got {shown(value)}"
        )
    out = []
    for index, item in enumerate(value, start=1):
        try:
            out.append(parse_seconds(item, 1, 7 * 86400))
        except BadValue as exc:
            raise BadValue(f"item {index}: {exc}") from None
    return tuple(out)


_SMARTHOST_KEYS = ("host", "port", "tls", "username", "password")


def _smarthost(value: object) -> SmarthostConfig:
    if not isinstance(value, dict):
        raise BadValue(
            f"expected a table with host, port, tls, username, password, got {shown(value)}"
        )
    unknown = [k for k in value if k not in _SMARTHOST_KEYS]
    if unknown:
        raise BadValue(
            f"key {unknown[0]!r} is unknown (expected one of: {', '.join(_SMARTHOST_KEYS)})"
        )
    host = value.get("host")
    if not isinstance(host, str):
        raise BadValue(
            f'host: expected a host name like "smtp.provider.example", got {shown(host)}'
        )
    try:
        host = _check_host(host.strip(), ip_only=False)
    except (ValueError, DomainNameError):
        raise BadValue(f"host: not a host name or IP address: {shown(host)}") from None
    port = value.get("port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadValue(f"port: expected an integer from 1 to 65535, got {shown(port)}")
    tls_value = value.get("tls", "starttls")
    tls = next((mode for mode in SMARTHOST_TLS if mode == tls_value), None)
    if tls is None:
        raise BadValue(
            f"tls: expected one of {', '.join(SMARTHOST_TLS)}, got {shown(tls_value)}"
        )
    username = value.get("username")
    password = value.get("password")
    if username is not None and (not isinstance(username, str) or not username):
        raise BadValue("username: expected a non-empty string")
    if password is not None and (not isinstance(password, str) or not password):
        raise BadValue("password: expected a non-empty string")
    if (username is None) != (password is None):
        raise BadValue("give both username and password, or neither")
    if username is not None and tls == "none":
        raise BadValue('a password is never sent without TLS: set tls = "starttls" or "implicit"')
    return SmarthostConfig(
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=Secret(password) if password is not None else None,
    )


def parse_smarthosts(value: object) -> dict[str, SmarthostConfig]:
    """``{domain: {host, port, tls, username, password}}``; the domain "*" matches any."""
    if not isinstance(value, dict):
        raise BadValue(f'expected tables like [queue.smarthost."example.com"], got {shown(value)}')
    out: dict[str, SmarthostConfig] = {}
    for domain, table in value.items():
        try:
            name = "*" if domain == "*" else ascii_domain(domain)
        except DomainNameError as exc:
            raise BadValue(f"{shown(domain)}: {exc}") from None
        try:
            out[name] = _smarthost(table)
        except BadValue as exc:
            raise BadValue(f"{shown(domain)}: {exc}") from None
    return out


def parse_networks(value: object) -> tuple[str, ...]:
    """An array of networks in CIDR form ("192.0.2.0/24", "2001:db8::/48", or a single
    address); returned normalised. Host bits set are refused, as they are usually a typo."""
    if not isinstance(value, list):
        raise BadValue(f'expected an array like ["192.0.2.0/24"], got {shown(value)}')
    out: list[str] = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, str):
            raise BadValue(f"item {index}: expected a network like \"192.0.2.0/24\", got "
                           f"{shown(item)}")
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=True)))
        except ValueError as exc:
            raise BadValue(f"item {index}: {shown(item)} is not a network ({exc})") from None
    return tuple(out)


def parse_bool(value: object) -> bool:
    """A TOML boolean (true or false); strings like "yes" are refused."""
    if not isinstance(value, bool):
        raise BadValue(f"expected true or false, got {shown(value)}")
    return value


def parse_choice(value: object, choices: tuple[str, ...]) -> str:
    """One of ``choices``, case-insensitive."""
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise BadValue(f"expected one of {', '.join(choices)}, got {shown(value)}")
    return value.strip().lower()


def parse_domains(value: object) -> tuple[str, ...]:
    """An array of domain names, returned lower-case without a trailing dot."""
    if not isinstance(value, list):
        raise BadValue(f'expected an array like ["lists.example.org"], got {shown(value)}')
    out: list[str] = []
    for index, item in enumerate(value, start=1):
        try:
            out.append(parse_hostname(item).lower().rstrip("."))
        except BadValue as exc:
            raise BadValue(f"item {index}: {exc}") from None
    return tuple(out)


def parse_optional_endpoint(value: object, default_port: int) -> HostPort | None:
    """A remote "host:port" (a name or an address; the port defaults to ``default_port``),
    or "" for "off"."""
    expected = f'expected "host" or "host:port", or "" to turn the check off, got {shown(value)}'
    if not isinstance(value, str):
        raise BadValue(expected)
    if not value.strip():
        return None
    try:
        host, port = _split_host_port(value.strip())
        return HostPort(_check_host(host, ip_only=False),
                        default_port if port is None else _port(port, 1))
    except (ValueError, DomainNameError):
        raise BadValue(expected) from None


def parse_number(value: object, low: float, high: float) -> float:
    """A number (integer or float) in [low, high]; TOML booleans are refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise BadValue(f"expected a number from {low:g} to {high:g}, got {shown(value)}")
    return float(value)


def parse_http_url(value: object, *, allow_empty: bool = False) -> str:
    """An ``http://HOST[:PORT]`` base URL (no path), or "" when ``allow_empty``."""
    expected = f'expected a URL like "http://127.0.0.1:11333", got {shown(value)}'
    if not isinstance(value, str):
        raise BadValue(expected)
    text = value.strip()
    if not text and allow_empty:
        return ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise BadValue(expected) from None
    if (parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username or port == 0):
        raise BadValue(expected)
    return text.rstrip("/")


def parse_secret(value: object) -> Secret:
    """A non-empty string kept as a ``Secret`` (never logged)."""
    if not isinstance(value, str) or not value:
        raise BadValue("expected a non-empty string")
    return Secret(value)


def parse_clamd(value: object) -> str:
    """clamd's socket: an absolute path, "HOST:PORT", or "" for "off"."""
    expected = (f'expected a socket path like "/run/clamav/clamd.ctl" or "HOST:PORT", '
                f"got {shown(value)}")
    if not isinstance(value, str) or "\x00" in value:
        raise BadValue(expected)
    text = value.strip()
    if not text or text.startswith("/"):
        return text
    try:
        host, port = _split_host_port(text)
        if port is None:
            raise ValueError("no port")
        return f"{_check_host(host, ip_only=False)}:{_port(port, 1)}"
    except (ValueError, DomainNameError):
        raise BadValue(expected) from None


def parse_mx_patterns(value: object) -> tuple[str, ...]:
    """An array of MX host names, each possibly "*.example.org" (RFC 8461 section 4.1: the
    wildcard is a whole leftmost label), lower-case without a trailing dot; empty means the
    default (the hostname), as when the key is absent."""
    if not isinstance(value, list):
        raise BadValue(f'expected an array like ["mail.example.org"], got {shown(value)}')
    out: list[str] = []
    for index, item in enumerate(value, start=1):
        text = item if isinstance(item, str) else ""
        wild = text.startswith("*.")
        try:
            name = parse_hostname(text[2:] if wild else item).lower().rstrip(".")
        except BadValue as exc:
            raise BadValue(f"item {index}: {exc}") from None
        out.append(f"*.{name}" if wild else name)
    return tuple(out)


def parse_text(value: object) -> str:
    """A one-line string of printable characters (at most 200)."""
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        raise BadValue(f"expected a one-line string of at most 200 characters, got {shown(value)}")
    return value.strip()


def parse_report_contact(value: object) -> str:
    """An e-mail address ("" for the default)."""
    text = parse_text(value)
    local, at, domain = text.rpartition("@")
    if text and (not at or not local or " " in text):
        raise BadValue("expected an e-mail address like tls-reports@example.org, got "
                       f"{shown(value)}")
    if text:
        parse_hostname(domain)
    return text
