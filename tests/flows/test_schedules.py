"""Random schedules of what users, admins and couriers do, across three nodes (Hypothesis
stateful testing): posts, replies, edits, reactions, deletions (own, and others' as an admin),
role changes, member additions to a private channel, bundle exchanges, LAN-style deltas, and a
post racing an import of its channel. After every heal (all-to-all exchange until nothing
moves) every node's materialised view must equal every other's and a view rebuilt from its
own documents.

Real nodes on real SQLite homes; bundles through the real export and import; LAN exchange as a
session does it (`delta_for`, `pack_delta` parts through `import_batches` with a LAN receipt,
then the receiver's heads as acknowledgement). One clock is shared by the nodes and every
node's randomness is seeded, so a failing schedule replays.

In CI: 20 schedules of up to 25 steps (about 25 s on two cores). RALLYPOINT_HYPOTHESIS_PROFILE=long
runs 400 of up to 60 steps (about 10 minutes)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.config import Config
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, documents, ids, segments
from appliance import schema as t
from appliance.model import Receipt
from appliance.node import CACHED_DOCUMENTS, Node
from appliance.store import DB_FILE, MIGRATIONS, Store
from appliance.view_rows import head_view_values, view_values
from sync.lan import PART_BUDGET
from sync.packing import pack_delta
from sync.replica import NodeReplica
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import PASSPHRASE, make_workspace, node_db_key, node_engine

T = TypeVar("T")
USERS = ("alice", "bob", "carol")  # node i acts as USERS[i]; alice and bob start as admins
CHANNELS = ("general", "ops")  # ops is private: alice and bob at first
EMOJI = ("👍", "🔥")
NODE = st.integers(0, 2)
PICK = st.integers(0, 10_000)
WORDS = st.text(alphabet="abcdefgh ", min_size=1, max_size=12).filter(str.strip)
HEAL_ROUNDS = 8  # all-to-all rounds; three nodes settle in two or three

LONG = os.environ.get("RALLYPOINT_HYPOTHESIS_PROFILE") == "long"
SCHEDULES = settings(
    max_examples=400 if LONG else 20,
    stateful_step_count=60 if LONG else 25,
    deadline=None,
    # Each example opens three real stores; "explain" would replay it hundreds of times.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class GatedStore(Store):
    """The node's real store with a pause point: once armed, the next write transaction waits
    at its start - inside whatever node lock its caller holds - until released. It puts a
    post in the middle of an import deterministically."""

    armed = False

    def arm(self) -> None:
        self.armed, self.entered, self.release = True, asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.release.wait()
        async with super().transaction() as conn:
            yield conn


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """alice and bob (admins) and carol (member) on three nodes; #general public, #ops private
    to alice and bob; everything synced. Built once; each schedule works on a copy."""
    root = Path(tempfile.mkdtemp(prefix="rp-schedules-"))

    async def build() -> None:
        nodes = await make_workspace(root, "bob", "carol")
        await nodes[0].directory.set_role("bob", "admin")
        await nodes[0].chat.create_channel("general")
        await nodes[0].chat.create_channel("ops", private=True)
        await nodes[0].chat.add_member("ops", "bob")
        await heal(nodes)
        for node in nodes:
            await node.close()

    asyncio.run(build())
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def deliver(source: Node, target: Node, budget: int = PART_BUDGET) -> int:
    """What `source` knows `target` lacks, as a LAN session sends it: in parts, each imported
    with its heads as a receipt; then `target` acknowledges what it holds. Returns the changes
    `target` applied."""
    delta = await source.exchange.delta_for([target.identity.node_key])
    applied = 0
    for docs, blobs, wholes in pack_delta(delta, budget):
        heads = {doc_id: tuple(sorted(delta.heads.get(doc_id, ()))) for doc_id in [*(d for d, _ in docs), *(w.doc_id for w in wholes)]}
        receipt = Receipt(source="lan", sender=source.identity.node_key, created_at=source.identity.now(), sender_heads=heads)
        summary = await NodeReplica(target).import_batches(list(docs), wholes=wholes, blobs=blobs, received_from=source.identity.node_id, receipt=receipt)
        applied += summary.changes
    await source.exchange.record_peer_heads(target.identity.node_key, await target.exchange.heads_for(source.identity.node_key))
    return applied


async def heal(nodes: list[Node]) -> None:
    """All-to-all exchange until a whole round applies nothing."""
    for _ in range(HEAL_ROUNDS):
        moved = 0
        for source, target in itertools.permutations(nodes, 2):
            moved += await deliver(source, target)
        if not moved:
            return
    raise AssertionError(f"still exchanging changes after {HEAL_ROUNDS} all-to-all rounds")


# --- what a node shows, and what its documents say ------------------------------------------


async def view_of(node: Node) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The node's materialised channels and messages, by id (the search index row id aside)."""
    async with node.store.reading() as conn:
        channels = {r["channel_id"]: dict(r) for r in (await conn.execute(select(t.channels))).mappings()}
        rows = (await conn.execute(select(*t.messages.c, t.REACTIONS_READ).select_from(t.MESSAGES_WITH_REACTIONS))).mappings().all()
        # Reactions are kept apart, a row only for a message the view holds that has any.
        reacted = (await conn.execute(select(t.message_reactions))).all()
    assert all(reactions != "{}" for _, _, reactions in reacted)
    assert {(doc_id, message_id) for doc_id, message_id, _ in reacted} <= {(r["doc_id"], r["message_id"]) for r in rows}
    # Whether a post is withheld is the node's judgement of the channel's rules, not what the
    # document says: it is only ever set in a channel that is read-only or archived.
    assert all(channels[r["channel_id"]]["read_only"] or channels[r["channel_id"]]["archived"] for r in rows if r["withheld"])
    messages = {r["message_id"]: {k: v for k, v in r.items() if k not in ("row_id", "withheld")} for r in rows}
    return channels, messages


