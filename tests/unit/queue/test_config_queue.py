"""The [queue] settings the outbound side reads: smarthost TLS modes are checked by the loader
(one-line errors naming the file, line and key), and connection reuse has sane bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstead.config import parse_config
from mailstead.config.model import Config
from mailstead.core.errors import ConfigError
from mailstead.queue.routing import Smarthost

F = Path("/d/mailstead.toml")
HEAD = 'hostname = "mail.a.test"\n'


def parse(text: str) -> Config:
    return parse_config(HEAD + text, F, Path("/d"))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("mode", ["starttls", "implicit", "none"])
def test_smarthost_tls_modes_reach_the_router_unchanged(mode: str) -> None:
    config = parse(f'[queue.smarthost."*"]\nhost = "relay.example.test"\nport = 465\n'
                   f'tls = "{mode}"\n')
    sh = config.queue.smarthost["*"]
    assert sh.tls == mode
    relay = Smarthost(host=sh.host, port=sh.port, tls=sh.tls)
    assert (relay.host, relay.port, relay.tls) == ("relay.example.test", 465, mode)


@pytest.mark.parametrize("value", ['"STARTTLS "', '"ssl"', "true", '""'])
def test_a_bad_smarthost_tls_mode_is_one_clear_line(value: str) -> None:
    message = error(f'[queue.smarthost."b.test"]\nhost = "relay.b.test"\ntls = {value}\n')
    assert message.startswith(f"{F}:")
    assert "queue.smarthost" in message
    assert "tls: expected one of starttls, implicit, none" in message


def test_credentials_need_tls() -> None:
    message = error('[queue.smarthost."b.test"]\nhost = "relay.b.test"\ntls = "none"\n'
                    'username = "u"\npassword = "p"\n')
    assert "a password is never sent without TLS" in message


def test_connection_reuse_time() -> None:
    assert parse("").queue.connection_reuse_time == 5.0
    assert parse("[queue]\nconnection_reuse_time = 0\n").queue.connection_reuse_time == 0.0
    assert parse("[queue]\nconnection_reuse_time = 2.5\n").queue.connection_reuse_time == 2.5
    message = error("[queue]\nconnection_reuse_time = 301\n")
    assert message.startswith(f"{F}:3: queue.connection_reuse_time: expected a number of "
                              "seconds from 0 to 300")
    assert "expected a number" in error('[queue]\nconnection_reuse_time = "5"\n')
