"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 3) and the THREAD response.

Every walk over the trees is iterative: a hostile mailbox can hold reply chains thousands of
messages deep, which must not exhaust the interpreter's stack.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailstead.proto.imap.sort import Sortable, base_subject, casemap, load_envelope, sent_date

# RFC 5322 section 3.6.4: msg-id = "<" id-left "@" id-right ">"; comparisons are exact
# (RFC 5256 section 3: "Message ID comparisons are case-sensitive").
_MSG_ID = re.compile(r"<([^<>\s@]+@[^<>\s]+)>")

ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES"})


@dataclass(eq=False, slots=True)
class ThreadNode:
    """One message in a thread (``number`` is its sequence number or UID), or a dummy
    standing for a missing parent (``number`` None); children in display order."""

    number: int | None
    children: list[ThreadNode] = field(default_factory=list)
    parent: ThreadNode | None = field(default=None, repr=False)
    # (sent date, position in the input) of the message; the sort key of RFC 5256 2.2
    key: tuple[float, int] = (0.0, 0)
    subject: bytes = b""
    reply: bool = False


def _message_ids(value: Any) -> list[str]:
    return _MSG_ID.findall(value) if isinstance(value, str) else []


def _node_key(node: ThreadNode) -> tuple[float, int]:
    """A dummy sorts as its first child (RFC 5256 section 3, REFERENCES steps 5 and 7)."""
    while node.number is None and node.children:
        node = node.children[0]
    return node.key


def _leaves(items: Sequence[tuple[int, Sortable]]) -> list[ThreadNode]:
    nodes = []
    for position, (number, msg) in enumerate(items):
        env = load_envelope(msg.envelope)
        subject, reply = base_subject(env.get("subject"))
        nodes.append(ThreadNode(number, key=(sent_date(env, msg.internal_date), position),
                                subject=casemap(subject), reply=reply))
    return nodes


def ordered_subject(items: Sequence[tuple[int, Sortable]]) -> list[ThreadNode]:
    """RFC 5256 section 3, ORDEREDSUBJECT: messages sorted by base subject then sent date,
    one thread per base subject whose first message is the parent of all the others; threads
    ordered by the sent date of their first message."""
    nodes = sorted(_leaves(items), key=lambda n: (n.subject, n.key))
    threads: list[ThreadNode] = []
    for node in nodes:
        if threads and threads[-1].subject == node.subject:
            node.parent = threads[-1]
            threads[-1].children.append(node)
        else:
            threads.append(node)
    threads.sort(key=lambda n: n.key)
    return threads


def _is_ancestor(candidate: ThreadNode, node: ThreadNode) -> bool:
    """Whether ``candidate`` is ``node`` or one of its ancestors."""
    current: ThreadNode | None = node
    while current is not None:
        if current is candidate:
            return True
        current = current.parent
    return False


def _link(parent: ThreadNode, child: ThreadNode) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: ThreadNode) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def references(
    items: Sequence[tuple[int, Sortable]], refs: Mapping[int, str]
) -> list[ThreadNode]:
    """RFC 5256 section 3, REFERENCES. ``refs`` maps a message's UID to its References
    header (the envelope does not carry it); In-Reply-To comes from the envelope."""
    leaves = _leaves(items)
    table: dict[str, ThreadNode] = {}
    containers: list[ThreadNode] = []  # every node, in creation order

    def lookup(message_id: str) -> ThreadNode:
        node = table.get(message_id)
        if node is None:  # a dummy until (and unless) the message itself turns up
            node = table[message_id] = ThreadNode(None)
            containers.append(node)
        return node

    for leaf, (_, msg) in zip(leaves, items, strict=True):
        env = load_envelope(msg.envelope)
        own = _message_ids(env.get("message_id"))[:1]
        node: ThreadNode | None = None
        if own:
            existing = table.get(own[0])
            if existing is None:
                node = table[own[0]] = leaf
                containers.append(leaf)
            elif existing.number is None:  # fill the dummy created by an earlier reference
                existing.number, existing.key = leaf.number, leaf.key
                existing.subject, existing.reply = leaf.subject, leaf.reply
                node = existing
        if node is None:  # no Message-ID, or a duplicate: a unique id of its own (step 1.A)
            node = leaf
            containers.append(leaf)
        chain = _message_ids(refs.get(msg.uid))
        if not chain:  # no usable References: the first valid In-Reply-To id
            chain = _message_ids(env.get("in_reply_to"))[:1]
        # (1.A) link the references as parent/child, never replacing a parent nor looping
        for parent_id, child_id in itertools.pairwise(chain):
            parent, child = lookup(parent_id), lookup(child_id)
            if child.parent is None and not _is_ancestor(child, parent):
                _link(parent, child)
        # (1.B) the last reference is the parent of this message, replacing any earlier link
        _unlink(node)
        if chain:
            parent = lookup(chain[-1])
            if not _is_ancestor(node, parent):
                _link(parent, node)
    # (2) the root set; (3) the id table is no longer needed
    roots = [node for node in containers if node.parent is None]
    roots = _prune(roots)  # (4)
    for root in roots:  # (5) sort the top level; a dummy sorts by its first child
        if root.number is None:
            root.children.sort(key=_node_key)
    roots.sort(key=_node_key)
    roots = _merge_subjects(roots)  # (6)
    _sort_all(roots)  # (7)
    return roots


