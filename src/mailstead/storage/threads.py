"""Thread ids (RFC 8474 section 5.2 THREADID), the rule both backends share.

A message whose thread keys (core/msgids.py) meet no key already filed in its account starts
a thread named after its body: ``T`` and the first 24 hex digits of the blob's SHA-256, so
the name needs no counter and copies of one message name the same thread. Ids are 1-255
characters of ``[A-Za-z0-9_-]`` (RFC 8474 section 4's objectid).
"""

from __future__ import annotations

import json

from mailstead.core.msgids import thread_keys


def own_thread(blob: str) -> str:
    """The thread a message starts: its body's name, shortened."""
    return "T" + blob[:24]


def keys_of(thread_keys_given: tuple[str, ...], envelope: str) -> tuple[str, ...]:
    """The keys given with the message, or (a caller that did not give them) the
    Message-ID and In-Reply-To its stored envelope names."""
    if thread_keys_given:
        return thread_keys_given
    try:
        env = json.loads(envelope)
    except ValueError:
        return ()
    if not isinstance(env, dict):
        return ()
    mid, parent = env.get("message_id"), env.get("in_reply_to")
    return thread_keys(mid if isinstance(mid, str) else None,
                       parent if isinstance(parent, str) else None, None)
