"""observability/log.py: the hand-built formatter writes exactly what the generic one did,
and ``log_event`` builds its record without walking the stack."""

from __future__ import annotations

import logging
import sys

import pytest

from mailstead.core.secret import Secret
from mailstead.observability.log import OneLineFormatter, format_event, format_value, log_event

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _record(msg: str, created: float, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("mailstead.test", logging.WARNING, __file__, 1, msg, (), exc_info)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


@pytest.mark.parametrize("created", [0.0, 1_700_000_000.123, 1_700_000_000.999, 1_700_000_001.5])
@pytest.mark.parametrize("exc", [False, True])
def test_same_text_as_the_generic_formatter(created: float, exc: bool) -> None:
    ours, generic = OneLineFormatter(), logging.Formatter(FORMAT)
    for message in ("plain", "with\nnewline", "tab\there"):
        a, b = _record(message, created, exc), _record(message, created, exc)
        text = ours.format(a)
        expected = generic.format(b)
        # Ours escapes what breaks a line; the generic one does not.
        assert text == expected.replace("\n", "\\n").replace("\t", "\\t")
        assert "\n" not in text


def test_log_event_skips_the_caller_lookup(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mailstead.test.events")
    with caplog.at_level(logging.INFO, logger="mailstead.test.events"):
        log_event(log, "smtp.transaction", queue_id="Q1", size=12, secret=Secret("pw"))
    (record,) = caplog.records
    assert record.getMessage() == "smtp.transaction queue_id=Q1 size=12 secret=***"
    assert record.levelno == logging.INFO
    assert record.name == "mailstead.test.events"
    assert record.lineno == 0  # no stack walk


class Weird(str):
    def __str__(self) -> str:
        return "weird value"


@pytest.mark.parametrize(
    ("value", "text"),
    [(12, "12"), (-3, "-3"), (True, "true"), (None, '""'), ("a b", '"a b"'), ("ok", "ok"),
     (b"x\n", '"x\\n"'), (Weird("raw"), '"weird value"'), ("q\"", '"q\\""')],
)
def test_values(value: object, text: str) -> None:
    assert format_value(value) == text


def test_odd_keys_are_sanitised() -> None:
    assert format_event("e v", **{"a b": 1, "ok_key": 2, "é": 3}) == "e_v a_b=1 ok_key=2 _=3"
