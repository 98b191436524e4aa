"""Channels, segments and the directory as Automerge documents.

Shapes (every shared container sits at a document's root, or is created inside a map that
only its author creates, in the same change - so concurrent first writes never collide):

    directory: {"cert:<fingerprint>": cbor bytes, "rev:<fingerprint>": cbor bytes,
                "terms:<fingerprint>": cbor bytes, "accept:<fingerprint>": cbor bytes}
    head:      {name, purpose, kind, created_by, created_at, archived, read_only,
                members: {user_hex: role}}            # made whole by the creator's first change
    dm head:   {name: "", kind: "direct", participants: "hex,hex,..."}   # scalars only: two
                participants may write it concurrently, the values are the same (no container)
    segment:   messages, each a root key or a few (appliance/segments.py, both formats)

A segment document holds at most `segment_size` messages as seen by the node that posts;
two nodes that roll over to the same next segment concurrently only add distinct root keys."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from automerge import core
from automerge._automerge import Document, Message, SyncState

from appliance import policy
from appliance.changes import ACTOR_BYTES, AUTHOR_KEY_BYTES, uleb128
from appliance.errors import ApplianceError, InvalidInput

ROOT = core.ROOT
Str, Int, Bool, Bytes, Null = (
    core.ScalarType.Str,
    core.ScalarType.Int,
    core.ScalarType.Boolean,
    core.ScalarType.Bytes,
    core.ScalarType.Null,
)
MapType, ListType = core.ObjType.Map, core.ObjType.List

DIRECTORY_DOC = "directory"


class DocumentKind(StrEnum):
    """The three shapes of document, as a document id says and the store's `documents.kind` holds."""

    DIRECTORY = "directory"
    HEAD = "head"
    SEGMENT = "segment"


class ChannelKind(StrEnum):
    """Who may read a channel: every user, its members, or the participants of a direct
    conversation (whose id is derived from them, appliance/direct.py)."""

    PUBLIC = "public"
    PRIVATE = "private"
    DIRECT = "direct"


