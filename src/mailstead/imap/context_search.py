"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 sections 4 and 5): searches kept up to date.

A SEARCH or SORT with RETURN (UPDATE) leaves a context behind: after each command (and in
IDLE), wherever the session sends its mailbox updates, the search is evaluated again and
the differences go out as ``* ESEARCH (TAG "t") ... REMOVEFROM (pos set) ADDTO (pos set)``,
or as new MIN/MAX/COUNT values. CANCELUPDATE ends a context; leaving the mailbox ends all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailstead.imap import searching
from mailstead.imap.base import CommandFailed
from mailstead.proto.imap import esearch as extended
from mailstead.proto.imap import search as evaluator
from mailstead.proto.imap import sort as sorter
from mailstead.proto.imap.ast import CancelUpdateArgs, Command, SearchArgs
from mailstead.proto.imap.response import number, sequence_set, string
from mailstead.proto.imap.selected import SelectedView

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

# Each context is evaluated again after every change of the mailbox: a bound on how many
# one session may keep (RFC 5267 section 4.2 lets the server refuse with NOUPDATE).
MAX_CONTEXTS = 16
RESULT_OPTIONS = ("MIN", "MAX", "COUNT", "ALL")

Show = Callable[[Sequence[int]], list[int]]


@dataclass(slots=True)
class SearchContext:
    """One search whose results the client asked to keep up to date."""

    tag: str
    uid: bool
    args: SearchArgs
    ordered: bool  # SORT: positions matter (RFC 5267 section 4.3)
    returns: tuple[str, ...]  # which of MIN MAX COUNT ALL the client follows
    view: SelectedView  # the mailbox it belongs to; another SELECT ends it
    results: list[int]  # UIDs, in result order
    stats: bytes  # the MIN/MAX/COUNT part last sent
    seen: tuple[int, int, int]  # the view's state at the last evaluation


def _fingerprint(view: SelectedView) -> tuple[int, int, int]:
    return view.highestmodseq, len(view.uids), len(view.pending)


def result_options(returns: Sequence[str]) -> tuple[str, ...]:
    """The result options a RETURN asks for; ALL when it names none (RFC 4731 section 3.1)."""
    picked = tuple(r for r in RESULT_OPTIONS if r in returns)
    return picked or (() if "PARTIAL" in returns else ("ALL",))


def start(s: IMAPSession, cmd: Command, uids: list[int], *, ordered: bool) -> None:
    """Keep the search of ``cmd`` (whose results, as UIDs in result order, were just sent)
    up to date, or say ``* NO [NOUPDATE "tag"]`` when it cannot be (RFC 5267 section 4.2)."""
    args = cmd.args
    assert isinstance(args, SearchArgs)
    assert s.view is not None
    contexts = s.search_contexts
    if len(contexts) >= MAX_CONTEXTS and cmd.tag not in contexts:
        s.untagged(f"NO [NOUPDATE {string(cmd.tag).decode()}] Too many search contexts; "
                   "cancel one with CANCELUPDATE")
        return
    asked = args.returns or ()
    follow = result_options(asked)
    if "PARTIAL" in asked and "ALL" not in follow:
        # RFC 9394 section 3.1: PARTIAL and UPDATE do not interact; the updates cover every
        # matching message, not only the page that was sent.
        follow = (*follow, "ALL")
    ctx = SearchContext(cmd.tag, cmd.uid, args, ordered, follow, s.view, list(uids), b"",
                        _fingerprint(s.view))
    ctx.stats = _stats(ctx, s.view)
    contexts[cmd.tag] = ctx


def drop_all(s: IMAPSession) -> None:
    s.search_contexts.clear()


async def cancel_update(s: IMAPSession, cmd: Command) -> None:
    """``CANCELUPDATE "tag" *(SP "tag")`` (RFC 5267 section 4.2)."""
    args = cmd.args
    if not isinstance(args, CancelUpdateArgs):
        raise CommandFailed("BAD", "CANCELUPDATE needs the tags of the searches")
    unknown = [t for t in args.tags if t not in s.search_contexts]
    if unknown:
        raise CommandFailed("BAD", f"No search context for tag {unknown[0][:40]!r}")
    for tag in args.tags:
        del s.search_contexts[tag]
    await s.finish(cmd, "CANCELUPDATE completed")


