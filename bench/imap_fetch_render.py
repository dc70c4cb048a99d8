"""FETCH (UID FLAGS ENVELOPE) rendering for a big mailbox, in the sans-I/O core alone: how long
``render_fetch`` takes for N messages (what a client's first sync of a folder costs the server
beyond the store read). Prints the median of several runs and the time per message.

    python bench/imap_fetch_render.py [--messages 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src")]

from mailstead.core.message import summarize  # noqa: E402 (the path set-up above first)
from mailstead.proto.imap.ast import FetchAtt  # noqa: E402
from mailstead.proto.imap.fetch import render_fetch  # noqa: E402
from mailstead.storage.interfaces import MessageInfo  # noqa: E402

MESSAGE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    s = summarize(MESSAGE)
    messages = [MessageInfo(1, 1, i + 1, 5, ("\\Seen",), 837596665.0, len(MESSAGE), "ab" * 32,
                            s.envelope, s.bodystructure) for i in range(args.messages)]
    wanted = [FetchAtt("UID"), FetchAtt("FLAGS"), FetchAtt("ENVELOPE")]
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for seq, msg in enumerate(messages, 1):
            render_fetch(msg, seq, wanted, uid=True)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"FETCH (UID FLAGS ENVELOPE) of {args.messages} messages: median {median:.3f} s "
          f"over {args.runs} runs ({median / args.messages * 1e6:.1f} us per message)")


if __name__ == "__main__":
    main()
