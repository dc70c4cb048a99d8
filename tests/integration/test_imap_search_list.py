"""ESEARCH with MODSEQ, CONDSTORE enabling while selected, LIST patterns, LIST-EXTENDED
CHILDINFO and the capabilities after login, against a real ``mailstead serve``.

Exact response bytes are read with ``RawIMAP``; imaplib (a client real users have) checks
what it sees of the capabilities. The LIST-EXTENDED tests build the folder trees of the
examples of RFC 5258 section 5 and compare the exact replies (with the child attributes
this server always adds, RFC 5258 section 4).
"""

from __future__ import annotations

import base64
import re

from helpers import Harness, RawIMAP, RemoteIMAP4

Account = tuple[str, str]

# RFC 3501 section 9 atom characters other than letters, with the wildcards: a pattern of
# these is valid LIST syntax, though "&'" is not valid modified UTF-7.
ODD_PATTERN = "!#$&'+,-.0123456789:;<=>?@^_`|[}%*"


def session(h: Harness, account: Account) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    client.login(*account)
    return client


def fill(client: RawIMAP, count: int) -> None:
    for n in range(1, count + 1):
        message = b"From: a@remote.test\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n)
        response = client.command_literal(b"APPEND INBOX", message)
        assert response.status == b"OK", response


def modseqs(client: RawIMAP) -> dict[int, int]:
    """Sequence number -> MODSEQ of every message of the selected mailbox."""
    response = client.command("FETCH 1:* (MODSEQ)")
    assert response.status == b"OK", response
    found = {}
    for line in response.untagged:
        match = re.fullmatch(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", line)
        if match:
            found[int(match.group(1))] = int(match.group(2))
    return found


def highestmodseq(lines: tuple[bytes, ...]) -> int | None:
    for line in lines:
        match = re.fullmatch(rb"\* OK \[HIGHESTMODSEQ (\d+)\].*", line)
        if match:
            return int(match.group(1))
    return None


# ---------------------------------------------------------------------------------------------
# ESEARCH and MODSEQ (RFC 4731 section 3.2, RFC 7162 sections 3.1.5 and 3.1)


def test_esearch_min_max_report_the_modseq_of_the_message_they_return(
    imap_server: Harness, imap_account: Account
) -> None:
    with session(imap_server, imap_account) as client:
        fill(client, 5)
        assert client.command("SELECT INBOX").status == b"OK"
        # A flag change in the middle: message 3 gets the highest MODSEQ, so MIN and MAX
        # (messages 2 and 5 below) have lower ones than the highest match.
        assert client.command("STORE 3 +FLAGS (\\Flagged)").status == b"OK"
        seqs = modseqs(client)
        assert len(set(seqs.values())) == 5, seqs
        threshold = seqs[2]  # MODSEQ >= threshold: messages 2 to 5, not 1
        matched = [n for n in sorted(seqs) if seqs[n] >= threshold]
        assert matched == [2, 3, 4, 5], seqs
        top = max(seqs[n] for n in matched)
        assert top == seqs[3] > seqs[5] > seqs[2]

        def esearch(returns: str, *, uid: bool = False) -> bytes:
            prefix = "UID " if uid else ""
            response = client.command(f"{prefix}SEARCH RETURN ({returns}) MODSEQ {threshold}")
            assert response.status == b"OK", response
            assert len(response.untagged) == 1, response
            return response.untagged[0]

        tag = client.counter + 1
        assert esearch("MIN") == b'* ESEARCH (TAG "t%d") MIN 2 MODSEQ %d' % (tag, seqs[2])
        assert esearch("MAX") == b'* ESEARCH (TAG "t%d") MAX 5 MODSEQ %d' % (tag + 1, seqs[5])
        # MIN and MAX alone: the higher MODSEQ of those two messages.
        assert esearch("MIN MAX") == (
            b'* ESEARCH (TAG "t%d") MIN 2 MAX 5 MODSEQ %d' % (tag + 2, seqs[5])
        )
        # ALL or COUNT: the highest MODSEQ of every match.
        assert esearch("ALL") == b'* ESEARCH (TAG "t%d") ALL 2:5 MODSEQ %d' % (tag + 3, top)
        assert esearch("COUNT") == b'* ESEARCH (TAG "t%d") COUNT 4 MODSEQ %d' % (tag + 4, top)
        assert esearch("MIN COUNT") == (
            b'* ESEARCH (TAG "t%d") MIN 2 COUNT 4 MODSEQ %d' % (tag + 5, top)
        )
        uids = client.command(f"UID SEARCH RETURN (MIN MAX) MODSEQ {threshold}")
        uid_min, uid_max = re.fullmatch(
            rb'\* ESEARCH \(TAG "t\d+"\) UID MIN (\d+) MAX (\d+) MODSEQ (\d+)', uids.untagged[0]
        ).groups()[:2]  # type: ignore[union-attr]
        assert uids.untagged[0].endswith(b" MODSEQ %d" % seqs[5]), uids
        assert int(uid_min) < int(uid_max)
        # The old SEARCH response keeps the highest of all (RFC 7162 section 3.1.5).
        plain = client.command(f"SEARCH MODSEQ {threshold}")
        assert plain.untagged == (b"* SEARCH 2 3 4 5 (MODSEQ %d)" % top,), plain
        # Nothing matched: no MODSEQ at all.
        none = client.command(f"SEARCH RETURN (MIN) MODSEQ {top + 1}")
        assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\)', none.untagged[0]), none


