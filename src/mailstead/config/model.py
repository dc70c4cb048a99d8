"""The configuration model: frozen dataclasses whose field metadata documents every TOML key.

The metadata (``doc``, ``type``, ``default``) is the single source of the key list the loader
accepts and of docs/config.md, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from mailstead.core.secret import Secret

MIB = 1024 * 1024


def _doc(doc: str, type_name: str, default: str) -> dict[str, str]:
    """Field metadata: what the key does, its TOML type and its default, as shown in the docs."""
    return {"doc": doc, "type": type_name, "default": default}


@dataclass(frozen=True, slots=True)
class HostPort:
    """A network endpoint; ``host`` is an IP address or a DNS name, never bracketed."""

    host: str
    port: int

    def __str__(self) -> str:
        try:
            is_v6 = ipaddress.ip_address(self.host).version == 6
        except ValueError:
            is_v6 = False
        return f"[{self.host}]:{self.port}" if is_v6 else f"{self.host}:{self.port}"


_HP = 'string "host:port"'


def _listener(doc: str) -> dict[str, str]:
    return _doc(doc, _HP, "off")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where each protocol listens; None (key absent) turns that listener off."""

    smtp: HostPort | None = field(
        default=None,
        metadata=_listener("MX: mail from other servers (SMTP, RFC 5321). Standard port 25."),
    )
    submission: HostPort | None = field(
        default=None,
        metadata=_listener(
            "Mail submission by your users' mail clients: STARTTLS, then AUTH (RFC 6409). "
            "Standard port 587."
        ),
    )
    submissions: HostPort | None = field(
        default=None,
        metadata=_listener("Mail submission over implicit TLS (RFC 8314). Standard port 465."),
    )
    imap: HostPort | None = field(
        default=None, metadata=_listener("IMAP with STARTTLS (RFC 9051). Standard port 143.")
    )
    imaps: HostPort | None = field(
        default=None, metadata=_listener("IMAP over implicit TLS (RFC 8314). Standard port 993.")
    )
    pop3: HostPort | None = field(
        default=None, metadata=_listener("POP3 with STLS (RFC 1939, RFC 2595). Standard port 110.")
    )
    pop3s: HostPort | None = field(
        default=None, metadata=_listener("POP3 over implicit TLS (RFC 8314). Standard port 995.")
    )
    managesieve: HostPort | None = field(
        default=None,
        metadata=_listener(
            "ManageSieve (RFC 5804): mail clients edit their Sieve filters. Standard port "
            "4190."
        ),
    )
    http: HostPort | None = field(
        default=None,
        metadata=_listener("HTTP: mail client autoconfiguration and web pages. Standard port 80."),
    )
    https: HostPort | None = field(
        default=None, metadata=_listener("HTTPS: the same over TLS. Standard port 443.")
    )

    def items(self) -> list[tuple[str, HostPort]]:
        """The enabled listeners as (name, endpoint), in declaration order."""
        out: list[tuple[str, HostPort]] = []
        for name in LISTENER_NAMES:
            value = getattr(self, name)
            if value is not None:
                out.append((name, value))
        return out


