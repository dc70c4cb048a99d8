"""The extensions Roundcube and Thunderbird write into scripts: relational (RFC 5231) with
the i;ascii-numeric comparator (RFC 4790 section 9.1), date and currentdate (RFC 5260),
environment (RFC 5183); and SieveRunner handing the delivery time to currentdate."""

from __future__ import annotations

import asyncio
import base64
import datetime
import re
import time
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead import __version__
from mailstead.proto.managesieve import (
    NEED_DATA,
    Credentials,
    ManageSieveCore,
    ManageSieveSettings,
    ScriptRequest,
)
from mailstead.sieve.actions import FileInto, Keep, Outcome, Vacation
from mailstead.sieve.compile import CAPABILITY_EXTENSIONS, compile_script
from mailstead.sieve.dates import (
    DATE_PARTS,
    date_part,
    days_from_civil,
    extract,
    from_timestamp,
    parse_date,
)
from mailstead.sieve.delivery import SieveRunner
from mailstead.sieve.interpreter import Envelope, Interpreter, SieveEnvironment
from mailstead.sieve.match import matches, order, relational
from mailstead.sieve.message import MessageView
from mailstead.sieve.parser import SieveError
from mailstead.storage.interfaces import Store

ENV = Envelope("sender@example.org", "me@foo.example.com")
HOST = SieveEnvironment.for_host("mx1.example.net")


def run(script: str, data: bytes = b"\r\n", *, now: float | None = None,
        env: Envelope = ENV) -> Outcome:
    return Interpreter(environment=HOST).run(
        compile_script(script), MessageView(data), env, now=now)


def filed(script: str, data: bytes = b"\r\n", *, now: float | None = None,
          env: Envelope = ENV) -> list[str]:
    """The mailboxes a run files into ("INBOX" for keep); the run must not fail."""
    outcome = run(script, data, now=now, env=env)
    assert outcome.error is None, outcome.error
    return [a.mailbox if isinstance(a, FileInto) else "INBOX" for a in outcome.actions
            if isinstance(a, FileInto | Keep)]


