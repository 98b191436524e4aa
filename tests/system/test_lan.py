"""LAN sessions in one process over real loopback sockets (mDNS off: the multi-process tests
cover discovery): sync, live pushes, remembered acknowledgements, and a hostile network -
unknown, revoked and filtered peers, stalled and excess handshakes, oversized and malformed
frames - while a legitimate peer keeps syncing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import nacl.signing
import pytest

from appliance.errors import NodeLocked, NotFound
from appliance.node import Attachment, Node
from sync import lan, messages, wire
from sync import session as lan_session
from sync.errors import SessionError
from sync.lan import LanConfig, LanEvent, LanService, SessionDown, SessionUp, Wiped
from sync.sneakernet import import_bundles
from sync.twins import MemoryLan
from tests.conftest import PASSPHRASE, make_workspace, revocation_on_stick, sync_all

pytestmark = pytest.mark.timeout(120)

QUICK = LanConfig(
    bind="127.0.0.1", port=0, discovery=False, handshake_deadline_s=1.0, max_unauthenticated=4, max_unauthenticated_per_address=2, store_poll_s=0.02, backoff_min_s=0.05, backoff_max_s=0.2
)


class Intercepted:
    """A node service with some methods replaced by the test's; the rest are the service's own."""

    def __init__(self, service: Any, **methods: Callable[..., Awaitable[Any]]) -> None:
        self._service = service
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def texts(node: Node, channel: str = "general") -> list[str]:
    return sorted(m.text for m in await node.views.read(channel, limit=10_000, mark_read=False))


Event = TypeVar("Event")


class Recorder:
    def __init__(self) -> None:
        self.events: list[LanEvent] = []

    def __call__(self, event: LanEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def serving(node: Node, config: LanConfig = QUICK) -> AsyncIterator[tuple[LanService, Recorder]]:
    recorder = Recorder()
    async with LanService(node, config, on_event=recorder) as service:
        yield service, recorder


async def audit_actions(node: Node) -> list[tuple[str, str]]:
    return [(e.action, str(e.detail.get("reason", ""))) for e in await node.audit.entries()]


async def test_a_running_service_starts_the_workers_before_any_session(tmp_path: Path) -> None:
    """A long-running node reads what peers send in worker processes: they start with the
    service, not inside the first session's import."""
    import multiprocessing

    (node,) = await make_workspace(tmp_path)
    before = {p.pid for p in multiprocessing.active_children()}
    async with node, serving(node) as (_, recorder):
        deadline = time.monotonic() + 30
        while len({p.pid for p in multiprocessing.active_children()} - before) < 2:
            assert time.monotonic() < deadline, "the service started no worker"
            await asyncio.sleep(0.01)
        assert not recorder.of(SessionUp)


async def test_two_nodes_sync_everything_then_push_live_both_ways(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"before {i}" for i in range(300)])
        async with serving(alpha) as (a, _), serving(bravo) as (b, b_events):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _has(bravo, "general", 300), what="initial sync")
            assert b_events.of(SessionUp)
            started = time.monotonic()
            await alpha.chat.post("general", "live from alpha")
            await eventually(lambda: _contains(bravo, "live from alpha"), what="push to bravo")
            assert time.monotonic() - started < 5
            await bravo.chat.post("general", "live from bravo")
            await eventually(lambda: _contains(alpha, "live from bravo"), what="push to alpha")
            await eventually(lambda: _zero(alpha.exchange.changes_behind(bravo.identity.node_key)), what="alpha's record of bravo's heads")
            await eventually(lambda: _zero(bravo.exchange.changes_behind(alpha.identity.node_key)), what="bravo's record of alpha's heads")
        assert await texts(alpha) == await texts(bravo)
        # What the session acknowledged is remembered: a bundle for the peer now is empty.
        assert (await alpha.exchange.delta_for([bravo.identity.node_key])).change_count == 0
        peers = {p.node_id: p for p in await alpha.peers.peer_overview()}
        assert peers[bravo.identity.node_id].trust == "trusted" and peers[bravo.identity.node_id].last_sync is not None


