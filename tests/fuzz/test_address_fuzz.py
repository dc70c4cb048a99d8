"""The address parser on arbitrary text: only AddressError, and str() re-parses identically."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailstead.core.address import AddressError, parse_address, parse_path

ATEXT = "abcXYZ019!#$%&'*+-/=?^_`{|}~."
local_part = st.one_of(
    st.text(alphabet=ATEXT, min_size=1, max_size=20),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.text(max_size=20),
)
domain = st.one_of(
    st.lists(st.text(alphabet="abcDEF0123-", min_size=1, max_size=12), min_size=1,
             max_size=4).map(".".join),
    st.sampled_from(["xn--bcher-kva.test", "bücher.test", "例え.test", "[192.0.2.1]",
                     "[IPv6:2001:db8::1]", "[IPv6:::ffff:1.2.3.4]", "ÉCOLE.test"]),
    st.text(max_size=20),
)


@settings(max_examples=1000, deadline=None)
@given(local=local_part, dom=domain, smtputf8=st.booleans())
@example(local='"a\\"b"', dom="x.test", smtputf8=False)
def test_structured_addresses_round_trip(local: str, dom: str, smtputf8: bool) -> None:
    text = f"{local}@{dom}"
    try:
        parsed = parse_address(text, smtputf8=smtputf8)
    except AddressError:
        return
    again = parse_address(str(parsed), smtputf8=True)
    assert again == parsed
    assert again.local == parsed.local
    assert again.domain == parsed.domain
    assert str(again) == str(parsed)
    assert parse_path(f"<{parsed}>", null_allowed=False, smtputf8=True) == parsed


@settings(max_examples=1000, deadline=None)
@given(text=st.text(max_size=80), smtputf8=st.booleans(), null=st.booleans())
def test_arbitrary_text_only_raises_address_error(text: str, smtputf8: bool, null: bool) -> None:
    codes: list[int] = []
    for candidate in (text, f"<{text}>"):
        try:
            result = parse_path(candidate, null_allowed=null, smtputf8=smtputf8)
        except AddressError as exc:
            codes.append(exc.reply.code)
            continue
        if result is not None:
            assert parse_address(str(result)) == result
    assert set(codes) <= {501, 553}


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80))
def test_parse_address_round_trip(text: str) -> None:
    try:
        parsed = parse_address(text)
    except AddressError:
        return
    assert parse_address(str(parsed)) == parsed