def ts(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


# RFC 5231 ---------------------------------------------------------------------------

# RFC 5231 section 6: a message as its examples describe it (two Received:, three
# recipients in one To: and one Cc: field).
SECTION6 = (b"Received: ...\r\nReceived: ...\r\nSubject: example\r\n"
            b"To: foo@example.com, baz@example.com\r\nCC: qux@example.com\r\n\r\nbody\r\n")


@pytest.mark.parametrize(("test", "expected"), [
    ('address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', True),
    ('address :count "ge" :comparator "i;ascii-numeric" ["to"] ["3"]', False),
    ('address :count "ge" :comparator "i;ascii-numeric" ["cc"] ["3"]', False),
    ('header :count "ge" :comparator "i;ascii-numeric" ["received"] ["3"]', False),
    ('header :count "ge" :comparator "i;ascii-numeric" ["received", "subject"] ["3"]', True),
    # "This test counts the number of fields, not the number of addresses."
    ('header :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', False),
])
def test_rfc5231_section6_examples(test: str, expected: bool) -> None:
    script = f'require ["relational", "comparator-i;ascii-numeric"]; if {test} {{ discard; }}'
    assert (run(script, SECTION6).actions == ()) is expected


# RFC 5231 section 7: the script of the extended example.
SECTION7 = '''require ["relational", "comparator-i;ascii-numeric", "fileinto"];

if header :value "lt" :comparator "i;ascii-numeric"
          ["x-priority"] ["3"]
{
   fileinto "Priority";
}

elsif address :count "gt" :comparator "i;ascii-numeric"
             ["to"] ["5"]
{
   # everything with more than 5 recipients in the "to" field
   # is considered SPAM
   fileinto "SPAM";
}

elsif address :value "gt" :all :comparator "i;ascii-casemap"
             ["from"] ["M"]
{
   fileinto "From N-Z";
} else {
   fileinto "From A-M";
}

if allof ( address :count "eq" :comparator "i;ascii-numeric"
                   ["to", "cc"] ["1"] ,
           address :all :comparator "i;ascii-casemap"
                   ["to", "cc"] ["me@foo.example.com"] )
{
   fileinto "Only me";
}
'''


def _mail(from_: str, to: str, priority: str = "") -> bytes:
    extra = f"X-Priority: {priority}\r\n" if priority else ""
    return (f"Date: Tue, 1 Apr 1997 09:06:31 -0800 (PST)\r\nFrom: {from_}\r\nTo: {to}\r\n"
            f"Subject: example\r\n{extra}\r\nbody\r\n").encode()


def test_rfc5231_section7_extended_example() -> None:
    # X-Priority "1 (Highest)" is the number 1 to i;ascii-numeric (its leading digits).
    assert filed(SECTION7, _mail("billg@microsoft.com", "website@example.com",
                                 "1 (Highest)")) == ["Priority"]
    many = ", ".join(f"u{i}@example.com" for i in range(6))
    assert filed(SECTION7, _mail("billg@microsoft.com", many, "3")) == ["SPAM"]
    # "tom..." sorts after "M", "al..." before it: i;ascii-casemap ignores case.
    assert filed(SECTION7, _mail("tom@example.com", "a@example.com")) == ["From N-Z"]
    assert filed(SECTION7, _mail("Al <AL@example.com>", "me@foo.example.com")) == [
        "From A-M", "Only me"]
    # A priority that is not a number is positive infinity: not less than 3.
    assert filed(SECTION7, _mail("zed@example.com", "me@foo.example.com", "high")) == [
        "From N-Z", "Only me"]


def test_relational_on_every_match_test() -> None:
    req = 'require ["relational", "comparator-i;ascii-numeric", "envelope", "variables", ' \
          '"imap4flags", "body", "fileinto"];'
    null = Envelope("", "me@foo.example.com")
    # envelope :count counts addresses: the null reverse-path has none.
    script = req + 'if envelope :count "eq" :comparator "i;ascii-numeric" ["from", "to"] "1"' \
                   ' { fileinto "one"; }'
    assert filed(script, env=null) == ["one"]
    assert filed(script) == ["INBOX"]
    # RFC 5229 section 5: string :count counts the non-empty strings.
    script = req + 'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2"' \
                   ' { fileinto "two"; }'
    assert filed(script) == ["two"]
    script = req + 'addflag ["\\\\Seen", "$a", "$b"];' \
                   'if hasflag :count "ge" :comparator "i;ascii-numeric" "3" { fileinto "f"; }'
    assert filed(script) == ["f"]
    script = req + 'if body :text :value "ge" "hello" { fileinto "b"; }'
    assert filed(script, b"Subject: x\r\n\r\nHELLO\r\n") == ["b"]
    script = req + 'if string :value "gt" :comparator "i;octet" "b" "B" { fileinto "o"; }'
    assert filed(script) == ["o"]
    # No value at all: :value is false; :count counts 0.
    script = req + 'if header :value "ne" "x-none" "1" { fileinto "v"; }' \
                   'if header :count "eq" "x-none" "0" { fileinto "c"; }'
    assert filed(script, SECTION6) == ["c"]


def test_relations_are_case_insensitive_and_set_no_match_variables() -> None:
    script = '''require ["relational", "variables", "fileinto"];
if header :matches "subject" "*" {}
if header :value "GE" "subject" "e" { fileinto "${1}"; }'''
    assert filed(script, SECTION6) == ["example"]


@pytest.mark.parametrize(("script", "message"), [
    ('require "relational"; if header :value "gr" "from" "a" { keep; }', "unknown relation"),
    ('require "relational"; if header :count "lf" "from" "a" { keep; }', "unknown relation"),
    ('require "relational"; if header :value ["ge"] "from" "a" { keep; }', "needs a relation"),
    ('require "relational"; if header :value { keep; }', "needs a relation"),
    ('if header :value "ge" "from" "a" { keep; }', 'needs require "relational"'),
    ('require "relational"; if header :count "ge" :is "from" "a" { keep; }',
     "more than one match type"),
    ('require "relational"; if size :value "ge" 10 { keep; }', "unknown tag :value"),
    ('require "relational"; if header :value "ge" :comparator "i;ascii-numeric" "a" "1"'
     ' { keep; }', 'needs require "comparator-i;ascii-numeric"'),
    ('require "comparator-i;ascii-numeric"; if header :contains :comparator'
     ' "i;ascii-numeric" "x" "1" { keep; }', ":contains cannot be used with i;ascii-numeric"),
    ('require "comparator-i;ascii-numeric"; if header :comparator "i;ascii-numeric"'
     ' :matches "x" "1*" { keep; }', ":matches cannot be used with i;ascii-numeric"),
])
def test_relational_compile_errors(script: str, message: str) -> None:
    with pytest.raises(SieveError, match=message):
        compile_script(script)


# RFC 4790 section 9.1: i;ascii-numeric ------------------------------------------------

def test_ascii_numeric_order() -> None:
    n = "i;ascii-numeric"
    assert order("2", "10", n) == -1  # numbers, not text
    assert order("0", "000", n) == 0
    assert order("0002", "02", n) == 0
    assert order("002", "1", n) == 1
    assert order("001", "2", n) == -1
    assert order("65535", "65635", n) == -1
    assert order("12abc", "12", n) == 0  # the digits at the start make the number
    # A string without a leading digit is positive infinity: equal to any other such,
    # greater than every number. (So is a negative score such as "-1.20".)
    assert order("a", "b", n) == 0
    assert order("", "a", n) == 0
    assert order("a", "0", n) == 1
    assert order("0", "", n) == -1
    assert order("-1.20", "5", n) == 1
    assert order(" 5", "5", n) == 1
    # Non-ASCII digits are not digits.
    assert order("\u0665", "5", n) == 1
    big = "9" * 5000
    assert order(big, "1" + "0" * 5000, n) == -1
    assert order("000" + big, big, n) == 0
    assert order(big + "1", big, n) == 1
    assert relational("300", "00302", "le", n)
    assert not relational("300", "2", "eq", n)
    assert matches("007", "7", "is", n) == (True, None)
    assert matches("7", "17", "contains", n) == (False, None)


def test_octet_and_casemap_order() -> None:
    assert order("Z", "b", "i;octet") == -1
    assert order("Z", "b", "i;ascii-casemap") == 1
    assert order("abcce", "abcd", "i;octet") == -1
    assert order("ab", "a", "i;octet") == 1
    assert order("ABC", "abc", "i;ascii-casemap") == 0
    # RFC 4790 section 9.2: letters are compared upper-cased, so "_" sorts after them.
    assert order("_", "a", "i;ascii-casemap") == 1
    assert order("_", "a", "i;octet") == -1
    assert order("\u00e9", "z", "i;octet") == 1  # octet (code point) order


def test_spam_score_rule() -> None:
    # What Roundcube's managesieve plugin writes for "spam score at least 5".
    script = '''require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; }
'''
    mail = b"Subject: offer\r\nX-Spam-Score: %s\r\n\r\nbody\r\n"
    assert filed(script, mail % b"7.25") == ["Junk"]
    assert filed(script, mail % b"5.00") == ["Junk"]
    assert filed(script, mail % b"4.99") == ["INBOX"]
    assert filed(script, mail % b"12") == ["Junk"]  # 12 > 5 as numbers, not as text
    assert filed(script, b"Subject: no score\r\n\r\nbody\r\n") == ["INBOX"]


# RFC 5260 ---------------------------------------------------------------------------

DATED = (b"From: boss@example.com\r\nTo: me@foo.example.com\r\n"
         b"Date: Mon, 20 Jul 2009 21:44:43 +0300\r\n"
         b"Received: from mx.example.com by mx.example.net; Sun, 19 Jul 2009 10:00:00 -0700\r\n"
         b"Received: from a.example by mx.example.com; Mon, 20 Jul 2009 08:00:00 +0000\r\n"
         b"Subject: plan\r\n\r\nbody\r\n")


def _part(part: str, zone: str = ":originalzone", data: bytes = DATED,
          header: str = "date", now: float | None = None) -> str | None:
    """What ``date``/``currentdate`` sees as ``part`` (via :matches "*" and ${0})."""
    test = (f'currentdate {zone} :matches "{part}" "*"' if header == "" else
            f'date {zone} :matches "{header}" "{part}" "*"')
    script = f'require ["date", "variables", "fileinto"]; if {test} {{ fileinto "=${{0}}"; }}'
    names = filed(script, data, now=now)
    return names[0][1:] if names[0].startswith("=") else None


def test_date_parts_exactly_as_section_4_2_formats_them() -> None:
    expected = {
        "year": "2009", "month": "07", "day": "20", "date": "2009-07-20", "julian": "55032",
        "hour": "21", "minute": "44", "second": "43", "time": "21:44:43",
        "iso8601": "2009-07-20T21:44:43+03:00", "std11": "Mon, 20 Jul 2009 21:44:43 +0300",
        "zone": "+0300", "weekday": "1",
    }
    assert set(expected) == DATE_PARTS
    for part, value in expected.items():
        assert _part(part) == value, part
    # :zone moves the time; without either tag the zone is the server's (UTC here).
    assert _part("iso8601", ':zone "+0200"') == "2009-07-20T20:44:43+02:00"
    assert _part("iso8601", ':zone "-0930"') == "2009-07-20T09:14:43-09:30"
    assert _part("iso8601", "") == "2009-07-20T18:44:43Z"  # zero offset is "Z"
    assert _part("std11", "") == "Mon, 20 Jul 2009 18:44:43 +0000"
    assert _part("zone", "") == "+0000"
    # Past midnight the date, weekday and Modified Julian Day move too.
    assert _part("std11", ':zone "+0800"', header="received") == (
        "Mon, 20 Jul 2009 01:00:00 +0800")
    assert _part("julian", ':zone "+1400"') == "55033"
    assert _part("weekday", ':zone "+1400"') == "2"
    assert _part("DATE", ':zone "-1200"') == "2009-07-20"  # part names are case-insensitive


def test_julian_and_weekday_edges() -> None:
    start = from_timestamp(ts("1858-11-17T00:00:00"))
    assert start is not None
    assert date_part(start, "julian") == "0"
    assert date_part(start, "weekday") == "3"  # a Wednesday
    epoch = from_timestamp(0)
    assert epoch is not None
    assert date_part(epoch, "julian") == "40587"
    assert days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28) == 2  # a leap year