async def rebuilt_view(node: Node) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The view as the node's own documents and directory say, rebuilt from its change log."""
    async with node.store.reading() as conn:
        entries = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
        doc_rows = (await conn.execute(select(t.documents.c.doc_id, t.documents.c.kind, t.documents.c.channel_id))).all()
        snapshots: dict[str, Any] = {r.doc_id: r for r in await conn.execute(select(t.snapshots.c.doc_id, t.snapshots.c.data, t.snapshots.c.upto_change_id))}
        rows: list[tuple[str, int, bytes | None]] = [(r.doc_id, r.id, r.data) for r in await conn.execute(select(t.changes.c.doc_id, t.changes.c.id, t.changes.c.data).order_by(t.changes.c.id))]
    # A segment that came whole keeps its changes' bytes in its snapshot, which covers those rows.
    came_whole = {doc_id for doc_id, _, data in rows if data is None}
    logged: dict[str, list[bytes]] = {doc_id: [snapshots[doc_id].data] for doc_id in came_whole}
    for doc_id, change_id, data in rows:
        if data is not None and (doc_id not in came_whole or change_id > snapshots[doc_id].upto_change_id):
            logged.setdefault(doc_id, []).append(data)
    decoded = [certs.decode_certificate(d) if kind == "certificate" else certs.decode_revocation(d) for kind, d in entries]
    directory = certs.resolve_directory(
        node.identity.workspace_key,
        [e for e in decoded if isinstance(e, certs.Certificate)],
        [e for e in decoded if isinstance(e, certs.Revocation)],
        node.identity.now(),
    )
    admins = frozenset(k.hex() for k, c in directory.users.items() if c.role == "admin")
    channels: dict[str, dict[str, Any]] = {}
    messages: dict[str, dict[str, Any]] = {}
    for doc_id, kind, channel_id in doc_rows:
        doc = documents.load_document(b"".join(logged.get(doc_id, [])), bytes(48))
        if kind == "head":
            head = documents.read_head(doc, channel_id)
            if head is not None:
                channels[channel_id] = {"channel_id": channel_id, **head_view_values(head)}
        elif kind == "segment":
            for state in segments.read_messages(doc, admins):
                if ids.is_message_id(state.message_id):
                    messages[state.message_id] = view_values(channel_id, doc_id, state)
    return channels, messages


async def check_converged(nodes: list[Node]) -> None:
    views = [await view_of(node) for node in nodes]
    for node, view in zip(nodes, views, strict=True):
        assert view == await rebuilt_view(node), f"{node.identity.whoami().node_name}'s view is not what its documents say"
        async with node.store.reading() as conn:  # the search index matches the messages it indexes
            await conn.execute(text("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')"))
    # Each channel is on exactly the nodes of its members (public: all), with the same documents.
    channels = views[0][0]
    for channel_id, channel in channels.items():
        members = json.loads(channel["members"])
        holders = [i for i, node in enumerate(nodes) if channel["kind"] == "public" or node.identity.user_key.hex() in members]
        for i, (held, messages) in enumerate(views):
            in_channel = {m: row for m, row in messages.items() if row["channel_id"] == channel_id}
            if i not in holders:
                assert channel_id not in held and not in_channel, f"#{channel['name']} reached {USERS[i]}'s node"
                continue
            first_channels, first_messages = views[holders[0]]
            assert held[channel_id] == first_channels[channel_id], f"#{channel['name']}'s head differs between {USERS[holders[0]]}'s and {USERS[i]}'s nodes"
            expected = {m: row for m, row in first_messages.items() if row["channel_id"] == channel_id}
            differing = sorted(m for m in expected.keys() | in_channel.keys() if expected.get(m) != in_channel.get(m))
            assert not differing, (
                f"#{channel['name']} differs between {USERS[holders[0]]}'s and {USERS[i]}'s nodes: "
                + "; ".join(f"{m}: {expected.get(m)} != {in_channel.get(m)}" for m in differing[:3])
            )


