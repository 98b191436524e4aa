"""The `FrameChannel` port's acceptance suite, run by every implementation: the real one
(`sync.channel.StreamChannel`, sealed frames over a loopback TCP connection) and the twin
(`sync.twins.channel_pair`). Every wait is bounded: a receive that hangs fails the test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from sync import messages, wire
from sync.channel import StreamChannel
from sync.errors import ChannelLost
from sync.ports import FrameChannel
from sync.twins import MemoryChannel, channel_pair

pytestmark = pytest.mark.timeout(30)

BOUND_S = 2.0  # no step of these tests may take longer


async def stream_pair() -> AsyncIterator[tuple[FrameChannel, FrameChannel]]:
    """Two StreamChannels over a real loopback connection, keyed as a handshake would key them."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        dial_reader, dial_writer = await asyncio.open_connection("127.0.0.1", port)
        serve_reader, serve_writer = await asyncio.wait_for(accepted.get(), BOUND_S)
        one_way, other_way = os.urandom(32), os.urandom(32)
        dialler = StreamChannel(dial_reader, dial_writer, wire.SessionKeys(one_way, other_way), os.urandom(wire.STREAM_HEADER_BYTES), deadline_s=BOUND_S)
        server_side = StreamChannel(serve_reader, serve_writer, wire.SessionKeys(other_way, one_way), os.urandom(wire.STREAM_HEADER_BYTES), deadline_s=BOUND_S)
        yield dialler, server_side
        await dialler.close()
        await server_side.close()
    finally:
        server.close()


async def memory_pair() -> AsyncIterator[tuple[FrameChannel, FrameChannel]]:
    one, other = channel_pair()
    yield one, other
    await one.close()
    await other.close()


PORT = FrameChannel
IMPLEMENTATIONS = {"stream": StreamChannel, "memory": MemoryChannel}


@pytest.fixture(params=list(IMPLEMENTATIONS))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FrameChannel, FrameChannel]]:
    made = stream_pair() if request.param == "stream" else memory_pair()
    one, other = await anext(made)
    await asyncio.wait_for(asyncio.gather(one.open(), other.open()), BOUND_S)
    yield one, other
    with pytest.raises(StopAsyncIteration):
        await anext(made)


async def receive(channel: FrameChannel) -> messages.Message | None:
    return await asyncio.wait_for(channel.receive(), BOUND_S)


async def test_messages_arrive_in_order_both_ways(pair: tuple[FrameChannel, FrameChannel]) -> None:
    one, other = pair
    for nonce in range(200):
        one.send(messages.Ping(nonce))
        other.send(messages.Pong(nonce))
    await asyncio.wait_for(one.room(), BOUND_S)
    assert [await receive(other) for _ in range(200)] == [messages.Ping(n) for n in range(200)]
    assert [await receive(one) for _ in range(200)] == [messages.Pong(n) for n in range(200)]
    assert one.bytes_sent > 0 and other.bytes_received > 0


async def test_a_final_message_arrives_then_the_channel_ends(pair: tuple[FrameChannel, FrameChannel]) -> None:
    one, other = pair
    one.send(messages.Heads({}, complete=True))
    await asyncio.wait_for(one.close(messages.Bye("done")), BOUND_S)
    assert await receive(other) == messages.Heads({}, complete=True)
    assert await receive(other) == messages.Bye("done")
    assert await receive(other) is None
    assert await receive(other) is None  # and stays ended


async def test_a_receive_after_close_ends_at_once(pair: tuple[FrameChannel, FrameChannel]) -> None:
    one, _ = pair
    await asyncio.wait_for(one.close(), BOUND_S)
    assert await receive(one) is None
    one.send(messages.Ping(1))  # ignored, not an error


async def test_a_close_ends_a_receive_already_waiting(pair: tuple[FrameChannel, FrameChannel]) -> None:
    one, _ = pair
    waiting = asyncio.create_task(one.receive())
    await asyncio.sleep(0)  # the receive is now waiting for a message that will not come
    await asyncio.wait_for(one.close(), BOUND_S)
    assert await asyncio.wait_for(waiting, BOUND_S) is None


async def test_a_peer_gone_without_a_final_message_is_a_lost_connection(pair: tuple[FrameChannel, FrameChannel]) -> None:
    one, other = pair
    await asyncio.wait_for(one.close(), BOUND_S)
    with pytest.raises(ChannelLost):
        await receive(other)