async def refresh(s: IMAPSession) -> None:
    """Evaluate every context again if the mailbox changed since, and send the changes."""
    view = s.view
    if not s.search_contexts:
        return
    if view is None:
        drop_all(s)
        return
    for tag, ctx in list(s.search_contexts.items()):
        if ctx.view is not view:
            del s.search_contexts[tag]
            continue
        if ctx.seen == _fingerprint(view):
            continue
        try:
            new = await _results(s, ctx)
        except evaluator.SearchError:
            del s.search_contexts[tag]
            s.untagged(f"NO [NOUPDATE {string(tag).decode()}] The search can no longer "
                       "be evaluated")
            continue
        ctx.seen = _fingerprint(view)
        for line in _changes(ctx, view, new):
            s.raw(line)
        ctx.results = new


async def _results(s: IMAPSession, ctx: SearchContext) -> list[int]:
    assert s.view is not None
    view = s.view
    messages, numbers = await searching.matching(s, ctx.args)
    uids = [view.uids[n - 1] for n in numbers]
    if not ctx.ordered:
        return uids
    by_uid = {view.uids[n - 1]: messages[n - 1] for n in numbers}
    if not evaluator.uses_envelope(ctx.args.key):
        by_uid = await searching.with_envelopes(s, by_uid)
    return sorter.sort_messages([(u, by_uid[u]) for u in uids], ctx.args.sort)


def _shown(ctx: SearchContext, view: SelectedView, uids: Sequence[int]) -> list[int]:
    """UIDs as the client sees them: UIDs, or sequence numbers (those without one left out:
    the client drops an expunged message from its results when it applies the EXPUNGE)."""
    if ctx.uid:
        return list(uids)
    return [n for n in (view.seq_of(u) for u in uids) if n is not None]


def _stats(ctx: SearchContext, view: SelectedView) -> bytes:
    wanted = [r for r in ctx.returns if r != "ALL"]
    if not wanted:
        return b""
    line = extended.esearch(_shown(ctx, view, ctx.results), wanted, tag=None, uid=False,
                            ordered=ctx.ordered)
    return line[len(b"* ESEARCH") : -2]


def _changes(ctx: SearchContext, view: SelectedView, new: list[int]) -> list[bytes]:
    """The ESEARCH lines that take the client from ``ctx.results`` to ``new``."""
    head = b"* ESEARCH (TAG " + string(ctx.tag) + b")" + (b" UID" if ctx.uid else b"")
    out: list[bytes] = []
    if "ALL" in ctx.returns:
        removals, additions = update_items(
            _known(ctx, view, ctx.results), new, ordered=ctx.ordered,
            show=lambda uids: _shown(ctx, view, uids),
        )
        if removals:
            out.append(head + b" REMOVEFROM (" + removals + b")\r\n")
        if additions:
            out.append(head + b" ADDTO (" + additions + b")\r\n")
    old_stats = ctx.stats
    ctx.results = new
    ctx.stats = _stats(ctx, view)
    if ctx.stats != old_stats:
        out.append(head + ctx.stats + b"\r\n")
    return out


def _known(ctx: SearchContext, view: SelectedView, uids: list[int]) -> list[int]:
    """The old results the client still holds: with sequence numbers, an expunge already
    took its message out of them."""
    if ctx.uid:
        return uids
    return [u for u in uids if view.seq_of(u) is not None]


def update_items(
    old: Sequence[int], new: Sequence[int], *, ordered: bool, show: Show,
) -> tuple[bytes, bytes]:
    """The REMOVEFROM and ADDTO data (without parentheses) from ``old`` to ``new``.

    SEARCH results have no order, so the position is 0 (RFC 5267 section 4.3:
    "context-position may be 0 for SEARCH result additions"). For SORT each removal names
    its position in the old list, highest first, so that no removal shifts another; each
    addition names its position in the new list, lowest first, so that inserting them in
    turn builds the new list. ``show`` turns UIDs into what the client sees."""
    gone_set, old_set = set(new), set(old)
    removed = [u for u in old if u not in gone_set]
    added = [u for u in new if u not in old_set]
    if not ordered:
        rem = show(removed)
        add = show(added)
        return (
            b"0 " + sequence_set(rem).encode() if rem else b"",
            b"0 " + sequence_set(add).encode() if add else b"",
        )
    position = {u: i + 1 for i, u in enumerate(old)}
    rem_parts = [
        number(position[u]) + b" " + number(shown[0])
        for u in sorted(removed, key=position.__getitem__, reverse=True)
        if (shown := show([u]))
    ]
    add_parts = [
        number(i + 1) + b" " + number(shown[0])
        for i, u in enumerate(new)
        if u not in old_set and (shown := show([u]))
    ]
    return b" ".join(rem_parts), b" ".join(add_parts)

