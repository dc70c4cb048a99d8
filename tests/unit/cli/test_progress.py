"""The progress bar of the long commands: what it shows, and when."""

from __future__ import annotations

import io

from mailstead.cli.progress import ProgressBar, duration_text, size_text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sizes_and_durations() -> None:
    assert size_text(512) == "512 bytes"
    assert size_text(3 * 1024 * 1024 + 512 * 1024) == "3.5 MiB"
    assert size_text(5 * 1024**4) == "5.0 TiB"
    assert duration_text(44.6) == "45s"
    assert duration_text(192) == "3m12s"
    assert duration_text(7500) == "2h05m"


def test_pipe_gets_a_line_per_interval_and_the_final_line() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(out, total=10, total_bytes=1000, interval=2.0, clock=clock, tty=False)
    bar.advance(1, 100, label="importing INBOX")
    assert out.getvalue() == ""  # within the first interval: nothing
    clock.now += 2.0
    bar.advance(1, 100)
    assert out.getvalue() == (
        "mailstead: importing INBOX:  2/10 messages  200 bytes of 1,000 bytes  1 messages/s"
        "  100 bytes/s  ETA 8s\n"
    )
    clock.now += 0.5
    bar.finish()
    assert out.getvalue().count("\n") == 2
    assert out.getvalue().endswith("2/10 messages  200 bytes of 1,000 bytes  1 messages/s"
                                   "  80 bytes/s  ETA 10s\n")


def test_terminal_redraws_one_line_with_a_bar() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(out, total=4, clock=clock, tty=True)
    clock.now += 1
    bar.advance(2, 10)
    assert out.getvalue().startswith("\r\x1b[K[############            ]  2/4 messages")
    bar.message("skipped one")
    assert out.getvalue().endswith("\r\x1b[Kskipped one\n")
    assert "\n" not in out.getvalue()[: -len("skipped one\n")]
