from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mailstead.config import HostPort, load_config, parse_config
from mailstead.config.loader import PARSERS
from mailstead.config.model import SECTIONS, Config
from mailstead.config.template import dev_listen, render_config, standard_listen
from mailstead.core.errors import ConfigError

F = Path("/d/mailstead.toml")


def parse(text: str) -> Config:
    return parse_config(text, F, Path("/d"))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_config_has_documented_defaults() -> None:
    c = parse('hostname = "Mail.Example.TEST"\n')
    assert c.hostname == "mail.example.test"
    assert c.data_dir == Path("/d").resolve()
    assert c.config_path == F
    assert c.listen.items() == []
    assert c.tls.cert == Path("/d").resolve() / "tls/cert.pem"
    assert c.tls.key == Path("/d").resolve() / "tls/key.pem"
    assert c.dns.nameservers == ()
    assert c.smtp.max_message_size == 50 * 1024 * 1024
    assert (c.smtp.max_recipients, c.smtp.max_errors, c.smtp.idle_timeout) == (100, 10, 300.0)
    assert (c.smtp.max_connections, c.smtp.max_connections_per_ip) == (1000, 20)
    assert c.log.level == "info"
    assert c.limits.max_mailboxes_per_account == 10000


def test_full_config() -> None:
    c = parse(
        'hostname = "mail.example.test"\n'
        "[listen]\n"
        'smtp = "0.0.0.0:25"\n'
        'submission = "[::1]:2525"\n'
        'imaps = "localhost:0"\n'
        "[tls]\n"
        'cert = "/etc/le/fullchain.pem"\n'
        'key = "keys/privkey.pem"\n'
        "[dns]\n"
        'nameservers = ["127.0.0.1:5353", "::1", "[2001:db8::1]:53"]\n'
        "[smtp]\n"
        "max_message_size = 1048576\n"
        "idle_timeout = 2.5\n"
        "[log]\n"
        'level = "DEBUG"\n'
        "[limits]\n"
        "max_mailboxes_per_account = 500\n"
    )
    assert c.listen.smtp == HostPort("0.0.0.0", 25)
    assert c.listen.submission == HostPort("::1", 2525)
    assert str(c.listen.submission) == "[::1]:2525"
    assert c.listen.imaps == HostPort("localhost", 0)
    assert c.listen.pop3 is None
    assert c.tls.cert == Path("/etc/le/fullchain.pem")
    assert c.tls.key == Path("/d").resolve() / "keys/privkey.pem"
    assert c.dns.nameservers == (
        HostPort("127.0.0.1", 5353),
        HostPort("::1", 53),
        HostPort("2001:db8::1", 53),
    )
    assert c.smtp.max_message_size == 1048576
    assert c.smtp.idle_timeout == 2.5
    assert c.log.level == "debug"
    assert c.limits.max_mailboxes_per_account == 500


def test_unknown_key_names_line_and_choices() -> None:
    msg = error('hostname = "a.test"\n\n[listen]\nsmtp = "1.2.3.4:25"\nsmtpp = "1.2.3.4:26"\n')
    assert msg.startswith(f"{F}:5: key 'listen.smtpp' is unknown (expected one of: smtp, ")
    assert "https" in msg


def test_unknown_top_level_and_table() -> None:
    assert error('hostname = "a.test"\nhostnme = "b"\n').startswith(f"{F}:2: key 'hostnme'")
    assert error('hostname = "a.test"\n[lissten]\nx = 1\n').startswith(f"{F}:2: key 'lissten'")


def test_top_level_key_after_table_gets_a_hint() -> None:
    msg = error('[listen]\nhostname = "a.test"\n')
    assert msg.startswith(f"{F}:2: key 'listen.hostname' is unknown")
    assert "before the first [table]" in msg


@pytest.mark.parametrize(
    "value",
    [
        '"x"',
        '"1.2.3.4"',
        '"1.2.3.4:65536"',
        '"1.2.3.4:-1"',
        '"::1:25"',
        '"[1.2.3.4]:25"',
        '"[::1]"',
        '":25"',
        '"1.2.3.4:25x"',
        "25",
        "true",
        '"bad_host.test:25"',
        '"[::1:25"',
    ],
)
def test_bad_listen_value(value: str) -> None:
    msg = error(f'hostname = "a.test"\n[listen]\nsmtp = {value}\n')
    assert msg.startswith(f'{F}:3: listen.smtp: expected "host:port" with port 0-65535')
    assert msg.endswith(f", got {value}" if value.startswith('"') else msg[-10:])