def test_received_first_field_only() -> None:
    # RFC 5260 section 4: the first field of the name; for Received: the date after ";".
    assert _part("date", header="received") == "2009-07-19"
    assert _part("time", "", header="received") == "17:00:00"


@pytest.mark.parametrize("value", [
    "", "not a date", "Mon, 31 Feb 2009 21:44:43 +0300", "Sat, 29 Feb 2009 10:00:00 +0000",
    "Moo, 34 Juul 3060 25:30:42 +6600", "Mon, 20 Jul 2009 24:00:00 +0000",
    "Mon, 20 Jul 2009 21:44:43 +9999", "Mon, 20 Jul 99999 21:44:43 +0000",
    "2009-07-20T21:44:43Z", "Mon, 20 Jul 2009 21:44:43 +0300 (" + "x" * 300 + ")",
])
def test_invalid_dates_make_the_test_false(value: str) -> None:
    data = f"Subject: x\r\nDate: {value}\r\n\r\nbody\r\n".encode()
    script = '''require ["date", "relational", "fileinto"];
if date :matches "date" "std11" "*" { fileinto "matched"; }
if date :count "ge" "date" "date" "0" { fileinto "counted"; }
if not date :value "ge" "date" "date" "0000" { fileinto "negated"; }
'''
    assert filed(script, data) == ["negated"]


