"""Running compiled scripts: actions, implicit keep, extensions (RFC 5228, 5229, 5230, 5232,
5173, 5429)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sieve_examples import RFC5228_EXAMPLE

from mailstead.filters.pipeline import parse_fields
from mailstead.sieve.actions import Discard, FileInto, Keep, Outcome, Redirect, Reject, Vacation
from mailstead.sieve.compile import compile_script
from mailstead.sieve.interpreter import Envelope, Interpreter
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.message import MessageView

MSG = (
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: me@example.com, other@else.test\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= [dev] news\r\n"
    b"Sender: owner-ietf-mta-filters@imc.org\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=b\r\n"
    b"\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
    b"quoted-printable\r\n\r\nThis is URGENT =E2=9C=93\r\n"
    b"--b\r\nContent-Type: image/png\r\n\r\nurgent-not-text\r\n--b--\r\n"
)
ENV = Envelope("alice@example.com", "me@example.com")


def run(script: bytes, data: bytes = MSG, env: Envelope = ENV,
        limits: SieveLimits | None = None) -> Outcome:
    return Interpreter(limits).run(compile_script(script), MessageView(data), env)


def test_rfc5228_example_files_into_filter() -> None:
    assert run(RFC5228_EXAMPLE).actions == (FileInto("filter"),)


def test_rfc5228_example_domain_branch() -> None:
    data = MSG.replace(b"Sender: owner-ietf-mta-filters@imc.org\r\n", b"")
    assert run(RFC5228_EXAMPLE, data).actions == (Keep(),)
    data2 = data.replace(b"example.com>", b"elsewhere.test>").replace(
        b"me@example.com", b"you@elsewhere.test")
    assert run(RFC5228_EXAMPLE, data2).actions == (FileInto("spam"),)


def test_implicit_keep_and_its_cancellation() -> None:
    assert run(b"").actions == (Keep(),)
    assert run(b"discard;").actions == ()
    assert run(b'require "fileinto"; fileinto "A"; fileinto "A";').actions == (FileInto("A"),)
    assert run(b'require ["fileinto", "copy"]; fileinto :copy "A";').actions == (
        FileInto("A"), Keep())
    assert run(b"keep; discard;").actions == (Keep(),)
    assert run(b"stop; discard;").actions == (Keep(),)


def test_header_decoding_and_exists_and_size() -> None:
    assert run(b'if header :contains "subject" "Caf\xc3\xa9" { discard; }').actions == ()
    assert run(b'if exists ["From", "X-Nope"] { discard; }').actions == (Keep(),)
    assert run(b'if size :over 100 { discard; }').actions == ()
    assert run(b'if size :under 100 { discard; }').actions == (Keep(),)


def test_address_parts_and_envelope() -> None:
    script = b'if address :localpart :is "from" "alice" { discard; }'
    assert run(script).actions == ()
    script = (b'require "envelope"; if envelope :domain :is "to" "example.com" '
              b'{ discard; }')
    assert run(script).actions == ()
    null = Envelope("", "me@example.com")
    script = b'require "envelope"; if envelope :is "from" "" { discard; }'
    assert run(script, env=null).actions == ()


def test_body_text_decodes_text_parts_only() -> None:
    script = b'require "body"; if body :text :contains "urgent \xe2\x9c\x93" { discard; }'
    assert run(script).actions == ()
    script = b'require "body"; if body :text :contains "urgent-not-text" { discard; }'
    assert run(script).actions == (Keep(),)
    script = b'require "body"; if body :raw :contains "=E2=9C=93" { discard; }'
    assert run(script).actions == ()
    script = (b'require "body"; if body :content "image" :contains "urgent-not" '
              b'{ discard; }')
    assert run(script).actions == ()


def test_imap4flags() -> None:
    script = b'''require ["imap4flags", "fileinto"];
addflag "\\\\flagged";
addflag ["$Work", "bad flag(", "\\\\Bogus"];
if hasflag :contains "$work" { fileinto "Work"; }
removeflag "\\\\Flagged";
keep;
'''
    # Flag lists split at spaces (RFC 5232 section 3): "bad" is kept, "flag(" dropped.
    assert run(script).actions == (FileInto("Work", ("\\Flagged", "$Work", "bad")),
                                   Keep(("$Work", "bad")))
    script = b'require "imap4flags"; keep :flags ["\\\\Seen"];'
    assert run(script).actions == (Keep(("\\Seen",)),)


def test_variables_and_match_variables() -> None:
    script = b'''require ["variables", "fileinto"];
if header :matches "subject" "*[*]*" { set :lower "list" "${2}"; }
set "n" "${list}";
set :length "len" "${n}";
fileinto "lists/${n}-${len}-${unknown}";
'''
    assert run(script).actions == (FileInto("lists/dev-3-"),)


def test_reject_and_conflicts() -> None:
    assert run(b'require "reject"; reject "go away";').actions == (Reject("go away"),)
    out = run(b'require ["reject", "fileinto"]; fileinto "x"; reject "no";')
    assert out.actions == (Keep(),)
    assert out.error is not None


def test_redirect_limits_and_runtime_errors_keep() -> None:
    limits = SieveLimits(max_redirects=1)
    out = run(b'redirect "a@b.test"; redirect "c@d.test";', limits=limits)
    assert out.actions == (Keep(),)
    assert out.error == "too many redirect actions"
    assert run(b'redirect "a@b.test"; redirect "A@b.test";').actions == (Redirect("a@b.test"),)
    out = run(b'redirect "not an address";')
    assert out.actions == (Keep(),)
    assert "invalid address" in (out.error or "")
    out = run(b"keep;" * 40)
    assert out.actions == (Keep(),)  # merged: 40 keeps are one action
    many = b"".join(b'fileinto "f%d";' % i for i in range(40))
    out = run(b'require "fileinto";' + many)
    assert out.error == "too many actions"


def test_vacation_action() -> None:
    script = (b'require "vacation"; vacation :days 100 :subject "Away" '
              b':addresses ["alias@example.com"] "I am away";')
    out = run(script)
    assert len(out.actions) == 2
    assert out.actions[1] == Keep()
    vac = out.actions[0]
    assert isinstance(vac, Vacation)
    assert vac.days == 30
    assert vac.subject == "Away"
    assert vac.addresses == ("alias@example.com",)
    other = run(script.replace(b"I am away", b"Back soon")).actions[0]
    assert isinstance(other, Vacation)
    assert other.handle != vac.handle
    out = run(b'require ["vacation", "reject"]; vacation "x"; reject "y";')
    assert out.error is not None


def test_discard_action_type_is_not_reported() -> None:
    assert not any(isinstance(a, Discard) for a in run(b"discard;").actions)


_LINES = st.sampled_from([
    b"Subject: hi\r\n", b"From: A <a@x.test>\r\n", b" folded\r\n", b"\tmore\r\n",
    b"not a field\r\n", b"X-Y : spaced\r\n", b"Bad Name: v\r\n", b"To:\r\n", b": x\r\n",
    b"Caf\xc3\xa9: y\r\n", b"Subject: =?utf-8?q?caf=C3=A9?=\r\n", b"Odd: bare\nLF\r\n",
])


@given(st.lists(_LINES, max_size=8), st.sampled_from([b"\r\nbody\r\n", b"", b"\n\nx"]))
@settings(max_examples=400, deadline=None)
def test_view_from_the_filters_fields_is_the_parsed_view(lines: list[bytes],
                                                         rest: bytes) -> None:
    # The header the filters parsed already (parse_fields) gives the same view as parsing
    # the message again; when the two would cut the header differently it is parsed again.
    data = b"".join(lines) + rest
    end = data.find(b"\r\n\r\n")
    header = data[: end + 2] if end >= 0 else data
    shared, parsed = MessageView(data, fields=parse_fields(header)), MessageView(data)
    for name in ("subject", "FROM", "x-y", "to", "caf\u00e9", "not a field", "odd"):
        assert shared.raw_headers(name) == parsed.raw_headers(name)
        assert shared.headers(name) == parsed.headers(name)
        assert shared.addresses(name) == parsed.addresses(name)
