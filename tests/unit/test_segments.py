"""Messages in segment documents, both formats: what each writer leaves, what a reader makes of
it, and every write by someone the key or the value does not name being ignored."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from automerge._automerge import Document
from hypothesis import example, given
from hypothesis import strategies as st

from appliance import cbor, documents, segments
from appliance.documents import ROOT
from appliance.segments import FileRef, MessageState

VECTORS = Path(__file__).parent / "segment_vectors"
ALICE, BOB, CAROL = bytes([0xA1]) * 32, bytes([0xB0]) * 32, bytes([0xC0]) * 32  # as in the vector: carol is the admin
FIRST, SECOND = "01JDQ7Z0000000000000000101", "01JDQ7Z0000000000000000102"


def actor(user: bytes) -> bytes:
    return user + bytes([user[0]]) * 16


def as_user(doc: Document, user: bytes) -> Document:
    doc.set_actor(actor(user))
    return doc


def post(doc: Document, message_id: str, author: bytes, text: str, **extra: Any) -> None:
    fields = {"root_id": None, "files": [], "mentions": [], **extra}
    segments.post_message(doc, message_id=message_id, author=author.hex(), created_at=1_000, text=text, **fields)


def put(doc: Document, key: str, kind: Any, value: Any) -> None:
    """A raw write at the segment's root, as a crafted change would make it."""
    with doc.transaction() as tx:
        tx.put(ROOT, key, kind, value)


def only(doc: Document, admins: frozenset[str] = frozenset()) -> MessageState:
    """The segment's one message; read whole and alone, which must agree."""
    (state,) = segments.read_messages(doc, admins)
    assert segments.read_message(doc, state.message_id, admins) == state
    return state


def test_a_new_segment_is_format_2_and_holds_one_value_a_message() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    files = [FileRef("notes.txt", 11, "ab" * 32)]
    post(doc, FIRST, ALICE, "hello @bob", files=files, mentions=[BOB.hex()])
    post(doc, SECOND, ALICE, "a reply", root_id=FIRST)
    assert doc.keys(ROOT) == [FIRST, SECOND, segments.FORMAT_KEY]
    assert segments.is_format_2(doc)
    assert doc.values(ROOT)[0][0] == (documents.Bytes, segments.encode_message(ALICE.hex(), 1_000, "hello @bob", None, files, [BOB.hex()]))
    first, second = segments.read_messages(doc, frozenset())
    assert first == MessageState(FIRST, ALICE.hex(), 1_000, "hello @bob", None, None, False, {}, tuple(files), (BOB.hex(),), False)
    assert (second.text, second.root_id, second.files, second.mentions) == ("a reply", FIRST, (), ())
    assert segments.read_message(doc, SECOND, frozenset()) == second
    assert segments.read_message(doc, "01JDQ7Z0000000000000000999", frozenset()) is None


def test_format_2_edits_reactions_and_deletions_round_trip() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "draft")
    segments.edit_message(doc, FIRST, "final @carol", 2_000, [CAROL.hex()])
    as_user(doc, BOB)
    segments.set_reaction(doc, FIRST, "👍", BOB.hex(), True)
    segments.set_reaction(doc, FIRST, "a/b", BOB.hex(), True)  # a slash in an emoji stays in the emoji
    segments.set_reaction(doc, FIRST, ":tada:", BOB.hex(), True)
    segments.set_reaction(doc, FIRST, ":tada:", BOB.hex(), False)
    as_user(doc, CAROL)
    segments.set_reaction(doc, FIRST, "👍", CAROL.hex(), True)
    state = only(doc)
    assert (state.text, state.edited_at, state.mentions, state.tampered) == ("final @carol", 2_000, (CAROL.hex(),), False)
    assert state.reactions == {"a/b": (BOB.hex(),), "👍": (BOB.hex(), CAROL.hex())}
    as_user(doc, ALICE)
    segments.delete_message(doc, FIRST, 3_000)
    deleted = only(doc)
    assert (deleted.deleted, deleted.text, deleted.edited_at, deleted.deleted_by, deleted.tampered) == (True, "", 3_000, None, False)


def test_the_format_1_vector_still_reads_as_main_read_it() -> None:
    """tests/unit/segment_vectors/format1.automerge: a segment saved by the code before format 2
    (README there), with its reading by that code."""
    expected = json.loads((VECTORS / "format1.json").read_text())
    doc = documents.load_document((VECTORS / "format1.automerge").read_bytes(), actor(CAROL))
    admins = frozenset(expected["admins"])
    read = [reading(state) for state in segments.read_messages(doc, admins)]
    assert read == expected["messages"]
    assert [reading(segments.read_message(doc, m["message_id"], admins)) for m in expected["messages"]] == expected["messages"]


