"""Search and sort extensions against a real ``mailstead serve``, driven by imaplib: ESORT
(RFC 5267 section 3), SORT=DISPLAY (RFC 5957) and PARTIAL (RFC 9394). Every test gets a
fresh account (``imap_account``)."""

from __future__ import annotations

import imaplib
import re

import pytest
from helpers import Harness, RawIMAP

Account = tuple[str, str]

# imaplib sends only the commands it knows of; CANCELUPDATE is RFC 5267 section 4.2.
imaplib.Commands.setdefault("CANCELUPDATE", ("SELECTED",))


def logged_in(h: Harness, account: Account) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=15)
    typ, _ = client.login(*account)
    assert typ == "OK"
    return client


def message(n: int, sender: str, to: str = "<rcpt@example.test>") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: m{n}\r\n"
            f"Date: Mon, 0{1 + n % 9} Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <m{n}@client.example.test>\r\n\r\nbody {n}\r\n").encode()


def fill(client: imaplib.IMAP4, messages: list[bytes]) -> None:
    for data in messages:
        typ, answer = client.append("INBOX", None, None, data)
        assert typ == "OK", answer
    typ, answer = client.select("INBOX")
    assert typ == "OK", answer


def esearch(client: imaplib.IMAP4, *args: str) -> tuple[str, str]:
    """Run a command; its status and the text of its one ESEARCH response ("" if none)."""
    client.untagged_responses.pop("ESEARCH", None)
    try:
        typ, _data = client._simple_command(*args)
    except imaplib.IMAP4.error as exc:
        return "BAD", str(exc)
    found = client.untagged_responses.pop("ESEARCH", [])
    assert len(found) <= 1, found
    text = found[0].decode() if found else ""
    # The correlator names this command (RFC 4731 section 3.1); the rest is what we check.
    return typ, re.sub(r'^\(TAG "[^"]+"\) ?', "", text)


