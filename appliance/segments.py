"""Messages in segment documents, in both of their shapes.

Format 2 (every segment created since issue 15; root key "format" = Int 2, written with its
first message - a scalar, so two nodes opening the same segment write the same value):

    "format":                        2
    "<message_id>":                  bytes: canonical CBOR [author, created_at, text, root_id,
                                            files: [[name, size, hash]], mentions: [user]]
    "<message_id>/e/<writer hex>":   bytes: canonical CBOR [edited_at, text, mentions]
    "<message_id>/d/<writer hex>":   int: when the writer deleted it
    "<message_id>/r/<writer hex>/<emoji>": bool

A message is one value written by its author (keys as raw 32 bytes, the hash raw too; trailing
defaults - no root_id, files or mentions - left off the array). Each mutable part is a root key
naming its one writer, so two nodes never write the same key and never create a container.

Format 1 (a segment without "format" = 2; new messages into it stay format 1):

    "<message_id>": {author, created_at, text, root_id, edited_at, deleted,
                     reactions: {"<emoji> <user_hex>": bool},
                     files: [{name, size, hash}], mentions: [user_hex]}

Edits, deletions and reactions take the shape of the message they touch.

Who may write what is checked when reading, op by op (`documents.op_author`): a message counts
only when the op that wrote it is by the author it names; an edit only by the author; a
deletion by the author, or by one of `admins` (the directory as it is now); a reaction only by
the user it names. In format 2 a mutable key counts only when its op is by the writer the key
names. Anything else is ignored, and an edit or a deletion that does not count marks the
message `tampered`."""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from automerge import core
from automerge._automerge import Document

from appliance import cbor
from appliance.changes import AUTHOR_KEY_BYTES
from appliance.documents import ROOT, Bool, Bytes, DocumentError, Int, ListType, MapType, Null, Str, child, op_author
from appliance.errors import InvalidInput
from appliance.usual_message import read_usual_message

FORMAT_KEY = "format"
FORMAT_2 = 2
EDIT, DELETION, REACTION = "e", "d", "r"
_MAX_VALUE_ITEMS = 20_000  # CBOR items in one message value: files and mentions are few
_FEW = 64  # fewer wanted messages of a format-2 segment than this: a lookup each beats listing its values
_DEFAULTS: tuple[Any, ...] = (None, [], [])  # root_id, files, mentions: left off the end of a message value


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


Entry = tuple[Any, bytes]  # what the binding gives for a map key: (value or object type, op id)


def _as_scalar(entry: Entry | None) -> tuple[Any, bytes | None]:
    """(value, author of the op that wrote it); (None, None) for a missing key or an object."""
    if entry is None or isinstance(entry[0], core.ObjType):
        return None, None
    return entry[0][1], op_author(entry[1])


def _as_object(entry: Entry | None) -> bytes | None:
    return entry[1] if entry is not None and isinstance(entry[0], core.ObjType) else None


def _fields(doc: Document, obj: bytes) -> dict[str, Entry]:
    """Every key of a map with its value and op id, in two calls into the library."""
    return dict(zip(doc.keys(obj), doc.values(obj), strict=True))


# --- writing ---------------------------------------------------------------------------


def is_format_2(doc: Document) -> bool:
    got = doc.get(ROOT, FORMAT_KEY)
    return got is not None and got[0] == (Int, FORMAT_2)


def encode_message(author: str, created_at: int, text: str, root_id: str | None, files: Sequence[FileRef], mentions: Sequence[str]) -> bytes:
    """The immutable part of a format-2 message."""
    value: list[Any] = [
        bytes.fromhex(author),
        created_at,
        text,
        root_id,
        [[f.name, f.size, bytes.fromhex(f.hash)] for f in files],
        [bytes.fromhex(user) for user in mentions],
    ]
    while len(value) > 3 and value[-1] == _DEFAULTS[len(value) - 4]:
        value.pop()
    return cbor.encode(value)


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
    """Format 2 into a new (empty) or format-2 segment, format 1 into a format-1 one."""
    new = not doc.get_heads()  # far cheaper than counting the root's keys
    if new or is_format_2(doc):
        value = encode_message(author, created_at, text, root_id, files, mentions)
        with doc.transaction() as tx:
            if new:
                tx.put(ROOT, FORMAT_KEY, Int, FORMAT_2)
            tx.put(ROOT, message_id, Bytes, value)
        return
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


def _write_list(tx: Any, obj: bytes, values: list[Any]) -> None:
    for index, value in enumerate(values):
        if isinstance(value, FileRef):
            entry = tx.insert_object(obj, index, MapType)
            tx.put(entry, "name", Str, value.name)
            tx.put(entry, "size", Int, value.size)
            tx.put(entry, "hash", Str, value.hash)
        else:
            tx.insert(obj, index, Str, value)