async def test_a_session_start_reads_and_sends_the_delta_a_few_documents_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lan_session, "RESYNC_GROUP_CHANGES", 600)
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"before {i}" for i in range(1_300)])  # three segments
        read: list[list[str]] = []
        delta_for = alpha.exchange.delta_for

        async def recording(peers: list[bytes], **kwargs: Any) -> Any:
            read.append(sorted(kwargs.get("only") or ["everything"]))
            return await delta_for(peers, **kwargs)

        monkeypatch.setattr(alpha.exchange, "delta_for", recording)
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _has(bravo, "general", 1_300), what="initial sync")
            await eventually(lambda: _zero(alpha.exchange.changes_behind(bravo.identity.node_key)), what="alpha's record of bravo's heads")
        assert await texts(bravo) == sorted(f"before {i}" for i in range(1_300))
    segments = [doc_id for group in read for doc_id in group if "/seg/" in doc_id]
    assert len(read) >= 3 and segments == sorted(segments, reverse=True)  # newest segment first


async def test_attachments_small_and_larger_than_a_frame_travel_once(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        small, large = os.urandom(3_000), os.urandom(9 * 1024 * 1024 + 123)  # the large one spans frames
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _channel_known(bravo, "general"), what="first sync")
            await alpha.chat.post("general", "two files", attachments=[Attachment("small.bin", small), Attachment("map.tif", large)])
            await eventually(lambda: _contains(bravo, "two files"), what="the message")
            message = next(m for m in await bravo.views.read("general", mark_read=False) if m.text == "two files")
            hashes = {f.name: f.hash for f in message.files}
            await eventually(lambda: _has_blob(bravo, hashes["map.tif"]), timeout=20, what="the large attachment")
            assert await bravo.blobs.blob(hashes["small.bin"]) == small and await bravo.blobs.blob(hashes["map.tif"]) == large
            session = a.sessions()[0]
            assert len(large) < session.bytes_sent < len(large) + len(small) + 200_000  # each sent once


async def test_an_attachment_over_the_receivers_limit_ends_the_session_and_stores_nothing(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.directory.set_role("bravo", "admin")  # so that bravo's own user may set bravo's limit
        await sync_all(alpha, bravo)
        await bravo.blobs.set_max_blob_bytes(1024 * 1024)  # the node-local setting an admin of bravo would make
        async with serving(alpha) as (a, _), serving(bravo) as (b, b_events):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _channel_known(bravo, "general"), what="first sync")
            await alpha.chat.post("general", "too big", attachments=[Attachment("big.bin", os.urandom(2 * 1024 * 1024))])
            await eventually(lambda: _has_event(b_events, SessionDown), what="the session ends")
            assert "limit" in b_events.of(SessionDown)[0].reason
            assert await bravo.blobs.blob_count() == 0