def test_first_condstore_enabling_command_while_selected_reports_highestmodseq(
    imap_server: Harness, imap_account: Account
) -> None:
    with session(imap_server, imap_account) as client:
        fill(client, 2)
        selected = client.command("SELECT INBOX")
        known = highestmodseq(selected.untagged)
        assert known is not None, selected
        # FETCH MODSEQ enables CONDSTORE (RFC 7162 section 3.1): the client learns the
        # mailbox's HIGHESTMODSEQ, once, before the FETCH responses.
        first = client.command("FETCH 1 (MODSEQ)")
        assert first.status == b"OK", first
        assert first.untagged[0] == b"* OK [HIGHESTMODSEQ %d] Highest" % known, first
        again = client.command("FETCH 1 (MODSEQ)")
        assert highestmodseq(again.untagged) is None, again

    with session(imap_server, imap_account) as client:
        known = highestmodseq(client.command("SELECT INBOX").untagged)
        # The same for STORE (UNCHANGEDSINCE), which changes a flag in the same command
        # and reports it with its MODSEQ (RFC 7162 section 3.1.3).
        stored = client.command(f"STORE 1 (UNCHANGEDSINCE {known}) +FLAGS (\\Seen)")
        assert stored.status == b"OK", stored
        assert stored.untagged[0] == b"* OK [HIGHESTMODSEQ %d] Highest" % known, stored
        assert re.fullmatch(rb"\* 1 FETCH \(.*MODSEQ \(\d+\).*\)", stored.untagged[1]), stored

    with session(imap_server, imap_account) as client:
        known = highestmodseq(client.command("EXAMINE INBOX").untagged)
        search = client.command("SEARCH MODSEQ 1")  # a SEARCH MODSEQ enables it too
        assert search.untagged[0] == b"* OK [HIGHESTMODSEQ %d] Highest" % known, search
        # Enabled before any SELECT: SELECT itself reports it, nothing else repeats it.
        assert client.command("UNSELECT").status == b"OK"
        reselected = client.command("SELECT INBOX")
        assert highestmodseq(reselected.untagged) is not None
        assert highestmodseq(client.command("FETCH 1 (MODSEQ)").untagged) is None

    with session(imap_server, imap_account) as client:
        known = highestmodseq(client.command("SELECT INBOX").untagged)
        plain = client.command("STORE 1 +FLAGS (\\Answered)")
        assert b"MODSEQ" not in plain.untagged[0], plain
        # STATUS (HIGHESTMODSEQ) enables it as well: from then on the FETCH responses of
        # flag changes carry their MODSEQ.
        status = client.command("STATUS INBOX (HIGHESTMODSEQ)")
        now = highestmodseq(status.untagged)
        assert now is not None, status
        assert now > known  # the plain STORE above moved it on
        assert status.untagged[1] == b"* STATUS INBOX (HIGHESTMODSEQ %d)" % now, status
        flags = client.command("STORE 1 +FLAGS (\\Flagged)")
        assert re.fullmatch(rb"\* 1 FETCH \(.*MODSEQ \(\d+\).*\)", flags.untagged[0]), flags