LISTENER_NAMES: tuple[str, ...] = (
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "managesieve",
    "http",
    "https",
)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The certificate and key every TLS listener presents; paths are absolute once loaded."""

    cert: Path = field(
        metadata=_doc(
            "PEM certificate chain (leaf first), e.g. /etc/letsencrypt/live/HOST/fullchain.pem. "
            "A relative path is relative to the data directory. Give both cert and key, or "
            "neither.",
            "string (path)",
            "DATA/tls/cert.pem (the self-signed certificate made by `mailstead init`)",
        )
    )
    key: Path = field(
        metadata=_doc(
            "PEM private key of the certificate, e.g. /etc/letsencrypt/live/HOST/privkey.pem.",
            "string (path)",
            "DATA/tls/key.pem",
        )
    )


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """How the server resolves names (MX, SPF, DKIM, DMARC lookups)."""

    nameservers: tuple[HostPort, ...] = field(
        default=(),
        metadata=_doc(
            "Recursive resolvers to ask, as IP addresses with an optional port (53 when left "
            "out). Use a validating resolver you trust.",
            'array of strings "ip:port"',
            "the system resolver (/etc/resolv.conf)",
        ),
    )


@dataclass(frozen=True, slots=True)
class SMTPConfig:
    """Limits of the SMTP and submission listeners."""

    max_message_size: int = field(
        default=50 * MIB,
        metadata=_doc(
            "Largest message accepted, in bytes, announced with SIZE (RFC 1870). At least "
            "65536 (RFC 5321 section 4.5.3.1.7), at most 1 GiB.",
            "integer",
            "52428800 (50 MiB)",
        ),
    )
    max_recipients: int = field(
        default=100,
        metadata=_doc(
            "Recipients per message; more get 452 (RFC 5321 section 4.5.3.1.8 asks for at "
            "least 100).",
            "integer",
            "100",
        ),
    )
    max_errors: int = field(
        default=10,
        metadata=_doc(
            "Bad commands per connection before the server answers 421 and closes.",
            "integer",
            "10",
        ),
    )
    idle_timeout: float = field(
        default=300.0,
        metadata=_doc(
            "Seconds a client may stay silent before the connection is closed (RFC 5321 "
            "section 4.5.3.2.7: at least 5 minutes).",
            "number (seconds)",
            "300",
        ),
    )
    max_connections: int = field(
        default=1000,
        metadata=_doc(
            "Simultaneous SMTP connections over all clients; more are refused.", "integer", "1000"
        ),
    )
    max_connections_per_ip: int = field(
        default=20,
        metadata=_doc(
            "Simultaneous SMTP connections from one client: an IPv4 address or an IPv6 /64 "
            "([connections] ipv4_prefix, ipv6_prefix).", "integer", "20"),
    )
    spool_memory_budget: int = field(
        default=64 * MIB,
        metadata=_doc(
            "Bytes of message content that unfinished SMTP transactions may hold in memory, "
            "over all connections: each message keeps its first 64 KiB in memory, the rest "
            "goes to a temp file under the data directory's tmp/. A DATA or BDAT that finds "
            "no room gets 452 4.3.1 (RFC 3463: mail system full). Messages being stored are "
            "read back within the same amount again.",
            "integer",
            "67108864 (64 MiB)",
        ),
    )
    spool_disk_budget: int = field(
        default=2 * 1024 * MIB,
        metadata=_doc(
            "Bytes of temp files that unfinished SMTP transactions may hold, over all "
            "connections; a message that would go over gets 452 4.3.1 at its end of data. "
            "Keep it well above smtp.max_message_size.",
            "integer",
            "2147483648 (2 GiB)",
        ),
    )
    srs: bool = field(
        default=True,
        metadata=_doc(
            "Rewrite the envelope sender of mail that an alias or a Sieve redirect forwards "
            "from an outside sender to an outside address with SRS (SRS0=hash=time=domain="
            "local@your-domain, the scheme of postsrsd), so SPF passes at the receiving end. "
            "Bounces to such an address are checked (a hash keyed with DATA/security.key, at "
            "most 21 days old) and returned to the original sender; forged ones get 550 at "
            "RCPT.",
            "boolean",
            "true",
        ),
    )


@dataclass(frozen=True, slots=True)
class POP3Config:
    """Limits of the POP3 listeners (pop3, pop3s)."""

    idle_timeout: float = field(
        default=600.0,
        metadata=_doc(
            "Seconds a client may stay silent before the connection is closed, without "
            "deleting anything (RFC 1939 section 3: at least 10 minutes).",
            "number (seconds)",
            "600",
        ),
    )
    max_errors: int = field(
        default=10,
        metadata=_doc(
            "Bad commands and failed logins per connection before the server closes it.",
            "integer",
            "10",
        ),
    )
    auth_failure_delay: float = field(
        default=2.0,
        metadata=_doc(
            "Seconds before a failed login is answered, to slow password guessing; other "
            "sessions are not held up.",
            "number (seconds)",
            "2",
        ),
    )
    max_connections: int = field(
        default=1000,
        metadata=_doc(
            "Simultaneous POP3 connections over all clients; more are refused.", "integer", "1000"
        ),
    )
    max_connections_per_ip: int = field(
        default=20,
        metadata=_doc(
            "Simultaneous POP3 connections from one client: an IPv4 address or an IPv6 /64 "
            "([connections] ipv4_prefix, ipv6_prefix).", "integer", "20"),
    )


@dataclass(frozen=True, slots=True)
class IMAPConfig:
    """Limits of the IMAP listeners (imap, imaps)."""

    idle_timeout: float = field(
        default=1800.0,
        metadata=_doc(
            "Seconds a client may stay silent (in IDLE too) before the server says BYE and "
            "closes (RFC 9051 section 5.4: at least 30 minutes; clients renew IDLE every 29).",
            "number (seconds)",
            "1800",
        ),
    )
    max_bad_commands: int = field(
        default=10,
        metadata=_doc(
            "Invalid commands in a row before the server answers BYE and closes.",
            "integer",
            "10",
        ),
    )
    max_literal: int = field(
        default=0,
        metadata=_doc(
            "Largest literal (and APPEND message, APPENDLIMIT of RFC 7889) in bytes; larger "
            "ones get NO [TOOBIG] before the client sends them. 0 means smtp.max_message_size.",
            "integer",
            "0 (smtp.max_message_size)",
        ),
    )
    max_connections_per_account: int = field(
        default=50,
        metadata=_doc(
            "Simultaneous logged-in IMAP sessions of one account (every device keeps one "
            "or more open); more logins get NO [UNAVAILABLE].",
            "integer",
            "50",
        ),
    )
    max_connections: int = field(
        default=10000,
        metadata=_doc(
            "Simultaneous IMAP connections over all clients; more are refused.",
            "integer",
            "10000",
        ),
    )
    max_connections_per_ip: int = field(
        default=50,
        metadata=_doc(
            "Simultaneous IMAP connections from one client: an IPv4 address or an IPv6 /64 "
            "([connections] ipv4_prefix, ipv6_prefix).", "integer", "50"),
    )
    command_rate: float = field(
        default=500.0,
        metadata=_doc(
            "Commands a second one IMAP session may send, sustained; faster clients are "
            "made to wait (never refused). A full sync by a desktop client stays well "
            "below it. 0 means no cap.",
            "number",
            "500",
        ),
    )
    command_burst: int = field(
        default=2000,
        metadata=_doc(
            "Commands a session may send at once above command_rate before it waits "
            "(pipelined flag updates of a large mailbox come in bursts).",
            "integer",
            "2000",
        ),
    )
    compress_max_ratio: float = field(
        default=200.0,
        metadata=_doc(
            "After COMPRESS=DEFLATE (RFC 4978): the largest ratio of inflated to compressed "
            "input over a session; above it the server says BYE and closes (a "
            "decompression bomb). DEFLATE reaches about 1032; real traffic stays below "
            "100. 0 means no cap.",
            "number",
            "200",
        ),
    )
    progress_interval: float = field(
        default=5.0,
        metadata=_doc(
            "Seconds between the `* OK [INPROGRESS ...]` notices of a command that runs "
            "long (RFC 9585: a big SEARCH, FETCH, COPY or MOVE), so the client knows the "
            "server is still at it; a command that ends sooner sends none. 0 means never.",
            "number (seconds)",
            "5",
        ),
    )
    append_memory: int = field(
        default=128 * 1024 * 1024,
        metadata=_doc(
            "Bytes that APPEND commits of all sessions may hold in memory at once. Large "
            "APPEND messages are spooled to DATA/tmp while they arrive and read back only "
            "within this budget; one message of the largest allowed size always fits.",
            "integer (bytes)",
            "134217728 (128 MiB)",
        ),
    )


@dataclass(frozen=True, slots=True)
class ConnectionsConfig:
    """How every mail listener (SMTP, IMAP, POP3, ManageSieve) shares out its connection slots."""

    tls_handshake_timeout: float = field(
        default=10.0,
        metadata=_doc(
            "Seconds a client gets to finish a TLS handshake, on implicit-TLS ports and after "
            "STARTTLS/STLS; a connection still shaking hands then is closed. The connection "
            "counts against the limits from the moment it is accepted.",
            "number (seconds)",
            "10",
        ),
    )
    ipv4_prefix: int = field(
        default=32,
        metadata=_doc(
            "Prefix length that groups IPv4 clients for max_connections_per_ip: 32 counts each "
            "address on its own.",
            "integer (8-32)",
            "32",
        ),
    )
    ipv6_prefix: int = field(
        default=64,
        metadata=_doc(
            "Prefix length that groups IPv6 clients for max_connections_per_ip: 64 counts a "
            "whole /64 (one site's LAN, which an attacker gets by the billion) as one client.",
            "integer (32-128)",
            "64",
        ),
    )
    shed_above: int = field(
        default=90,
        metadata=_doc(
            "Percent of a listener's max_connections above which a new connection makes room by "
            "closing (with the protocol's goodbye: SMTP 421 4.4.2, IMAP BYE) the waiting session "
            "that made the least progress and has been idle longest, instead of being refused. "
            "Sessions in IMAP IDLE are never closed for room; 100 turns this off.",
            "integer (percent, 50-100)",
            "90",
        ),
    )


# How a smarthost is reached: STARTTLS on a plain port (RFC 3207), TLS from the first byte
# (RFC 8314 section 3, port 465), or in the clear (no credentials allowed then).
SmarthostTls = Literal["starttls", "implicit", "none"]
SMARTHOST_TLS: tuple[SmarthostTls, ...] = get_args(SmarthostTls)


@dataclass(frozen=True, slots=True)
class SmarthostConfig:
    """A relay that takes the mail of one destination domain instead of its MX hosts."""

    host: str
    port: int = 587
    tls: SmarthostTls = "starttls"
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Outbound delivery: retries, bounces, concurrency, routes and sending limits."""

    retry_schedule: tuple[float, ...] = field(
        default=(300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0),
        metadata=_doc(
            "Seconds to wait after the 1st, 2nd, ... failed attempt of a recipient (4xx reply "
            "or no connection); the last value repeats until expire_after.",
            "array of numbers (seconds)",
            "[300, 900, 1800, 3600, 7200, 14400] (5 m, 15 m, 30 m, 1 h, 2 h, then every 4 h)",
        ),
    )
    expire_after: float = field(
        default=5 * 86400.0,
        metadata=_doc(
            "Seconds after which a recipient still not delivered is bounced to the sender "
            "(RFC 5321 section 4.5.4.1: give up after at least 4-5 days).",
            "number (seconds)",
            "432000 (5 days)",
        ),
    )
    delay_warning: float = field(
        default=4 * 3600.0,
        metadata=_doc(
            "Seconds after which the sender is told once that a recipient is delayed (an RFC "
            "3464 'delayed' notice); 0 turns the warning off.",
            "number (seconds)",
            "14400 (4 hours)",
        ),
    )
    max_connections: int = field(
        default=100,
        metadata=_doc(
            "Outgoing SMTP transactions in progress at once, over all destinations.",
            "integer",
            "100",
        ),
    )
    max_connections_per_domain: int = field(
        default=20,
        metadata=_doc(
            "Outgoing SMTP transactions in progress at once to one destination domain (so "
            "one slow or big destination cannot take every connection).",
            "integer",
            "20",
        ),
    )
    remote_port: int = field(
        default=25,
        metadata=_doc(
            "TCP port of the MX hosts delivered to (RFC 5321 section 4.5.4: 25; other values "
            "are for tests on unprivileged ports).",
            "integer",
            "25",
        ),
    )
    connect_timeout: float = field(
        default=30.0,
        metadata=_doc(
            "Seconds to wait for a TCP connection and the greeting of each MX address before "
            "trying the next one.",
            "number (seconds)",
            "30",
        ),
    )
    command_timeout: float = field(
        default=300.0,
        metadata=_doc(
            "Seconds to wait for each reply of the remote server (RFC 5321 section 4.5.3.2: "
            "5 minutes; the end of DATA is given twice this, as the RFC's 10 minutes).",
            "number (seconds)",
            "300",
        ),
    )
    lease: float = field(
        default=0.0,
        metadata=_doc(
            "Seconds a node owns a recipient it is delivering; when the node dies, the "
            "recipient is retried (by any node sharing the store) once this has passed. It "
            "must outlast the longest attempt, 10 x connect_timeout + 8 x command_timeout, or "
            "a slow attempt could be claimed twice. 0: that sum, at least 600.",
            "number (seconds)",
            "0 (derived: 2700 with the default timeouts)",
        ),
    )
    connection_reuse_time: float = field(
        default=5.0,
        metadata=_doc(
            "Seconds a connection to a remote server that ended its transaction cleanly is "
            "kept open for the next message to the same server (checked with RSET before it "
            "is used again); 0 closes every connection after its message.",
            "number (seconds)",
            "5",
        ),
    )
    tls_ca_file: Path | None = field(
        default=None,
        metadata=_doc(
            "PEM file of the certificate authorities trusted when a peer's certificate must be "
            "verified (MTA-STS enforce, smarthosts, MTA-STS policy fetches). Relative to the "
            "data directory.",
            "string (path)",
            "the system's trust store",
        ),
    )
    mta_sts_port: int = field(
        default=443,
        metadata=_doc(
            "HTTPS port of mta-sts.DOMAIN where MTA-STS policies are fetched (RFC 8461 "
            "section 3.3: 443; other values are for tests).",
            "integer",
            "443",
        ),
    )
    sender_hourly_limit: int = field(
        default=500,
        metadata=_doc(
            "Outgoing recipients one account may submit per hour; beyond it submission answers "
            "451 4.7.1 so a stolen password cannot ruin the domain's reputation. 0: no limit.",
            "integer",
            "500",
        ),
    )
    smarthost: dict[str, SmarthostConfig] = field(
        default_factory=dict,
        metadata=_doc(
            "Relays by recipient domain, e.g. [queue.smarthost.\"example.com\"] with host, port "
            "(587), tls (\"starttls\", \"implicit\" or \"none\"), username and password; the "
            "domain \"*\" routes every domain without a more specific entry (for providers that "
            "block port 25).",
            "table of tables",
            "none: MX routing for every domain",
        ),
    )


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Password hashing, brute-force protection and the login audit (issue 6)."""

    argon2_time_cost: int = field(
        default=3,
        metadata=_doc(
            "argon2id passes over memory (RFC 9106 section 4: 3 with 64 MiB is the second "
            "recommended option). Stored hashes are upgraded at the next login when this "
            "changes. `bench/auth.py` shows the logins per second a setting allows.",
            "integer",
            "3",
        ),
    )
    argon2_memory_cost: int = field(
        default=65536,
        metadata=_doc("argon2id memory per hash in KiB (65536 = 64 MiB).", "integer", "65536"),
    )
    argon2_parallelism: int = field(
        default=4,
        metadata=_doc("argon2id lanes (threads) per hash.", "integer", "4"),
    )
    max_failures: int = field(
        default=10,
        metadata=_doc(
            "Failed logins from one client network (an IPv4 address, or an IPv6 /64) within "
            "failure_window that block it for block_duration; over every protocol. Attempts "
            "under way count too, so parallel guesses get at most this many password checks.",
            "integer",
            "10",
        ),
    )
    failure_window: float = field(
        default=600.0,
        metadata=_doc("Seconds over which failed logins are counted.", "number (seconds)", "600"),
    )
    block_duration: float = field(
        default=900.0,
        metadata=_doc(
            "Seconds a blocked network gets a temporary failure without its password being "
            "checked (`mailstead security unblock` lifts a block early).",
            "number (seconds)",
            "900",
        ),
    )
    failure_delay: float = field(
        default=0.5,
        metadata=_doc(
            "Seconds a login waits after one earlier failure from its network (or, from a "
            "network that failed too, for its account); doubles with each further failure.",
            "number (seconds)",
            "0.5",
        ),
    )
    max_failure_delay: float = field(
        default=8.0,
        metadata=_doc("The longest such wait.", "number (seconds)", "8"),
    )
    trusted_networks: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            'Networks never delayed or blocked, e.g. ["192.0.2.0/24", "2001:db8::/48"] for '
            "an office or a webmail host; their failures are still audited. Their clients, "
            "like clients on this host itself, may also log in before TLS (IMAP, POP3, "
            "submission, ManageSieve); every other client must use TLS first.",
            "array of strings (CIDR)",
            "none",
        ),
    )
    audit_retention: float = field(
        default=90 * 86400.0,
        metadata=_doc(
            "Seconds login attempts are kept in the audit log (`mailstead user logins`).",
            "number (seconds)",
            "7776000 (90 days)",
        ),
    )
    login_cache_ttl: float = field(
        default=300.0,
        metadata=_doc(
            "Seconds a successful login is remembered so that the same user name and "
            "password skip argon2id (clients open several connections; like Dovecot's "
            "auth_cache). A password change, two-factor set-up or account removal applies "
            "at once; blocks, delays and the audit apply to every login. 0 turns it off.",
            "number (seconds)",
            "300",
        ),
    )


LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the state lives: the embedded SQLite store in the data directory, or PostgreSQL
    shared by several nodes (issue 10)."""

    backend: str = field(
        default="sqlite",
        metadata=_doc(
            '"sqlite" (embedded, in the data directory; one node) or "postgresql" (every '
            "node that points at the same database serves the same accounts and mailboxes).",
            "string",
            '"sqlite"',
        ),
    )
    dsn: str = field(
        default="",
        metadata=_doc(
            "The PostgreSQL connection URI for backend = \"postgresql\", e.g. "
            '"postgresql://mailstead@127.0.0.1/mailstead"; a password may be given in the URI '
            "or in ~/.pgpass. Message bodies are kept in the database too, so the nodes need "
            "no shared filesystem.",
            "string (URI)",
            '""',
        ),
    )
    pool_size: int = field(
        default=10,
        metadata=_doc(
            "Connections each node keeps to PostgreSQL (plus one for change notifications).",
            "integer",
            "10",
        ),
    )
    reserve_mb: int = field(
        default=200,
        metadata=_doc(
            "Free space (MiB) kept on the data directory's filesystem (embedded store): below "
            "the reserve, new mail gets a temporary error (SMTP 452 4.3.1, IMAP APPEND NO "
            "[UNAVAILABLE]) and full-text indexing pauses, so users can still delete and "
            "expunge mail to free space. The reserve is the smaller of this and "
            "reserve_percent of the filesystem; 0 turns it off. Mail is taken again by "
            "itself once space is back.",
            "integer (MiB)",
            "200",
        ),
    )
    reserve_percent: int = field(
        default=1,
        metadata=_doc(
            "The reserve as a percentage of the filesystem size, when smaller than reserve_mb "
            "(so a small disk is not all reserve); 0 turns the reserve off.",
            "integer (%)",
            "1",
        ),
    )
    check_at_start: bool = field(
        default=True,
        metadata=_doc(
            "Run PRAGMA quick_check on the embedded store at every start and refuse to serve "
            "a damaged database (the error says to run `mailstead verify`). It reads the "
            "whole file: measured 1.2 s warm, 5.8 s cold for a 183 MB database of 300,000 "
            "messages; turn it off only for a very large store whose start-up time matters, "
            "and then run `mailstead verify` regularly.",
            "boolean",
            "true",
        ),
    )
    upgrade_backup: bool = field(
        default=True,
        metadata=_doc(
            "Before a new release changes the schema of an existing store, back it up: the "
            "embedded store's database to DATA/backups/pre-upgrade-<from>-to-<to>-<UTC>.db "
            "(VACUUM INTO; message bodies are never changed by an upgrade and need no copy), "
            "a PostgreSQL database as a whole `mailstead backup` into "
            "DATA/backups/pre-upgrade-<from>-to-<to>/ (check it with `mailstead backup "
            "--verify`). Without room for it the server refuses to start and says how much it "
            "needs; false skips it. To go back on the embedded store, stop the server and put "
            "the copy back under the old release (README, Upgrading).",
            "boolean",
            "true",
        ),
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    """What the server writes to standard error."""

    level: str = field(
        default="info",
        metadata=_doc(
            "Least severe events written: " + ", ".join(LOG_LEVELS) + ".", "string", '"info"'
        ),
    )


@dataclass(frozen=True, slots=True)
class AuthChecksConfig:
    """Sender authentication of mail received on port 25 (issue 9): SPF, DKIM, DMARC, ARC."""

    enable: bool = field(
        default=True,
        metadata=_doc(
            "Check SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617) on "
            "every message received on port 25, through [dns], and add one "
            "Authentication-Results header (RFC 8601) naming this server's hostname. "
            "Submission (587/465) is never checked.",
            "boolean",
            "true",
        ),
    )
    dmarc_reject_action: str = field(
        default="reject",
        metadata=_doc(
            "What to do with mail whose sender domain publishes DMARC p=reject and that fails "
            "it: \"reject\" (refused at end of DATA with 550 5.7.1), \"junk\" (delivered "
            "into the Junk mailbox) or \"accept\" (delivered normally, only marked in "
            "Authentication-Results).",
            'string: "reject", "junk" or "accept"',
            '"reject"',
        ),
    )
    quarantine_action: str = field(
        default="junk",
        metadata=_doc(
            "What to do with mail that fails a DMARC p=quarantine policy: \"junk\", "
            "\"reject\" or \"accept\", as above.",
            'string: "junk", "reject" or "accept"',
            '"junk"',
        ),
    )
    trusted_arc_sealers: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Domains (the d= of the newest ARC-Seal) whose valid ARC chain excuses a DMARC "
            "failure, e.g. a mailing list or forwarding service you trust (RFC 7489 section "
            "7.2 local policy).",
            "array of domain names",
            "[] (a DMARC failure is never excused)",
        ),
    )


