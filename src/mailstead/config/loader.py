"""Loads DATA/mailstead.toml into a Config, refusing anything unknown or malformed in one line.

Every error reads ``FILE:LINE: what is wrong``, so an administrator (or an editor) can jump to
the spot. Values are validated strictly: a typo must never silently turn a listener off.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mailstead.config import values as v
from mailstead.config.lines import KeyLines
from mailstead.config.model import (
    CONFIG_FILE_NAME,
    MTA_STS_MODES,
    SECTIONS,
    SPAM_ON_FAILURE,
    SPAM_REJECT_ACTIONS,
    AntivirusConfig,
    AuthChecksConfig,
    Config,
    ConnectionsConfig,
    DNSConfig,
    DoctorConfig,
    HostPort,
    IMAPConfig,
    LimitsConfig,
    ListenConfig,
    LogConfig,
    MtaStsConfig,
    POP3Config,
    QueueConfig,
    SecurityConfig,
    SieveConfig,
    SMTPConfig,
    SpamConfig,
    StoreConfig,
    TLSConfig,
    TlsReportsConfig,
)
from mailstead.core.errors import ConfigError

Parser = Callable[[object], object]

GIB = 1024 * 1024 * 1024

# What [auth_checks] may do with a message failing DMARC (filters.auth.FailAction).
_DMARC_ACTIONS = ("reject", "junk", "accept")

# The parser of every TOML key, by (table, key); "" is the top level.
PARSERS: dict[tuple[str, str], Parser] = {
    ("", "hostname"): v.parse_hostname,
    **{("listen", f.name): v.parse_listen for f in dataclasses.fields(ListenConfig)},
    ("tls", "cert"): v.parse_path,
    ("tls", "key"): v.parse_path,
    ("store", "backend"): v.parse_backend,
    ("store", "dsn"): v.parse_dsn,
    ("store", "pool_size"): lambda x: v.parse_int(x, 1, 1000),
    ("store", "reserve_mb"): lambda x: v.parse_int(x, 0, 1024 * 1024),
    ("store", "reserve_percent"): lambda x: v.parse_int(x, 0, 50),
    ("store", "check_at_start"): v.parse_bool,
    ("store", "upgrade_backup"): v.parse_bool,
    ("dns", "nameservers"): v.parse_nameservers,
    # RFC 5321 section 4.5.3.1.7: a server must accept messages of at least 64K octets.
    ("smtp", "max_message_size"): lambda x: v.parse_int(x, 65536, GIB),
    ("smtp", "max_recipients"): lambda x: v.parse_int(x, 1, 100_000),
    ("smtp", "max_errors"): lambda x: v.parse_int(x, 1, 1000),
    ("smtp", "idle_timeout"): lambda x: v.parse_seconds(x, 1, 86400),
    ("smtp", "max_connections"): lambda x: v.parse_int(x, 1, 1_000_000),
    ("smtp", "max_connections_per_ip"): lambda x: v.parse_int(x, 1, 1_000_000),
    # At least one message's in-memory part (servers/spool.py MEMORY_THRESHOLD).
    ("smtp", "spool_memory_budget"): lambda x: v.parse_int(x, 65536, 64 * GIB),
    ("smtp", "spool_disk_budget"): lambda x: v.parse_int(x, 65536, 1024 * GIB),
    ("smtp", "srs"): v.parse_bool,
    # RFC 1939 section 3 asks for at least 10 minutes; shorter values are for tests.
    ("pop3", "idle_timeout"): lambda x: v.parse_seconds(x, 1, 86400),
    ("pop3", "max_errors"): lambda x: v.parse_int(x, 1, 1000),
    ("pop3", "auth_failure_delay"): lambda x: v.parse_seconds(x, 0, 60),
    ("pop3", "max_connections"): lambda x: v.parse_int(x, 1, 1_000_000),
    ("pop3", "max_connections_per_ip"): lambda x: v.parse_int(x, 1, 1_000_000),
    # RFC 9051 section 5.4 asks for at least 30 minutes; shorter values are for tests.
    ("imap", "idle_timeout"): lambda x: v.parse_seconds(x, 1, 86400),
    ("imap", "max_bad_commands"): lambda x: v.parse_int(x, 1, 1000),
    ("imap", "max_literal"): lambda x: v.parse_int(x, 0, GIB),
    ("imap", "max_connections_per_account"): lambda x: v.parse_int(x, 1, 100_000),
    ("imap", "max_connections"): lambda x: v.parse_int(x, 1, 1_000_000),
    ("imap", "max_connections_per_ip"): lambda x: v.parse_int(x, 1, 1_000_000),
    ("imap", "command_rate"): lambda x: v.parse_number(x, 0, 1_000_000),
    ("imap", "command_burst"): lambda x: v.parse_int(x, 1, 10_000_000),
    ("imap", "compress_max_ratio"): lambda x: v.parse_number(x, 0, 10_000),
    ("imap", "append_memory"): lambda x: v.parse_int(x, 1024 * 1024, 64 * GIB),
    ("imap", "progress_interval"): lambda x: v.parse_number(x, 0, 3600),
    ("queue", "retry_schedule"): v.parse_schedule,
    # RFC 5321 section 4.5.4.1: the give-up time SHOULD be at least 4-5 days; shorter values
    # are allowed for tests and for admins who prefer fast bounces.
    ("queue", "expire_after"): lambda x: v.parse_seconds(x, 1, 30 * 86400),
    ("queue", "delay_warning"): lambda x: v.parse_seconds(x, 0, 30 * 86400),
    ("queue", "max_connections"): lambda x: v.parse_int(x, 1, 10_000),
    ("queue", "max_connections_per_domain"): lambda x: v.parse_int(x, 1, 10_000),
    ("queue", "remote_port"): lambda x: v.parse_int(x, 1, 65535),
    ("queue", "connect_timeout"): lambda x: v.parse_seconds(x, 0.1, 600),
    ("queue", "command_timeout"): lambda x: v.parse_seconds(x, 0.1, 3600),
    ("queue", "connection_reuse_time"): lambda x: v.parse_seconds(x, 0, 300),
    ("queue", "lease"): lambda x: v.parse_seconds(x, 0, 86400),
    ("queue", "sender_hourly_limit"): lambda x: v.parse_int(x, 0, 10_000_000),
    ("queue", "smarthost"): v.parse_smarthosts,
    ("queue", "tls_ca_file"): v.parse_path,
    ("queue", "mta_sts_port"): lambda x: v.parse_int(x, 1, 65535),
    # RFC 9106 section 4 recommends t=3 with 64 MiB (or t=1 with 2 GiB); lower values are
    # accepted for tests and small machines, the docs say what they cost.
    ("security", "argon2_time_cost"): lambda x: v.parse_int(x, 1, 100),
    ("security", "argon2_memory_cost"): lambda x: v.parse_int(x, 8, 4 * 1024 * 1024),
    ("security", "argon2_parallelism"): lambda x: v.parse_int(x, 1, 64),
    ("security", "max_failures"): lambda x: v.parse_int(x, 1, 100_000),
    ("security", "failure_window"): lambda x: v.parse_seconds(x, 1, 7 * 86400),
    ("security", "block_duration"): lambda x: v.parse_seconds(x, 1, 30 * 86400),
    ("security", "failure_delay"): lambda x: v.parse_seconds(x, 0, 60),
    ("security", "max_failure_delay"): lambda x: v.parse_seconds(x, 0, 600),
    ("security", "trusted_networks"): v.parse_networks,
    ("security", "audit_retention"): lambda x: v.parse_seconds(x, 86400, 10 * 366 * 86400),
    ("security", "login_cache_ttl"): lambda x: v.parse_seconds(x, 0, 86400),
    ("log", "level"): v.parse_level,
    ("limits", "max_mailboxes_per_account"): lambda x: v.parse_int(x, 10, 10_000_000),
    ("limits", "default_quota"): v.parse_quota,
    ("mta_sts", "mode"): lambda x: v.parse_choice(x, MTA_STS_MODES),
    # RFC 8461 section 3.2: max_age is at most 31557600 seconds.
    ("mta_sts", "max_age"): lambda x: v.parse_int(x, 1, 31_557_600),
    ("mta_sts", "mx"): v.parse_mx_patterns,
    ("tls_reports", "send"): v.parse_bool,
    ("tls_reports", "organization"): v.parse_text,
    ("tls_reports", "contact"): v.parse_report_contact,
    ("sieve", "enable"): v.parse_bool,
    ("sieve", "max_script_size"): lambda x: v.parse_int(x, 1024, 1024 * 1024),
    ("sieve", "max_scripts"): lambda x: v.parse_int(x, 1, 1000),
    ("sieve", "max_actions"): lambda x: v.parse_int(x, 1, 1000),
    ("sieve", "max_redirects"): lambda x: v.parse_int(x, 0, 100),
    ("sieve", "redirects_per_day"): lambda x: v.parse_int(x, 0, 1_000_000),
    ("sieve", "max_run_steps"): lambda x: v.parse_int(x, 1000, 1_000_000_000),
    ("sieve", "max_run_cpu"): lambda x: v.parse_seconds(x, 0.01, 600),
    ("sieve", "max_errors"): lambda x: v.parse_int(x, 1, 1000),
    ("sieve", "idle_timeout"): lambda x: v.parse_seconds(x, 1, 86400),
    ("sieve", "auth_failure_delay"): lambda x: v.parse_seconds(x, 0, 60),
    ("sieve", "max_connections"): lambda x: v.parse_int(x, 1, 1_000_000),
    ("sieve", "max_connections_per_ip"): lambda x: v.parse_int(x, 1, 1_000_000),
    ("connections", "tls_handshake_timeout"): lambda x: v.parse_seconds(x, 0.1, 300),
    ("connections", "ipv4_prefix"): lambda x: v.parse_int(x, 8, 32),
    ("connections", "ipv6_prefix"): lambda x: v.parse_int(x, 32, 128),
    ("connections", "shed_above"): lambda x: v.parse_int(x, 50, 100),
    ("auth_checks", "enable"): v.parse_bool,
    ("auth_checks", "dmarc_reject_action"): lambda x: v.parse_choice(x, _DMARC_ACTIONS),
    ("auth_checks", "quarantine_action"): lambda x: v.parse_choice(x, _DMARC_ACTIONS),
    ("auth_checks", "trusted_arc_sealers"): v.parse_domains,
    ("spam", "enable"): v.parse_bool,
    ("spam", "rspamd"): lambda x: v.parse_http_url(x, allow_empty=True),
    ("spam", "rspamd_controller"): lambda x: v.parse_http_url(x, allow_empty=True),
    ("spam", "rspamd_password"): v.parse_secret,
    ("spam", "junk_score"): lambda x: v.parse_number(x, 0.1, 1000),
    ("spam", "reject_score"): lambda x: v.parse_number(x, 0.1, 1000),
    ("spam", "reject_action"): lambda x: v.parse_choice(x, SPAM_REJECT_ACTIONS),
    ("spam", "on_failure"): lambda x: v.parse_choice(x, SPAM_ON_FAILURE),
    ("spam", "dnsbl_zones"): v.parse_domains,
    ("spam", "dnsbl_score"): lambda x: v.parse_number(x, -100, 100),
    ("spam", "greylisting"): v.parse_bool,
    # RFC 6647 section 5: delays over 5 minutes are unkind; 0 is for tests.
    ("spam", "greylist_delay"): lambda x: v.parse_seconds(x, 0, 3600),
    ("spam", "bayes"): v.parse_bool,
    ("antivirus", "clamd"): v.parse_clamd,
    ("antivirus", "max_size"): lambda x: v.parse_int(x, 1024, GIB),
    ("antivirus", "on_failure"): lambda x: v.parse_choice(x, SPAM_ON_FAILURE),
    ("doctor", "dnsbl_zones"): v.parse_domains,
    ("doctor", "probe_host"): lambda x: v.parse_optional_endpoint(x, 25),
    # RFC 5905 section 7.2 / RFC 4330 section 4: NTP servers listen on UDP port 123.
    ("doctor", "time_server"): lambda x: v.parse_optional_endpoint(x, 123),
}
_TOP_KEYS = ("hostname", *(name for name, _ in SECTIONS))
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


class _Loader:
    """The state of one load: the file name and the key positions, for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = KeyLines(text)

    def error(self, key: tuple[str, ...], message: str) -> ConfigError:
        line = self.lines.line_of(key) or 1
        return ConfigError(f"{self.path}:{line}: {message}")

    def check_keys(
        self, table: tuple[str, ...], doc: Mapping[str, Any], known: tuple[str, ...]
    ) -> None:
        for key in doc:
            if key not in known:
                full = ".".join((*table, key))
                hint = ""
                if table and key in _TOP_KEYS:
                    hint = f"; '{key}' belongs at the top, before the first [table]"
                raise self.error(
                    (*table, key),
                    f"key '{full}' is unknown (expected one of: {', '.join(known)}){hint}",
                )

    def value(self, table: str, key: str, raw: object) -> Any:
        path = (table, key) if table else (key,)
        try:
            return PARSERS[(table, key)](raw)
        except v.BadValue as exc:
            raise self.error(path, f"{'.'.join(path)}: {exc}") from None

    def section(self, name: str, cls: type[Any], doc: Mapping[str, Any]) -> dict[str, Any]:
        raw = doc.get(name, {})
        if not isinstance(raw, dict):
            raise self.error((name,), f"{name}: expected a table [{name}], got {v.shown(raw)}")
        known = tuple(f.name for f in dataclasses.fields(cls))
        self.check_keys((name,), raw, known)
        return {key: self.value(name, key, value) for key, value in raw.items()}