class ChannelRole(StrEnum):
    """A user's place in a channel's member map. OWNER is what heads written before channel
    roles say of their creator: it reads as a channel admin, and is shown as one."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    REMOVED = "removed"  # a former member: kept so the head still reaches their node (they learn they left)


CHANNEL_ADMIN_ROLES = frozenset({ChannelRole.OWNER.value, ChannelRole.ADMIN.value})


def is_channel_admin_role(role: str | None) -> bool:
    return role in CHANNEL_ADMIN_ROLES


class DocumentRef(NamedTuple):
    """What a document id names. A named tuple: callers still unpack it as the triple it was."""

    kind: DocumentKind
    channel_id: str  # "" for the directory
    segment: int  # the segment's index; 0 for the directory and heads


class DocumentError(ApplianceError):
    """Automerge refused to load or apply something (its errors are plain Exception)."""


HEAD_SUFFIX = "/head"  # how every channel head's document id ends


def head_doc_id(channel_id: str) -> str:
    return f"{channel_id}{HEAD_SUFFIX}"


def segment_doc_id(channel_id: str, index: int) -> str:
    return f"{channel_id}/seg/{index:06d}"


_CHANNEL_ID = re.compile(r"[0-9a-f]{20}")  # 10 random bytes, as Node.create_channel makes them
_SEGMENT_INDEX = re.compile(r"[0-9]{6,9}")


def parse_doc_id(doc_id: str) -> DocumentRef:
    if doc_id == DIRECTORY_DOC:
        return DocumentRef(DocumentKind.DIRECTORY, "", 0)
    parts = doc_id.split("/")
    if len(parts) in (2, 3) and _CHANNEL_ID.fullmatch(parts[0]):
        if len(parts) == 2 and parts[1] == "head":
            return DocumentRef(DocumentKind.HEAD, parts[0], 0)
        if len(parts) == 3 and parts[1] == "seg" and _SEGMENT_INDEX.fullmatch(parts[2]):
            return DocumentRef(DocumentKind.SEGMENT, parts[0], int(parts[2]))
    raise DocumentError(f"unknown document id {doc_id[:80]!r}")


def new_document(actor: bytes) -> Document:
    return Document(actor_id=actor)


@contextmanager
def binding_errors(what: str) -> Iterator[None]:
    """Turns what the Automerge binding raises on bad bytes into DocumentError. Its errors are
    plain Exception, but on some crafted input it panics: `pyo3_runtime.PanicException`, a
    BaseException that `except Exception` misses and that would end the node. Only the
    binding's panics are caught beside Exception: KeyboardInterrupt, SystemExit, GeneratorExit
    and CancelledError pass through."""
    try:
        yield
    except Exception as exc:
        raise DocumentError(f"{what}: {exc}") from exc
    except BaseException as exc:
        if type(exc).__module__ != "pyo3_runtime":
            raise
        raise DocumentError(f"{what}: the Automerge library failed on these bytes ({exc})") from exc


_ROOT_PUT = re.compile(r'Patch \{ obj: Root, path: \[\], action: (?:PutMap|DeleteMap) \{ key: "((?:[^"\\]|\\.)*)"')


def root_keys_changed(doc: Document, before: Sequence[bytes], after: Sequence[bytes]) -> set[str] | None:
    """The root keys whose value differs between two states of `doc` (its heads then), from
    Automerge's diff; None when a change lies below the root (a format-1 segment's nested
    message objects) or is of a kind read here as unknown: then every key counts as changed.
    The binding shows patches only as their debug text, which the pinned version fixes."""
    with binding_errors("cannot compare two states of a document"):
        patches = doc.diff(list(before), list(after))
    keys: set[str] = set()
    for patch in patches:
        match = _ROOT_PUT.match(repr(patch))
        if match is None:
            return None
        keys.add(match.group(1))
    return keys


def fork_at(doc: Document, heads: Sequence[bytes]) -> Document:
    """A new document holding exactly the changes of `doc` up to `heads` (the binding has the
    method; its type stub lists only `fork`, which takes no heads)."""
    with binding_errors("cannot fork a document at earlier heads"):
        forked: Document = doc.fork_at(list(heads))  # type: ignore[attr-defined]
    return forked


def load_document(data: bytes, actor: bytes) -> Document:
    """`data` is a saved document, changes, or both concatenated."""
    with binding_errors("cannot load document"):
        doc = Document.load(data)
    doc.set_actor(actor)
    return doc


def apply_changes(doc: Document, changes: list[bytes]) -> None:
    """Applies changes incrementally. The bindings have no apply_changes, so the changes are
    wrapped in a sync-protocol message (type 0x42; no heads, needs or haves)."""
    if not changes:
        return
    message = bytearray(b"\x42")
    message += uleb128(0) + uleb128(0) + uleb128(0) + uleb128(len(changes))
    for change in changes:
        message += uleb128(len(change)) + change
    with binding_errors("cannot apply changes"):
        doc.receive_sync_message(SyncState(), Message.decode(bytes(message)))


def op_author(exid: bytes) -> bytes | None:
    """Author key of the op that wrote a value: exids are tag, actor length, actor, ..."""
    if len(exid) < 2 + ACTOR_BYTES or exid[1] != ACTOR_BYTES:
        return None
    return exid[2 : 2 + AUTHOR_KEY_BYTES]


def _scalar(doc: Document, obj: bytes, prop: str | int) -> tuple[Any, bytes | None]:
    got = doc.get(obj, prop)
    if got is None or isinstance(got[0], core.ObjType):
        return None, None
    return got[0][1], op_author(got[1])


def child(doc: Document, obj: bytes, prop: str | int) -> bytes | None:
    got = doc.get(obj, prop)
    if got is None or not isinstance(got[0], core.ObjType):
        return None
    return got[1]


# --- directory -------------------------------------------------------------------------


class DirectoryEntry(NamedTuple):
    """One certificate or revocation as the directory document holds it. A named tuple:
    callers still unpack it as the pair it was."""

    key: str  # "cert:<fingerprint>", "rev:<fingerprint>", "terms:<fingerprint>" or "accept:<fingerprint>"
    data: bytes  # its CBOR encoding


CERTIFICATE_PREFIXES = ("cert:", "rev:")
RECORD_PREFIXES = ("cert:", "rev:", "terms:", "accept:")  # with the terms and their acceptances


def directory_entries(doc: Document, prefixes: tuple[str, ...] = CERTIFICATE_PREFIXES) -> list[DirectoryEntry]:
    """The directory's entries whose keys start with one of `prefixes` (by default its
    certificates and revocations)."""
    out = []
    for key in doc.keys(ROOT):
        value, _ = _scalar(doc, ROOT, key)
        if isinstance(value, bytes) and key.startswith(prefixes):
            out.append(DirectoryEntry(key, value))
    return out


def root_values(doc: Document) -> dict[str, object]:
    """Every root key of a document with its value: a scalar's value, or for a container the
    container's type and id (two containers never compare equal unless they are one)."""
    values: dict[str, object] = {}
    for key in doc.keys(ROOT):
        got = doc.get(ROOT, key)
        if got is not None:
            values[key] = (got[0], got[1]) if isinstance(got[0], core.ObjType) else got[0]
    return values