SPAM_ON_FAILURE: tuple[str, ...] = ("accept", "tempfail")
SPAM_REJECT_ACTIONS: tuple[str, ...] = ("reject", "junk")


@dataclass(frozen=True, slots=True)
class SpamConfig:
    """Spam filtering of mail received on port 25 (issue 9): the built-in filter or rspamd."""

    enable: bool = field(
        default=True,
        metadata=_doc(
            "Score every message received on port 25 and add X-Spam-Status, X-Spam-Score, "
            "X-Spam-Level (one `*` per whole point above zero) and X-Spam-Symbols header "
            "fields (incoming X-Spam-* fields are removed first). "
            "Without rspamd the built-in filter scores the sender authentication results, "
            "the DNS blocklists below and each recipient's Bayesian classifier, which learns "
            "when the user moves mail into or out of Junk by IMAP.",
            "boolean",
            "true",
        ),
    )
    rspamd: str = field(
        default="",
        metadata=_doc(
            "The URL of rspamd's normal worker, e.g. \"http://127.0.0.1:11333\": every message "
            "is checked there (POST /checkv2) instead of by the built-in filter, rspamd's "
            "action is applied, and moves into or out of Junk are sent to its controller as "
            "learn requests. Empty: the built-in filter.",
            "string (http URL)",
            '""',
        ),
    )
    rspamd_controller: str = field(
        default="",
        metadata=_doc(
            "The URL of rspamd's controller worker for learning; empty means port 11334 on "
            "the host of `rspamd`.",
            "string (http URL)",
            '""',
        ),
    )
    rspamd_password: Secret | None = field(
        default=None,
        metadata=_doc(
            "The controller's enable_password, sent with learn requests; not needed when "
            "the controller trusts this host (its secure_ip).",
            "string",
            "none",
        ),
    )
    junk_score: float = field(
        default=6.0,
        metadata=_doc(
            "Messages scoring this much or more are delivered into the Junk mailbox.",
            "number",
            "6.0",
        ),
    )
    reject_score: float = field(
        default=15.0,
        metadata=_doc(
            "Messages scoring this much or more (or that rspamd says to reject) are refused "
            "at end of DATA with 550 5.7.1 (see reject_action).",
            "number",
            "15.0",
        ),
    )
    reject_action: str = field(
        default="reject",
        metadata=_doc(
            "What to do with mail over the reject score: \"reject\" (550 5.7.1, the sender "
            "learns at once) or \"junk\" (deliver into Junk instead).",
            'string: "reject" or "junk"',
            '"reject"',
        ),
    )
    on_failure: str = field(
        default="accept",
        metadata=_doc(
            "When the filter is down or times out: \"accept\" (deliver, tagged "
            "X-Spam-Status: unchecked) or \"tempfail\" (451, the sender retries later). Mail "
            "is never lost either way.",
            'string: "accept" or "tempfail"',
            '"accept"',
        ),
    )
    dnsbl_zones: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "DNS blocklist zones (RFC 5782) the client address is looked up in by the "
            "built-in filter, e.g. [\"zen.spamhaus.org\"] (Spamhaus refuses queries from "
            "public resolvers: use your own resolver in [dns]).",
            "array of domain names",
            "[]",
        ),
    )
    dnsbl_score: float = field(
        default=3.0,
        metadata=_doc("Score added for each zone that lists the client.", "number", "3.0"),
    )
    greylisting: bool = field(
        default=False,
        metadata=_doc(
            "Greylisting (RFC 6647) in the built-in filter: the first message of an unknown "
            "(client /24 or /64, sender, recipient) triplet is answered 451 4.7.1 and accepted "
            "when retried after greylist_delay; a network that retried correctly is not "
            "greylisted again for 36 days. Delays first mail from new senders.",
            "boolean",
            "false",
        ),
    )
    greylist_delay: float = field(
        default=300.0,
        metadata=_doc(
            "Seconds a new triplet must wait before its retry is accepted (RFC 6647 section 5 "
            "suggests no more than 5 minutes).",
            "number (seconds)",
            "300",
        ),
    )
    bayes: bool = field(
        default=True,
        metadata=_doc(
            "The per-account Bayesian classifier of the built-in filter; it gives no verdict "
            "before the account has learned 10 spam and 10 ham messages.",
            "boolean",
            "true",
        ),
    )