def _format_1_map(doc: Document, message_id: str) -> bytes | None:
    """The message's map in a format-1 message; None for a format-2 message."""
    got = doc.get(ROOT, message_id)
    if got is None:
        raise DocumentError(f"message {message_id} is not in this segment")
    return got[1] if isinstance(got[0], core.ObjType) else None


def _writer_key(doc: Document, message_id: str, part: str) -> str:
    """The key of a format-2 message's mutable part, named after the document's actor."""
    return f"{message_id}/{part}/{doc.get_actor()[:AUTHOR_KEY_BYTES].hex()}"


def edit_message(doc: Document, message_id: str, text: str, edited_at: int, mentions: list[str]) -> None:
    msg = _format_1_map(doc, message_id)
    if msg is None:
        key, value = _writer_key(doc, message_id, EDIT), cbor.encode([edited_at, text, [bytes.fromhex(user) for user in mentions]])
        with doc.transaction() as tx:
            tx.put(ROOT, key, Bytes, value)
        return
    mentions_obj = child(doc, msg, "mentions")
    with doc.transaction() as tx:
        tx.put(msg, "text", Str, text)
        tx.put(msg, "edited_at", Int, edited_at)
        if mentions_obj is not None:
            for _ in range(tx.length(mentions_obj)):
                tx.delete(mentions_obj, 0)
            _write_list(tx, mentions_obj, mentions)


def delete_message(doc: Document, message_id: str, deleted_at: int) -> None:
    """A tombstone: nothing ever takes it back. Format 1 clears the text with the flag."""
    msg = _format_1_map(doc, message_id)
    if msg is None:
        key = _writer_key(doc, message_id, DELETION)
        with doc.transaction() as tx:
            tx.put(ROOT, key, Int, deleted_at)
        return
    with doc.transaction() as tx:
        tx.put(msg, "deleted", Bool, True)
        tx.put(msg, "text", Str, "")
        tx.put(msg, "edited_at", Int, deleted_at)


def set_reaction(doc: Document, message_id: str, emoji: str, user: str, on: bool) -> None:
    msg = _format_1_map(doc, message_id)
    if msg is None:
        with doc.transaction() as tx:
            tx.put(ROOT, f"{message_id}/{REACTION}/{user}/{emoji}", Bool, on)
        return
    reactions = child(doc, msg, "reactions")
    if reactions is None:
        raise DocumentError(f"message {message_id} has no reaction map")
    with doc.transaction() as tx:
        tx.put(reactions, f"{emoji} {user}", Bool, on)


# --- what changed ----------------------------------------------------------------------

# The binding's Patch objects expose nothing but their Debug rendering; these shapes name the
# message a patch touches (a key of the segment's root - the message or, in format 2, one of
# its parts, whose kind follows the id - or a path under one); the format key touches none.
_ROOT_KEY_PATCH = re.compile(r'^Patch \{ obj: Root, path: \[\], action: \w+ \{ key: "([0-9A-Z]{26})(?:"|/([^/"]*))')
_UNDER_MESSAGE_PATCH = re.compile(r'^Patch \{ obj: .*?, path: \[\(Root, Map\("([0-9A-Z]{26})"\)')
_FORMAT_PATCH = re.compile(r'^Patch \{ obj: Root, path: \[\], action: \w+ \{ key: "format"')
WHOLE_MESSAGE = ""  # what touched_parts names when a message's own value changed (in format 1: anything of it)


def touched_parts(doc: Document, before: list[bytes]) -> dict[str, set[str]] | None:
    """The segment's messages that changed since heads `before`, each with what of it changed:
    WHOLE_MESSAGE or the kinds of its format-2 parts (EDIT, DELETION, REACTION); None when a
    patch does not say which message it touches (the caller then rereads every message)."""
    touched: dict[str, set[str]] = {}
    for patch in doc.diff(before, doc.get_heads()):
        rendered = repr(patch)
        match = _ROOT_KEY_PATCH.match(rendered)
        if match is not None:
            touched.setdefault(match.group(1), set()).add(match.group(2) or WHOLE_MESSAGE)
            continue
        match = _UNDER_MESSAGE_PATCH.match(rendered)
        if match is not None:
            touched.setdefault(match.group(1), set()).add(WHOLE_MESSAGE)
        elif _FORMAT_PATCH.match(rendered) is None:
            return None
    return touched


def touched_messages(doc: Document, before: list[bytes]) -> set[str] | None:
    """Ids of the segment's messages that changed since heads `before` (see touched_parts)."""
    parts = touched_parts(doc, before)
    return None if parts is None else set(parts)


