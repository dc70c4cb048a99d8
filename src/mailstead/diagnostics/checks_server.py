"""The doctor's checks of this machine: listeners, certificate, outbound port 25, the queue,
disk space and the clock. Each returns ``Check`` findings and never raises."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import shutil
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mailstead.config.model import Config, HostPort
from mailstead.diagnostics import sntp
from mailstead.diagnostics.classify import Cause, fix, words
from mailstead.diagnostics.model import Check, fail, passed, printable, warn
from mailstead.diagnostics.probe import ProbeSettings, Protocol, Security, Target, probe
from mailstead.storage.interfaces import QueueEntry
from mailstead.storage.space import reserve_bytes

CERT_WARN_DAYS = 14
# RFC 6238 section 5.2 allows one 30-second time step of drift for TOTP codes; beyond that
# two-factor logins fail, so a skew over 30 s is a failure, over 2 s worth fixing.
CLOCK_FAIL_SECONDS = 30.0
CLOCK_WARN_SECONDS = 2.0
MIB = 1024 * 1024
DISK_FAIL_BYTES = 100 * MIB
DISK_WARN_BYTES = 1024 * MIB
QUEUE_WARN_AGE = 3600.0

# How each mail listener is spoken to: protocol and security.
_LISTENERS: dict[str, tuple[Protocol, Security]] = {
    "smtp": ("smtp", "starttls"),
    "submission": ("smtp", "starttls"),
    "submissions": ("smtp", "ssl"),
    "imap": ("imap", "starttls"),
    "imaps": ("imap", "ssl"),
    "pop3": ("pop3", "starttls"),
    "pop3s": ("pop3", "ssl"),
    "managesieve": ("managesieve", "starttls"),
}


_SPOKEN = {"smtp": "SMTP", "imap": "IMAP", "pop3": "POP3", "managesieve": "ManageSieve"}


def _connect_host(endpoint: HostPort) -> str:
    """Where to reach a listener from this machine: a wildcard bind is reached on loopback."""
    if endpoint.host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if endpoint.host == "::":
        return "::1"
    return endpoint.host


async def _http_answers(host: str, port: int, hostname: str, tls: bool,
                        timeout: float) -> str | None:
    """None when GET / gets an HTTP status line, else what went wrong."""
    ctx = ProbeSettings(verify=False).context(verify=False) if tls else None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=hostname if tls else None), timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return printable(str(exc) or "timed out")
    try:
        writer.write(f"GET / HTTP/1.0\r\nHost: {hostname}\r\n\r\n".encode("ascii"))
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
        return printable(str(exc) or "no answer")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return None if line.startswith(b"HTTP/1.") else f"not HTTP: {printable(line.decode('latin-1'))}"


async def check_listener(config: Config, name: str, endpoint: HostPort,
                         timeout: float) -> Check:
    """A listener is bound and answers like a mail server (greeting, EHLO/CAPABILITY/CAPA,
    STARTTLS where the port is a STARTTLS port)."""
    label = f"listener {name} ({endpoint})"
    if endpoint.port == 0:
        return warn(label, "port 0: the system picks a new port at each start, so clients "
                    "cannot find it", f"set a fixed port in [listen] {name}")
    host = _connect_host(endpoint)
    if name in ("http", "https"):
        problem = await _http_answers(host, endpoint.port, config.hostname, name == "https",
                                      timeout)
        if problem is None:
            return passed(label, "answers HTTP")
        return fail(label, f"does not answer HTTP: {problem}",
                    "start the server (mailstead serve) and check that nothing else holds "
                    "the port")
    protocol, security = _LISTENERS[name]
    target = Target(protocol, config.hostname, endpoint.port, security, host)
    result = await probe(target, None, ProbeSettings(timeout=timeout, verify=False))
    cause = result.cause
    if cause is Cause.LOGIN_NOT_TESTED or (cause is Cause.NO_AUTH and name == "smtp"):
        tls = "implicit TLS" if security == "ssl" else "STARTTLS"
        return passed(label, f"answers {_SPOKEN[protocol]} with {tls}")
    if cause is Cause.NO_AUTH:
        return fail(label, "answers SMTP but offers no AUTH after TLS, so clients cannot "
                    "send", "check the [listen] table: this should be a submission port")
    detail = f" ({result.detail})" if result.detail else ""
    if cause in (Cause.REFUSED, Cause.TIMED_OUT, Cause.UNREACHABLE):
        return fail(label, f"not answering: {words(cause)}{detail}",
                    "start the server (mailstead serve); if it runs, look at its log for "
                    "why this listener did not start")
    return fail(label, f"{words(cause)}{detail}", fix(cause))


def _load_roots() -> list[x509.Certificate]:
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and Path(path).is_file():
            with contextlib.suppress(OSError, ValueError):
                return x509.load_pem_x509_certificates(Path(path).read_bytes())
    return []


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def name_matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 section 6.4.3: a wildcard matches exactly one whole leftmost label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == hostname


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):  # not signed by its own key
        return False
    return True


def check_certificate(config: Config, now: dt.datetime | None = None,
                      roots: Sequence[x509.Certificate] | None = None) -> list[Check]:
    """The certificate of [tls]: matches the hostname, not expired (WARN under 14 days),
    self-signed (WARN) or chained to a trusted authority with every intermediate present."""
    now = now or dt.datetime.now(dt.UTC)
    path = config.tls.cert
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [fail("certificate", f"cannot read {path}: {printable(str(exc))}",
                     "point [tls] cert at a PEM certificate chain (leaf first)")]
    leaf = chain[0]
    out: list[Check] = []
    names = _names(leaf)
    if any(name_matches(n, config.hostname) for n in names):
        out.append(passed("certificate name", f"valid for {config.hostname}"))
    else:
        shown = ", ".join(names) or "no DNS names"
        out.append(fail("certificate name",
                        f"issued for {printable(shown)}, not {config.hostname}: clients will "
                        "warn that the certificate is for another server",
                        f"get a certificate that includes {config.hostname} (e.g. certbot "
                        f"certonly -d {config.hostname}) and point [tls] at it"))
    left = leaf.not_valid_after_utc - now
    days = left.total_seconds() / 86400
    if leaf.not_valid_before_utc > now:
        out.append(fail("certificate expiry",
                        f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                        "check the clock of this machine, or install a current certificate"))
    elif days < 0:
        out.append(fail("certificate expiry",
                        f"expired on {leaf.not_valid_after_utc:%Y-%m-%d} ({-days:.0f} days "
                        "ago): clients refuse to connect or warn",
                        "renew the certificate (certbot renew) and restart mailstead"))
    elif days < CERT_WARN_DAYS:
        out.append(warn("certificate expiry",
                        f"expires on {leaf.not_valid_after_utc:%Y-%m-%d}, in {days:.0f} days",
                        "renew it now (certbot renew) and check that automatic renewal runs"))
    else:
        out.append(passed("certificate expiry",
                          f"valid until {leaf.not_valid_after_utc:%Y-%m-%d} ({days:.0f} days)"))
    if _self_signed(leaf):
        out.append(warn("certificate chain",
                        "self-signed: mail clients show \"cannot verify server identity\" / "
                        "\"certificate not trusted\" and ask the user to accept it; senders "
                        "enforcing MTA-STS will not deliver",
                        f"get a free certificate from Let's Encrypt for {config.hostname} and "
                        "set [tls] cert (fullchain.pem) and key"))
        return out
    store = Store(list(roots if roots is not None else _load_roots()) or [leaf])
    try:
        verifier = PolicyBuilder().store(store).time(now).build_server_verifier(
            x509.DNSName(config.hostname))
        verifier.verify(leaf, chain[1:])
    except VerificationError as exc:
        out.append(fail("certificate chain",
                        f"does not chain to a trusted authority: {printable(str(exc))}",
                        "point [tls] cert at the full chain (fullchain.pem, leaf first, then "
                        "the intermediates), not the leaf alone (cert.pem)"))
    except ValueError as exc:
        out.append(fail("certificate chain", f"cannot be verified: {printable(str(exc))}",
                        "install a certificate from a public authority"))
    else:
        out.append(passed("certificate chain",
                          f"complete, issued by {printable(leaf.issuer.rfc4514_string(), 80)}"))
    return out


async def check_outbound_port25(config: Config, timeout: float) -> Check | None:
    """A TCP connection to [doctor] probe_host gets an SMTP greeting: outgoing port 25 is
    open. None when the check is off."""
    probe_host = config.doctor.probe_host
    if probe_host is None:
        return None
    label = "outbound port 25"
    relay = config.queue.smarthost.get("*")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(probe_host.host, probe_host.port), timeout)
    except (OSError, TimeoutError) as exc:
        how = "timed out" if isinstance(exc, TimeoutError) else printable(str(exc))
        if relay is not None:
            return passed(label, f"blocked ({how}), but all mail goes through the smarthost "
                          f"{relay.host}:{relay.port}")
        return warn(label, f"cannot reach {probe_host} ({how}): the network or the hosting "
                    "provider blocks outgoing SMTP, so mail to other servers stays queued",
                    "ask the provider to open port 25, or relay through a smarthost: "
                    '[queue.smarthost."*"] host = "smtp.provider.example", port = 587, '
                    'username, password')
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError, ValueError):
        line = b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    if line.startswith(b"220"):
        return passed(label, f"{probe_host} greets: {printable(line.decode('latin-1'), 80)}")
    return warn(label, f"{probe_host} accepts the connection but sends no SMTP greeting "
                "(something intercepts port 25)",
                "ask the provider whether outgoing SMTP is filtered, or use a smarthost")


def check_queue(entries: Sequence[QueueEntry], now: float | None = None) -> Check:
    """Deferred recipients, the oldest one, and the most common remote error."""
    now = time.time() if now is None else now
    waiting = [e for e in entries if e.state in ("queued", "active", "deferred")]
    deferred = [e for e in waiting if e.state == "deferred"]
    if not deferred:
        return passed("queue", f"{len(waiting)} recipient(s) waiting, none deferred")
    oldest = min(e.created_at for e in deferred)
    age = now - oldest
    errors = Counter(printable(e.last_error or "no error recorded", 120) for e in deferred)
    common, count = errors.most_common(1)[0]
    why = (f"{len(deferred)} deferred recipient(s), oldest {age / 3600:.1f} h; most common "
           f"error ({count}x): {common}")
    if age < QUEUE_WARN_AGE:
        return passed("queue", why)
    return warn("queue", why, "read the error: a blocked port 25 needs a smarthost, a "
                "blocklisting needs delisting; `mailstead queue list` shows every entry, "
                "`mailstead queue retry` tries again at once")


def check_disk(data_dir: Path, reserve_mb: int = 200, reserve_percent: int = 1) -> Check:
    """Free space of the file system holding the data directory, against the store's
    free-space reserve (below it new mail is refused, storage/space.py)."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return fail("disk space", f"cannot read {data_dir}: {exc.strerror}",
                    "check that the data directory exists")
    free_mib = usage.free / MIB
    why = f"{free_mib:,.0f} MiB free of {usage.total / MIB:,.0f} MiB on {data_dir}"
    reserve = reserve_bytes(usage.total, reserve_mb, reserve_percent)
    if reserve and usage.free < reserve:
        return fail("disk space", why + f", under the {reserve / MIB:,.0f} MiB reserve: new "
                    "mail is refused now (452 4.3.1) until space is freed",
                    "delete or expunge mail, free other space, or grow the disk now")
    if usage.free < DISK_FAIL_BYTES or usage.free < usage.total * 0.01:
        return fail("disk space", why + ": mail will soon be refused (452 4.3.1)",
                    "free space or grow the disk now")
    if usage.free < DISK_WARN_BYTES or usage.free < usage.total * 0.05:
        return warn("disk space", why, "free space or grow the disk soon")
    return passed("disk space", why)


