"""LIST-EXTENDED selection (RFC 5258 section 3) against a definition written from the RFC.

Which names LIST (SUBSCRIBED [RECURSIVEMATCH]) returns, and which carry CHILDINFO, for many
patterns over one tree; the definition below tests every pair of names (quadratic), the
server does it in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from imap_driver import Body, World

MAILBOXES = ["foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22",
             "baz2/bar222", "eps2", "eps2/mamba", "qux2/bar2", "a/b/c/d", "a/x"]
SUBSCRIBED = ["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2",
              "eps2/mamba", "qux2/bar2", "a/b/c/d", "ghost/child"]
PATTERNS = ["*", "%", "*2", "%2", "foo2*", "*/bar2", "baz2/%", "%/%", "a/%", "a/*", "*/c",
            "%/b/%", "ghost", "ghost/%", "nothing"]


def _matches(pattern: str, name: str) -> bool:
    """RFC 9051 section 6.3.9: * matches anything, % anything but the delimiter."""
    rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name) is not None


def expected(pattern: str, *, recursive: bool) -> list[tuple[str, bool]]:
    """(name, CHILDINFO) pairs: a subscribed name that matches, and with RECURSIVEMATCH a
    name that matches and has a subscribed descendant that does not (RFC 5258 section 3,
    the two conditions under \\NonExistent, and section 3.5)."""
    names = set(SUBSCRIBED)
    for name in [*MAILBOXES, *SUBSCRIBED]:
        levels = name.split("/")
        names.update("/".join(levels[:i]) for i in range(1, len(levels)))
    out = []
    for name in names:
        if not _matches(pattern, name):
            continue
        hidden = recursive and any(
            sub.startswith(name + "/") and not _matches(pattern, sub) for sub in SUBSCRIBED
        )
        if name in SUBSCRIBED or hidden:
            out.append((name, hidden))
    return sorted(out)


def returned(out: str) -> list[tuple[str, bool]]:
    found = []
    for line in out.splitlines():
        match = re.fullmatch(r'\* LIST \([^)]*\) "/" (\S+)( \("CHILDINFO" \("SUBSCRIBED"\)\))?',
                             line)
        if match:
            found.append((match.group(1), match.group(2) is not None))
    return sorted(found)


def test_subscribed_and_recursivematch_follow_the_definition(
    run: Callable[[Body], None],
) -> None:
    async def body(w: World) -> None:
        c = w.client()
        await c.login()
        for n, name in enumerate(MAILBOXES):
            assert (await c.cmd(f"c{n} CREATE {name}")).startswith(f"c{n} OK")
        for n, name in enumerate(SUBSCRIBED):
            assert (await c.cmd(f"s{n} SUBSCRIBE {name}")).startswith(f"s{n} OK")
        for n, pattern in enumerate(PATTERNS):
            out = await c.cmd(f'r{n} LIST (SUBSCRIBED RECURSIVEMATCH) "" "{pattern}"')
            assert out.endswith(f"r{n} OK LIST completed\r\n"), out
            assert returned(out) == expected(pattern, recursive=True), (pattern, out)
            out = await c.cmd(f'p{n} LIST (SUBSCRIBED) "" "{pattern}"')
            assert returned(out) == expected(pattern, recursive=False), (pattern, out)
            assert "CHILDINFO" not in out

    run(body)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_definition_sanity(pattern: str) -> None:
    # Without RECURSIVEMATCH only subscribed names, never a CHILDINFO.
    plain = expected(pattern, recursive=False)
    assert all(name in SUBSCRIBED and not hint for name, hint in plain)
    assert {n for n, _ in plain} <= {n for n, _ in expected(pattern, recursive=True)}
