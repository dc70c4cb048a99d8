from __future__ import annotations

from mailstead.config.lines import KeyLines

TEXT = '''# comment
hostname = "a.test"
notes = """
[fake]
smtp = 1
"""
[listen]
smtp = "x"
"imap" = "y"
[ "dns" ]
nameservers = [
  "1.1.1.1",
]
a.b.c = 1
'''


def test_lines() -> None:
    lines = KeyLines(TEXT)
    assert lines.line_of(("hostname",)) == 2
    assert lines.line_of(("fake",)) is None
    assert lines.line_of(("listen",)) == 7
    assert lines.line_of(("listen", "smtp")) == 8
    assert lines.line_of(("listen", "imap")) == 9
    assert lines.line_of(("listen", "pop3")) == 7
    assert lines.line_of(("dns", "nameservers")) == 11
    assert lines.line_of(("dns", "a", "b")) == 14
    assert lines.line_of(("nothing",)) is None