# --- channel head ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelHead:
    channel_id: str
    name: str
    purpose: str
    kind: ChannelKind
    created_by: str
    created_at: int
    archived: bool
    members: dict[str, str] = field(default_factory=dict)  # user hex -> a ChannelRole as the document spells it
    read_only: bool = False  # announcements: only channel admins post
    former: tuple[str, ...] = ()  # users removed from it (or who left): its head still goes to their nodes
    requires: policy.Attributes = ()  # attributes a user needs to be in it, read it, or have it routed to their node

    def is_channel_admin(self, user_hex: str) -> bool:
        """A channel admin (its creator by default; "owner" in older heads). Never in a direct conversation."""
        return self.kind != ChannelKind.DIRECT and is_channel_admin_role(self.members.get(user_hex))

    @property
    def admins(self) -> tuple[str, ...]:
        return tuple(sorted(user for user, role in self.members.items() if is_channel_admin_role(role)))


def create_head(doc: Document, *, name: str, purpose: str, kind: ChannelKind, created_by: str, created_at: int) -> None:
    with doc.transaction() as tx:
        tx.put(ROOT, "name", Str, name)
        tx.put(ROOT, "purpose", Str, purpose)
        tx.put(ROOT, "kind", Str, str(kind))
        tx.put(ROOT, "created_by", Str, created_by)
        tx.put(ROOT, "created_at", Int, created_at)
        tx.put(ROOT, "archived", Bool, False)
        tx.put(ROOT, "read_only", Bool, False)
        members = tx.put_object(ROOT, "members", MapType)
        tx.put(members, created_by, Str, str(ChannelRole.OWNER))  # "owner": what older nodes know as channel admin


def create_direct_head(doc: Document, participants: str) -> None:
    """A direct conversation's head: root scalars only, the same values whichever participant
    writes them first (`participants`: their sorted key hexes joined by commas)."""
    with doc.transaction() as tx:
        tx.put(ROOT, "name", Str, "")
        tx.put(ROOT, "kind", Str, str(ChannelKind.DIRECT))
        tx.put(ROOT, "participants", Str, participants)


class HeadField(StrEnum):
    """The root scalars of a channel head a channel admin may set."""

    NAME = "name"
    PURPOSE = "purpose"
    ARCHIVED = "archived"
    READ_ONLY = "read_only"
    REQUIRES = "requires"  # the attributes a user needs to be in it or read it (appliance/policy.py)


UNSATISFIABLE: policy.Attributes = (("-", "-"),)  # what a head's malformed requirement reads as: nobody qualifies


