"""SEARCH, SORT and THREAD, with their UID forms, ESEARCH (RFC 4731) and SEARCHRES (RFC 5182).

Evaluation is ``proto/imap/search.py`` over the store's snapshot, aligned with the
session's sequence numbers; full-text keys go to the store's index (``search_text``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailstead.imap.base import CommandFailed
from mailstead.proto.imap import esearch as extended
from mailstead.proto.imap import search as evaluator
from mailstead.proto.imap import sort as sorter
from mailstead.proto.imap import thread as threader
from mailstead.proto.imap.ast import Command, SearchArgs
from mailstead.storage.interfaces import MessageInfo

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

_REFERENCES = re.compile(rb"^references:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)", re.I | re.M)


def _placeholder(uid: int, flags: tuple[str, ...], modseq: int, mailbox_id: int) -> MessageInfo:
    """A message expunged by another session but still numbered in ours; it matches no
    search (filtered out afterwards) but keeps the numbering aligned."""
    return MessageInfo(0, mailbox_id, uid, modseq, flags, 0.0, 0, "", "{}", "{}")


async def matching(s: IMAPSession, args: SearchArgs) -> tuple[list[MessageInfo], list[int]]:
    """Every message of the view (placeholders for those expunged by others) and the
    sequence numbers that match ``args``; raises SearchError for a key that cannot be
    evaluated."""
    assert s.view is not None
    view = s.view
    store = s.ctx.store
    # Most keys need only flags, dates and sizes: the envelope JSON is read only when a key
    # looks into it, and SORT/THREAD read it below for the matches alone.
    stored = {m.uid: m for m in await store.get_messages(
        view.mailbox_id, None, envelope=evaluator.uses_envelope(args.key), bodystructure=False
    )}
    messages = [
        stored.get(uid) or _placeholder(uid, view.flags.get(uid, ()), 0, view.mailbox_id)
        for uid in view.uids
    ]
    texts: dict[tuple[str, str], set[int]] = {}
    for part, text in evaluator.text_queries(args.key):
        texts[(part, text)] = await store.search_text(view.mailbox_id, text, part=part)
    if evaluator.uses_modseq(args.key):
        s.enable_condstore()  # RFC 7162 section 3.1.5: MODSEQ is CONDSTORE-enabling
    numbers = evaluator.evaluate(
        args.key, messages, text_results=texts, recent=view.recent,
        saved=s.saved_search, largest_uid=view.uids[-1] if view.uids else 0,
    )
    return messages, [n for n in numbers if view.uids[n - 1] not in view.pending]


async def search(s: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    if not isinstance(args, SearchArgs):
        raise CommandFailed("BAD", f"{cmd.name} needs search criteria")
    assert s.view is not None
    view = s.view
    try:
        messages, numbers = await matching(s, args)
    except evaluator.SearchError as exc:
        s.saved_search = []  # RFC 5182 section 2.1: a failed search empties $
        raise CommandFailed("BAD", str(exc)) from None
    uids = [view.uids[n - 1] for n in numbers]
    shown = uids if cmd.uid else numbers
    by_number = dict(zip(shown, (messages[n - 1] for n in numbers), strict=True))
    if cmd.name in ("SORT", "THREAD") and not evaluator.uses_envelope(args.key):
        by_number = await with_envelopes(s, by_number)
    modseq = (
        evaluator.highest_modseq(messages, numbers) if evaluator.uses_modseq(args.key) else None
    )
    prefix = "UID " if cmd.uid else ""
    if cmd.name == "SORT":
        try:
            order = sorter.sort_messages([(n, by_number[n]) for n in shown], args.sort)
        except ValueError as exc:
            raise CommandFailed("BAD", str(exc)) from None
        if args.returns is None:
            s.untagged("SORT" + "".join(f" {n}" for n in order))
        else:
            # RFC 5267 section 3 (ESORT): SORT RETURN answers with ESEARCH in sort order.
            _esearch(s, cmd, order, modseq, ordered=True)
        await s.finish(cmd, f"{prefix}SORT completed")
        return
    if cmd.name == "THREAD":
        algorithm = (args.algorithm or "").upper()
        if algorithm not in threader.ALGORITHMS:
            raise CommandFailed("BAD", "Unsupported threading algorithm")
        items = [(n, by_number[n]) for n in shown]
        refs: dict[int, str] = {}
        if algorithm == "REFERENCES":
            refs = await _references(s, items)
        s.raw(threader.thread_response(threader.thread(algorithm, items, refs)))
        await s.finish(cmd, f"{prefix}THREAD completed")
        return
    if args.partial is not None or {"UPDATE", "CONTEXT"} & set(args.returns or ()):
        _esearch(s, cmd, shown, modseq, ordered=False)
        await s.finish(cmd, f"{prefix}SEARCH completed")
        return
    returns = args.returns
    if returns is not None and "SAVE" in (r.upper() for r in returns):
        s.saved_search = _saved(uids, [r.upper() for r in returns])
        returns = tuple(r for r in returns if r.upper() != "SAVE")
        if not returns:
            # RFC 5182 section 2.1: RETURN (SAVE) alone produces no ESEARCH response.
            await s.finish(cmd, f"{prefix}SEARCH completed, result saved")
            return
    if returns is None and not s.rev2:
        s.raw(evaluator.search_response(shown, modseq=modseq))
    else:
        # RFC 9051 section 6.4.4: IMAP4rev2 answers with ESEARCH (RFC 4731 section 3.1).
        # RFC 4731 section 3.2: MIN or MAX report the MODSEQ of the message they return.
        modseqs = [messages[n - 1].modseq for n in numbers] if modseq is not None else None
        s.raw(evaluator.esearch_response(
            shown, returns or (), tag=cmd.tag, uid=cmd.uid, modseqs=modseqs
        ))
    await s.finish(cmd, f"{prefix}SEARCH completed")


def _esearch(
    s: IMAPSession, cmd: Command, results: list[int], modseq: int | None, *, ordered: bool
) -> None:
    """The ESEARCH of SORT RETURN, of PARTIAL and of CONTEXT/UPDATE (``results`` in result
    order), after saving them for "$" if SAVE was asked (RFC 5182 section 2.1, RFC 5267
    sections 3 and 4); with UPDATE the search is then kept up to date."""
    from mailstead.imap import context_search  # it builds on this module

    args = cmd.args
    assert isinstance(args, SearchArgs)
    assert s.view is not None
    asked = [r.upper() for r in args.returns or ()]
    uids = results if cmd.uid else [s.view.uids[n - 1] for n in results]
    if "SAVE" in asked:
        s.saved_search = _saved(sorted(uids), asked)
    # RFC 5267 section 4.1: CONTEXT and UPDATE are not results; alone they mean ALL.
    returns = list(context_search.result_options(asked))
    if "PARTIAL" in asked:
        returns.append("PARTIAL")
    if asked == ["SAVE"]:
        return  # RFC 5182 section 2.1: RETURN (SAVE) alone gives no ESEARCH
    s.raw(extended.esearch(
        results, returns, tag=cmd.tag, uid=cmd.uid, ordered=ordered, partial=args.partial,
        modseq=modseq,
    ))
    if "UPDATE" in asked:
        context_search.start(s, cmd, uids, ordered=ordered)


async def with_envelopes(
    s: IMAPSession, by_number: dict[int, MessageInfo]
) -> dict[int, MessageInfo]:
    """The matched messages again, with their envelopes (SORT and THREAD keys read them)."""
    assert s.view is not None
    full = {m.uid: m for m in await s.ctx.store.get_messages(
        s.view.mailbox_id, [m.uid for m in by_number.values()], bodystructure=False
    )}
    return {n: full.get(m.uid, m) for n, m in by_number.items()}


def _saved(uids: list[int], returns: list[str]) -> list[int]:
    """RFC 5182 section 2.1: with MIN or MAX (and neither ALL nor COUNT) only those are
    saved."""
    if not uids or "ALL" in returns or "COUNT" in returns:
        return uids
    picked = set()
    if "MIN" in returns:
        picked.add(min(uids))
    if "MAX" in returns:
        picked.add(max(uids))
    return sorted(picked) if picked else uids


async def _references(
    s: IMAPSession, items: list[tuple[int, MessageInfo]]
) -> dict[int, str]:
    """The References header of each message (RFC 5256 section 3, step 1), which the stored
    envelope does not keep: read from the header of each body."""
    out: dict[int, str] = {}
    for done, (_number, msg) in enumerate(items):
        s.progress.update(done, len(items))  # RFC 9585: reading every header takes a while
        if not msg.blob:
            continue
        data = await s.ctx.store.read_blob(msg.blob)
        end = data.find(b"\r\n\r\n")
        header = data if end < 0 else data[:end]
        match = _REFERENCES.search(header)
        if match:
            out[msg.uid] = match.group(1).decode("utf-8", "replace")
    return out