async def test_peers_a_finder_reports_are_dialled_without_being_told(tmp_path: Path) -> None:
    """Discovery behind its port: with an in-memory finder in place of mDNS, each service
    learns of the other, the lower node id dials, and the two sync over real sockets."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    lan = MemoryLan()
    found = replace(QUICK, discovery=True)
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        async with LanService(alpha, found, finder=lan.finder("127.0.0.1")) as a, LanService(bravo, found, finder=lan.finder("127.0.0.1")) as b:
            assert [p.node_id for p in a.discovered()] == [bravo.identity.node_id]
            await alpha.chat.post("general", "found, not dialled")
            await eventually(lambda: _contains(bravo, "found, not dialled"), what="the post over the found session")
            sessions = a.sessions() + b.sessions()
            assert len(sessions) == 2 and sum(s.initiator for s in sessions) == 1
        assert {p.node_id for p in await alpha.peers.lan_peers()} == {bravo.identity.node_id}


async def test_a_post_from_another_process_on_the_same_store_propagates(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _channel_known(bravo, "general"), what="channel on bravo")
            # A second Node on alpha's home stands in for the CLI: another writer of the store.
            async with await Node.open(tmp_path / "alpha", PASSPHRASE) as cli:
                await cli.chat.post("general", "written by the CLI")
            await eventually(lambda: _contains(bravo, "written by the CLI"), what="CLI post on bravo")


async def test_a_dropped_session_is_redialled_and_catches_up(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        async with serving(alpha) as (a, _):
            port = a.port
            async with serving(bravo) as (b, b_events):
                b.dial("127.0.0.1", port)
                await eventually(lambda: _channel_known(bravo, "general"), what="first sync")
        await alpha.chat.post("general", "while apart")
        config = LanConfig(**{**QUICK.__dict__, "port": port})
        async with serving(bravo) as (b, b_events):
            b.dial("127.0.0.1", port)
            await asyncio.sleep(0.3)  # bravo fails to connect and backs off
            async with serving(alpha, config):
                await eventually(lambda: _contains(bravo, "while apart"), what="catch-up after reconnect")


async def test_unknown_and_other_workspace_nodes_are_refused_and_audited(tmp_path: Path) -> None:
    (alpha, bravo), (stranger,) = await make_workspace(tmp_path / "one", "bravo"), await make_workspace(tmp_path / "two")
    async with alpha, bravo, stranger:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "secret plans")
        await stranger.chat.create_channel("general")
        async with serving(alpha) as (a, a_events), serving(stranger) as (s, s_events):
            with pytest.raises(Exception) as refused:
                await s.connect("127.0.0.1", a.port)
            assert "workspace" in str(refused.value) or "closed" in str(refused.value)
            await eventually(lambda: _any_refusal(alpha), what="alpha audits the refusal")
            assert "secret plans" not in await texts(stranger)
            assert not a_events.of(SessionUp)


async def test_a_node_not_in_the_directory_is_refused_before_any_data(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "members only")
        impostor = nacl.signing.SigningKey(bytes(range(32)))
        async with serving(alpha) as (a, a_events):
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            initiator = wire.Initiator(alpha.identity.workspace_key, impostor, bytes(32), incarnation=bytes(16))
            writer.write(initiator.hello())
            await writer.drain()
            initiator.read_response(await reader.readexactly(wire.RESPONSE_BYTES))
            auth, _ = initiator.auth()
            writer.write(auth)
            await writer.drain()
            # The node says nothing more: no stream header, no heads, just the end.
            assert await hung_up(reader, 5)
            writer.close()
            await eventually(lambda: _audited(alpha, "unknown node"), what="audit of the unknown node")
            assert not a_events.of(SessionUp)


async def test_a_revoked_node_is_refused(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.directory.revoke(bravo.identity.node_key, "lost laptop")
        await alpha.chat.post("general", "after the revocation")
        async with serving(alpha) as (a, a_events), serving(bravo) as (b, b_events):
            await b.connect("127.0.0.1", a.port)  # alpha hangs up after bravo's AUTH
            await eventually(lambda: _audited(alpha, "revoked node"), what="audit of the revoked node")
            assert not a_events.of(SessionUp) and not b_events.of(SessionUp)
        assert not await _contains(bravo, "after the revocation")


async def test_revoking_a_peer_mid_session_sends_it_the_news_and_ends_the_session(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        async with serving(alpha) as (a, a_events), serving(bravo) as (b, b_events):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _channel_known(bravo, "general"), what="first sync")
            await alpha.directory.revoke(bravo.identity.node_key, "stolen")
            await alpha.chat.post("general", "after the revocation")
            await eventually(lambda: _has_event(a_events, SessionDown), what="the session ends")
            assert "revoked" in a_events.of(SessionDown)[0].reason
            # Bravo read its own revocation and wiped itself; its service stopped: it neither
            # listens nor reconnects any more.
            await eventually(lambda: _locked(bravo), what="bravo's remote wipe")
            await asyncio.wait_for(b.ended.wait(), 10)
            (wiped,) = b_events.of(Wiped)
            assert wiped.reason == b.end_reason and "stolen" in wiped.reason
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", b.port)
            await asyncio.sleep(0.5)
            assert len(a_events.of(SessionUp)) == 1


async def test_a_wipe_by_another_process_stops_the_service(tmp_path: Path) -> None:
    """The revocation comes by courier, imported by another process on the same home (the
    console beside `serve`): the service's node notices it on its next look at the store, drops
    its keys and documents, and the service stops."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        stick = await revocation_on_stick(alpha, bravo, tmp_path)
        async with serving(bravo) as (b, b_events):
            async with await Node.open(bravo.home, PASSPHRASE) as courier_side:
                assert (await import_bundles(courier_side, stick)).wiped
            await asyncio.wait_for(b.ended.wait(), 10)
            (wiped,) = b_events.of(Wiped)
            assert "stolen" in wiped.reason and bravo.identity.locked_reason == wiped.reason
            with pytest.raises(NodeLocked):
                await bravo.feed.poll()
            with pytest.raises(NodeLocked):
                await bravo.exchange.heads_for(alpha.identity.node_key)
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", b.port)