async def check_clock(config: Config, timeout: float) -> Check | None:
    """The clock against [doctor] time_server over SNTP; None when the check is off."""
    server = config.doctor.time_server
    if server is None:
        return None
    try:
        reply = await sntp.query(server.host, server.port, timeout)
    except sntp.SntpError as exc:
        return warn("clock", f"cannot ask {server}: {exc}",
                    "allow outgoing UDP port 123, or set [doctor] time_server to a reachable "
                    "NTP server")
    why = f"{reply.offset:+.3f} s from {server} (stratum {reply.stratum})"
    if abs(reply.offset) > CLOCK_FAIL_SECONDS:
        return fail("clock", why + ": two-factor codes and certificate checks fail",
                    "run an NTP client (systemd-timesyncd or chrony) on this machine")
    if abs(reply.offset) > CLOCK_WARN_SECONDS:
        return warn("clock", why, "run an NTP client (systemd-timesyncd or chrony)")
    return passed("clock", why)


def listener_addresses(config: Config) -> list[str]:
    """The global addresses the listeners are bound to (wildcards and loopback left out)."""
    out: list[str] = []
    for _, endpoint in config.listen.items():
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(endpoint.host)
            if ip.is_global:
                out.append(str(ip))
    return list(dict.fromkeys(out))
