"""Channels, segments and the directory as Automerge documents.

Shapes (every shared container sits at a document's root, or is created inside a map that
only its author creates, in the same change - so concurrent first writes never collide):

    directory: {"cert:<fingerprint>": cbor bytes, "rev:<fingerprint>": cbor bytes}
    head:      {name, purpose, kind, created_by, created_at, archived,
                members: {user_hex: role}}            # made whole by the creator's first change
    segment:   {message_id: {author, created_at, text, root_id, edited_at, deleted,
                             reactions: {"<emoji> <user_hex>": bool},
                             files: [{name, size, hash}], mentions: [user_hex]}}

A segment document holds at most `segment_size` messages as seen by the node that posts;
two nodes that roll over to the same next segment concurrently only add distinct root keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from automerge import core
from automerge._automerge import Document, Message, SyncState

from appliance.changes import ACTOR_BYTES, AUTHOR_KEY_BYTES, uleb128
from appliance.errors import ApplianceError

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
    """Who may read a channel: every user, or its members (and admins)."""

    PUBLIC = "public"
    PRIVATE = "private"


class ChannelRole(StrEnum):
    """A user's place in a channel's member map."""

    OWNER = "owner"  # its creator: may add members
    MEMBER = "member"


class DocumentRef(NamedTuple):
    """What a document id names. A named tuple: callers still unpack it as the triple it was."""

    kind: DocumentKind
    channel_id: str  # "" for the directory
    segment: int  # the segment's index; 0 for the directory and heads


class DocumentError(ApplianceError):
    """Automerge refused to load or apply something (its errors are plain Exception)."""


def head_doc_id(channel_id: str) -> str:
    return f"{channel_id}/head"


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


def _op_author(exid: bytes) -> bytes | None:
    """Author key of the op that wrote a value: exids are tag, actor length, actor, ..."""
    if len(exid) < 2 + ACTOR_BYTES or exid[1] != ACTOR_BYTES:
        return None
    return exid[2 : 2 + AUTHOR_KEY_BYTES]


def _scalar(doc: Document, obj: bytes, prop: str | int) -> tuple[Any, bytes | None]:
    got = doc.get(obj, prop)
    if got is None or isinstance(got[0], core.ObjType):
        return None, None
    return got[0][1], _op_author(got[1])


def _child(doc: Document, obj: bytes, prop: str | int) -> bytes | None:
    got = doc.get(obj, prop)
    if got is None or not isinstance(got[0], core.ObjType):
        return None
    return got[1]


# --- directory -------------------------------------------------------------------------


class DirectoryEntry(NamedTuple):
    """One certificate or revocation as the directory document holds it. A named tuple:
    callers still unpack it as the pair it was."""

    key: str  # "cert:<fingerprint>" or "rev:<fingerprint>"
    data: bytes  # its CBOR encoding


def directory_entries(doc: Document) -> list[DirectoryEntry]:
    out = []
    for key in doc.keys(ROOT):
        value, _ = _scalar(doc, ROOT, key)
        if isinstance(value, bytes) and key.startswith(("cert:", "rev:")):
            out.append(DirectoryEntry(key, value))
    return out


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


def create_head(doc: Document, *, name: str, purpose: str, kind: ChannelKind, created_by: str, created_at: int) -> None:
    with doc.transaction() as tx:
        tx.put(ROOT, "name", Str, name)
        tx.put(ROOT, "purpose", Str, purpose)
        tx.put(ROOT, "kind", Str, str(kind))
        tx.put(ROOT, "created_by", Str, created_by)
        tx.put(ROOT, "created_at", Int, created_at)
        tx.put(ROOT, "archived", Bool, False)
        members = tx.put_object(ROOT, "members", MapType)
        tx.put(members, created_by, Str, str(ChannelRole.OWNER))


def set_member(doc: Document, user_hex: str, role: ChannelRole | None) -> None:
    members = _child(doc, ROOT, "members")
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
    members_obj = _child(doc, ROOT, "members")
    if members_obj is not None:
        for key in doc.keys(members_obj):
            role, _ = _scalar(doc, members_obj, key)
            if isinstance(role, str):
                members[key] = role
    purpose, _ = _scalar(doc, ROOT, "purpose")
    kind, _ = _scalar(doc, ROOT, "kind")
    created_by, _ = _scalar(doc, ROOT, "created_by")
    created_at, _ = _scalar(doc, ROOT, "created_at")
    archived, _ = _scalar(doc, ROOT, "archived")
    return ChannelHead(
        channel_id=channel_id,
        name=name,
        purpose=purpose if isinstance(purpose, str) else "",
        kind=ChannelKind(kind) if kind in tuple(ChannelKind) else ChannelKind.PRIVATE,
        created_by=created_by if isinstance(created_by, str) else "",
        created_at=created_at if isinstance(created_at, int) else 0,
        archived=archived is True,
        members=members,
    )


# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    name: str
    size: int
    hash: str  # hex SHA-256 of the blob


@dataclass(frozen=True)
class MessageState:
    """A message as its segment document says, with authorship checked op by op."""

    message_id: str
    author: str  # user hex
    created_at: int
    text: str
    root_id: str | None
    edited_at: int | None
    deleted: bool
    reactions: dict[str, tuple[str, ...]]  # emoji -> user hexes, sorted
    files: tuple[FileRef, ...]
    mentions: tuple[str, ...]
    tampered: bool  # a field the author alone may write was written by someone else
    deleted_by: str | None = None  # who set the delete flag, when not the author: counts only while an admin


def _write_list(tx: Any, obj: bytes, values: list[Any]) -> None:
    for index, value in enumerate(values):
        if isinstance(value, FileRef):
            entry = tx.insert_object(obj, index, MapType)
            tx.put(entry, "name", Str, value.name)
            tx.put(entry, "size", Int, value.size)
            tx.put(entry, "hash", Str, value.hash)
        else:
            tx.insert(obj, index, Str, value)


def post_message(
    doc: Document,
    *,
    message_id: str,
    author: str,
    created_at: int,
    text: str,
    root_id: str | None,
    files: list[FileRef],
    mentions: list[str],
) -> None:
    with doc.transaction() as tx:
        msg = tx.put_object(ROOT, message_id, MapType)
        tx.put(msg, "author", Str, author)
        tx.put(msg, "created_at", Int, created_at)
        tx.put(msg, "text", Str, text)
        if root_id is None:
            tx.put(msg, "root_id", Null, None)
        else:
            tx.put(msg, "root_id", Str, root_id)
        tx.put(msg, "edited_at", Null, None)
        tx.put(msg, "deleted", Bool, False)
        tx.put_object(msg, "reactions", MapType)
        _write_list(tx, tx.put_object(msg, "files", ListType), list(files))
        _write_list(tx, tx.put_object(msg, "mentions", ListType), list(mentions))


def _message_obj(doc: Document, message_id: str) -> bytes:
    obj = _child(doc, ROOT, message_id)
    if obj is None:
        raise DocumentError(f"message {message_id} is not in this segment")
    return obj


def edit_message(doc: Document, message_id: str, text: str, edited_at: int, mentions: list[str]) -> None:
    msg = _message_obj(doc, message_id)
    mentions_obj = _child(doc, msg, "mentions")
    with doc.transaction() as tx:
        tx.put(msg, "text", Str, text)
        tx.put(msg, "edited_at", Int, edited_at)
        if mentions_obj is not None:
            for _ in range(tx.length(mentions_obj)):
                tx.delete(mentions_obj, 0)
            _write_list(tx, mentions_obj, mentions)


def delete_message(doc: Document, message_id: str, deleted_at: int) -> None:
    """A tombstone: the flag can only ever go to true, and the text is cleared with it."""
    msg = _message_obj(doc, message_id)
    with doc.transaction() as tx:
        tx.put(msg, "deleted", Bool, True)
        tx.put(msg, "text", Str, "")
        tx.put(msg, "edited_at", Int, deleted_at)


def set_reaction(doc: Document, message_id: str, emoji: str, user: str, on: bool) -> None:
    reactions = _child(doc, _message_obj(doc, message_id), "reactions")
    if reactions is None:
        raise DocumentError(f"message {message_id} has no reaction map")
    with doc.transaction() as tx:
        tx.put(reactions, f"{emoji} {user}", Bool, on)


# The binding's Patch objects expose nothing but their Debug rendering; these two shapes name
# the message a patch touches (a key of the segment's root, or a path under one).
_ROOT_KEY_PATCH = re.compile(r'^Patch \{ obj: Root, path: \[\], action: \w+ \{ key: "([0-9A-Z]{26})"')
_UNDER_MESSAGE_PATCH = re.compile(r'^Patch \{ obj: .*?, path: \[\(Root, Map\("([0-9A-Z]{26})"\)')


def touched_messages(doc: Document, before: list[bytes]) -> set[str] | None:
    """Ids of the segment's messages that changed since heads `before`; None when a patch
    does not say which message it touches (the caller then rereads every message)."""
    touched: set[str] = set()
    for patch in doc.diff(before, doc.get_heads()):
        rendered = repr(patch)
        match = _ROOT_KEY_PATCH.match(rendered) or _UNDER_MESSAGE_PATCH.match(rendered)
        if match is None:
            return None
        touched.add(match.group(1))
    return touched


def _fields(doc: Document, obj: bytes) -> dict[str, tuple[Any, bytes]]:
    """Every key of a map with its value and op id, in two calls into the library."""
    return dict(zip(doc.keys(obj), doc.values(obj), strict=True))


def _as_scalar(entry: tuple[Any, bytes] | None) -> tuple[Any, bytes | None]:
    """(value, author of the op that wrote it); (None, None) for a missing key or an object."""
    if entry is None or isinstance(entry[0], core.ObjType):
        return None, None
    return entry[0][1], _op_author(entry[1])


def _as_object(entry: tuple[Any, bytes] | None) -> bytes | None:
    return entry[1] if entry is not None and isinstance(entry[0], core.ObjType) else None


def read_message(doc: Document, message_id: str, admins: frozenset[str]) -> MessageState | None:
    """Reads one message. Fields only its author may write (text, thread, files, mentions)
    count only when written by the author; the delete flag also when written by one of
    `admins` (the directory as it is now: the node re-reads such messages when it changes);
    a reaction only when written by the user it names."""
    msg = _child(doc, ROOT, message_id)
    return None if msg is None else _read_message_map(doc, message_id, msg, admins)


def read_messages(doc: Document, admins: frozenset[str]) -> list[MessageState]:
    """Every message of a segment, as `read_message` reads each: the root is listed in one
    call rather than one lookup per message."""
    states = []
    for message_id, entry in _fields(doc, ROOT).items():
        msg = _as_object(entry)
        state = None if msg is None else _read_message_map(doc, message_id, msg, admins)
        if state is not None:
            states.append(state)
    return states


def _read_message_map(doc: Document, message_id: str, msg: bytes, admins: frozenset[str]) -> MessageState | None:
    fields = _fields(doc, msg)
    author, author_op = _as_scalar(fields.get("author"))
    if not isinstance(author, str) or author_op is None or author_op.hex() != author:
        return None  # a message map not made by the author it names is ignored whole
    tampered = False

    def by_author(prop: str) -> Any:
        nonlocal tampered
        value, op = _as_scalar(fields.get(prop))
        if op is not None and op.hex() != author:
            tampered = True
            return None
        return value

    created_at, _ = _as_scalar(fields.get("created_at"))
    deleted_value, deleted_op = _as_scalar(fields.get("deleted"))
    deleted_by = deleted_op.hex() if deleted_value is True and deleted_op is not None and deleted_op.hex() != author else None
    deleted = deleted_value is True and deleted_op is not None and (deleted_by is None or deleted_by in admins)
    root_id = by_author("root_id")
    # A deletion (by the author or an admin) clears the text and stamps the time.
    text = "" if deleted else by_author("text")
    edited_at = _as_scalar(fields.get("edited_at"))[0] if deleted else by_author("edited_at")

    reactions: dict[str, list[str]] = {}
    reactions_obj = _as_object(fields.get("reactions"))
    if reactions_obj is not None:
        for key, entry in _fields(doc, reactions_obj).items():
            emoji, _, user = key.rpartition(" ")
            on, op = _as_scalar(entry)
            if on is True and emoji and op is not None and op.hex() == user:
                reactions.setdefault(emoji, []).append(user)

    files: list[FileRef] = []
    files_obj = _as_object(fields.get("files"))
    if files_obj is not None:
        for entry in doc.values(files_obj):
            file_obj = _as_object(entry)
            if file_obj is None:
                continue
            file_fields = _fields(doc, file_obj)
            name, op = _as_scalar(file_fields.get("name"))
            size, _ = _as_scalar(file_fields.get("size"))
            digest, _ = _as_scalar(file_fields.get("hash"))
            if op is not None and op.hex() == author and isinstance(name, str) and isinstance(size, int) and isinstance(digest, str):
                files.append(FileRef(name=name, size=size, hash=digest))

    mentions: list[str] = []
    mentions_obj = _as_object(fields.get("mentions"))
    if mentions_obj is not None:
        for entry in doc.values(mentions_obj):
            value, op = _as_scalar(entry)
            if isinstance(value, str) and op is not None and op.hex() == author:
                mentions.append(value)

    return MessageState(
        message_id=message_id,
        author=author,
        created_at=created_at if isinstance(created_at, int) else 0,
        text="" if deleted or not isinstance(text, str) else text,
        root_id=root_id if isinstance(root_id, str) else None,
        edited_at=edited_at if isinstance(edited_at, int) else None,
        deleted=deleted,
        reactions={emoji: tuple(sorted(users)) for emoji, users in sorted(reactions.items())},
        files=() if deleted else tuple(files),
        mentions=tuple(mentions),
        tampered=tampered,
        deleted_by=deleted_by,
    )