async def test_an_address_outside_the_allowlist_is_refused_unread(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.peers.set_network_rule("127.0.0.0/8", "deny")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            with pytest.raises(SessionError):
                await b.connect("127.0.0.1", a.port)
            await eventually(lambda: _audited(alpha, "denied by rule 127.0.0.0/8"), what="allowlist refusal audited")
        await alpha.peers.set_network_rule("127.0.0.0/8", None)
        await alpha.peers.set_network_rule("127.0.0.1/32", "allow")
        async with serving(alpha) as (a, _), serving(bravo) as (b, _):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _zero(bravo.exchange.changes_behind(alpha.identity.node_key)), what="sync once allowed")


async def test_the_allowlist_applies_to_the_sessions_this_node_dials(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "not before it is allowed")
        await alpha.peers.set_network_rule("10.20.0.0/16", "allow")  # replaces the defaults: loopback is refused
        async with serving(alpha) as (a, a_events), serving(bravo) as (b, b_events):
            with pytest.raises(SessionError, match=r"not dialled: address 127\.0\.0\.1 is not in the allowlist \(to allow it: rallypoint allow 127\.0\.0\.1/32\)"):
                await asyncio.wait_for(a.connect("127.0.0.1", b.port), 5)
            a.dial("127.0.0.1", b.port)
            await eventually(lambda: _audited(alpha, "not dialled: address 127.0.0.1 is not in the allowlist"), what="the refused dial audited")
            assert [e.address for e in a_events.of(lan.Refused)] == ["127.0.0.1"]  # reported once, not once per retry
            assert not b_events.of(SessionUp) and not b_events.of(lan.Refused)  # bravo never saw a connection
            assert not await _channel_known(bravo, "general")
            await alpha.peers.set_network_rule("127.0.0.1/32", "allow")
            await eventually(lambda: _contains(bravo, "not before it is allowed"), what="sync once allowed: the dialler kept trying")