@dataclass(frozen=True, slots=True)
class AntivirusConfig:
    """Malware scanning of mail received on port 25 through ClamAV's clamd (issue 9)."""

    clamd: str = field(
        default="",
        metadata=_doc(
            "clamd's socket: a path such as \"/run/clamav/clamd.ctl\" (Debian's "
            "clamav-daemon) or \"HOST:PORT\". Infected mail is refused at end of DATA with "
            "554 5.7.1 naming the signature. Empty: no scanning.",
            "string (socket path or HOST:PORT)",
            '""',
        ),
    )
    max_size: int = field(
        default=25 * MIB,
        metadata=_doc(
            "Messages larger than this are not scanned (tagged X-Virus-Status: unchecked); "
            "keep it at or below clamd's StreamMaxLength.",
            "integer (octets)",
            "26214400 (25 MiB)",
        ),
    )
    on_failure: str = field(
        default="accept",
        metadata=_doc(
            "When clamd is down: \"accept\" (deliver, tagged X-Virus-Status: unchecked) or "
            "\"tempfail\" (451, the sender retries later).",
            'string: "accept" or "tempfail"',
            '"accept"',
        ),
    )


@dataclass(frozen=True, slots=True)
class SieveConfig:
    """Per-account Sieve filtering (RFC 5228) and the ManageSieve listener (RFC 5804)."""

    enable: bool = field(
        default=True,
        metadata=_doc(
            "Run each account's active Sieve script at delivery. Off: every copy goes to "
            "INBOX (or where the filters put it) and scripts are only stored.",
            "boolean",
            "true",
        ),
    )
    max_script_size: int = field(
        default=65536,
        metadata=_doc("Octets of one script (the ManageSieve MAXSCRIPTSIZE).", "integer",
                      "65536"),
    )
    max_scripts: int = field(
        default=20,
        metadata=_doc("Scripts one account may store.", "integer", "20"),
    )
    max_actions: int = field(
        default=32,
        metadata=_doc(
            "Actions one script run may take; more is a runtime error and the message is "
            "kept (RFC 5228 section 2.10.6).", "integer", "32"),
    )
    max_redirects: int = field(
        default=4,
        metadata=_doc("Redirects one script run may make (RFC 5228 section 4.2).", "integer",
                      "4"),
    )
    redirects_per_day: int = field(
        default=100,
        metadata=_doc(
            "Messages one account's scripts may redirect per 24 hours; past it the message "
            "is kept instead, so a hijacked account cannot become a spam relay.",
            "integer", "100"),
    )
    max_run_steps: int = field(
        default=1_000_000,
        metadata=_doc(
            "Work one script run may do at delivery (a step is a command, a test, or one "
            "candidate position or comparison of a match); past it the run stops, the "
            "message is kept in INBOX and the account is told once.", "integer",
            "1000000"),
    )
    max_run_cpu: float = field(
        default=2.0,
        metadata=_doc(
            "CPU seconds one script run may take at delivery (runs happen off the event "
            "loop); past it the run stops as for max_run_steps.", "number (seconds)", "2"),
    )
    max_errors: int = field(
        default=10,
        metadata=_doc("Bad ManageSieve commands and failed logins per connection before the "
                      "server closes it.", "integer", "10"),
    )
    idle_timeout: float = field(
        default=1800.0,
        metadata=_doc("Seconds a ManageSieve client may stay silent before it is "
                      "disconnected.", "number (seconds)", "1800"),
    )
    auth_failure_delay: float = field(
        default=2.0,
        metadata=_doc("Seconds before a failed ManageSieve login is answered.",
                      "number (seconds)", "2"),
    )
    max_connections: int = field(
        default=200,
        metadata=_doc("Simultaneous ManageSieve connections over all clients.", "integer",
                      "200"),
    )
    max_connections_per_ip: int = field(
        default=10,
        metadata=_doc(
            "Simultaneous ManageSieve connections from one client: an IPv4 address or an "
            "IPv6 /64 ([connections] ipv4_prefix, ipv6_prefix).", "integer", "10"),
    )