def test_missing_field_and_leap_second() -> None:
    assert _part("date", header="resent-date") is None
    leap = b"Date: Thu, 31 Dec 2016 23:59:60 +0000\r\n\r\nx\r\n"
    assert _part("time", data=leap) == "23:59:60"
    assert _part("time", ':zone "+0100"', data=leap) == "00:59:60"
    assert _part("date", ':zone "+0100"', data=leap) == "2017-01-01"
    moment = parse_date("Sat, 29 Feb 2020 12:00:00 +0000")
    assert moment is not None
    assert extract(moment, "date", "+0000") == "2020-02-29"


# RFC 5260 section 7: the examples.

BOSS = '''require ["date", "relational", "fileinto"];
if allof(header :is "from" "boss@example.com",
         date :value "ge" :originalzone "date" "hour" "09",
         date :value "lt" :originalzone "date" "hour" "17")
{ fileinto "urgent"; }'''


def test_rfc5260_example_boss_during_working_hours() -> None:
    assert filed(BOSS, DATED) == ["INBOX"]  # 21:44 in the sender's zone
    assert filed(BOSS, DATED.replace(b"21:44:43 +0300", b"09:00:00 +0300")) == ["urgent"]
    assert filed(BOSS, DATED.replace(b"21:44:43 +0300", b"16:59:59 +0300")) == ["urgent"]
    assert filed(BOSS, DATED.replace(b"21:44:43 +0300", b"17:00:00 +0300")) == ["INBOX"]


