"""Maildir and Maildir++ on disk: read the trees Dovecot, Courier and mbsync write, and
write Dovecot-compatible Maildir++.

The format is described at https://cr.yp.to/proto/maildir.html (file names, the ``:2,``
info) and in Courier's maildir++ notes (``.Sub.Folder`` subfolders); keyword letters follow
Dovecot's ``dovecot-keywords`` file. Pure file handling: no store, no network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailstead.interchange.names import folder_from_parts, parts_for_folder

# The Maildir info letters (cr.yp.to/proto/maildir.html) and the IMAP flag each stands for.
LETTER_FLAGS: dict[str, str] = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
FLAG_LETTERS: dict[str, str] = {flag.lower(): letter for letter, flag in LETTER_FLAGS.items()}
KEYWORDS_FILE = "dovecot-keywords"
# Dovecot gives keywords the letters a-z in the order of its keywords file: 26 at most.
MAX_KEYWORDS = 26
# An IMAP flag-keyword is an atom (RFC 9051 section 9: atom-char excludes these).
_KEYWORD = re.compile(r"^\$?[^\x00-\x20\x7f(){%*\"\\\]]+$")
_SUBDIRS = ("cur", "new", "tmp")


@dataclass(frozen=True, slots=True)
class MaildirEntry:
    """One message file found in a Maildir tree; the bytes are read by the caller."""

    folder: str
    path: Path
    origin: str  # the unique part of the file name, stable when a client renames the file
    flags: tuple[str, ...]
    internal_date: float  # the file's mtime, Dovecot's convention for the received date


def is_maildir(path: Path) -> bool:
    """A directory with ``cur/`` or ``new/`` holds messages."""
    return (path / "cur").is_dir() or (path / "new").is_dir()


def read_keywords(maildir: Path) -> dict[str, str]:
    """Dovecot's ``dovecot-keywords`` of one maildir: letter -> keyword. Lines that are not
    ``N name`` with 0 <= N < 26 and an atom name are ignored, so a damaged file costs only
    its bad lines."""
    result: dict[str, str] = {}
    try:
        raw = (maildir / KEYWORDS_FILE).read_bytes()[:1 << 20]
    except OSError:
        return result
    for line in raw.decode("utf-8", "replace").splitlines():
        index, _, name = line.strip().partition(" ")
        if not index.isdigit() or not name or not _KEYWORD.match(name):
            continue
        number = int(index)
        if number < MAX_KEYWORDS:
            result[chr(ord("a") + number)] = name
    return result


def parse_filename(name: str, keywords: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    """The unique part of a Maildir file name and the flags of its ``:2,`` info.

    Info of another version (``:1,``) carries no flags we know; letters without meaning are
    ignored (cr.yp.to: readers must ignore unknown flags).
    """
    unique, sep, info = name.partition(":")
    if not sep:
        # mbsync on file systems without ":" uses ";" as its InfoDelimiter.
        unique, sep, info = name.partition(";")
    flags: list[str] = []
    if sep and info.startswith("2,"):
        for letter in info[2:]:
            flag = LETTER_FLAGS.get(letter) or keywords.get(letter)
            if flag is not None and flag not in flags:
                flags.append(flag)
    return unique, tuple(flags)


def _folders(root: Path) -> Iterator[tuple[str, Path]]:
    """Every maildir of the tree with its Mailstead folder name.

    Three layouts are told apart by their names: Maildir++ (``.A.B`` directly in the root,
    Courier, Dovecot's default, mbsync ``SubFolders Maildir++``), directories nested as
    folders (Dovecot ``LAYOUT=fs``, mbsync ``SubFolders Verbatim``) and nested directories
    whose names start with a dot (mbsync ``SubFolders Legacy``: ``A/.B``).
    """
    if is_maildir(root):
        yield "INBOX", root
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    seen: set[str] = set()
    while stack:
        directory, parts = stack.pop()
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for child in children:
            if child.name in _SUBDIRS or not child.is_dir(follow_symlinks=False):
                continue
            if child.name.startswith("."):
                rest = child.name[1:]
                if not rest:
                    continue
                sub = tuple(rest.split(".")) if not parts else (rest,)
            else:
                sub = (child.name,)
            if any(not p for p in sub):
                continue
            here = parts + sub
            path = Path(child.path)
            if is_maildir(path):
                name = folder_from_parts(here)
                if name not in seen:
                    seen.add(name)
                    yield name, path
            stack.append((path, here))


def scan(root: Path) -> Iterator[MaildirEntry]:
    """Every message of the Maildir tree at ``root``, folder by folder, ``cur/`` before
    ``new/``; ``tmp/`` holds files still being written and is never read."""
    for folder, path in _folders(root):
        keywords = read_keywords(path)
        for sub in ("cur", "new"):
            try:
                entries = sorted(os.scandir(path / sub), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                unique, flags = parse_filename(entry.name, keywords)
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                yield MaildirEntry(folder, Path(entry.path), unique, flags, mtime)


def folders_of(root: Path) -> list[str]:
    """The Mailstead names of every maildir in the tree (also the empty ones)."""
    return [name for name, _ in _folders(root)]


class MaildirWriter:
    """Writes Dovecot-compatible Maildir++: the inbox at the root, ``.A.B`` for ``A/B``,
    flags as ``:2,`` letters, keywords as letters of ``dovecot-keywords``, mtime = internal
    date. Each file is written in ``tmp/``, fsynced and renamed into ``cur/`` (the
    maildir delivery protocol, so a reader never sees half a message)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._counter = 0
        self._keywords: dict[Path, dict[str, str]] = {}
        self.dropped_keywords = 0

    def folder_path(self, folder: str) -> Path:
        """The directory of ``folder``; names are kept readable (UTF-8), dots inside a
        component are encoded so they do not split it."""
        if folder.upper() == "INBOX":
            return self._root
        return self._root / ("." + ".".join(parts_for_folder(folder)))

    def make_folder(self, folder: str) -> Path:
        path = self.folder_path(folder)
        for sub in _SUBDIRS:
            (path / sub).mkdir(parents=True, exist_ok=True)
        if path not in self._keywords:
            self._keywords[path] = read_keywords(path)
        if path != self._root:
            # Courier and Dovecot mark a Maildir++ subfolder with this empty file.
            (path / "maildirfolder").touch()
        return path

    def _letters(self, path: Path, flags: Sequence[str]) -> str:
        keywords = self._keywords.setdefault(path, {})
        letters: list[str] = []
        changed = False
        for flag in flags:
            letter = FLAG_LETTERS.get(flag.lower())
            if letter is None and not flag.startswith("\\"):
                by_name = {v: k for k, v in keywords.items()}
                letter = by_name.get(flag)
                if letter is None:
                    if len(keywords) >= MAX_KEYWORDS or not _KEYWORD.match(flag):
                        self.dropped_keywords += 1
                        continue
                    letter = chr(ord("a") + len(keywords))
                    keywords[letter] = flag
                    changed = True
            if letter is not None and letter not in letters:
                letters.append(letter)
        if changed:
            lines = "".join(f"{ord(k) - ord('a')} {v}\n" for k, v in sorted(keywords.items()))
            _write_durable(path / KEYWORDS_FILE, lines.encode("utf-8"), path / "tmp")
        # Letters in ASCII order (cr.yp.to: "flags must be stored in ASCII order").
        return "".join(sorted(letters))

    def add(self, folder: str, data: bytes, flags: Sequence[str], internal_date: float) -> Path:
        """Write one message durably; returns its path in ``cur/``."""
        path = self.make_folder(folder)
        self._counter += 1
        unique = f"{int(internal_date)}.M{self._counter}P{os.getpid()}.mailstead,S={len(data)}"
        name = f"{unique}:2,{self._letters(path, flags)}"
        target = path / "cur" / name
        _write_durable(target, data, path / "tmp", mtime=internal_date)
        return target

    def sync_dirs(self) -> None:
        """fsync every directory written to, so the renames survive a crash."""
        for path in self._keywords:
            for sub in ("cur", ""):
                _fsync_dir(path / sub if sub else path)
        _fsync_dir(self._root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(target: Path, data: bytes, tmpdir: Path, mtime: float | None = None) -> None:
    tmp = tmpdir / (target.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, target)