@dataclass(frozen=True, slots=True)
class DoctorConfig:
    """What ``mailstead doctor`` checks against outside this server (issue 8)."""

    dnsbl_zones: tuple[str, ...] = field(
        default=("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"),
        metadata=_doc(
            "DNS blocklist zones (RFC 5782) on which the server's addresses are looked up; "
            "a listing makes many receivers refuse our mail. Some zones refuse queries from "
            "public resolvers: use a resolver of your own in [dns].",
            "array of domain names",
            '["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]',
        ),
    )
    probe_host: HostPort | None = field(
        default=HostPort("gmail-smtp-in.l.google.com", 25),
        metadata=_doc(
            "A remote mail server the doctor connects to on port 25 to learn whether outgoing "
            "SMTP is blocked by the hosting provider (many block it; then set a smarthost in "
            '[queue.smarthost."*"]). An empty string turns the check off.',
            _HP,
            '"gmail-smtp-in.l.google.com:25"',
        ),
    )
    time_server: HostPort | None = field(
        default=HostPort("pool.ntp.org", 123),
        metadata=_doc(
            "An NTP server (SNTP, RFC 4330) the doctor compares the clock with; a wrong clock "
            "breaks two-factor codes, DKIM signature times and certificate checks. The port "
            "defaults to 123. An empty string turns the check off.",
            _HP,
            '"pool.ntp.org:123"',
        ),
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one account may hold, whichever protocol or filter adds to it."""

    max_mailboxes_per_account: int = field(
        default=10000,
        metadata=_doc(
            "Mailboxes one account may have (the levels CREATE makes above a name count "
            "too), and separately the subscriptions it may have. Past it CREATE, RENAME of "
            "INBOX and SUBSCRIBE get NO [LIMIT] (RFC 9051 section 7.1) and Sieve fileinto "
            ":create files into INBOX instead; it keeps LIST and the store's work per "
            "account bounded.",
            "integer",
            "10000",
        ),
    )
    default_quota: int | None = field(
        default=None,
        metadata=_doc(
            "The storage quota a new account gets (RFC 9208 STORAGE), unless `user add "
            "--quota` says otherwise; `mailstead user quota ADDRESS SIZE` changes it later. "
            "Mail that would take an account past it is refused for now (452 4.2.2, APPEND "
            "NO [OVERQUOTA]); the user is warned by mail at 80% and 95%.",
            'size: bytes, or a string such as "2G", "500M", or "none"',
            '"none" (no quota)',
        ),
    )


MTA_STS_MODES = ("auto", "enforce", "testing", "none")


@dataclass(frozen=True, slots=True)
class MtaStsConfig:
    """The MTA-STS policy this server publishes for its domains (RFC 8461), served at
    https://mta-sts.DOMAIN/.well-known/mta-sts.txt and announced by ``mailstead dns``."""

    mode: str = field(
        default="auto",
        metadata=_doc(
            'The policy mode (RFC 8461 section 5): "enforce" (senders refuse to deliver '
            'without valid TLS to a listed MX), "testing" (they only report failures), "none" '
            '(withdraw the policy), or "auto": enforce with a CA-issued certificate, testing '
            "while it is self-signed. The _mta-sts TXT id changes whenever the policy does.",
            "string",
            '"auto"',
        ),
    )
    max_age: int = field(
        default=604800,
        metadata=_doc(
            "Seconds senders may cache the policy (RFC 8461 section 3.2: at most 31557600). "
            "A week resists downgrades and still lets you change course.",
            "integer (seconds)",
            "604800",
        ),
    )
    mx: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            'The MX host names (or "*.example.org" patterns, RFC 8461 section 4.1) listed in '
            "the policy: every MX of your domains must match one.",
            "array of domain names",
            "the hostname",
        ),
    )


