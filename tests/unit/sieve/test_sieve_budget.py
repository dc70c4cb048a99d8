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
from mailstead.sieve.match import glob
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


def test_star_and_long_literal_patterns_are_cheap() -> None:
    value = "a" * 48_000
    budget = Budget(1_000_000)
    start = time.process_time()
    assert glob(value, "*a*a*a*a*a*a*a*a*a*b", "i;octet", budget) is None
    assert glob(value, "*" + "a" * 500 + "?b", "i;octet", budget) is None
    assert glob(value, "*" + "a" * 500 + "?b*", "i;octet", budget) is None
    assert time.process_time() - start < 1.0
    # Candidates of a literal chunk are found by a C-level search and each costs one step.
    assert 1_000_000 - budget.left < 200_000


def test_quadratic_candidates_stop_at_the_step_budget() -> None:
    value = " ".join(["a" * 900] * 53)
    budget = Budget(100_000)
    start = time.process_time()
    with pytest.raises(BudgetExceeded, match="step"):
        glob(value, "*" + "a?" * 240 + "b*", "i;octet", budget)
    assert time.process_time() - start < 1.0


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
    text = ('require ["fileinto"];\r\nif header :matches "Subject" "*' + "a?" * 240
            + 'b*" { fileinto "Junk"; } else { discard; }\r\n')
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