def test_rfc5260_example_weekend() -> None:
    script = '''require ["date", "relational", "fileinto"];
if anyof(date :is "received" "weekday" "0",
         date :is "received" "weekday" "6")
{ fileinto "weekend"; }'''
    # The first Received: was on Sunday 19 July in UTC.
    assert filed(script, DATED) == ["weekend"]
    weekday = DATED.replace(b"Sun, 19 Jul 2009 10:00:00 -0700", b"Mon, 20 Jul 2009 08:00 +0000")
    assert filed(script, weekday) == ["INBOX"]


def test_rfc5260_example_vacation_first_week_of_july() -> None:
    script = '''require ["date", "relational", "vacation"];
if allof(currentdate :value "ge" "date" "2007-06-30",
         currentdate :value "le" "date" "2007-07-07")
{ vacation :days 7  "I'm away during the first week in July."; }'''
    for now, away in [("2007-06-29T23:59:59", False), ("2007-06-30T00:00:00", True),
                      ("2007-07-07T23:59:59", True), ("2007-07-08T00:00:00", False)]:
        actions = run(script, DATED, now=ts(now)).actions
        assert any(isinstance(a, Vacation) for a in actions) is away, now
    # Without the delivery time currentdate is false.
    assert run(script, DATED).actions == (Keep(),)


def test_rfc5260_example_file_by_month_and_std11() -> None:
    script = '''require ["date", "variables", "fileinto"];
if currentdate :matches "month" "*" { set "month" "${1}"; }
if currentdate :matches "year"  "*" { set "year"  "${1}"; }
fileinto "${month}-${year}";'''
    assert filed(script, DATED, now=ts("2026-03-09T12:00:00")) == ["03-2026"]
    assert _part("std11", "", header="", now=ts("2026-03-09T12:00:00")) == (
        "Mon, 09 Mar 2026 12:00:00 +0000")
    assert _part("zone", ':zone "+0530"', header="", now=0.999) == "+0530"


ROUNDCUBE = '''require ["vacation","date","relational"];
if allof (currentdate :zone "+0100" :value "ge" "date" "2026-12-01", currentdate :value "le" "date" "2026-12-24")
{
\tvacation :days 1 :subject "Away" :from "me@foo.example.com" "Back on the 27th.";
}
'''  # noqa: E501 (as the plugin writes it, on one line)


@pytest.mark.parametrize(("now", "away"), [
    ("2026-11-30T22:59:59", False),  # 23:59:59 on 30 November in +0100
    ("2026-11-30T23:00:00", True),  # midnight on 1 December in +0100
    ("2026-12-15T12:00:00", True),
    ("2026-12-24T23:59:59", True),
    ("2026-12-25T00:00:00", False),  # the end date has no :zone: UTC
    ("2027-12-10T00:00:00", False),
])
def test_roundcube_vacation_with_start_and_end_dates(now: str, away: bool) -> None:
    outcome = run(ROUNDCUBE, DATED, now=ts(now))
    assert outcome.error is None
    assert any(isinstance(a, Vacation) for a in outcome.actions) is away


@pytest.mark.parametrize(("script", "message"), [
    ('require "date"; if date "date" "fortnight" "1" { keep; }', "unknown date part"),
    ('require "date"; if currentdate "" "1" { keep; }', "unknown date part"),
    ('require "date"; if date :zone "+25:00" "date" "date" "1" { keep; }', "not a zone"),
    ('require "date"; if date :zone "0100" "date" "date" "1" { keep; }', "not a zone"),
    ('require "date"; if date :zone "+0160" "date" "date" "1" { keep; }', "not a zone"),
    ('require "date"; if date :zone "+2400" "date" "date" "1" { keep; }', "not a zone"),
    ('require "date"; if currentdate :zone "EST" "date" "1" { keep; }', "not a zone"),
    ('require "date"; if currentdate :zone "+\u0661\u0662\u0660\u0660" "date" "1" { keep; }',
     "not a zone"),
    ('require "date"; if date :zone "+0100" :originalzone "date" "date" "1" { keep; }',
     "not both"),
    ('require "date"; if currentdate :originalzone "date" "1" { keep; }',
     "unknown tag :originalzone"),
    ('require "date"; if date :index 1 "date" "date" "1" { keep; }', "unknown tag :index"),
    ('require "date"; if date ["date", "received"] "date" "1" { keep; }', "string argument"),
    ('if currentdate "date" "1" { keep; }', 'needs require "date"'),
    ('if environment "name" "x" { keep; }', 'needs require "environment"'),
])
def test_date_and_environment_compile_errors(script: str, message: str) -> None:
    with pytest.raises(SieveError, match=message):
        compile_script(script)