@dataclass(frozen=True, slots=True)
class TlsReportsConfig:
    """SMTP TLS reports (RFC 8460) this server sends about its outbound sessions."""

    send: bool = field(
        default=True,
        metadata=_doc(
            "Once a day, mail (or POST) each recipient domain that publishes an _smtp._tls "
            "TXT record a report of yesterday's (UTC) TLS sessions to its MX hosts.",
            "boolean",
            "true",
        ),
    )
    organization: str = field(
        default="",
        metadata=_doc(
            "The organization-name of the reports (RFC 8460 section 4.4).",
            "string",
            "the hostname",
        ),
    )
    contact: str = field(
        default="",
        metadata=_doc(
            "The contact-info of the reports (RFC 8460 section 4.4), and their sender.",
            "string (address)",
            "tls-reports@ the first local domain",
        ),
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration of one installation, loaded once and passed down from app.py."""

    hostname: str = field(
        metadata=_doc(
            "The name this server greets with (SMTP banner, EHLO) and has a certificate for; "
            "its A/AAAA records and the PTR of its address should match it.",
            "string (domain name)",
            "required",
        )
    )
    data_dir: Path = field(metadata={"toml": "no"})
    config_path: Path = field(metadata={"toml": "no"})
    listen: ListenConfig
    tls: TLSConfig
    store: StoreConfig = field(default_factory=StoreConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    pop3: POP3Config = field(default_factory=POP3Config)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    auth_checks: AuthChecksConfig = field(default_factory=AuthChecksConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)
    antivirus: AntivirusConfig = field(default_factory=AntivirusConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    mta_sts: MtaStsConfig = field(default_factory=MtaStsConfig)
    tls_reports: TlsReportsConfig = field(default_factory=TlsReportsConfig)


# The TOML tables and the dataclass behind each, in the order the docs list them.
SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("listen", ListenConfig),
    ("tls", TLSConfig),
    ("store", StoreConfig),
    ("dns", DNSConfig),
    ("smtp", SMTPConfig),
    ("pop3", POP3Config),
    ("imap", IMAPConfig),
    ("connections", ConnectionsConfig),
    ("queue", QueueConfig),
    ("auth_checks", AuthChecksConfig),
    ("spam", SpamConfig),
    ("antivirus", AntivirusConfig),
    ("security", SecurityConfig),
    ("log", LogConfig),
    ("sieve", SieveConfig),
    ("doctor", DoctorConfig),
    ("limits", LimitsConfig),
    ("mta_sts", MtaStsConfig),
    ("tls_reports", TlsReportsConfig),
)
CONFIG_FILE_NAME = "mailstead.toml"
