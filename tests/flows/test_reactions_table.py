"""A message's reactions live apart from its view row (`message_reactions`, migration 0017): a
row only for a message that has any, shown only where the view holds that message in the
segment that wrote them, and carried over both ways by the migration."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from appliance import schema as t
from appliance.node import Node
from appliance.services.views import store_reactions
from tests.conftest import FAST, PASSPHRASE, connect_node_db, store_at_revision

BEFORE_REACTIONS_TABLE = "0016"  # the revision migration 0017 upgrades from


async def reacted_node(home: Path) -> tuple[list[str], list[dict[str, list[str]]]]:
    """Three messages, two reacted to; their ids and reactions as read."""
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        posted = await node.chat.post_many("general", ["one", "two", "three"])
        await node.chat.react(posted[0], "+1")
        await node.chat.react(posted[0], "tada")
        await node.chat.react(posted[2], "eyes")
        return posted, [(await node.views.message(message_id)).reactions for message_id in posted]


async def test_the_migration_carries_reactions_both_ways(tmp_path: Path) -> None:
    posted, reactions = await reacted_node(tmp_path / "alpha")
    assert reactions == [{"+1": ["alice"], "tada": ["alice"]}, {}, {"eyes": ["alice"]}]
    db = tmp_path / "alpha" / "node.db"
    store_at_revision(db, BEFORE_REACTIONS_TABLE)
    with connect_node_db(db) as conn:  # as the earlier release kept them: in the view row
        columns = dict(conn.execute("SELECT message_id, reactions FROM messages").fetchall())
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'message_reactions'").fetchall()
    assert [columns[message_id] == "{}" for message_id in posted] == [False, True, False]
    async with await Node.open(tmp_path / "alpha", PASSPHRASE) as node:  # upgraded as it opens
        assert [(await node.views.message(message_id)).reactions for message_id in posted] == reactions
        async with node.store.reading() as conn:
            assert {row.message_id for row in await conn.execute(select(t.message_reactions))} == {posted[0], posted[2]}
            assert {row.doc_id for row in await conn.execute(select(t.message_reactions))} == {(await node.views.message_row(posted[0]))["doc_id"]}
        await node.chat.react(posted[1], "+1")
    store_at_revision(db, BEFORE_REACTIONS_TABLE)
    with connect_node_db(db) as conn:
        assert dict(conn.execute("SELECT message_id, reactions FROM messages").fetchall())[posted[1]] != "{}"


async def test_reactions_reach_a_message_only_from_the_segment_that_holds_it(tmp_path: Path) -> None:
    """A crafted segment may name a message id another segment holds: its reactions, or their
    absence, must not reach that message."""
    posted, _ = await reacted_node(tmp_path / "alpha")
    async with await Node.open(tmp_path / "alpha", PASSPHRASE) as node:
        doc_id = (await node.views.message_row(posted[0]))["doc_id"]
        elsewhere = doc_id.replace("/seg/000000", "/seg/000007")
        forged = '{"x": ["' + node.identity.user_key.hex() + '"]}'
        await node.store.write(lambda conn: store_reactions(conn, [(posted[0], elsewhere, "{}"), (posted[1], elsewhere, forged)]))
        assert [(await node.views.message(message_id)).reactions for message_id in posted[:2]] == [{"+1": ["alice"], "tada": ["alice"]}, {}]
        assert [m.reactions for m in await node.views.search("one two")] == []
        assert [m.reactions for m in await node.views.read("general", mark_read=False)] == [{"+1": ["alice"], "tada": ["alice"]}, {}, {"eyes": ["alice"]}]
        await node.store.write(lambda conn: store_reactions(conn, [(posted[0], doc_id, "{}"), (posted[1], doc_id, forged)]))
        assert [m.reactions for m in await node.views.read("general", mark_read=False)] == [{}, {"x": ["alice"]}, {"eyes": ["alice"]}]
        assert [m.reactions for m in await node.views.search("two")] == [{"x": ["alice"]}]