def set_head_field(doc: Document, head_field: HeadField, value: str | bool) -> None:
    with doc.transaction() as tx:
        if isinstance(value, bool):
            tx.put(ROOT, str(head_field), Bool, value)
        else:
            tx.put(ROOT, str(head_field), Str, value)


def set_member(doc: Document, user_hex: str, role: ChannelRole | None) -> None:
    members = child(doc, ROOT, "members")
    if members is None:
        raise DocumentError("channel head has no member map")
    with doc.transaction() as tx:
        if role is None:
            tx.delete(members, user_hex)
        else:
            tx.put(members, user_hex, Str, str(role))


def read_head(doc: Document, channel_id: str) -> ChannelHead | None:
    name, _ = _scalar(doc, ROOT, "name")
    if not isinstance(name, str):
        return None
    members: dict[str, str] = {}
    former: list[str] = []
    members_obj = child(doc, ROOT, "members")
    if members_obj is not None:
        for key in doc.keys(members_obj):
            role, _ = _scalar(doc, members_obj, key)
            if role == ChannelRole.REMOVED:
                former.append(key)
            elif isinstance(role, str):
                members[key] = role
    purpose, _ = _scalar(doc, ROOT, "purpose")
    kind, _ = _scalar(doc, ROOT, "kind")
    created_by, _ = _scalar(doc, ROOT, "created_by")
    created_at, _ = _scalar(doc, ROOT, "created_at")
    archived, _ = _scalar(doc, ROOT, "archived")
    read_only, _ = _scalar(doc, ROOT, "read_only")
    requires, _ = _scalar(doc, ROOT, "requires")
    try:
        required = policy.decode(requires) if isinstance(requires, str) else () if requires is None else UNSATISFIABLE
    except InvalidInput:
        required = UNSATISFIABLE
    if kind == ChannelKind.DIRECT:
        participants, _ = _scalar(doc, ROOT, "participants")
        listed = participants.split(",") if isinstance(participants, str) and participants else []
        return ChannelHead(channel_id, name, "", ChannelKind.DIRECT, "", 0, False, {user: str(ChannelRole.MEMBER) for user in listed})
    return ChannelHead(
        channel_id=channel_id,
        name=name,
        purpose=purpose if isinstance(purpose, str) else "",
        kind=ChannelKind(kind) if kind in tuple(ChannelKind) else ChannelKind.PRIVATE,
        created_by=created_by if isinstance(created_by, str) else "",
        created_at=created_at if isinstance(created_at, int) else 0,
        archived=archived is True,
        members=members,
        read_only=read_only is True,
        former=tuple(sorted(former)),
        requires=required,
    )


def op_id(exid: bytes) -> bytes:
    """An op's identity as every copy of a document spells it: an exid is tag, actor length,
    actor, the actor's index in this copy's actor table (which depends on the actors it holds),
    counter - the index is left out."""
    if len(exid) < 2 or exid[1] >= 0x80:
        return exid
    at = 2 + exid[1]
    while at < len(exid) and exid[at] & 0x80:  # the index, a ULEB128
        at += 1
    return exid[: 2 + exid[1]] + exid[at + 1 :]


def head_state(doc: Document) -> dict[str, tuple[Any, bytes]]:
    """Every value of a head that a change can set, with the op that set it (root keys, and
    "members/<user>" for the member map's entries): two versions of a head differ here exactly
    where a change between them wrote (Automerge makes no op for a put of the value already there).
    Ops are named by `op_id`: two copies of a document number their actors differently."""
    state: dict[str, tuple[Any, bytes]] = {}
    for key in doc.keys(ROOT):
        got = doc.get(ROOT, key)
        if got is not None:
            state[key] = (got[0] if isinstance(got[0], core.ObjType) else got[0][1], op_id(got[1]))
    members_obj = child(doc, ROOT, "members")
    if members_obj is not None:
        for key in doc.keys(members_obj):
            got = doc.get(members_obj, key)
            if got is not None:
                state[f"members/{key}"] = (got[0] if isinstance(got[0], core.ObjType) else got[0][1], op_id(got[1]))
    return state