def test_dotted_and_inline_keys_get_lines() -> None:
    assert error('hostname = "a.test"\n\nlisten.smtp = "x"\n').startswith(f"{F}:3: listen.smtp")
    assert error('hostname = "a.test"\nlisten = { imap = "y" }\n').startswith(f"{F}:2: listen.imap")


def test_toml_syntax_error_has_line() -> None:
    msg = error('hostname = "a.test"\n[listen]\nsmtp = "1.2.3.4:25\n')
    assert msg.startswith(f"{F}:3: invalid TOML: ")


def test_missing_hostname() -> None:
    assert "key 'hostname' is missing" in error("[listen]\n")


@pytest.mark.parametrize(
    ("body", "line", "start"),
    [
        ("[smtp]\nmax_message_size = 100\n", 3, "smtp.max_message_size: expected an integer"),
        ('[smtp]\nmax_recipients = "100"\n', 3, "smtp.max_recipients: expected an integer"),
        ("[smtp]\nmax_errors = true\n", 3, "smtp.max_errors: expected an integer"),
        ("[smtp]\nidle_timeout = 0\n", 3, "smtp.idle_timeout: expected a number of seconds"),
        ("[smtp]\nidle_timeout = nan\n", 3, "smtp.idle_timeout: expected a number"),
        ("[smtp]\nmax_connections = 5\n", 3, "smtp.max_connections_per_ip: must not exceed"),
        ('[log]\nlevel = "loud"\n', 3, "log.level: expected one of debug, info"),
        ("[limits]\nmax_mailboxes_per_account = 0\n", 3,
         "limits.max_mailboxes_per_account: expected an integer"),
        ('[tls]\ncert = "c.pem"\n', 3, "tls.cert is set but tls.key is not"),
        ('[tls]\nkey = ""\n', 3, "tls.key: expected a file path"),
        ("[dns]\nnameservers = \"1.1.1.1\"\n", 3, "dns.nameservers: expected an array"),
        ('[dns]\nnameservers = ["ns.example.test"]\n', 3, "dns.nameservers: item 1: expected"),
        ('[dns]\nnameservers = ["1.1.1.1:0"]\n', 3, "dns.nameservers: item 1: expected"),
        ('listen = "x"\n', 2, "listen: expected a table [listen]"),
        ('[listen]\nsmtp = "1.2.3.4:25"\nimap = "1.2.3.4:25"\n', 4, "listen.imap: 1.2.3.4:25 is"),
    ],
)
def test_bad_values(body: str, line: int, start: str) -> None:
    assert error('hostname = "a.test"\n' + body).startswith(f"{F}:{line}: {start}")


@pytest.mark.parametrize("hostname", ['"localhost"', '"a..test"', "5", '"-x.test"', '""'])
def test_bad_hostname(hostname: str) -> None:
    assert error(f"hostname = {hostname}\n").startswith(f"{F}:1: hostname: ")


def test_hostile_value_cannot_break_the_line() -> None:
    msg = error('hostname = "a.test"\n[listen]\nsmtp = "x\\nfake: line\\u2028"\n')
    assert "\n" not in msg
    assert "\u2028" not in msg
    assert "\\u000a" in msg


def test_port_zero_is_allowed_and_may_repeat() -> None:
    c = parse('hostname = "a.test"\n[listen]\nsmtp = "127.0.0.1:0"\nimap = "127.0.0.1:0"\n')
    assert c.listen.smtp == c.listen.imap == HostPort("127.0.0.1", 0)


def test_every_model_field_has_a_parser_and_doc() -> None:
    keys = {("", "hostname")}
    for name, cls in SECTIONS:
        for f in dataclasses.fields(cls):
            keys.add((name, f.name))
            assert f.metadata["doc"]
            assert f.metadata["type"]
            assert f.metadata["default"]
    assert keys == set(PARSERS)