def test_zone_and_part_from_variables_are_checked_when_run() -> None:
    script = '''require ["date", "variables", "fileinto"];
set "z" "+0200"; set "bad" "+02"; set "p" "hour"; set "q" "fortnight";
if date :zone "${z}" "date" "${p}" "20" { fileinto "zone"; }
if date :zone "${bad}" "date" "hour" "20" { fileinto "bad zone"; }
if date "date" "${q}" "20" { fileinto "bad part"; }'''
    assert filed(script, DATED) == ["zone"]


# RFC 5183 -----------------------------------------------------------------------------

def test_environment_items() -> None:
    def check(test: str) -> bool:
        script = f'require ["environment", "relational"]; if {test} {{ discard; }}'
        return run(script).actions == ()

    assert check('environment "domain" "example.net"')
    assert check('environment "host" "mx1.example.net"')
    assert check('environment "name" "mailstead"')  # i;ascii-casemap by default
    assert check(f'environment :is "version" "{__version__}"')
    assert check('environment "location" "MDA"')
    assert check('environment "phase" "during"')
    assert check('environment :count "eq" "host" "1"')
    # RFC 5183 section 4: an unknown item fails the test, whatever the match type.
    for item in ("remote-host", "remote-ip", "nonsense"):
        assert not check(f'environment :contains "{item}" ""')
        assert not check(f'environment :count "eq" "{item}" "0"')
    assert SieveEnvironment.for_host("mail.example.org.").domain == "example.org"
    assert SieveEnvironment.for_host("example.org").domain == "example.org"


def test_managesieve_lists_and_accepts_the_new_extensions() -> None:
    # RFC 5804 section 1.7: the SIEVE capability is what "require" accepts, less the two
    # comparators every implementation has.
    core = ManageSieveCore(ManageSieveSettings(
        hostname="mx1.example.net", extensions=CAPABILITY_EXTENSIONS, tls_active=True))
    greeting = core.data_to_send()
    sieve = re.search(rb'"SIEVE" "([^"]*)"', greeting)
    assert sieve is not None
    listed = sieve.group(1).decode().split()
    for ext in ("relational", "date", "environment", "comparator-i;ascii-numeric"):
        assert ext in listed
    assert "comparator-i;octet" not in listed
    core.receive_data(b'AUTHENTICATE "PLAIN" "'
                      + base64.b64encode(b"\0me@foo.example.com\0pw") + b'"\r\n')
    assert isinstance(core.next_event(), Credentials)
    core.login_ok("me@foo.example.com")
    core.data_to_send()
    # PUTSCRIPT checks the script in the core (RFC 5804 section 2.6): both client scripts
    # pass; a relation that does not exist is refused with the reason.
    for script in (ROUNDCUBE, SECTION7):
        data = script.encode()
        core.receive_data(b'PUTSCRIPT "s" {%d+}\r\n' % len(data) + data + b"\r\n")
        assert core.next_event() == ScriptRequest("PUTSCRIPT", ("s", script))
        core.ok()
        assert core.data_to_send() == b'OK "Done"\r\n'
    core.receive_data(b'CHECKSCRIPT "require \\"relational\\"; '
                      b'if header :value \\"gr\\" \\"a\\" \\"b\\" {}"\r\n')
    assert core.next_event() is NEED_DATA  # answered by the core itself
    assert b"unknown relation" in core.data_to_send()


# SieveRunner ---------------------------------------------------------------------------

class _Store:
    """Just what SieveRunner.plan reads for keep/discard/vacation scripts handed to it."""

    async def count_sieve_events(self, *_args: object) -> int:
        return 0


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def _plan(script: str, clock: _Clock) -> list[str]:
    runner = SieveRunner(cast(Store, _Store()), "mx1.example.net", clock=clock)
    plan = asyncio.run(runner.plan({7: "me@foo.example.com"}, "sender@example.org", DATED,
                                   "INBOX", scripts={7: script}))
    return [f.kind for f in plan.followups] + [d.mailbox for d in plan.local]


