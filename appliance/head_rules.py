"""Who may change what in a channel head, judged change by change on a document's history:
each change against the head as it stood just before it (its dependencies), so what a change
does is exactly what it wrote. Pure: documents in, a refusal (or None) out.

- A channel is created once, by one change that makes its creator its only member, a channel
  admin; a second creation of the same channel id is refused.
- A direct conversation's head is written only by its participants, only with the values its
  id was derived from (any number of identical first changes), and never changes after.
- Any other change is by a channel admin of the head before it, or by a workspace admin; a
  member may only remove themselves (leave). Nobody changes a channel's kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from automerge._automerge import Document

from appliance import direct, documents
from appliance.changes import VerifiedChange
from appliance.graph import ancestors

DIRECT_KEYS = frozenset({"name", "kind", "participants"})


@dataclass(frozen=True)
class HeadEdit:
    """One change to a head: the head before and after it, what it wrote ("name",
    "members/<user hex>", ...), and - read only when needed - the head as the changes
    concurrent with it leave it (every change but it and those that saw it)."""

    change: VerifiedChange
    before: documents.ChannelHead | None
    after: documents.ChannelHead | None
    before_state: dict[str, tuple[object, bytes]]
    after_state: dict[str, tuple[object, bytes]]
    touched: frozenset[str]
    beside_of: Callable[[], documents.ChannelHead | None]

    @property
    def author_hex(self) -> str:
        return self.change.header.author.hex()

    @property
    def only_leaves(self) -> bool:
        """The change only takes its author out of the members."""
        return self.touched == {f"members/{self.author_hex}"} and self.after is not None and self.author_hex not in self.after.members


def head_edits(channel_id: str, trial: Document, verified: Sequence[VerifiedChange], actor: bytes) -> list[HeadEdit]:
    """Each of `verified` (in the order given, causal) with what it did, read from `trial`: the
    head document with them applied. A change that builds on the one before it (the usual,
    linear history) costs one applied change, not a load of the document."""
    history = trial.get_changes([])
    graph = {change.hash: b"".join(change.deps) for change in history}
    raw = {change.hash: change.raw_bytes for change in history}
    order = [change.hash for change in history]
    children: dict[bytes, list[bytes]] = {}
    for logged in history:
        for dep in logged.deps:
            children.setdefault(dep, []).append(logged.hash)

    def load(hashes: set[bytes]) -> Document:
        data = b"".join(raw[h] for h in order if h in hashes)
        return documents.load_document(data, actor) if data else documents.new_document(actor)

    def seen_by(start: bytes) -> set[bytes]:
        found, stack = set(), [start]
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(children.get(current, ()))
        return found

    edits = []
    last: tuple[set[bytes], Document] | None = None
    for change in verified:
        change_hash = change.header.hash
        past = ancestors(graph, list(change.header.deps))
        before = last[1] if last is not None and last[0] == past else load(past)
        after = before.fork()
        documents.apply_changes(after, [raw[change_hash]])
        last = (past | {change_hash}, after)
        before_head = documents.read_head(before, channel_id)
        concurrent = set(order) - seen_by(change_hash) - past

        def beside_of(past: set[bytes] = past, concurrent: set[bytes] = concurrent, before_head: documents.ChannelHead | None = before_head) -> documents.ChannelHead | None:
            return documents.read_head(load(past | concurrent), channel_id) if concurrent else before_head

        before_state, after_state = documents.head_state(before), documents.head_state(after)
        touched = frozenset(key for key in before_state.keys() | after_state.keys() if before_state.get(key) != after_state.get(key))
        edits.append(HeadEdit(change, before_head, documents.read_head(after, channel_id), before_state, after_state, touched, beside_of))
    return edits


def creations(trial: Document) -> int:
    """How many changes of a head document depend on nothing: each is a creation."""
    return sum(1 for change in trial.get_changes([]) if not change.deps)


def _what(touched: frozenset[str]) -> str:
    names = sorted({"members" if key.startswith("members") else key for key in touched})
    return ", ".join(names)


def refusal(channel_id: str, edit: HeadEdit, workspace_admin: Callable[[bytes], bool], name_of: Callable[[bytes], str], created: int) -> str | None:
    """Why `edit` may not stand, or None. `created`: how many creations the head document has."""
    author = edit.change.header.author
    who = name_of(author)
    before, after = edit.before, edit.after
    if not edit.touched:
        return None
    if after is None:
        return f"{who} wrote a head without a channel in it"
    if after.kind == documents.ChannelKind.DIRECT or (before is not None and before.kind == documents.ChannelKind.DIRECT):
        participants = edit.after_state.get("participants", ("", b""))[0]
        if after.kind != documents.ChannelKind.DIRECT or not isinstance(participants, str) or not direct.matches(channel_id, participants):
            return f"{who} wrote a direct conversation whose participants are not those of its id"
        if not edit.touched <= DIRECT_KEYS or after.name != "" or author.hex() not in after.members:
            return f"{who} changed a direct conversation they are not a participant of, or beyond its participants"
        if before is not None and (before.members != after.members or before.name != after.name):
            return f"{who} changed a direct conversation's participants"
        return None
    if before is None:
        if created > 1:
            return f"{who} created channel #{after.name} a second time"
        if after.created_by != author.hex() or set(after.members) != {author.hex()} or not after.is_channel_admin(author.hex()):
            return f"{who} created #{after.name} with someone else as its creator or members"
        return None
    if "requires" in edit.touched and after.requires == documents.UNSATISFIABLE:
        return f"{who} wrote a malformed attribute requirement for #{after.name}"
    if before.kind != after.kind:
        return f"{who} tried to change #{before.name} from {before.kind} to {after.kind}: a channel's kind never changes"
    if workspace_admin(author) or before.is_channel_admin(author.hex()) or edit.only_leaves:
        return None
    return f"{who} is not a channel admin of #{before.name} and cannot change its {_what(edit.touched)}"


def still_admin(edit: HeadEdit, workspace_admin: Callable[[bytes], bool]) -> bool:
    """Whether the author of an admin's change is still one once the changes concurrent with
    it are counted (the head as the import leaves it, but for the changes made after seeing
    this one): a concurrent demotion, arriving first or with it, outranks the demoted admin's
    changes, as a revocation does; a demotion made after seeing them leaves them standing.
    Creations, leaving and direct conversations need no role."""
    author = edit.change.header.author
    if edit.before is None or not edit.touched or edit.only_leaves or edit.before.kind == documents.ChannelKind.DIRECT:
        return True
    if workspace_admin(author):
        return True
    beside = edit.beside_of()
    return beside is not None and beside.is_channel_admin(author.hex())