async def test_hostile_connections_do_not_stop_a_legitimate_peer(tmp_path: Path) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    async with alpha, bravo, charlie:
        await alpha.chat.create_channel("general")
        config = replace(QUICK, handshake_deadline_s=5.0)  # the stalled ones outlast the check for a new session
        async with serving(alpha, config) as (a, a_events), serving(bravo) as (b, _), serving(charlie) as (c, c_events):
            b.dial("127.0.0.1", a.port)
            await eventually(lambda: _channel_known(bravo, "general"), what="first sync")
            # Stalled handshakes from one address beyond its cap: its oldest gives way.
            per_address = QUICK.max_unauthenticated_per_address
            stalled = [await asyncio.open_connection("127.0.0.1", a.port, local_addr=("127.0.0.9", 0)) for _ in range(per_address + 1)]
            assert await hung_up(stalled[0][0], 1)
            evicted = [stalled.pop(0)]
            # Another address fills the gate: the oldest of all gives way to each newcomer.
            stalled += [await asyncio.open_connection("127.0.0.1", a.port, local_addr=("127.0.0.10", 0)) for _ in range(QUICK.max_unauthenticated - per_address)]
            assert not await hung_up(stalled[0][0], 0.2)
            stalled.append(await asyncio.open_connection("127.0.0.1", a.port, local_addr=("127.0.0.11", 0)))
            assert await hung_up(stalled[0][0], 1)
            evicted.append(stalled.pop(0))
            # So a few stalled sockets cannot lock out a new legitimate session.
            c.dial("127.0.0.1", a.port)
            await eventually(lambda: _has_event(c_events, SessionUp), timeout=3, what="a new session beside the stalled ones")
            # An address that presented an unknown key is shed at once for a while; others are not.
            impostor_reader, impostor_writer = await asyncio.open_connection("127.0.0.1", a.port, local_addr=("127.0.0.12", 0))
            initiator = wire.Initiator(alpha.identity.workspace_key, nacl.signing.SigningKey(bytes(range(32))), bytes(32), incarnation=bytes(16))
            impostor_writer.write(initiator.hello())
            initiator.read_response(await impostor_reader.readexactly(wire.RESPONSE_BYTES))
            impostor_writer.write(initiator.auth()[0])
            assert await hung_up(impostor_reader, 5)
            for source, shed in (("127.0.0.12", True), ("127.0.0.13", False)):
                reader, writer = await asyncio.open_connection("127.0.0.1", a.port, local_addr=(source, 0))
                writer.write(wire.Initiator(alpha.identity.workspace_key, bravo.identity.signing_key, bytes(32), incarnation=bravo.identity.incarnation).hello())
                assert await hung_up(reader, 1) if shed else len(await reader.readexactly(wire.RESPONSE_BYTES)) == wire.RESPONSE_BYTES
                evicted.append((reader, writer))
            evicted.append((impostor_reader, impostor_writer))
            # Garbage instead of a HELLO, and an oversized frame from an authenticated peer.
            junk_reader, junk_writer = await asyncio.open_connection("127.0.0.1", a.port)
            junk_writer.write(b"GET / HTTP/1.1\r\n" + b"x" * 200)
            await junk_writer.drain()
            assert await hung_up(junk_reader, 5)
            await alpha.chat.post("general", "still flowing")
            await eventually(lambda: _contains(bravo, "still flowing"), what="live sync during the attack")
            # The stalled ones still there hit the handshake deadline.
            for reader, _ in stalled[1:]:
                assert await hung_up(reader, config.handshake_deadline_s + 3)
            for _, writer in [*stalled, *evicted, (junk_reader, junk_writer)]:
                writer.close()
            await eventually(lambda: _audited(alpha, "handshake deadline passed"), what="deadline audited")
            await eventually(lambda: _audited(alpha, "too many pending handshakes: gave way to newer connections"), what="evictions audited")
            await eventually(lambda: _audited(alpha, "shed for 2 s after a failed handshake"), what="the penalty audited")
            await bravo.chat.post("general", "and back")
            await eventually(lambda: _contains(alpha, "and back"), what="still syncing after the attack")