def test_runner_gives_the_delivery_time_to_date_scripts_only() -> None:
    clock = _Clock(ts("2026-12-10T08:00:00"))
    assert _plan(ROUNDCUBE, clock) == ["vacation", "INBOX"]
    clock.now = ts("2027-01-05T08:00:00")
    assert _plan(ROUNDCUBE, clock) == ["INBOX"]
    # A script without "date" runs without reading the clock.
    clock.calls = 0
    script = 'require "environment"; if environment "domain" "example.net" { discard; }'
    assert _plan(script, clock) == []
    assert clock.calls == 0


# Hostile input ----------------------------------------------------------------------------

_DATE_BITS = st.sampled_from([
    "Mon,", "Feb", "Juul", "29", "31", "2009", "99", "99999999", "0", "00:00:60", "23:59",
    "24:00:00", "+0300", "-0000", "+9999", "EST", "GMT", "(comment", ")", ";", ",", ":",
    "1" * 40, "\u0661\u0662", "\x00", " ", "\t",
])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(_DATE_BITS, max_size=12).map(" ".join),
                 st.text(max_size=400)),
       st.sampled_from(sorted(DATE_PARTS)),
       st.sampled_from([":originalzone", "", ':zone "-1130"']))
def test_hostile_date_fields_never_raise(value: str, part: str, zone: str) -> None:
    field = value.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    data = b"Date: " + field + b"\r\nReceived: x; " + field + b"\r\n\r\nbody\r\n"
    script = (f'require ["date", "relational", "variables", "fileinto"];'
              f'if date {zone} :matches "date" "{part}" "*" {{ fileinto "d${{0}}"; }}'
              f'if date {zone} :value "gt" "received" "{part}" "5" {{ fileinto "v"; }}')
    start = time.monotonic()
    outcome = run(script, data)
    assert time.monotonic() - start < 2
    assert outcome.actions


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789a- .", max_size=60),
       st.text(alphabet="0123456789a- .", max_size=60))
def test_ascii_numeric_agrees_with_integers(left: str, right: str) -> None:
    def value(s: str) -> float:
        digits = s[: len(s) - len(s.lstrip("0123456789"))]
        return int(digits) if digits else float("inf")

    a, b = value(left), value(right)
    assert order(left, right, "i;ascii-numeric") == (a > b) - (a < b)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["is", "value", "count"]),
       st.lists(st.text(alphabet="09a\u0660", max_size=3000), min_size=1, max_size=4))
def test_huge_numeric_keys_are_fast(match: str, keys: list[str]) -> None:
    quoted = ", ".join(f'"{k}"' for k in keys)
    kind = f':{match} "ge"' if match != "is" else ":is"
    script = (f'require ["relational", "comparator-i;ascii-numeric"];'
              f'if header {kind} :comparator "i;ascii-numeric" "x-n" [{quoted}] {{ discard; }}')
    data = b"X-N: " + b"9" * 10_000 + b"\r\nX-N: 0\r\n\r\nx\r\n"
    start = time.monotonic()
    assert run(script, data).error is None
    assert time.monotonic() - start < 2


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-62_135_596_800 + 86_400, max_value=253_402_300_799 - 86_400),
       st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))
def test_parts_agree_with_the_datetime_module(now: int, zone: int) -> None:
    # The integer calendar against Python's over the whole 0001-9999 range, every zone.
    local = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=now + zone * 60)
    moment = from_timestamp(now, zone)
    assert moment is not None
    assert date_part(moment, "date") == f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    assert date_part(moment, "time") == local.strftime("%H:%M:%S")
    assert date_part(moment, "weekday") == str(local.isoweekday() % 7)
    assert date_part(moment, "julian") == str(local.toordinal() - 678576)
    std11 = date_part(moment, "std11")
    assert std11 is not None
    if local.year >= 100:  # (parsedate_tz reads years under 100 as 19xx/20xx)
        # A std11 date part parses back to the same instant and zone (RFC 5322 3.3).
        back = parse_date(std11)
        assert back is not None
        assert (back.utc, back.zone) == (now, zone)