# --- the schedules ----------------------------------------------------------------------------


class Schedules(RuleBasedStateMachine):
    def __init__(self, template: Path) -> None:
        super().__init__()
        self.work = Path(tempfile.mkdtemp(prefix="rp-schedule-"))
        self.loop = asyncio.new_event_loop()
        start = 60_000 + max(p.stat().st_mtime_ns for p in template.rglob("*")) // 1_000_000
        ticks = itertools.count(start)
        self.clock = lambda: next(ticks)
        self.serial = itertools.count()
        self.stick = self.work / "stick"
        self.stick.mkdir()
        self.nodes: list[Node] = []
        for index, name in enumerate(("alpha", *USERS[1:])):
            shutil.copytree(template / name, self.work / name)
            rng = random.Random(index)
            store = GatedStore.at(self.work / name, node_db_key(self.work / name))
            self.nodes.append(self.run(Node.open(self.work / name, PASSPHRASE, clock=self.clock, rng=rng.randbytes, store=store)))

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(work, 120))

    def teardown(self) -> None:
        try:
            self.run(self._heal_and_check())  # every schedule ends healed and checked
        finally:
            for node in self.nodes:
                self.run(node.close())
            self.loop.close()
            shutil.rmtree(self.work, ignore_errors=True)

    def text(self, words: str) -> str:
        return f"{words.strip()} #{next(self.serial)}"

    async def _messages(self, node: Node) -> list[dict[str, Any]]:
        """The view rows of the channels the node's user can read, in id order."""
        readable = [c.channel_id for c in await node.views.list_channels()]
        async with node.store.reading() as conn:
            rows = await conn.execute(select(t.messages).where(t.messages.c.channel_id.in_(readable)).order_by(t.messages.c.message_id))
            return [dict(r) for r in rows.mappings()]

    async def _pick(self, node: Node, pick: int, *, mine: bool = False) -> dict[str, Any] | None:
        live = [m for m in await self._messages(node) if not m["deleted"] and (not mine or m["author"] == node.identity.user_key.hex())]
        return live[pick % len(live)] if live else None

    async def _readable(self, node: Node, channel: str) -> bool:
        return channel in {c.name for c in await node.views.list_channels()}

    # --- users ----------------------------------------------------------------------------

    @rule(who=NODE, channel=st.sampled_from(CHANNELS), words=WORDS)
    def post(self, who: int, channel: str, words: str) -> None:
        async def go() -> None:
            node = self.nodes[who]
            if await self._readable(node, channel):
                await node.chat.post(channel, self.text(words))

        self.run(go())

    @rule(who=NODE, pick=PICK, words=WORDS)
    def reply(self, who: int, pick: int, words: str) -> None:
        async def go() -> None:
            node = self.nodes[who]
            target = await self._pick(node, pick)
            if target is not None:
                await node.chat.post(target["channel_id"], self.text(words), reply_to=target["message_id"])

        self.run(go())

    @rule(who=NODE, pick=PICK, words=WORDS)
    def edit(self, who: int, pick: int, words: str) -> None:
        async def go() -> None:
            node = self.nodes[who]
            target = await self._pick(node, pick, mine=True)
            if target is not None:
                await node.chat.edit(target["message_id"], self.text(words))

        self.run(go())

    @rule(who=NODE, pick=PICK, emoji=st.sampled_from(EMOJI), remove=st.booleans())
    def react(self, who: int, pick: int, emoji: str, remove: bool) -> None:
        async def go() -> None:
            node = self.nodes[who]
            target = await self._pick(node, pick)
            if target is not None:
                await node.chat.react(target["message_id"], emoji, remove=remove)

        self.run(go())

    @rule(who=NODE, pick=PICK, others=st.booleans())
    def delete(self, who: int, pick: int, others: bool) -> None:
        """Deletes one of the user's own messages, or - when the user is an admin as its node
        knows - someone else's."""

        async def go() -> None:
            node = self.nodes[who]
            if others and not node.directory.current.is_admin(node.identity.user_key):
                return
            live = [m for m in await self._messages(node) if not m["deleted"] and (m["author"] != node.identity.user_key.hex()) == others]
            if live:
                await node.chat.delete(live[pick % len(live)]["message_id"])

        self.run(go())

    # --- admins ---------------------------------------------------------------------------

    @rule(who=NODE, subject=NODE, role=st.sampled_from(("admin", "member")))
    def set_role(self, who: int, subject: int, role: str) -> None:
        async def go() -> None:
            node = self.nodes[who]
            if node.directory.current.is_admin(node.identity.user_key):  # themselves too
                await node.directory.set_role(USERS[subject], role)

        self.run(go())

    @rule(who=NODE, subject=st.integers(0, 2))
    def add_member(self, who: int, subject: int) -> None:
        """The owner of #ops or an admin adds someone to it."""

        async def go() -> None:
            node = self.nodes[who]
            listed = {c.name: c for c in await node.views.list_channels()}
            ops = listed.get("ops")
            if ops is None or USERS[subject] in ops.members:
                return
            if USERS[who] == "alice" or node.directory.current.is_admin(node.identity.user_key):  # alice made #ops: its owner
                await node.chat.add_member("ops", USERS[subject])

        self.run(go())

    # --- couriers and LANs ----------------------------------------------------------------

    @rule(a=NODE, b=NODE, small_parts=st.booleans())
    def lan(self, a: int, b: int, small_parts: bool) -> None:
        """A LAN session between two nodes: each sends what the other lacks."""
        if a != b:
            budget = 64 * 1024 if small_parts else PART_BUDGET
            self.run(deliver(self.nodes[a], self.nodes[b], budget))
            self.run(deliver(self.nodes[b], self.nodes[a], budget))

    @rule(a=NODE, b=NODE)
    def bundle(self, a: int, b: int) -> None:
        """A courier takes `a`'s bundle for `b` (and whatever the stick already holds for `b`)."""

        async def go() -> None:
            source, target = self.nodes[a], self.nodes[b]
            await export_bundles(source, self.stick, for_nodes=[target.identity.node_id], clock=self.clock, rng=random.Random(next(self.serial)).randbytes)
            report = await import_bundles(target, self.stick)
            refused = [(o.name, o.outcome, o.reason) for o in report.rejected]
            assert not refused and not report.problems, f"{USERS[b]}'s node refused bundles: {refused} {report.problems}"

        if a != b:
            self.run(go())

    @rule(who=NODE, source=NODE)
    def post_racing_import(self, who: int, source: int) -> None:
        """A post to #general while the node imports what `source` has (the import holds the
        node's write lock when the post arrives). The post succeeds, once."""

        async def go() -> None:
            node, sender = self.nodes[who], self.nodes[source]
            await node.chat.post("general", self.text("warms the post path"))  # the channel and its segment cursor are cached
            store = node.store
            assert isinstance(store, GatedStore)
            store.arm()
            importing = asyncio.ensure_future(deliver(sender, node))
            entered = asyncio.ensure_future(store.entered.wait())
            await asyncio.wait([importing, entered], return_when=asyncio.FIRST_COMPLETED)
            body = self.text("races an import")
            posting = asyncio.ensure_future(node.chat.post("general", body))
            for _ in range(10):  # the post runs up to the node's write lock, which the import holds
                await asyncio.sleep(0)
            store.release.set()
            entered.cancel()
            imported, posted = await asyncio.gather(importing, posting, return_exceptions=True)
            if isinstance(imported, BaseException):
                raise imported
            stored = [m["message_id"] for m in await self._messages(node) if m["text"] == body]
            if isinstance(posted, BaseException):
                raise AssertionError(f"the post raised {posted!r}; stored: {len(stored)} message(s)") from posted
            assert stored == [posted]

        if who != source:
            self.run(go())

    @rule()
    def heal_and_check(self) -> None:
        self.run(self._heal_and_check())

    async def _heal_and_check(self) -> None:
        await heal(self.nodes)
        await check_converged(self.nodes)


