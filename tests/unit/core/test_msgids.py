"""The thread keys of a message (core/msgids.py): its own id, then its ancestors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.message import summarize
from mailstead.core.msgids import MAX_THREAD_KEYS, msg_ids, thread_keys


def test_own_id_then_nearest_ancestors() -> None:
    keys = thread_keys("<c@x.test>", "<b@x.test> (comment)", "<a@x.test>\r\n <b@x.test>")
    assert keys == ("<c@x.test>", "<b@x.test>", "<a@x.test>")


def test_without_ids() -> None:
    assert thread_keys(None, None, None) == ()
    assert thread_keys("no brackets", "", "  ") == ()
    assert msg_ids("<a b@x> <>") == []  # a space or nothing inside is no msg-id


def test_long_references_are_bounded() -> None:
    refs = " ".join(f"<r{i}@x.test>" for i in range(500))
    keys = thread_keys("<own@x.test>", None, refs)
    assert len(keys) == MAX_THREAD_KEYS
    assert keys[:2] == ("<own@x.test>", "<r499@x.test>")  # the nearest ancestors are kept


def test_summary_carries_the_keys() -> None:
    data = (b"Message-ID: <m2@x.test>\r\nReferences: <m0@x.test>\r\n <m1@x.test>\r\n"
            b"In-Reply-To: <m1@x.test>\r\n\r\nbody\r\n")
    assert summarize(data).thread_keys == ("<m2@x.test>", "<m1@x.test>", "<m0@x.test>")


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=2000))
def test_hostile_headers(mid: str, parent: str, refs: str) -> None:
    keys = thread_keys(mid, parent, refs)
    assert len(keys) <= MAX_THREAD_KEYS
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key.startswith("<")
        assert key.endswith(">")
        assert 3 <= len(key) <= 250