def reading(state: MessageState | None) -> dict[str, Any]:
    assert state is not None
    out: dict[str, Any] = json.loads(json.dumps(asdict(state)))
    out["files"] = [list(f.values()) for f in out["files"]]
    return out


def test_a_format_1_segment_keeps_its_shape_for_new_messages_and_changes() -> None:
    doc = documents.load_document((VECTORS / "format1.automerge").read_bytes(), actor(ALICE))
    before = len(segments.read_messages(doc, frozenset()))
    post(doc, FIRST, ALICE, "into an old segment", files=[FileRef("a.txt", 1, "cd" * 32)])
    assert not segments.is_format_2(doc) and segments.FORMAT_KEY not in doc.keys(ROOT)
    assert documents.child(doc, ROOT, FIRST) is not None  # a map, as format 1 writes it
    segments.edit_message(doc, FIRST, "edited", 2_000, [])
    as_user(doc, BOB)
    segments.set_reaction(doc, FIRST, "🔥", BOB.hex(), True)
    assert [key for key in doc.keys(ROOT) if "/" in key] == []
    state = segments.read_message(doc, FIRST, frozenset())
    assert state is not None
    assert (state.text, state.edited_at, state.reactions, state.files) == ("edited", 2_000, {"🔥": (BOB.hex(),)}, (FileRef("a.txt", 1, "cd" * 32),))
    assert len(segments.read_messages(doc, frozenset())) == before + 1


def test_a_message_value_written_by_another_op_author_is_ignored() -> None:
    doc = as_user(documents.new_document(actor(BOB)), BOB)
    post(doc, FIRST, ALICE, "bob puts words in alice's mouth")  # the value says alice, the op is bob's
    post(doc, SECOND, BOB, "bob's own")
    assert [s.message_id for s in segments.read_messages(doc, frozenset())] == [SECOND]
    assert segments.read_message(doc, FIRST, frozenset()) is None


def test_a_value_that_is_no_message_is_ignored() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "fine")
    put(doc, SECOND, documents.Bytes, b"\xd8\x19\x00")  # a CBOR tag
    put(doc, "01JDQ7Z0000000000000000103", documents.Bytes, cbor.encode([ALICE, "not a time", "x"]))
    put(doc, "01JDQ7Z0000000000000000104", documents.Str, "not bytes")
    assert [s.message_id for s in segments.read_messages(doc, frozenset())] == [FIRST]


@given(value=st.binary(max_size=64) | st.builds(cbor.encode, st.lists(st.none() | st.integers() | st.text(max_size=4) | st.binary(max_size=33), max_size=7)))
# Once failed: a text string that is not UTF-8 made cbor2 raise CBORDecodeError, which is no ValueError.
@example(value=b"g\x00\x00\x00\x00\x00\x00\x80")
def test_whatever_the_values_and_keys_say_reading_never_fails(value: bytes) -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "fine")
    for key in (SECOND, f"{FIRST}/e/{ALICE.hex()}", f"{FIRST}/e", f"{FIRST}/", f"{FIRST}/r/{ALICE.hex()}", f"{FIRST}/x/{ALICE.hex()}/y"):
        put(doc, key, documents.Bytes, value)
    states = segments.read_messages(doc, frozenset())
    assert states[0].message_id == FIRST and states[0].reactions == {}
    assert segments.read_message(doc, FIRST, frozenset()) == states[0]


def test_edits_and_deletions_under_a_key_naming_someone_else_are_ignored() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "alice says")
    as_user(doc, BOB)
    edit = cbor.encode([5_000, "bob's words", []])
    put(doc, f"{FIRST}/e/{ALICE.hex()}", documents.Bytes, edit)  # bob's op under alice's key
    put(doc, f"{FIRST}/d/{ALICE.hex()}", documents.Int, 5_000)
    put(doc, f"{FIRST}/r/{ALICE.hex()}/👎", documents.Bool, True)
    state = only(doc, frozenset([BOB.hex()]))  # even an admin cannot write under alice's key
    assert (state.text, state.edited_at, state.deleted, state.reactions, state.tampered) == ("alice says", None, False, {}, True)


def test_an_edit_by_anyone_but_the_author_is_ignored() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "alice says")
    as_user(doc, BOB)
    segments.edit_message(doc, FIRST, "bob's words", 5_000, [])  # under bob's own key
    state = only(doc, frozenset([BOB.hex()]))
    assert (state.text, state.edited_at, state.tampered) == ("alice says", None, True)


