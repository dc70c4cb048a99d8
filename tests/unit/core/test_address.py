"""The RFC 5321 address parser."""

from __future__ import annotations

import pytest

from mailstead.core.address import Address, AddressError, parse_address, parse_domain, parse_path


def path(text: str, *, null: bool = True, utf8: bool = False) -> Address | None:
    return parse_path(text, null_allowed=null, smtputf8=utf8)


def test_simple_and_null() -> None:
    assert path("<Alice@Example.TEST>") == Address("Alice", "example.test")
    assert path("<>") is None
    with pytest.raises(AddressError) as info:
        path("<>", null=False)
    assert info.value.reply.code == 501


def test_source_route_ignored() -> None:
    assert path("<@a.test,@b.test:user@c.test>") == Address("user", "c.test")
    for bad in ["<@a.test:>", "<@a.test user@c.test>", "<@:u@c.test>", "<@a.test,b.test:u@c.test>"]:
        with pytest.raises(AddressError):
            path(bad)


def test_relay_tricks_parse_exactly() -> None:
    assert path("<user%other.test@local.test>") == Address("user%other.test", "local.test")
    quoted = path('<"user@other.test"@local.test>')
    assert quoted == Address("user@other.test", "local.test")
    assert quoted is not None
    assert quoted.quoted
    assert str(quoted) == '"user@other.test"@local.test'
    assert path("<user!other@local.test>") == Address("user!other", "local.test")


def test_quoted_strings() -> None:
    a = path('<"a\\"b\\\\c d"@x.test>')
    assert a == Address('a"b\\c d', "x.test")
    assert str(a) == '"a\\"b\\\\c d"@x.test'
    assert str(path('<"abc"@x.test>')) == "abc@x.test"  # quoting not needed
    assert path('<""@x.test>') == Address("", "x.test")
    for bad in ['<"a@x.test>', '<"a\x01"@x.test>', '<"a"b@x.test>', '<"a\\\x01"@x.test>']:
        with pytest.raises(AddressError):
            path(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "a@b.test", "<a@b.test", "a@b.test>", "<a>", "<@b.test>", "<a@>", "<.a@b.test>",
        "<a.@b.test>", "<a..b@b.test>", "<a b@b.test>", "<a@b.test.>", "<a@.b.test>",
        "<a@b..test>", "<a@-b.test>", "<a@b-.test>", "<a@b_c.test>", "<a@b@c.test>",
        "<a@[1.2.3]>", "<a@[1.2.3.256]>", "<a@[IPv6:zz::1]>", "<a@[IPv6:fe80::1%eth0]>",
        "<a@[foo:bar]>", "<a@[]>", "<a@xn--abc-.test>", "<a@xn--zz.test>",
    ],
)
def test_syntax_errors(bad: str) -> None:
    with pytest.raises(AddressError):
        path(bad)


def test_limits() -> None:
    local64 = "l" * 64
    assert path(f"<{local64}@x.test>") == Address(local64, "x.test")
    with pytest.raises(AddressError, match="local part"):
        path(f"<{local64}l@x.test>")
    label63 = "d" * 63
    assert path(f"<a@{label63}.test>") is not None
    with pytest.raises(AddressError, match="63"):
        path(f"<a@{label63}d.test>")
    domain = ".".join(["d" * 60] * 4) + ".test"  # 248 octets
    assert path(f"<{'a' * 5}@{domain}>") is not None  # 256 octets
    with pytest.raises(AddressError, match="256"):
        path(f"<{'a' * 6}@{domain}>")  # 257 octets (RFC 5321 4.5.3.1.3)
    with pytest.raises(AddressError, match="254"):
        parse_address("a@" + ".".join(["d" * 63] * 4))  # 257 octets
    assert parse_domain(".".join(["d" * 63] * 5)[:255]) is not None
    with pytest.raises(AddressError, match="255"):
        parse_domain(".".join(["d" * 63] * 5)[:257])


def test_address_literals() -> None:
    assert path("<a@[192.0.2.1]>") == Address("a", "[192.0.2.1]")
    lit = path("<a@[ipv6:2001:DB8::0:1]>")
    assert lit == Address("a", "[IPv6:2001:db8::1]")
    assert lit is not None
    assert lit.is_address_literal
    assert not Address("a", "b.test").is_address_literal


def test_idna() -> None:
    assert path("<a@XN--BCHER-KVA.test>") == Address("a", "bücher.test")
    assert path("<a@Bücher.test>", utf8=True) == Address("a", "bücher.test")
    with pytest.raises(AddressError) as info:
        path("<a@bücher.test>")
    assert info.value.reply.code == 553
    with pytest.raises(AddressError):
        path("<jörg@b.test>")
    assert path("<jörg@b.test>", utf8=True) == Address("jörg", "b.test")


def test_parse_address() -> None:
    assert parse_address("Bob@Example.Test") == Address("Bob", "example.test")
    assert str(parse_address('"a b"@x.test')) == '"a b"@x.test'
    for bad in ["", "bob", "<bob@x.test>", "bob@", "@x.test", "bob@x.test "]:
        with pytest.raises(AddressError):
            parse_address(bad)


def test_quoted_does_not_affect_equality() -> None:
    assert parse_address('"abc"@x.test') == parse_address("abc@x.test")