def test_random_schedules_converge(template: Path) -> None:
    run_state_machine_as_test(lambda: Schedules(template), settings=SCHEDULES)


# Schedules that once failed (found by the test above, shrunk), replayed as they are.
REGRESSIONS = {
    # carol's node took bob's promotion and his deletion of her message in one import, and
    # judged the deletion with the admins as they were before it: undeleted and tampered for
    # good, where the others showed it deleted.
    "deletion-imported-with-the-deleters-promotion": [
        ("set_role", {"who": 0, "subject": 1, "role": "member"}),
        ("heal_and_check", {}),
        ("post", {"who": 2, "channel": "general", "words": "carol says"}),
        ("lan", {"a": 2, "b": 0, "small_parts": False}),
        ("set_role", {"who": 0, "subject": 1, "role": "admin"}),
        ("lan", {"a": 0, "b": 1, "small_parts": False}),
        ("delete", {"who": 1, "pick": 0, "others": True}),
        ("lan", {"a": 1, "b": 2, "small_parts": False}),
    ],
    # alice deleted bob's message as an admin while bob demoted her: her node kept it deleted,
    # the others (demotion first) showed it undeleted and tampered.
    "deletion-then-the-deleters-demotion": [
        ("post", {"who": 1, "channel": "general", "words": "bob says"}),
        ("lan", {"a": 1, "b": 0, "small_parts": False}),
        ("delete", {"who": 0, "pick": 0, "others": True}),
        ("set_role", {"who": 1, "subject": 0, "role": "member"}),
    ],
    # The import reset #general's segment cursor while the post waited for the write lock:
    # KeyError after the message was stored.
    "post-racing-an-import": [
        ("post", {"who": 0, "channel": "general", "words": "alice says"}),
        ("post_racing_import", {"who": 1, "source": 0}),
    ],
    # alice certified carol while bob demoted alice: nodes that had the demotion refused
    # alice's directory change for ever (judged on the directory as it is now, not as of the
    # change), and the heal never ended.
    "certificate-issued-while-its-issuer-is-demoted": [
        ("set_role", {"who": 0, "subject": 2, "role": "member"}),
        ("set_role", {"who": 1, "subject": 0, "role": "member"}),
    ],
    # bob stepped down: the other nodes refused his directory change (not an admin with it).
    "an-admin-demotes-themselves": [
        ("set_role", {"who": 1, "subject": 1, "role": "member"}),
    ],
}