def test_a_deletion_of_anothers_message_counts_only_while_its_writer_is_an_admin() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "alice says", files=[FileRef("a.txt", 1, "cd" * 32)])
    as_user(doc, BOB)
    segments.delete_message(doc, FIRST, 4_000)
    as_member = only(doc)
    assert (as_member.deleted, as_member.text, as_member.deleted_by, as_member.tampered) == (False, "alice says", BOB.hex(), True)
    as_admin = only(doc, frozenset([BOB.hex()]))
    assert (as_admin.deleted, as_admin.text, as_admin.files, as_admin.edited_at) == (True, "", (), 4_000)
    assert (as_admin.deleted_by, as_admin.tampered) == (BOB.hex(), False)
    as_user(doc, ALICE)
    segments.delete_message(doc, FIRST, 4_500)  # the author's own deletion counts whoever is admin
    by_author = only(doc)
    assert (by_author.deleted, by_author.deleted_by, by_author.edited_at, by_author.tampered) == (True, None, 4_500, False)


def test_reading_some_messages_agrees_with_reading_them_all() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    message_ids = [f"01JDQ7Z0000000000000001{n:03d}" for n in range(100)]
    for n, message_id in enumerate(message_ids):
        post(doc, message_id, ALICE, f"message {n}")
    for message_id in message_ids[::7]:
        segments.edit_message(doc, message_id, "edited", 2_000, [])
        segments.set_reaction(doc, message_id, "👍", ALICE.hex(), True)
    every = segments.read_messages(doc, frozenset())
    assert len(every) == 100 and every[7].text == "edited" and every[7].reactions == {"👍": (ALICE.hex(),)}
    for wanted in (message_ids[:3], message_ids[::2], message_ids[:80], [*message_ids[5:9], "01JDQ7Z0000000000000000999"]):
        assert segments.read_messages(doc, frozenset(), only=set(wanted)) == [s for s in every if s.message_id in wanted]
    old = documents.load_document((VECTORS / "format1.automerge").read_bytes(), actor(CAROL))
    old_ids = [s.message_id for s in segments.read_messages(old, frozenset())]
    assert segments.read_messages(old, frozenset(), only=set(old_ids[1:3])) == segments.read_messages(old, frozenset())[1:3]


def test_touched_messages_names_format_2_messages_by_their_keys() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "one")
    assert segments.touched_messages(doc, []) == {FIRST}  # the format key touches no message
    post(doc, SECOND, ALICE, "two")
    before = doc.get_heads()
    segments.edit_message(doc, FIRST, "one, edited", 2_000, [])
    assert segments.touched_messages(doc, before) == {FIRST}
    before = doc.get_heads()
    as_user(doc, BOB)
    segments.set_reaction(doc, SECOND, 'say "hi"', BOB.hex(), True)
    segments.delete_message(doc, FIRST, 3_000)
    assert segments.touched_messages(doc, before) == {FIRST, SECOND}


def test_touched_parts_names_what_of_each_message_changed() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "one")
    post(doc, SECOND, ALICE, "two")
    assert segments.touched_parts(doc, []) == {FIRST: {segments.WHOLE_MESSAGE}, SECOND: {segments.WHOLE_MESSAGE}}
    before = doc.get_heads()
    as_user(doc, BOB)
    segments.set_reaction(doc, FIRST, "+1", BOB.hex(), True)
    segments.set_reaction(doc, SECOND, "+1", BOB.hex(), True)
    segments.delete_message(doc, SECOND, 3_000)
    assert segments.touched_parts(doc, before) == {FIRST: {segments.REACTION}, SECOND: {segments.REACTION, segments.DELETION}}
    before = doc.get_heads()
    segments.set_reaction(doc, FIRST, "+1", BOB.hex(), False)
    as_user(doc, ALICE)
    segments.edit_message(doc, SECOND, "two, edited", 2_000, [])
    assert segments.touched_parts(doc, before) == {FIRST: {segments.REACTION}, SECOND: {segments.EDIT}}
    before = doc.get_heads()
    put(doc, FIRST + "/", documents.Bytes, b"")  # a crafted key with no kind: the message reread whole
    assert segments.touched_parts(doc, before) == {FIRST: {segments.WHOLE_MESSAGE}}
    old = documents.load_document((VECTORS / "format1.automerge").read_bytes(), actor(CAROL))
    assert {s.message_id for s in segments.read_messages(old, frozenset())} <= set(segments.touched_parts(old, []) or {})
    assert all(kinds == {segments.WHOLE_MESSAGE} for kinds in (segments.touched_parts(old, []) or {}).values())


reactions_written = st.lists(st.tuples(st.sampled_from([FIRST, SECOND]), st.sampled_from([ALICE, BOB, CAROL]), st.sampled_from(["+1", "tada", "a/b"]), st.booleans()), max_size=12)