# --- reading ---------------------------------------------------------------------------


def read_message(doc: Document, message_id: str, admins: frozenset[str]) -> MessageState | None:
    """Reads one message as `read_messages` does. A format-2 message costs a listing of the
    root's keys (its parts sit right after it, in key order): for several, `read_messages`
    with `only` lists them once."""
    return _read_one(doc, message_id, admins, None)


def _read_one(doc: Document, message_id: str, admins: frozenset[str], keys: list[str] | None) -> MessageState | None:
    """`keys`: the root's keys, when already listed."""
    got = doc.get(ROOT, message_id)
    if got is None:
        return None
    if isinstance(got[0], core.ObjType):
        return _read_format_1(doc, message_id, got[1], admins)
    keys = doc.keys(ROOT) if keys is None else keys
    start = bisect.bisect_left(keys, message_id + "/")
    end = bisect.bisect_left(keys, message_id + "0", start)  # "0" follows "/"
    parts = [(key, doc.get(ROOT, key)) for key in keys[start:end]]
    return _read_format_2(message_id, got, [(key, entry) for key, entry in parts if entry is not None], admins)


def read_messages(doc: Document, admins: frozenset[str], only: Collection[str] | None = None) -> list[MessageState]:
    """The segment's messages (those in `only`, when given) in id order, as `read_message`
    reads each. The root is listed once - its keys and values, two calls into the library -
    after which a format-2 message needs no further call and a format-1 one two or more.
    Cheaper for a few messages: in a format-1 segment a lookup each and no listing; in a
    format-2 one a listing of the keys only and a lookup per value."""
    wanted = None if only is None else set(only)
    format_2 = wanted is not None and is_format_2(doc)
    if wanted is not None and (not format_2 or len(wanted) <= _FEW):
        keys = doc.keys(ROOT) if format_2 else None
        found = (_read_one(doc, message_id, admins, keys) for message_id in sorted(wanted))
        return [state for state in found if state is not None]
    fields = _fields(doc, ROOT)
    parts: dict[str, list[tuple[str, Entry]]] = {}
    for key, entry in fields.items():
        message_id, slash, _ = key.partition("/")
        if slash:
            parts.setdefault(message_id, []).append((key, entry))
    states = []
    for message_id, entry in fields.items():
        if "/" in message_id or message_id == FORMAT_KEY or (wanted is not None and message_id not in wanted):
            continue
        msg = _as_object(entry)
        if msg is not None:
            state = _read_format_1(doc, message_id, msg, admins)
        else:
            state = _read_format_2(message_id, entry, parts.get(message_id, []), admins)
        if state is not None:
            states.append(state)
    return states


def decode_message(data: bytes) -> tuple[str, int, str, str | None, tuple[FileRef, ...], tuple[str, ...]]:
    """A format-2 message value: (author hex, created_at, text, root_id, files, mentions).
    Raises InvalidInput for anything else. The value is its author's own signed op, so the
    profile (no tags, no bombs) is checked, not the canonical encoding."""
    usual = read_usual_message(data)
    if usual is None:
        return decode_any_message(data)
    author, created_at, text, root_id, mentions = usual
    return author, created_at, text, root_id, (), mentions


def decode_any_message(data: bytes) -> tuple[str, int, str, str | None, tuple[FileRef, ...], tuple[str, ...]]:
    """`decode_message` for values of any shape, by the CBOR profile check and cbor2."""
    value = cbor.decode_in_profile(data, "message", max_items=_MAX_VALUE_ITEMS)
    if not isinstance(value, list) or not 3 <= len(value) <= 6:
        raise InvalidInput("a message value is an array of 3 to 6 items")
    author, created_at, text = value[0], value[1], value[2]
    root_id = value[3] if len(value) > 3 else None
    if not (isinstance(author, bytes) and isinstance(created_at, int) and isinstance(text, str) and (root_id is None or isinstance(root_id, str))):
        raise InvalidInput("a message value has a field of the wrong type")
    files = _files(value[4]) if len(value) > 4 else ()
    mentions = _users(value[5]) if len(value) > 5 else ()
    return author.hex(), created_at, text, root_id, files, mentions


def _files(value: Any) -> tuple[FileRef, ...]:
    if not isinstance(value, list) or not all(
        isinstance(f, list) and len(f) == 3 and isinstance(f[0], str) and isinstance(f[1], int) and isinstance(f[2], bytes) for f in value
    ):
        raise InvalidInput("a file list holds [name, size, hash]")
    return tuple(FileRef(f[0], f[1], f[2].hex()) for f in value)


def _users(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(user, bytes) for user in value):
        raise InvalidInput("a user list holds keys")
    return tuple(user.hex() for user in value)