# ---------------------------------------------------------------------------------------------
# LIST patterns (RFC 9051 section 6.3.9)


def test_list_pattern_of_unusual_atom_characters_is_answered_and_keeps_the_session(
    imap_server: Harness, imap_account: Account
) -> None:
    # The Unicode name !#$&'+,-...}abc, whose modified UTF-7 form writes "&" as "&-".
    odd_name = ODD_PATTERN[:-2].replace("&", "&-") + "abc"
    with session(imap_server, imap_account) as client:
        assert client.command(f'CREATE "{odd_name}"').status == b"OK"
        # More times than the server's limit of bad commands in a row (5 here): refused
        # patterns used to count as bad commands and end the session with BYE.
        for _ in range(7):
            response = client.command(f'LIST "" "{ODD_PATTERN}"')
            assert response.status == b"OK", response
            assert response.untagged == (
                b'* LIST (\\HasNoChildren) "/" "' + odd_name.encode() + b'"',
            ), response
        unquoted = client.command(f'LIST "" {ODD_PATTERN}')  # list-mailbox as an atom
        assert unquoted.status == b"OK", unquoted
        assert unquoted.untagged == response.untagged
        assert client.command("NOOP").tagged.startswith(b"t%d OK" % client.counter)


def test_list_pattern_that_is_not_modified_utf7_is_matched_literally(
    imap_server: Harness, imap_account: Account
) -> None:
    with session(imap_server, imap_account) as client:
        assert client.command('CREATE "&-Jjo!"').status == b"OK"  # the name "&Jjo!"
        assert client.command('CREATE "&Jjo-"').status == b"OK"  # the name U+263A
        literal = client.command('LIST "" "&Jjo!"')
        assert literal.status == b"OK", literal
        assert literal.untagged == (b'* LIST (\\HasNoChildren) "/" &-Jjo!',), literal
        decoded = client.command('LIST "" "&Jjo-"')
        assert decoded.untagged == (b'* LIST (\\HasNoChildren) "/" &Jjo-',), decoded
        # A valid run then an invalid one, around a wildcard; and an unterminated run.
        mixed = client.command('LIST "" "&Jjo-%&Jjo!"')
        assert mixed.status == b"OK", mixed
        assert mixed.untagged == (), mixed
        for pattern in ("&", "&Jjo", "&&&-", "&AGE-", "a&*"):
            response = client.command(f'LIST "" "{pattern}"')
            assert response.status == b"OK", (pattern, response)
        assert client.command('LIST "&Jjo!" "*"').status == b"OK"  # the reference too
        assert client.command("NOOP").status == b"OK"


# ---------------------------------------------------------------------------------------------
# LIST-EXTENDED: the examples of RFC 5258 section 5


def tree(client: RawIMAP, mailboxes: list[str], subscribed: list[str]) -> None:
    """Exactly ``mailboxes`` besides INBOX (the account's default folders are deleted) and
    exactly ``subscribed``."""
    for line in client.command('LIST "" "*"').untagged:
        name = line.rsplit(b'"/" ', 1)[1].decode()
        if name != "INBOX":
            assert client.command(f"DELETE {name}").status == b"OK"
    for line in client.command('LSUB "" "*"').untagged:
        name = line.rsplit(b'"/" ', 1)[1].decode()
        assert client.command(f"UNSUBSCRIBE {name}").status == b"OK"
    for name in mailboxes:
        assert client.command(f'CREATE "{name}"').status == b"OK"
    for name in subscribed:
        assert client.command(f'SUBSCRIBE "{name}"').status == b"OK"


def listed(client: RawIMAP, command: str) -> list[str]:
    response = client.command(command)
    assert response.status == b"OK", response
    return [line.decode() for line in response.untagged]


