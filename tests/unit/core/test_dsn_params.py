"""RFC 3461 parameter values: xtext both ways, NOTIFY/ORCPT/RET/ENVID validation, and the
parameters a request turns back into for the next hop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.dsn import (
    DsnParameterError,
    MessageDsn,
    RecipientDsn,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    xtext_decode,
    xtext_encode,
)

_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@given(_PRINTABLE)
def test_xtext_round_trips_printable_ascii(text: str) -> None:
    encoded = xtext_encode(text)
    assert " " not in encoded
    assert "=" not in encoded
    assert xtext_decode(encoded) == text


@given(st.text(max_size=60))
def test_hostile_xtext_is_refused_or_decoded_never_raises_otherwise(text: str) -> None:
    try:
        decoded = xtext_decode(text)
    except DsnParameterError:
        return
    assert all(0x20 <= ord(c) <= 0x7E for c in decoded)


@pytest.mark.parametrize("bad", ["a+2", "a+zz", "a+2b", "a=b", "a b", "\u00e9", "a+0A"])
def test_bad_xtext(bad: str) -> None:
    with pytest.raises(DsnParameterError):
        xtext_decode(bad)


def test_notify() -> None:
    assert parse_notify("never") == ("NEVER",)
    assert parse_notify("DELAY,success") == ("SUCCESS", "DELAY")
    for bad in (None, "", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "SOMETIMES", "SUCCESS,"):
        with pytest.raises(DsnParameterError):
            parse_notify(bad)


def test_orcpt_ret_envid() -> None:
    assert parse_orcpt("rfc822;x+2By@y.test") == "rfc822;x+y@y.test"
    assert parse_orcpt("RFC822;a@b.test") == "rfc822;a@b.test"
    for bad in (None, "", "rfc822", ";a@b.test", "rfc 822;a@b.test", "rfc822;"):
        with pytest.raises(DsnParameterError):
            parse_orcpt(bad)
    assert parse_ret("hdrs") == "HDRS"
    with pytest.raises(DsnParameterError):
        parse_ret("BODY")
    assert parse_envid("abc+2B1") == "abc+1"
    with pytest.raises(DsnParameterError):
        parse_envid("x" * 101)


def test_wants_and_parameters() -> None:
    default = RecipientDsn()
    assert default.wants("FAILURE")
    assert default.wants("DELAY")
    assert not default.wants("SUCCESS")
    never = RecipientDsn(("NEVER",))
    assert not any(never.wants(k) for k in ("SUCCESS", "FAILURE", "DELAY"))
    rdsn = RecipientDsn(("SUCCESS", "FAILURE"), "rfc822;x+y@y.test")
    assert rdsn.parameters() == ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x+2By@y.test")
    assert MessageDsn("HDRS", "a b").parameters() == ("RET=HDRS", "ENVID=a+20b")