@pytest.mark.parametrize("dev", [True, False])
def test_template_round_trips(dev: bool) -> None:
    listen = dev_listen() if dev else standard_listen()
    c = parse(render_config("mail.example.test", listen))
    assert c.listen == listen
    assert c.hostname == "mail.example.test"
    assert c.smtp == parse('hostname = "a.test"').smtp
    if dev:
        assert c.listen.smtp == HostPort("127.0.0.1", 2525)
        assert c.listen.https is None
    else:
        assert c.listen.https == HostPort("0.0.0.0", 443)


@pytest.mark.parametrize("dev", [True, False])
def test_every_commented_default_uncomments_to_the_same_config(dev: bool) -> None:
    """Each ``# key = value`` line of a fresh file is valid TOML for its default: uncommenting
    all of them at once loads, and yields the config the file had before."""
    listen = dev_listen() if dev else standard_listen()
    text = render_config("mail.example.test", listen)
    setting = re.compile(r"# ([a-z_]+ = .*)$")
    uncommented = [setting.sub(r"\1", line) for line in text.splitlines()]
    assert sum(1 for line in text.splitlines() if setting.match(line)) > 80
    assert parse("\n".join(uncommented) + "\n") == parse(text)
    for line in text.splitlines():  # no Python spellings left anywhere
        assert not re.search(r"= (True|False|None|\(\)|\(')", line), line


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path)
    (tmp_path / "mailstead.toml").write_bytes(b'hostname = "a.test"\n# \xff\n')
    with pytest.raises(ConfigError, match=r"mailstead.toml:2: not valid UTF-8"):
        load_config(tmp_path)
    (tmp_path / "mailstead.toml").write_text('hostname = "a.test"\n', encoding="utf-8")
    assert load_config(tmp_path).config_path == tmp_path / "mailstead.toml"


def test_connections_section() -> None:
    c = parse('hostname = "a.test"\n[connections]\ntls_handshake_timeout = 2.5\n'
              "ipv6_prefix = 56\nshed_above = 100\n")
    assert (c.connections.tls_handshake_timeout, c.connections.ipv6_prefix) == (2.5, 56)
    assert (c.connections.ipv4_prefix, c.connections.shed_above) == (32, 100)
    assert parse('hostname = "a.test"\n').connections.tls_handshake_timeout == 10.0
    for body, key in (("ipv6_prefix = 20", "ipv6_prefix"), ("shed_above = 101", "shed_above"),
                      ("tls_handshake_timeout = 0", "tls_handshake_timeout")):
        message = error(f'hostname = "a.test"\n[connections]\n{body}\n')
        assert message.startswith(f"{F}:3: connections.{key}: "), message


def test_mta_sts_and_tls_reports_sections() -> None:
    c = parse('hostname = "mail.example.test"\n')
    assert (c.mta_sts.mode, c.mta_sts.max_age, c.mta_sts.mx) == ("auto", 604800, ())
    assert c.tls_reports.send is True
    c = parse('hostname = "mail.example.test"\n[mta_sts]\nmode = "enforce"\nmax_age = 86400\n'
              'mx = ["MX1.Example.TEST.", "*.mx.example.test"]\n'
              '[tls_reports]\nsend = false\ncontact = "ops@example.test"\n')
    assert (c.mta_sts.mode, c.mta_sts.max_age) == ("enforce", 86400)
    assert c.mta_sts.mx == ("mx1.example.test", "*.mx.example.test")
    assert (c.tls_reports.send, c.tls_reports.contact) == (False, "ops@example.test")
    assert "mta_sts.mode" in error('hostname = "m.test"\n[mta_sts]\nmode = "strict"\n')
    assert "mta_sts.max_age" in error('hostname = "m.test"\n[mta_sts]\nmax_age = 40000000\n')
    assert "mta_sts.mx" in error('hostname = "m.test"\n[mta_sts]\nmx = ["a.*.test"]\n')
    assert parse('hostname = "m.test"\n[mta_sts]\nmx = []\n').mta_sts.mx == ()
    assert "tls_reports.contact" in error('hostname = "m.test"\n[tls_reports]\ncontact = "x"\n')


def test_srs_is_on_by_default_and_can_be_turned_off() -> None:
    base = 'hostname = "mx.example.test"\n'
    assert parse(base).smtp.srs is True
    assert parse(base + "[smtp]\nsrs = false\n").smtp.srs is False
    assert "srs" in error(base + '[smtp]\nsrs = "maybe"\n')