def _postorder(roots: list[ThreadNode]) -> list[ThreadNode]:
    order: list[ThreadNode] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()  # every node after all of its descendants
    return order


def _prune(roots: list[ThreadNode]) -> list[ThreadNode]:
    """Step 4: drop childless dummies; splice a dummy's children into its parent's list,
    except at the root where a dummy with more than one child stays."""
    for node in _postorder(roots):
        if not any(child.number is None for child in node.children):
            continue
        kept: list[ThreadNode] = []
        for child in node.children:
            if child.number is None:
                for grandchild in child.children:
                    grandchild.parent = node
                kept.extend(child.children)
            else:
                kept.append(child)
        node.children = kept
    top: list[ThreadNode] = []
    for root in roots:
        if root.number is None and len(root.children) <= 1:
            for child in root.children:
                child.parent = None
            top.extend(root.children)
        else:
            top.append(root)
    return top


def _thread_subject(node: ThreadNode) -> ThreadNode:
    return node.children[0] if node.number is None and node.children else node


def _merge_subjects(roots: list[ThreadNode]) -> list[ThreadNode]:
    """Step 6: gather top-level threads with the same base subject."""
    table: dict[bytes, ThreadNode] = {}
    for root in roots:  # (6.B) build the subject table
        subject = _thread_subject(root).subject
        if not subject:
            continue
        held = table.get(subject)
        if (
            held is None
            or (root.number is None and held.number is not None)
            or (held.number is not None and _thread_subject(held).reply
                and root.number is not None and not root.reply)
        ):
            table[subject] = root
    out: list[ThreadNode | None] = list(roots)
    index = {id(root): i for i, root in enumerate(roots)}
    for i, root in enumerate(roots):  # (6.C) merge
        subject = _thread_subject(root).subject
        held = table.get(subject) if subject else None
        if held is None or held is root:
            continue
        out[i] = None
        if held.number is None and root.number is None:
            for child in root.children:
                _link(held, child)
        elif held.number is None or (root.reply and not held.reply):
            _link(held, root)
        else:  # a new dummy holds both, in the table message's place
            dummy = ThreadNode(None)
            out[index[id(held)]] = dummy
            index[id(dummy)] = index[id(held)]
            _link(dummy, held)
            _link(dummy, root)
            table[subject] = dummy
    return [node for node in out if node is not None]


def _sort_all(roots: list[ThreadNode]) -> None:
    """Step 7: every set of siblings by sent date, the deepest first."""
    for node in _postorder(roots):
        node.children.sort(key=_node_key)
    roots.sort(key=_node_key)


def thread(
    algorithm: str, items: Sequence[tuple[int, Sortable]], refs: Mapping[int, str] | None = None
) -> list[ThreadNode]:
    """The threads of ``items`` (in sequence-number order) by ``algorithm``."""
    name = algorithm.upper()
    if name == "ORDEREDSUBJECT":
        return ordered_subject(items)
    if name == "REFERENCES":
        return references(items, refs or {})
    raise ValueError(f"unknown threading algorithm {algorithm!r}")


def render_threads(roots: Sequence[ThreadNode]) -> bytes:
    """The body of the THREAD response, ``(1 2)(3 (4 5)(6))`` (RFC 5256 section 4):
    a single child continues its parent's list, two or more children are nested lists."""
    out: list[bytes] = []
    stack: list[ThreadNode | bytes] = []
    for root in reversed(roots):
        stack += [b")", root, b"("]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        separator = b""
        if item.number is not None:
            out.append(b"%d" % item.number)
            separator = b" "
        if len(item.children) == 1:
            out.append(separator)
            stack.append(item.children[0])
        elif item.children:
            out.append(separator)
            for child in reversed(item.children):
                stack += [b")", child, b"("]
    return b"".join(out)


def thread_response(roots: Sequence[ThreadNode]) -> bytes:
    """``* THREAD ...`` CRLF; ``* THREAD`` alone when nothing matched."""
    body = render_threads(roots)
    return b"* THREAD " + body + b"\r\n" if body else b"* THREAD\r\n"
