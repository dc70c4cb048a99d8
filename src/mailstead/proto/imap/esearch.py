"""ESEARCH responses that the plain RFC 4731 renderer does not make: SORT RETURN (ESORT,
RFC 5267 section 3), the PARTIAL result (RFC 9394 section 3.1) and the ADDTO/REMOVEFROM
updates of CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4.3)."""

from __future__ import annotations

from collections.abc import Sequence

from mailstead.proto.imap.response import number, sequence_set, string


def partial_slice(results: Sequence[int], first: int, last: int) -> list[int]:
    """The results at the 1-based positions ``first:last`` (either order); negative positions
    count from the end, -1 being the last (RFC 9394 section 3.1)."""
    low, high = sorted((abs(first), abs(last)))
    size = len(results)
    if first > 0:
        return list(results[low - 1 : high])
    start = max(size - high, 0)
    stop = size - low + 1
    return list(results[start:stop]) if stop > 0 else []


def _set(numbers: Sequence[int], ordered: bool) -> bytes:
    # RFC 5267 section 3: a SORT result keeps its order, so only ascending runs merge.
    return sequence_set(numbers, sort=not ordered).encode("ascii")


def _head(tag: str | None, uid: bool) -> bytes:
    out = b"* ESEARCH"
    if tag is not None:
        out += b" (TAG " + string(tag) + b")"
    return out + (b" UID" if uid else b"")


def esearch(
    results: Sequence[int],
    returns: Sequence[str],
    *,
    tag: str | None,
    uid: bool,
    ordered: bool = False,
    partial: tuple[int, int] | None = None,
    modseq: int | None = None,
) -> bytes:
    """``* ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set PARTIAL (r set)`` CRLF.

    ``results`` are in result order: ascending for SEARCH, the sort order for SORT
    (``ordered``), where MIN and MAX are the first and the last sorted message (RFC 5267
    section 3). Options come in the order asked; with no match MIN, MAX and ALL are left
    out, COUNT is 0 and PARTIAL gives NIL (RFC 9394 section 3.1).
    """
    asked = [r.upper() for r in returns] or ["ALL"]
    out = _head(tag, uid)
    if not ordered:
        results = sorted(set(results))
    for option in dict.fromkeys(asked):
        if option == "COUNT":
            out += b" COUNT " + number(len(results))
        elif option == "PARTIAL" and partial is not None:
            first, last = partial
            page = partial_slice(results, first, last)
            out += b" PARTIAL (%d:%d " % (first, last)
            out += (_set(page, ordered) if page else b"NIL") + b")"
        elif not results:
            continue
        elif option == "MIN":
            out += b" MIN " + number(results[0])
        elif option == "MAX":
            out += b" MAX " + number(results[-1])
        elif option == "ALL":
            out += b" ALL " + _set(results, ordered)
    if modseq is not None and results:  # RFC 7162 section 3.1.5
        out += b" MODSEQ " + number(modseq)
    return out + b"\r\n"