@pytest.mark.parametrize("steps", REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_schedules_that_once_failed(template: Path, steps: list[tuple[str, dict[str, Any]]]) -> None:
    machine = Schedules(template)
    try:
        for rule_name, arguments in steps:
            getattr(machine, rule_name)(**arguments)
    finally:
        machine.teardown()  # heals and checks


async def test_an_upgraded_store_judges_the_deletions_it_could_not(tmp_path: Path) -> None:
    """A store from before `messages.deleted_by` may hold a deletion judged with other admins
    than the directory's: the upgrade marks such rows, and the node re-reads them on open."""
    alice, bob = await make_workspace(tmp_path, "bob")
    await alice.chat.create_channel("general")
    await heal([alice, bob])
    posted = await bob.chat.post("general", "bob says")
    await heal([alice, bob])
    await alice.chat.delete(posted)  # as an admin
    for node in (alice, bob):
        await node.close()
    db = tmp_path / "alpha" / DB_FILE
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with node_engine(db).begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
        # what an older node could have left: the deletion judged as by a non-admin
        conn.execute(text("UPDATE messages SET deleted = 0, tampered = 1 WHERE message_id = :m"), {"m": posted})
    async with await Node.open(tmp_path / "alpha", PASSPHRASE) as alice:
        view = await alice.views.message(posted)
        assert view.deleted and not view.tampered and view.text == ""




async def test_a_demotion_rejudges_more_segments_than_the_node_keeps_in_memory(tmp_path: Path) -> None:
    """The re-read after a role change loads every segment with a deletion by someone else -
    here more than the documents a node keeps in memory - in the role change's transaction."""
    alice, bob = await make_workspace(tmp_path, "bob")
    await alice.directory.set_role("bob", "admin")
    channels = [f"c{i}" for i in range(CACHED_DOCUMENTS + 1)]
    posted = []
    for name in channels:
        await alice.chat.create_channel(name)
        posted.append(await alice.chat.post(name, f"alice in #{name}"))
    await heal([alice, bob])
    for message_id in posted:
        await bob.chat.delete(message_id)
    await heal([alice, bob])
    await bob.directory.set_role("bob", "member")  # his deletions of others' messages stop counting
    await check_converged([bob])
    views = [await bob.views.message(message_id) for message_id in posted]
    assert all(not v.deleted and v.tampered for v in views)
    await heal([alice, bob])
    await check_converged([alice, bob])
    for node in (alice, bob):
        await node.close()