def parse_config(text: str, path: Path, data_dir: Path) -> Config:
    """Validate TOML ``text`` (read from ``path``) into a Config. Raises ConfigError."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = match.group(1) if match else "1"
        detail = _TOML_POSITION.sub("", message)
        if match:
            detail += f" (column {match.group(2)})"
        raise ConfigError(f"{path}:{line}: invalid TOML: {detail}") from None
    ld = _Loader(path, text)
    ld.check_keys((), doc, _TOP_KEYS)
    sections = {name: ld.section(name, cls, doc) for name, cls in SECTIONS}
    if "hostname" not in doc:
        raise ConfigError(
            f"{path}:1: key 'hostname' is missing (the server's own name, e.g. hostname = "
            '"mail.example.org")'
        )
    hostname = ld.value("", "hostname", doc["hostname"])
    data_dir = data_dir.resolve()

    listen = ListenConfig(**sections["listen"])
    seen: dict[HostPort, str] = {}
    for name, endpoint in listen.items():
        if endpoint.port != 0 and endpoint in seen:
            raise ld.error(
                ("listen", name),
                f"listen.{name}: {endpoint} is already used by listen.{seen[endpoint]}",
            )
        seen[endpoint] = name

    tls_raw = sections["tls"]
    if len(tls_raw) == 1:
        given, missing = ("cert", "key") if "cert" in tls_raw else ("key", "cert")
        raise ld.error(("tls", given), f"tls.{given} is set but tls.{missing} is not; give both")
    tls = TLSConfig(
        cert=data_dir / tls_raw.get("cert", Path("tls/cert.pem")),
        key=data_dir / tls_raw.get("key", Path("tls/key.pem")),
    )

    smtp = SMTPConfig(**sections["smtp"])
    if smtp.max_connections_per_ip > smtp.max_connections:
        culprit = (
            "max_connections_per_ip"
            if "max_connections_per_ip" in sections["smtp"]
            else ("max_connections")
        )
        raise ld.error(
            ("smtp", culprit),
            "smtp.max_connections_per_ip: must not exceed smtp.max_connections "
            f"({smtp.max_connections}), got {smtp.max_connections_per_ip}",
        )
    pop3 = POP3Config(**sections["pop3"])
    if pop3.max_connections_per_ip > pop3.max_connections:
        raise ld.error(
            ("pop3", "max_connections_per_ip" if "max_connections_per_ip" in sections["pop3"]
             else "max_connections"),
            "pop3.max_connections_per_ip: must not exceed pop3.max_connections "
            f"({pop3.max_connections}), got {pop3.max_connections_per_ip}",
        )
    queue_raw = sections["queue"]
    if "tls_ca_file" in queue_raw:
        queue_raw["tls_ca_file"] = data_dir / queue_raw["tls_ca_file"]
    queue = QueueConfig(**queue_raw)
    if queue.max_connections_per_domain > queue.max_connections:
        raise ld.error(
            ("queue", "max_connections_per_domain"
             if "max_connections_per_domain" in sections["queue"] else "max_connections"),
            "queue.max_connections_per_domain: must not exceed queue.max_connections "
            f"({queue.max_connections}), got {queue.max_connections_per_domain}",
        )
    longest = 10 * queue.connect_timeout + 8 * queue.command_timeout
    if queue.lease and queue.lease < longest:
        raise ld.error(
            ("queue", "lease"),
            f"queue.lease ({queue.lease:g} s) must outlast the longest delivery attempt, "
            f"10 x connect_timeout + 8 x command_timeout = {longest:g} s, or a slow attempt "
            "could be claimed twice; raise it or lower the timeouts",
        )
    store = StoreConfig(**sections["store"])
    if store.backend == "postgresql" and not store.dsn:
        raise ld.error(
            ("store", "backend"),
            'store.backend is "postgresql" but store.dsn is not set; give the connection URI, '
            'e.g. dsn = "postgresql://mailstead@127.0.0.1/mailstead"',
        )
    spam = SpamConfig(**sections["spam"])
    if spam.junk_score > spam.reject_score:
        raise ld.error(
            ("spam", "junk_score" if "junk_score" in sections["spam"] else "reject_score"),
            f"spam.junk_score ({spam.junk_score:g}) must not exceed spam.reject_score "
            f"({spam.reject_score:g})",
        )
    return Config(
        hostname=hostname,
        data_dir=data_dir,
        config_path=path,
        listen=listen,
        tls=tls,
        store=store,
        dns=DNSConfig(**sections["dns"]),
        smtp=smtp,
        pop3=pop3,
        imap=IMAPConfig(**sections["imap"]),
        connections=ConnectionsConfig(**sections["connections"]),
        queue=queue,
        auth_checks=AuthChecksConfig(**sections["auth_checks"]),
        spam=spam,
        antivirus=AntivirusConfig(**sections["antivirus"]),
        security=SecurityConfig(**sections["security"]),
        log=LogConfig(**sections["log"]),
        sieve=SieveConfig(**sections["sieve"]),
        doctor=DoctorConfig(**sections["doctor"]),
        limits=LimitsConfig(**sections["limits"]),
        mta_sts=MtaStsConfig(**sections["mta_sts"]),
        tls_reports=TlsReportsConfig(**sections["tls_reports"]),
    )


def load_config(data_dir: Path) -> Config:
    """Read and validate DATA/mailstead.toml. Raises ConfigError with one ``FILE:LINE:`` line."""
    path = data_dir / CONFIG_FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: not found; is {data_dir} a Mailstead data directory? "
            "(create one with: mailstead init --data-dir DIR --hostname HOST --domain DOMAIN)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (TOML files are UTF-8)") from None
    return parse_config(text, path, data_dir)