def test_esort_and_sort_display(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        _, caps = client.capability()
        assert {"ESORT", "SORT=DISPLAY"} <= set(caps[0].decode().upper().split()), caps
        fill(client, [
            message(1, '"Zoe" <a@x.test>', '"Mallory" <m@x.test>'),
            message(2, "bob <z@x.test>", "<d@x.test>"),
            message(3, "<c@x.test>", '"=?UTF-8?Q?=C3=89ve?=" <e@x.test>'),
            message(4, "Alice <y@x.test>", "Bert <b@x.test>"),
        ])
        # RFC 5957 section 3: the display name, or the addr-spec when there is none; RFC 5267
        # section 3: MIN and MAX are the first and the last sorted message, ALL keeps order.
        assert esearch(client, "SORT", "RETURN", "(MIN MAX COUNT ALL)", "(DISPLAYFROM)",
                       "UTF-8", "ALL") == ("OK", "MIN 4 MAX 1 COUNT 4 ALL 4,2:3,1")
        assert esearch(client, "UID", "SORT", "RETURN", "()", "(REVERSE DISPLAYTO)", "UTF-8",
                       "ALL") == ("OK", "UID ALL 3,1:2,4")
        assert esearch(client, "SORT", "RETURN", "(COUNT MIN)", "(ARRIVAL)", "UTF-8",
                       "KEYWORD nothing") == ("OK", "COUNT 0")
        # Without RETURN, SORT still answers with the SORT response of RFC 5256.
        typ, data = client.sort("(DISPLAYFROM)", "UTF-8", "ALL")
        assert (typ, data) == ("OK", [b"4 2 3 1"])
        assert esearch(client, "SORT", "RETURN", "(BOGUS)", "(DATE)", "UTF-8", "ALL")[0] \
            == "BAD"


def test_partial_pages_of_search_and_sort(imap_server: Harness,
                                          imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        _, caps = client.capability()
        assert "PARTIAL" in caps[0].decode().upper().split(), caps
        fill(client, [message(n, f"<s{n}@x.test>") for n in range(1, 11)])
        client.store("5", "+FLAGS", "(\\Deleted)")
        # RFC 9394 section 3.1: the first page, the last page (counted from the end), a
        # page past the end (NIL), and PARTIAL beside COUNT.
        assert esearch(client, "UID", "SEARCH", "RETURN", "(PARTIAL 1:5)", "UNDELETED") \
            == ("OK", "UID PARTIAL (1:5 1:4,6)")
        assert esearch(client, "UID", "SEARCH", "RETURN", "(PARTIAL -1:-3)", "UNDELETED") \
            == ("OK", "UID PARTIAL (-1:-3 8:10)")
        assert esearch(client, "SEARCH", "RETURN", "(COUNT PARTIAL 20:30)", "ALL") \
            == ("OK", "COUNT 10 PARTIAL (20:30 NIL)")
        assert esearch(client, "SEARCH", "RETURN", "(PARTIAL 3:2)", "ALL") \
            == ("OK", "PARTIAL (3:2 2:3)")
        # With SORT the page is taken in sort order.
        assert esearch(client, "UID", "SORT", "RETURN", "(PARTIAL 1:3)", "(REVERSE ARRIVAL)",
                       "UTF-8", "UNDELETED") == ("OK", "UID PARTIAL (1:3 10,9,8)")
        # RFC 9394 section 3.1: PARTIAL with ALL, mixed signs and zero are refused.
        for bad in ("(PARTIAL 1:5 ALL)", "(PARTIAL -1:5)", "(PARTIAL 0:5)", "(PARTIAL 1)"):
            assert esearch(client, "SEARCH", "RETURN", bad, "ALL")[0] == "BAD", bad
        typ, _ = client.noop()
        assert typ == "OK"


def updates(client: imaplib.IMAP4, tag: str) -> list[str]:
    """NOOP, and the ESEARCH updates it brought for the search ``tag`` (RFC 5267 section
    4.3), without their correlator."""
    client.untagged_responses.pop("ESEARCH", None)
    typ, _ = client.noop()
    assert typ == "OK"
    found = [line.decode() for line in client.untagged_responses.pop("ESEARCH", [])]
    prefix = f'(TAG "{tag}") '
    assert all(line.startswith(prefix) for line in found), (found, tag)
    return [line[len(prefix):] for line in found]


def context_search(client: imaplib.IMAP4, *args: str) -> tuple[str, str]:
    """Run a search with RETURN (UPDATE ...); its tag and its ESEARCH text."""
    client.untagged_responses.pop("ESEARCH", None)
    typ, _ = client._simple_command(*args)
    assert typ == "OK"
    found = client.untagged_responses.pop("ESEARCH", [])
    assert len(found) == 1, found
    match = re.match(r'\(TAG "([^"]+)"\) ?(.*)', found[0].decode())
    assert match, found
    return match.group(1), match.group(2)


def test_context_search_follows_changes(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as a, logged_in(imap_server, imap_account) as b:
        _, caps = a.capability()
        assert "CONTEXT=SEARCH" in caps[0].decode().upper().split(), caps
        fill(a, [message(n, f"<s{n}@x.test>") for n in range(1, 4)])
        tag, text = context_search(a, "UID", "SEARCH", "RETURN", "(UPDATE)", "UNSEEN")
        assert text == "UID ALL 1:3"
        assert updates(a, tag) == []
        # Another session delivers, reads and expunges: each shows up at the next command
        # (RFC 5267 section 4.3; SEARCH results have no order, so the position is 0).
        fill(b, [message(4, "<s4@x.test>")])
        assert updates(a, tag) == ["UID ADDTO (0 4)"]
        b.uid("STORE", "2", "+FLAGS", "(\\Seen)")
        assert updates(a, tag) == ["UID REMOVEFROM (0 2)"]
        b.uid("STORE", "3", "+FLAGS.SILENT", "(\\Deleted)")
        b.expunge()
        assert updates(a, tag) == ["UID REMOVEFROM (0 3)"]
        # The session's own STORE updates it too, in the STORE's own response.
        a.untagged_responses.pop("ESEARCH", None)
        typ, _ = a.uid("STORE", "4", "+FLAGS", "(\\Seen)")
        assert typ == "OK"
        assert a.untagged_responses.pop("ESEARCH", []) == [
            f'(TAG "{tag}") UID REMOVEFROM (0 4)'.encode()]
        b.uid("STORE", "2", "-FLAGS", "(\\Seen)")
        assert updates(a, tag) == ["UID ADDTO (0 2)"]
        # CANCELUPDATE ends it; an unknown tag is refused.
        typ, _ = a._simple_command("CANCELUPDATE", f'"{tag}"')
        assert typ == "OK"
        # RFC 9394 section 3.1: with PARTIAL, the updates still cover every match.
        tag2, text = context_search(a, "UID", "SEARCH", "RETURN", "(PARTIAL 1:1 UPDATE)",
                                    "UNSEEN")
        assert text == "UID PARTIAL (1:1 1)"
        a.uid("STORE", "2", "+FLAGS", "(\\Seen)")
        assert a.untagged_responses.pop("ESEARCH", []) == [
            f'(TAG "{tag2}") UID REMOVEFROM (0 2)'.encode()]
        typ, _ = a._simple_command("CANCELUPDATE", f'"{tag2}"')
        assert typ == "OK"
        fill(b, [message(5, "<s5@x.test>")])
        assert updates(a, tag) == []
        with pytest.raises(imaplib.IMAP4.error, match="No search context"):
            a._simple_command("CANCELUPDATE", f'"{tag}"')


def test_context_sort_positions(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as a, logged_in(imap_server, imap_account) as b:
        _, caps = a.capability()
        assert "CONTEXT=SORT" in caps[0].decode().upper().split(), caps
        fill(a, [message(n, f"<s{n}@x.test>") for n in range(1, 4)])
        tag, text = context_search(a, "SORT", "RETURN", "(UPDATE COUNT ALL)",
                                   "(REVERSE ARRIVAL)", "UTF-8", "UNSEEN")
        assert text == "COUNT 3 ALL 3,2,1"
        fill(b, [message(4, "<s4@x.test>")])
        # RFC 5267 section 4.3: for SORT the position is where the message sits in the
        # sorted results; COUNT follows as well.
        assert updates(a, tag) == ["ADDTO (1 4)", "COUNT 4"]
        b.store("2", "+FLAGS", "(\\Seen)")
        assert updates(a, tag) == ["REMOVEFROM (3 2)", "COUNT 3"]
        # A MIN/MAX/COUNT-only context gets new values, no ADDTO/REMOVEFROM.
        tag2, text = context_search(a, "UID", "SORT", "RETURN", "(UPDATE MIN MAX)",
                                    "(ARRIVAL)", "UTF-8", "UNSEEN")
        assert text == "UID MIN 1 MAX 4"
        b.uid("STORE", "4", "+FLAGS", "(\\Seen)")
        a.untagged_responses.pop("ESEARCH", None)
        assert a.noop()[0] == "OK"
        got = sorted(x.decode() for x in a.untagged_responses.pop("ESEARCH", []))
        assert got == sorted([f'(TAG "{tag}") REMOVEFROM (1 4)', f'(TAG "{tag}") COUNT 2',
                              f'(TAG "{tag2}") UID MIN 1 MAX 3']), got
        # Leaving the mailbox ends every context.
        a.select("INBOX")
        b.store("1", "+FLAGS", "(\\Seen)")
        assert updates(a, tag) == []


def refused(client: imaplib.IMAP4, *args: str) -> str:
    """The text of the BAD a command got (imaplib raises it); fails if it was accepted."""
    with pytest.raises(imaplib.IMAP4.error) as info:
        client._simple_command(*args)
    assert client.noop()[0] == "OK"  # BADs in a row end the session; break the run
    return str(info.value)


def test_uidonly(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as a, logged_in(imap_server, imap_account) as b:
        _, caps = a.capability()
        assert "UIDONLY" in caps[0].decode().upper().split(), caps
        a.untagged_responses.clear()
        assert a.enable("UIDONLY")[0] == "OK"
        assert a.untagged_responses.pop("ENABLED", []) == [b"UIDONLY"]
        fill(a, [message(n, f"<s{n}@x.test>") for n in range(1, 5)])
        # RFC 9586 section 3.1: every use of message sequence numbers is BAD [UIDREQUIRED].
        for command in (("FETCH", "1", "(FLAGS)"), ("STORE", "1", "+FLAGS", "(\\Seen)"),
                        ("SEARCH", "ALL"), ("COPY", "1", "INBOX"), ("MOVE", "1", "Trash"),
                        ("SORT", "(DATE)", "UTF-8", "ALL"),
                        ("THREAD", "ORDEREDSUBJECT", "UTF-8", "ALL"),
                        ("UID", "SEARCH", "1:2"), ("UID", "SEARCH", "OR", "1", "SEEN")):
            assert "[UIDREQUIRED]" in refused(a, *command), command
        # Section 3.3: FETCH responses are UIDFETCH, named by UID, UID not repeated.
        a.untagged_responses.clear()
        typ, _ = a.uid("FETCH", "2:3", "(FLAGS RFC822.SIZE)")
        assert typ == "OK"
        fetched = a.untagged_responses.pop("UIDFETCH", [])
        assert [line.split(b" ", 1)[0] for line in fetched] == [b"2", b"3"], fetched
        assert all(re.fullmatch(rb"\d (\(FLAGS \(\\Recent\) RFC822.SIZE \d+\))", x)
                   for x in fetched), fetched
        assert "FETCH" not in a.untagged_responses
        typ, data = a.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        assert a.untagged_responses.pop("UIDFETCH", []) == [b"2 (FLAGS (\\Flagged \\Recent))"]
        # Another session's changes: UIDFETCH for flags, VANISHED for expunges (3.4).
        b.select("INBOX")
        b.store("3", "+FLAGS", "(\\Seen)")
        b.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        b.expunge()
        a.untagged_responses.clear()
        assert a.noop()[0] == "OK"
        assert a.untagged_responses.pop("UIDFETCH", []) == [b"3 (FLAGS (\\Seen \\Recent))"]
        assert a.untagged_responses.pop("VANISHED", []) == [b"1"]
        assert "EXPUNGE" not in a.untagged_responses
        # Its own EXPUNGE likewise; UID SEARCH with UID keys still works.
        a.uid("STORE", "4", "+FLAGS.SILENT", "(\\Deleted)")
        a.untagged_responses.clear()
        assert a.expunge()[0] == "OK"
        assert a.untagged_responses.pop("VANISHED", []) == [b"4"]
        assert "EXPUNGE" not in a.untagged_responses
        typ, data = a.uid("SEARCH", "UID", "1:*")
        assert (typ, data) == ("OK", [b"2 3"])
        # A session that did not enable it keeps sequence numbers.
        b.untagged_responses.clear()
        typ, data = b.fetch("1", "(UID)")
        assert (typ, data) == ("OK", [b"1 (UID 2)"])


def test_context_update_in_idle(imap_server: Harness, imap_account: Account) -> None:
    raw = RawIMAP(imap_server.port("imaps"), tls=imap_server.tls())
    with raw, logged_in(imap_server, imap_account) as b:
        raw.login(*imap_account)
        fill(b, [message(1, "<s1@x.test>")])
        raw.command("SELECT INBOX")
        search = raw.command("UID SEARCH RETURN (UPDATE COUNT) ALL")
        assert search.untagged == (b'* ESEARCH (TAG "%s") UID COUNT 1' % search.tag,), search
        tag = raw.next_tag()
        raw.send(tag + b" IDLE\r\n")
        assert raw.read_line().startswith(b"+")
        fill(b, [message(2, "<s2@x.test>")])
        # RFC 5267 section 4.2: updates go out wherever EXISTS may, IDLE included.
        raw.sock.settimeout(10)
        lines = [raw.read_line()]
        while not lines[-1].startswith(b"* ESEARCH") and len(lines) < 5:
            lines.append(raw.read_line())
        assert lines[0] == b"* 2 EXISTS", lines
        assert lines[-1] == b'* ESEARCH (TAG "%s") UID COUNT 2' % search.tag, lines
        raw.send(b"DONE\r\n")
        assert raw.read_until(tag).status == b"OK"


def test_partial_fetch(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        fill(client, [message(n, f"<s{n}@x.test>") for n in range(1, 8)])
        client.store("2", "+FLAGS", "(\\Deleted)")
        client.expunge()  # UIDs 1 3 4 5 6 7
        # RFC 9394 section 3.3: the last two and the first two of what the set names.
        for modifier, want in (("(PARTIAL -1:-2)", [b"6", b"7"]),
                               ("(PARTIAL 1:2)", [b"1", b"3"]),
                               ("(PARTIAL 10:20)", [])):
            client.untagged_responses.clear()
            typ, data = client.uid("FETCH", "1:*", "(UID)", modifier)
            assert typ == "OK", data
            got = [re.search(rb"UID (\d+)", x).group(1)  # type: ignore[union-attr]
                   for x in data if isinstance(x, bytes)]
            assert got == want, (modifier, data)
        assert esearch(client, "UID", "FETCH", "1:*", "(UID)", "(PARTIAL 0:1)")[0] == "BAD"
        assert client.noop()[0] == "OK"