def _decode_edit(data: Any) -> tuple[int, str, tuple[str, ...]] | None:
    try:
        if not isinstance(data, bytes):
            return None
        value = cbor.decode_in_profile(data, "edit", max_items=_MAX_VALUE_ITEMS)
        if isinstance(value, list) and len(value) == 3 and isinstance(value[0], int) and isinstance(value[1], str):
            return value[0], value[1], _users(value[2])
    except InvalidInput:
        return None
    return None


def _read_format_2(message_id: str, entry: Entry, parts: Sequence[tuple[str, Entry]], admins: frozenset[str]) -> MessageState | None:
    data, op = _as_scalar(entry)
    if not isinstance(data, bytes) or op is None:
        return None
    try:
        author, created_at, text, root_id, files, mentions = decode_message(data)
    except InvalidInput:
        return None
    if op.hex() != author:
        return None  # a message not written by the author it names is ignored whole
    if not parts:  # most messages: never edited, deleted or reacted to
        return MessageState(message_id, author, created_at, text, root_id, None, False, {}, files, mentions, False)
    tampered = False
    edit: tuple[int, str, tuple[str, ...]] | None = None
    deletions: dict[str, int] = {}  # writer -> when
    for key, part in parts:
        _, kind, writer, rest = _part_key(key)
        value, op = _as_scalar(part)
        by_writer = op is not None and op.hex() == writer
        if kind == EDIT and not rest:
            if by_writer and writer == author:
                edit = _decode_edit(value)
            else:
                tampered = True
        elif kind == DELETION and not rest:
            if by_writer and isinstance(value, int) and not isinstance(value, bool):
                deletions[writer] = value
            else:
                tampered = True
    others = sorted(w for w in deletions if w != author)
    admin_deletions = [w for w in others if w in admins]
    deleted = author in deletions or bool(admin_deletions)
    deleters = admin_deletions or others  # the writer a view names: an admin when one deleted it
    deleted_by = None if author in deletions or not deleters else deleters[0]
    tampered = tampered or (bool(others) and not deleted)
    edited_at = None
    if deleted:
        edited_at = deletions[author if deleted_by is None else deleted_by]
    elif edit is not None:
        edited_at, text, mentions = edit
    return MessageState(
        message_id=message_id,
        author=author,
        created_at=created_at,
        text="" if deleted else text,
        root_id=root_id,
        edited_at=edited_at,
        deleted=deleted,
        reactions=_reactions(parts),
        files=() if deleted else files,
        mentions=mentions,
        tampered=tampered,
        deleted_by=deleted_by,
    )


def _part_key(key: str) -> list[str]:
    """A format-2 part's key: [message id, kind, writer, rest]."""
    return (key.split("/", 3) + ["", ""])[:4]  # a crafted key may have fewer parts


def _reactions(parts: Sequence[tuple[str, Entry]]) -> dict[str, tuple[str, ...]]:
    """emoji -> users, from a format-2 message's parts: each reaction part set by its writer."""
    reactions: dict[str, list[str]] = {}
    for key, part in parts:
        _, kind, writer, emoji = _part_key(key)
        if kind == REACTION and emoji:
            value, op = _as_scalar(part)
            if op is not None and op.hex() == writer and value is True:
                reactions.setdefault(emoji, []).append(writer)
    return {emoji: tuple(sorted(users)) for emoji, users in sorted(reactions.items())}


def read_reactions(doc: Document, message_ids: Collection[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """The reactions of format-2 messages, as `read_messages` gives them, read from their
    reaction parts alone - for messages whose reactions alone changed. Messages stored as
    anything else (format 1, or a crafted map in a format-2 segment) are left out: the caller
    reads them whole."""
    if not message_ids or not is_format_2(doc):
        return {}
    lookup: Callable[[str], Entry | None]
    if len(message_ids) > _FEW:  # the root listed once, keys and values, beats a lookup a key
        fields = _fields(doc, ROOT)
        keys, lookup = list(fields), fields.get
    else:
        keys, lookup = doc.keys(ROOT), functools.partial(doc.get, ROOT)
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for message_id in message_ids:
        got = lookup(message_id)
        if got is None or isinstance(got[0], core.ObjType):
            continue
        prefix = f"{message_id}/{REACTION}/"
        start = bisect.bisect_left(keys, prefix)
        end = bisect.bisect_left(keys, prefix[:-1] + "0", start)  # "0" follows "/"
        found[message_id] = _reactions([(key, entry) for key in keys[start:end] if (entry := lookup(key)) is not None])
    return found


def _read_format_1(doc: Document, message_id: str, msg: bytes, admins: frozenset[str]) -> MessageState | None:
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