def test_rfc5258_examples_1_to_6(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        tree(client, ["Fruit", "Fruit/Apple", "Fruit/Banana", "Tofu", "Vegetable",
                      "Vegetable/Broccoli", "Vegetable/Corn"],
             # Fruit/Peach is subscribed but does not exist.
             ["INBOX", "Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"])
        assert listed(client, 'LIST "" "*"') == [  # example 1
            '* LIST (\\HasNoChildren) "/" INBOX',
            '* LIST (\\HasChildren) "/" Fruit',
            '* LIST (\\HasNoChildren) "/" Fruit/Apple',
            '* LIST (\\HasNoChildren) "/" Fruit/Banana',
            '* LIST (\\HasNoChildren) "/" Tofu',
            '* LIST (\\HasChildren) "/" Vegetable',
            '* LIST (\\HasNoChildren) "/" Vegetable/Broccoli',
            '* LIST (\\HasNoChildren) "/" Vegetable/Corn',
        ]
        subscribed = [  # example 2
            '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
            '* LIST (\\HasNoChildren \\Subscribed) "/" Fruit/Banana',
            '* LIST (\\NonExistent \\Subscribed) "/" Fruit/Peach',
            '* LIST (\\HasChildren \\Subscribed) "/" Vegetable',
            '* LIST (\\HasNoChildren \\Subscribed) "/" Vegetable/Broccoli',
        ]
        assert listed(client, 'LIST (SUBSCRIBED) "" "*"') == subscribed
        children = [  # example 3
            '* LIST (\\HasNoChildren) "/" INBOX',
            '* LIST (\\HasChildren) "/" Fruit',
            '* LIST (\\HasNoChildren) "/" Tofu',
            '* LIST (\\HasChildren) "/" Vegetable',
        ]
        assert listed(client, 'LIST () "" "%" RETURN (CHILDREN)') == children
        # Examples 4 and 5: there are no remote mailboxes, REMOTE changes nothing.
        assert listed(client, 'LIST (REMOTE) "" "%" RETURN (CHILDREN)') == children
        assert listed(client, 'LIST (REMOTE SUBSCRIBED) "" "*"') == subscribed
        assert listed(client, 'LIST (REMOTE) "" "*" RETURN (SUBSCRIBED)') == [  # example 6
            '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
            '* LIST (\\HasChildren) "/" Fruit',
            '* LIST (\\HasNoChildren) "/" Fruit/Apple',
            '* LIST (\\HasNoChildren \\Subscribed) "/" Fruit/Banana',
            '* LIST (\\HasNoChildren) "/" Tofu',
            '* LIST (\\HasChildren \\Subscribed) "/" Vegetable',
            '* LIST (\\HasNoChildren \\Subscribed) "/" Vegetable/Broccoli',
            '* LIST (\\HasNoChildren) "/" Vegetable/Corn',
        ]
        # RECURSIVEMATCH on this tree: Fruit is not subscribed but has subscribed children
        # that "%" does not match; Vegetable is subscribed and so is a child "%" misses.
        assert listed(client, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == [
            '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
            '* LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\HasChildren \\Subscribed) "/" Vegetable ("CHILDINFO" ("SUBSCRIBED"))',
        ]
        # With "*" every subscribed name is listed itself: no parent needs a CHILDINFO.
        assert listed(client, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"') == subscribed


def test_rfc5258_example_7_multiple_patterns(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        tree(client, ["Drafts", "Sent/March2004", "Sent/December2003", "Sent/August2004",
                      "Other"], [])
        assert listed(client, 'LIST "" ("INBOX" "Drafts" "Sent/%")') == [
            '* LIST (\\HasNoChildren) "/" INBOX',
            '* LIST (\\HasNoChildren) "/" Drafts',
            '* LIST (\\HasNoChildren) "/" Sent/August2004',
            '* LIST (\\HasNoChildren) "/" Sent/December2003',
            '* LIST (\\HasNoChildren) "/" Sent/March2004',
        ]


def test_rfc5258_example_8_childinfo_against_haschildren(
    imap_server: Harness, imap_account: Account
) -> None:
    recursive = 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'
    with session(imap_server, imap_account) as client:
        tree(client, ["Foo", "Foo/Bar", "Foo/Baz", "Moo"], ["Foo/Baz"])
        assert listed(client, 'LIST "" "%" RETURN (CHILDREN)') == [
            '* LIST (\\HasNoChildren) "/" INBOX',
            '* LIST (\\HasChildren) "/" Foo',
            '* LIST (\\HasNoChildren) "/" Moo',
        ]
        # A: only Foo/Baz is subscribed.
        assert listed(client, 'LIST (SUBSCRIBED) "" "*"') == [
            '* LIST (\\HasNoChildren \\Subscribed) "/" Foo/Baz',
        ]
        assert listed(client, 'LIST (SUBSCRIBED) "" "%"') == []
        assert listed(client, recursive) == [
            '* LIST (\\HasChildren) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))',
        ]
        # A1: Foo is subscribed as well.
        assert client.command("SUBSCRIBE Foo").status == b"OK"
        assert listed(client, recursive) == [
            '* LIST (\\HasChildren \\Subscribed) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))',
        ]
        # A2: a subscribed name under a level that does not exist.
        assert client.command("UNSUBSCRIBE Foo").status == b"OK"
        assert client.command("UNSUBSCRIBE Foo/Baz").status == b"OK"
        assert client.command("SUBSCRIBE Goo/Baz").status == b"OK"
        assert listed(client, recursive) == [
            '* LIST (\\NonExistent) "/" Goo ("CHILDINFO" ("SUBSCRIBED"))',
        ]
        # B: nothing subscribed, nothing listed (though Foo has children).
        assert client.command("UNSUBSCRIBE Goo/Baz").status == b"OK"
        assert listed(client, recursive) == []
        # C: Foo and Moo subscribed, none of Foo's children: no CHILDINFO.
        assert client.command("SUBSCRIBE Foo").status == b"OK"
        assert client.command("SUBSCRIBE Moo").status == b"OK"
        assert listed(client, recursive + " RETURN (CHILDREN)") == [
            '* LIST (\\HasChildren \\Subscribed) "/" Foo',
            '* LIST (\\HasNoChildren \\Subscribed) "/" Moo',
        ]


def test_rfc5258_example_9_childinfo_whatever_the_children_match(
    imap_server: Harness, imap_account: Account
) -> None:
    subscribed = ["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2",
                  "eps2/mamba", "qux2/bar2"]
    with session(imap_server, imap_account) as client:
        tree(client, ["foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22",
                      "baz2/bar222", "eps2", "eps2/mamba", "qux2/bar2"], subscribed)
        assert listed(client, 'LIST (SUBSCRIBED) "" "*"') == [  # D02
            '* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar2',
            '* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar22',
            '* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar222',
            '* LIST (\\HasChildren \\Subscribed) "/" eps2',
            '* LIST (\\HasNoChildren \\Subscribed) "/" eps2/mamba',
            '* LIST (\\HasNoChildren \\Subscribed) "/" foo2/bar1',
            '* LIST (\\HasNoChildren \\Subscribed) "/" foo2/bar2',
            '* LIST (\\HasNoChildren \\Subscribed) "/" qux2/bar2',
        ]
        # D03: foo2 (not subscribed) and eps2 (subscribed) have a subscribed child that "*2"
        # does not match (foo2/bar1, eps2/mamba); baz2 and qux2 do not, all their subscribed
        # children are listed themselves, so they are not listed.
        assert listed(client, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*2"') == [
            '* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar2',
            '* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar22',
            '* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar222',
            '* LIST (\\HasChildren \\Subscribed) "/" eps2 ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\HasChildren) "/" foo2 ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\HasNoChildren \\Subscribed) "/" foo2/bar2',
            '* LIST (\\HasNoChildren \\Subscribed) "/" qux2/bar2',
        ]
        # D04: "%2" matches no second level, so every top level with a subscribed child
        # gets CHILDINFO.
        assert listed(client, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "%2"') == [
            '* LIST (\\HasChildren) "/" baz2 ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\HasChildren \\Subscribed) "/" eps2 ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\HasChildren) "/" foo2 ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\HasChildren) "/" qux2 ("CHILDINFO" ("SUBSCRIBED"))',
        ]
        # Without RECURSIVEMATCH there is never a CHILDINFO.
        assert listed(client, 'LIST (SUBSCRIBED) "" "%2"') == [
            '* LIST (\\HasChildren \\Subscribed) "/" eps2',
        ]


def test_rfc5258_example_11_a_level_that_is_not_a_mailbox(
    imap_server: Harness, imap_account: Account
) -> None:
    # "music" is only a level above "music/rock" (deleted after CREATE made it). RFC 5258
    # shows it \NonExistent, which implies \Noselect; this server says \Noselect, as
    # RFC 9051 section 6.3.9 does for such levels, with its children and its CHILDINFO.
    with session(imap_server, imap_account) as client:
        tree(client, ["music/rock"], ["music/rock"])
        assert client.command("DELETE music").status == b"OK"
        assert listed(client, 'LIST "" "%" RETURN (CHILDREN)') == [
            '* LIST (\\HasNoChildren) "/" INBOX',
            '* LIST (\\Noselect \\HasChildren) "/" music',
        ]
        assert listed(client, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == [
            '* LIST (\\Noselect \\HasChildren) "/" music ("CHILDINFO" ("SUBSCRIBED"))',
        ]
        assert listed(client, 'LIST (SUBSCRIBED) "" "%"') == []


def test_recursivematch_with_special_use(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        tree(client, ["Work", "Home"], [])
        assert client.command("CREATE Work/Sent (USE (\\Sent))").status == b"OK"
        assert listed(client, 'LIST (SPECIAL-USE RECURSIVEMATCH) "" "%"') == [
            '* LIST (\\HasChildren) "/" Work ("CHILDINFO" ("SPECIAL-USE"))',
        ]
        assert listed(client, 'LIST (SPECIAL-USE) "" "*"') == [
            '* LIST (\\HasNoChildren \\Sent) "/" Work/Sent',
        ]


# ---------------------------------------------------------------------------------------------
# Capabilities before and after authentication (RFC 9051 section 7.2.2)

AUTH_ONLY = {"AUTH=PLAIN", "STARTTLS", "LOGINDISABLED"}


def caps_of(line: bytes) -> set[str]:
    match = re.search(rb"CAPABILITY ([^\]\r\n]+)", line)
    assert match, line
    return set(match.group(1).decode().upper().split())


def test_capabilities_drop_auth_mechanisms_once_logged_in(
    imap_server: Harness, imap_account: Account
) -> None:
    address, password = imap_account
    with RawIMAP(imap_server.port("imaps"), tls=imap_server.tls()) as client:
        assert "AUTH=PLAIN" in caps_of(client.greeting)
        before = client.command("CAPABILITY")
        assert "AUTH=PLAIN" in caps_of(before.untagged[0])
        login = client.command(f'LOGIN "{address}" "{password}"')
        assert login.status == b"OK", login
        in_ok = caps_of(login.tagged)
        assert not in_ok & AUTH_ONLY, in_ok
        after = caps_of(client.command("CAPABILITY").untagged[0])
        assert after == in_ok
        assert {"IMAP4REV2", "ENABLE", "CONDSTORE", "LIST-EXTENDED"} <= after

    blob = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
    with RawIMAP(imap_server.port("imaps"), tls=imap_server.tls()) as client:
        authed = client.command(f"AUTHENTICATE PLAIN {blob}")
        assert authed.status == b"OK", authed
        assert not caps_of(authed.tagged) & AUTH_ONLY
        assert not caps_of(client.command("CAPABILITY").untagged[0]) & AUTH_ONLY

    # Port 143: STARTTLS and LOGINDISABLED before TLS, AUTH=PLAIN after, none once in.
    with RemoteIMAP4("127.0.0.1", imap_server.port("imap"), timeout=15) as plain:
        assert {"STARTTLS", "LOGINDISABLED"} <= set(plain.capabilities)
        plain.starttls(imap_server.tls())
        assert "AUTH=PLAIN" in plain.capabilities
        typ, _ = plain.authenticate("PLAIN", lambda _: f"\0{address}\0{password}".encode())
        assert typ == "OK"
        typ, data = plain.capability()
        assert typ == "OK"
        assert not set(data[0].decode().upper().split()) & AUTH_ONLY, data
        plain.logout()
