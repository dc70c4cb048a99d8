"""The Maildir reader and writer: layouts, flags, keywords, names."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.interchange.maildir import MaildirWriter, folders_of, parse_filename, scan
from mailstead.interchange.names import decode_component, encode_component, folder_from_parts


def make(path: Path, files: dict[str, bytes] | None = None, sub: str = "cur") -> None:
    for d in ("cur", "new", "tmp"):
        (path / d).mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (path / sub / name).write_bytes(data)


def test_parse_filename_flags_and_keywords() -> None:
    kw = {"a": "$Label1", "b": "Work"}
    assert parse_filename("123.M1P2.host,S=10,W=12:2,FRSab", kw) == (
        "123.M1P2.host,S=10,W=12", ("\\Flagged", "\\Answered", "\\Seen", "$Label1", "Work"))
    assert parse_filename("1.x,U=7:2,PTDz", kw) == (
        "1.x,U=7", ("$Forwarded", "\\Deleted", "\\Draft"))
    assert parse_filename("1.x", kw) == ("1.x", ())
    assert parse_filename("1.x:1,S", kw) == ("1.x", ())
    assert parse_filename("1.x;2,S", kw) == ("1.x", ("\\Seen",))


def test_maildirplusplus_layout_with_keywords_and_mtime(tmp_path: Path) -> None:
    make(tmp_path, {"1.a:2,S": b"one"})
    make(tmp_path, {"2.b": b"two"}, sub="new")
    make(tmp_path / ".Sent", {"3.c:2,Sa": b"three"})
    make(tmp_path / ".Work.Projects")
    make(tmp_path / ".Sp&AOk-cial", {"4.d:2,": b"four"})
    (tmp_path / ".Sent" / "dovecot-keywords").write_text("0 $Important\n1 bad(name\nx junk\n")
    (tmp_path / "tmp" / "5.e").write_bytes(b"half")
    os.utime(tmp_path / "cur" / "1.a:2,S", (1600000000, 1600000000))
    assert sorted(folders_of(tmp_path)) == ["INBOX", "Sent", "Spécial", "Work/Projects"]
    got = {(e.folder, e.origin): e for e in scan(tmp_path)}
    assert set(got) == {("INBOX", "1.a"), ("INBOX", "2.b"), ("Sent", "3.c"), ("Spécial", "4.d")}
    assert got["Sent", "3.c"].flags == ("\\Seen", "$Important")
    assert got["INBOX", "1.a"].internal_date == 1600000000


def test_fs_and_legacy_layouts(tmp_path: Path) -> None:
    # mbsync "SubFolders Verbatim" / Dovecot LAYOUT=fs: INBOX is a directory of its own.
    make(tmp_path / "INBOX", {"1:2,S": b"x"})
    make(tmp_path / "Spam")
    make(tmp_path / "Lists" / "python")
    # mbsync "SubFolders Legacy": nested names start with a dot.
    make(tmp_path / "Old" / ".Year")
    assert sorted(folders_of(tmp_path)) == ["INBOX", "Junk", "Lists/python", "Old/Year"]


def test_writer_then_reader_roundtrip(tmp_path: Path) -> None:
    w = MaildirWriter(tmp_path)
    w.add("INBOX", b"a", ("\\Seen", "\\Answered"), 1600000000.5)
    w.add("Work/v1.2", b"b", ("Custom", "\\Flagged", "$Forwarded"), 1600000001.0)
    w.make_folder("Empty")
    w.sync_dirs()
    assert (tmp_path / ".Work.v1\\2e2" / "maildirfolder").exists()
    got = sorted((e.folder, e.path.read_bytes(), set(e.flags), e.internal_date)
                 for e in scan(tmp_path))
    assert got == [
        ("INBOX", b"a", {"\\Seen", "\\Answered"}, 1600000000.5),
        ("Work/v1.2", b"b", {"Custom", "\\Flagged", "$Forwarded"}, 1600000001.0),
    ]
    assert "Empty" in folders_of(tmp_path)


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), min_size=1))
def test_name_components_roundtrip(text: str) -> None:
    assert decode_component(encode_component(text)) == text


def test_special_use_aliases() -> None:
    assert folder_from_parts(["Sent Messages"]) == "Sent"
    assert folder_from_parts(["spam"]) == "Junk"
    assert folder_from_parts(["Projects", "spam"]) == "Projects/spam"