async def test_a_session_closed_while_it_starts_is_redialled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both nodes dial at once: the higher id's own session, still starting (reading its heads),
    is replaced by the one the lower id dialled. It ends quietly and its dialler keeps going:
    once the lower id restarts without dialling, the higher id's dialler brings a session back."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    low, high = sorted((alpha, bravo), key=lambda n: n.identity.node_id)
    async with alpha, bravo:
        await low.chat.create_channel("general")
        starting, resume = asyncio.Event(), asyncio.Event()
        real_heads_for = high.exchange.heads_for

        async def heads_for_paused_once(peer: bytes) -> Any:
            if not starting.is_set():  # the first session of `high` to start waits here
                starting.set()
                await resume.wait()
            return await real_heads_for(peer)

        monkeypatch.setattr(high.exchange, "heads_for", heads_for_paused_once)
        async with serving(high) as (h, h_events):
            async with serving(low) as (low_service, _):
                port = low_service.port
                h.dial("127.0.0.1", port)
                await asyncio.wait_for(starting.wait(), 10)
                low_service.dial("127.0.0.1", h.port)  # replaces high's starting session
                await eventually(lambda: _count(h_events, SessionUp, 2), what="the second session")
                resume.set()
                await eventually(lambda: _count(h_events, SessionDown, 1), what="the first session's end")
            async with serving(low, replace(QUICK, port=port)):  # low no longer dials
                await eventually(lambda: _count(h_events, SessionUp, 3), what="high redials")
                await low.chat.post("general", "after the redial")
                await eventually(lambda: _contains(high, "after the redial"), what="sync after the redial")


@pytest.mark.parametrize("attack", ["oversized", "malformed", "replayed"])
async def test_a_bad_frame_ends_the_session(tmp_path: Path, attack: str) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        async with serving(alpha) as (a, a_events):
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            initiator = wire.Initiator(bravo.identity.workspace_key, bravo.identity.signing_key, bytes(32), incarnation=bravo.identity.incarnation)
            writer.write(initiator.hello())
            initiator.read_response(await reader.readexactly(wire.RESPONSE_BYTES))
            auth, keys = initiator.auth()
            sealer = wire.FrameSealer(keys.send, bytes(24))
            writer.write(auth + sealer.header)
            if attack == "oversized":
                writer.write(struct.pack(">I", wire.MAX_FRAME_BYTES + 1) + b"\x00" * 64)
            elif attack == "malformed":
                writer.write(sealer.seal(b"\xa1\x61t\x64junk"))
            else:
                frame = sealer.seal(messages.encode_message(messages.Ping(1)))
                writer.write(frame + frame)
            await writer.drain()
            await eventually(lambda: _has_event(a_events, SessionDown), what="session ended")
            down = a_events.of(SessionDown)[0]
            assert down.node_id == bravo.identity.node_id
            await eventually(lambda: _audited(alpha, "session ended"), what="bad frame audited")
            writer.close()


# --- helpers -------------------------------------------------------------------------------


async def hung_up(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the other end closed (or reset) the connection within `timeout`, sending nothing."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def _has(node: Node, channel: str, count: int) -> bool:
    return await _channel_known(node, channel) and len(await texts(node, channel)) >= count


async def _contains(node: Node, text: str) -> bool:
    return await _channel_known(node, "general") and text in await texts(node)


async def _channel_known(node: Node, name: str) -> bool:
    return any(c.name == name for c in await node.views.list_channels())


async def _locked(node: Node) -> bool:
    try:
        await node.views.list_channels()
    except NodeLocked:
        return True
    return False


async def _has_blob(node: Node, digest: str) -> bool:
    try:
        await node.blobs.blob(digest)
    except NotFound:
        return False
    return True


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def _count(recorder: Recorder, kind: type, at_least: int) -> bool:
    return len(recorder.of(kind)) >= at_least


async def _has_event(recorder: Recorder, kind: type) -> bool:
    return bool(recorder.of(kind))


async def _any_refusal(node: Node) -> bool:
    return any(action == "lan_refused" for action, _ in await audit_actions(node))


async def _audited(node: Node, reason: str) -> bool:
    return any(action == "lan_refused" and reason in detail for action, detail in await audit_actions(node))
