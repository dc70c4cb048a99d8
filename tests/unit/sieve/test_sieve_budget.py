"""The :matches matcher against a plain reference, and the run budget that stops a hostile
script over a hostile message (deterministic steps, an injected CPU clock)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.sieve.actions import Keep
from mailstead.sieve.compile import compile_script
from mailstead.sieve.interpreter import Envelope, Interpreter
from mailstead.sieve.limits import Budget, BudgetExceeded, SieveLimits
from mailstead.sieve.match import _find, _scan, _segments, glob
from mailstead.sieve.message import MessageView


def _reference(value: str, pattern: str) -> list[str] | None:
    """RFC 5229 section 3.2 by a regular expression: each "*" as short as possible."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append("(.*?)" if ch == "*" else "(.)" if ch == "?" else re.escape(ch))
        i += 1
    m = re.fullmatch("".join(out), value, re.S)
    return None if m is None else [value, *m.groups()]


@settings(max_examples=600, deadline=None)
@given(st.text("ab", max_size=12), st.text("ab*?\\", max_size=8))
def test_glob_matches_the_reference(value: str, pattern: str) -> None:
    assert glob(value, pattern, "i;octet") == _reference(value, pattern)


@settings(max_examples=200, deadline=None)
@given(st.text("aB.", max_size=10), st.text("Ab.*?", max_size=6))
def test_glob_folds_case_and_keeps_the_value_in_captures(value: str, pattern: str) -> None:
    expected = _reference(value.lower(), pattern.lower())
    got = glob(value, pattern, "i;ascii-casemap")
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert [len(g) for g in got] == [len(g) for g in expected]


@pytest.mark.parametrize("value", ["a" * 48_000, " ".join(["a" * 900] * 53)])
@pytest.mark.parametrize("pattern", [
    "*a*a*a*a*a*a*a*a*a*b", "*" + "a" * 500 + "?b", "*" + "a" * 500 + "?b*",
    "*" + "a?" * 240 + "b*", "*a?a*a?a*a?b*", "*?" * 200 + "b", "?" * 47_999 + "*b",
])
def test_hostile_patterns_cost_linear_work(value: str, pattern: str) -> None:
    budget = Budget(10**9)
    start = time.process_time()
    assert glob(value, pattern, "i;octet", budget) is None
    assert time.process_time() - start < 0.5
    # A few steps per character of the value, whatever the pattern.
    assert 10**9 - budget.left < 4 * len(value)


@settings(max_examples=300, deadline=None)
@given(st.text("ab", max_size=40), st.text("ab?", min_size=1, max_size=6),
       st.integers(0, 5))
def test_shift_and_scan_finds_the_leftmost_occurrence(text: str, piece: str,
                                                      start: int) -> None:
    (seg,) = _segments(piece)
    expected = next((i for i in range(start, len(text) - len(piece) + 1)
                     if all(p in ("?", c) for p, c in zip(piece, text[i:], strict=False))), -1)
    if any(ch != "?" for ch in piece):
        assert _scan(seg, text, start, None) == expected
    assert _find(seg, text, start, None) == expected


def test_cpu_budget_on_an_injected_clock() -> None:
    ticks = iter(range(10_000))
    budget = Budget(10**9, clock=lambda: float(next(ticks)), seconds=3.0)
    def spend_all() -> None:
        for _ in range(10**6):
            budget.spend(100)

    with pytest.raises(BudgetExceeded, match="CPU"):
        spend_all()


def _run(limits: SieveLimits, text: str, data: bytes) -> tuple[tuple[object, ...], str | None,
                                                               bool]:
    script = compile_script(text, limits)
    out = Interpreter(limits).run(script, MessageView(data), Envelope("x@remote.test",
                                                                      "a@example.test"))
    return out.actions, out.error, out.exhausted


def test_exhausted_run_keeps_the_message() -> None:
    tests = ", ".join(f'header :matches "Subject" "*{"a?" * 40}{n}*"' for n in range(20))
    text = ('require ["fileinto"];\r\nif anyof (' + tests
            + ') { fileinto "Junk"; } else { discard; }\r\n')
    data = b"Subject: " + b"\r\n ".join([b"a" * 900] * 53) + b"\r\n\r\nbody\r\n"
    actions, error, exhausted = _run(SieveLimits(max_steps=50_000), text, data)
    assert actions == (Keep(),)
    assert exhausted
    assert error is not None
    assert "step" in error
    # The same script with a budget large enough runs to its end (discard).
    actions, error, exhausted = _run(SieveLimits(max_steps=10**9), text,
                                     b"Subject: short\r\n\r\nbody\r\n")
    assert actions == ()
    assert error is None
    assert not exhausted


def test_every_command_costs_a_step() -> None:
    text = "".join('if false { keep; }\r\n' for _ in range(300))
    _, _, exhausted = _run(SieveLimits(max_steps=500), text, b"Subject: x\r\n\r\n")
    assert exhausted
    _, error, exhausted = _run(SieveLimits(max_steps=5000), text, b"Subject: x\r\n\r\n")
    assert not exhausted
    assert error is None
