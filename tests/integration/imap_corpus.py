"""A deterministic corpus of varied messages for the IMAP sync tests and benchmarks: MIME
multiparts, attachments, UTF-8 headers with encoded words, 8-bit bodies, long lines folded
properly, lines of a single dot, and Maildir flags (":2,FS")."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from pathlib import Path

# Maildir info flags (https://cr.yp.to/proto/maildir.html): Draft, Flagged, Passed (forwarded),
# Replied, Seen, Trashed; always written in ASCII order.
FLAG_CHOICES = ("", "S", "FS", "RS", "D", "PS", "F", "DFRS")
WORDS = ("mail", "server", "sync", "IMAP", "Grüße", "naïve", "façade", "日本", "привет",
         "quarterly", "report", "build", "release", "coffee", "δοκιμή", "über")


@dataclass(frozen=True)
class CorpusMessage:
    """One message: its bytes (CRLF), Maildir flags and a unique Message-ID token."""

    token: str
    data: bytes
    flags: str


def _encoded_word(text: str) -> str:
    """RFC 2047 B-encoded word for non-ASCII header text."""
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def _fold(name: str, value: str, width: int = 76) -> str:
    """RFC 5322 section 2.2.3 folding: CRLF + space between words, lines under ``width``."""
    out, line = [], f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > width and line != f"{name}:":
            out.append(line)
            line = " " + word
        else:
            line += " " + word
    out.append(line)
    return "\r\n".join(out)


def make_corpus(count: int = 500, seed: int = 7) -> list[CorpusMessage]:
    """``count`` varied messages; the same ``seed`` gives the same bytes."""
    rng = random.Random(seed)
    out: list[CorpusMessage] = []
    for n in range(count):
        token = f"corpus-{seed}-{n:05d}"
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        subject = " ".join(words)
        kind = n % 5
        headers = [
            f"From: {_encoded_word('Jörg Müller')} <joerg{n % 17}@remote.test>",
            "To: alice@example.test",
            _fold("Subject", " ".join(
                _encoded_word(w) if not w.isascii() else w for w in words)),
            f"Date: {['Mon', 'Tue', 'Wed'][n % 3]}, {1 + n % 28:02d} Mar 2024 "
            f"{n % 24:02d}:{n % 60:02d}:00 +0100",
            f"Message-ID: <{token}@client.example.test>",
            _fold("References", " ".join(f"<ref{n}-{k}@client.example.test>"
                                         for k in range(rng.randint(1, 12)))),
            "MIME-Version: 1.0",
        ]
        text = (f"Message {n}: {subject}\r\n".encode()
                + b".\r\n" + b"..leading dots\r\n" + b"." * 3 + b"\r\n"
                + ("Über naïve façades, 8-bit: äöü ß €\r\n" * rng.randint(1, 40)).encode())
        if kind == 0:
            headers += ["Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: 8bit"]
            body = text
        elif kind == 1:
            headers += ["Content-Type: text/plain; charset=us-ascii"]
            body = b"".join(b"line %d " % i + b"x" * rng.randint(0, 900) + b"\r\n"
                            for i in range(rng.randint(1, 30)))
        else:
            boundary = f"=_b{n}_{rng.randrange(10**9)}"
            headers.append(f'Content-Type: multipart/{"mixed" if kind != 4 else "alternative"};'
                           f'\r\n boundary="{boundary}"')
            parts = [b"Content-Type: text/plain; charset=utf-8\r\n"
                     b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text]
            if kind == 4:
                parts.append(b"Content-Type: text/html; charset=utf-8\r\n"
                             b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                             b"<p>Gr=C3=BC=C3=9Fe</p>\r\n")
            else:
                blob = bytes(rng.randrange(256) for _ in range(rng.randint(10, 20000)))
                encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
                name = _encoded_word(f"Anhang {n} Ü.bin")
                parts.append(b"Content-Type: application/octet-stream\r\n"
                             b"Content-Transfer-Encoding: base64\r\n"
                             + f'Content-Disposition: attachment;\r\n filename="{name}"\r\n\r\n'
                             .encode() + encoded)
            if kind == 3:
                inner = (b"From: inner@remote.test\r\nSubject: inner\r\n\r\ninner body\r\n")
                parts.append(b"Content-Type: message/rfc822\r\n\r\n" + inner)
            b = boundary.encode()
            body = b"Preamble.\r\n" + b"".join(b"--" + b + b"\r\n" + p for p in parts) \
                + b"--" + b + b"--\r\n"
        data = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
        out.append(CorpusMessage(token, data, FLAG_CHOICES[n % len(FLAG_CHOICES)]))
    return out


def write_maildir(root: Path, messages: list[CorpusMessage]) -> None:
    """A Maildir (cur/new/tmp) holding ``messages`` in ``cur`` with their flags. Maildir
    files use LF line ends, as every local mail tool expects; mbsync converts to CRLF."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n, message in enumerate(messages):
        name = f"{1700000000 + n}.{n}_0.corpus:2,{message.flags}"
        (root / "cur" / name).write_bytes(message.data.replace(b"\r\n", b"\n"))


def read_maildir(root: Path) -> dict[bytes, tuple[bytes, str]]:
    """Messages of a Maildir by Message-ID: (bytes, flags). Headers mbsync may add
    (X-TUID) are removed so two Maildirs compare byte for byte."""
    found: dict[bytes, tuple[bytes, str]] = {}
    for sub in ("cur", "new"):
        for path in (root / sub).iterdir():
            data = path.read_bytes()
            lines = [line for line in data.split(b"\n") if not line.startswith(b"X-TUID: ")]
            data = b"\n".join(lines)
            start = data.index(b"Message-ID: <") + len(b"Message-ID: <")
            key = data[start : data.index(b">", start)]
            flags = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
            found[key] = (data, "".join(sorted(flags)))
    return found