@given(reactions_written, st.lists(st.tuples(st.sampled_from([FIRST, SECOND]), st.sampled_from([ALICE, BOB]), st.sampled_from(["+1", "x"])), max_size=3))
def test_reactions_read_from_their_parts_alone_are_those_the_message_reads_with(written: list[tuple[str, bytes, str, bool]], forged: list[tuple[str, bytes, str]]) -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "one")
    post(as_user(doc, BOB), SECOND, BOB, "two")
    for message_id, user, emoji, on in written:
        segments.set_reaction(as_user(doc, user), message_id, emoji, user.hex(), on)
    for message_id, user, emoji in forged:  # a reaction written in another user's name counts for no one
        as_user(doc, CAROL)
        put(doc, f"{message_id}/{segments.REACTION}/{user.hex()}/{emoji}", documents.Bool, True)
    read_whole = {state.message_id: state.reactions for state in segments.read_messages(doc, frozenset())}
    assert set(read_whole) == {FIRST, SECOND}
    assert segments.read_reactions(doc, [FIRST, SECOND]) == read_whole


def test_reactions_of_many_messages_read_from_one_listing_are_the_same() -> None:
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    message_ids = [f"01JDQ7Z00000000000000{n:05d}" for n in range(segments._FEW + 6)]
    for n, message_id in enumerate(message_ids):
        post(doc, message_id, ALICE, f"m{n}")
        segments.set_reaction(as_user(doc, (ALICE, BOB, CAROL)[n % 3]), message_id, ("+1", "tada")[n % 2], (ALICE, BOB, CAROL)[n % 3].hex(), n % 5 != 0)
        as_user(doc, ALICE)
    put(doc, f"{message_ids[7]}/{segments.REACTION}/{BOB.hex()}/+1", documents.Bool, True)  # in bob's name, by alice: no one's
    read_whole = {state.message_id: state.reactions for state in segments.read_messages(doc, frozenset())}
    assert segments.read_reactions(doc, message_ids) == read_whole
    assert segments.read_reactions(doc, message_ids[:3]) == {m: read_whole[m] for m in message_ids[:3]}


def test_reactions_of_messages_stored_as_maps_are_left_to_the_whole_reading() -> None:
    old = documents.load_document((VECTORS / "format1.automerge").read_bytes(), actor(CAROL))
    assert segments.read_reactions(old, [s.message_id for s in segments.read_messages(old, frozenset())]) == {}
    doc = as_user(documents.new_document(actor(ALICE)), ALICE)
    post(doc, FIRST, ALICE, "one")
    with doc.transaction() as tx:  # a map where a format-2 message is a value
        tx.put_object(ROOT, SECOND, documents.MapType)
    assert set(segments.read_reactions(doc, [FIRST, SECOND, "01JDQ7Z0000000000000000999"])) == {FIRST}


def test_two_nodes_opening_the_same_segment_merge_without_losing_a_message() -> None:
    alice = as_user(documents.new_document(actor(ALICE)), ALICE)
    bob = as_user(documents.new_document(actor(BOB)), BOB)
    post(alice, FIRST, ALICE, "alice first")
    post(bob, SECOND, BOB, "bob first")
    alice.merge(bob)
    assert segments.is_format_2(alice)
    assert [s.text for s in segments.read_messages(alice, frozenset())] == ["alice first", "bob first"]


users = st.binary(min_size=32, max_size=32)
file_refs = st.builds(FileRef, st.text(max_size=20), st.integers(0, 2**53), users.map(bytes.hex))


@given(
    author=users,
    created_at=st.integers(0, 2**63 - 1),
    text=st.text(max_size=200),
    root_id=st.none() | st.just(FIRST),
    files=st.lists(file_refs, max_size=3),
    mentions=st.lists(users.map(bytes.hex), max_size=3),
)
def test_the_message_value_round_trips_in_its_shortest_form(
    author: bytes, created_at: int, text: str, root_id: str | None, files: list[FileRef], mentions: list[str]
) -> None:
    value = segments.encode_message(author.hex(), created_at, text, root_id, files, mentions)
    assert segments.decode_message(value) == (author.hex(), created_at, text, root_id, tuple(files), tuple(mentions))
    trailing = [root_id, files, mentions]
    while trailing and trailing[-1] in (None, []):
        trailing.pop()
    assert len(cbor.decode(value, "message")) == 3 + len(trailing)


def test_a_plain_message_value_is_small() -> None:
    """Author key, time and text: 34 + 9 + 1 + the text, plus the array's own byte."""
    value = segments.encode_message(ALICE.hex(), 1_733_000_000_000, "hello", None, [], [])
    assert len(value) == 1 + 34 + 9 + 6
