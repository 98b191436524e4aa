"""A session's `FrameChannel` over a TCP stream: `sync.wire`'s sealed frames, written by one
writer task from a queue so that the session's reader never waits on the network to send
(two peers sending each other large deltas at once cannot deadlock on full socket buffers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from sync import messages, wire
from sync.errors import ChannelLost

HIGH_WATER_BYTES = 4 * 1024 * 1024  # queued output beyond which `room` waits
GOODBYE_S = 1.0  # how long a closing channel tries to deliver its final frame, and to close


class StreamChannel:
    """The frames of one authenticated connection: `keys` from the handshake, `header` the
    random stream header of our direction."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keys: wire.SessionKeys, header: bytes, *, deadline_s: float) -> None:
        self._reader = reader
        self._writer = writer
        self._receive_key = keys.receive
        self._sealer = wire.FrameSealer(keys.send, header)
        self._opener: wire.FrameOpener | None = None
        self._deadline_s = deadline_s
        self._outbox: deque[bytes] = deque()
        self._queued_bytes = 0
        self._output = asyncio.Event()
        self._drained = asyncio.Event()
        self._writing: asyncio.Task[None] | None = None
        self._closed = False
        self._ended = False  # the peer's final frame arrived
        self._bytes_sent = 0
        self._bytes_received = wire.STREAM_HEADER_BYTES

    @property
    def bytes_sent(self) -> int:
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        return self._bytes_received

    async def open(self) -> None:
        self._writing = asyncio.create_task(self._write_frames())
        self._enqueue(self._sealer.header)
        try:
            async with asyncio.timeout(self._deadline_s):
                self._opener = wire.FrameOpener(self._receive_key, await self._reader.readexactly(wire.STREAM_HEADER_BYTES))
        except asyncio.IncompleteReadError as exc:
            raise ChannelLost("connection lost") from exc
        except (ConnectionError, OSError) as exc:
            raise ChannelLost(f"connection lost: {exc}") from exc

    def send(self, message: messages.Message) -> None:
        if self._closed:  # the stream already ended with its final frame (closed while starting): nothing may follow
            return
        self._enqueue(self._sealer.seal(messages.encode_message(message)))

    async def room(self) -> None:
        while self._queued_bytes > HIGH_WATER_BYTES and not self._closed:
            self._drained.clear()
            await self._drained.wait()

    async def receive(self) -> messages.Message | None:
        if self._closed or self._ended or self._opener is None:
            return None
        try:
            size = self._opener.length(await self._reader.readexactly(wire.LENGTH_BYTES))
            plaintext, final = self._opener.open(await self._reader.readexactly(size))
        except asyncio.IncompleteReadError as exc:
            if self._closed:
                return None
            raise ChannelLost("connection lost") from exc
        except (ConnectionError, OSError) as exc:
            if self._closed:
                return None
            raise ChannelLost(f"connection lost: {exc}") from exc
        self._bytes_received += wire.LENGTH_BYTES + size
        self._ended = final
        return messages.decode_message(plaintext)

    async def close(self, final: messages.Message | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if final is not None and self._writing is not None:  # a channel that never opened has no stream to say goodbye in
            self._enqueue(self._sealer.seal(messages.encode_message(final), final=True))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GOODBYE_S):
                    while self._outbox and not self._writing.done():
                        await self._drained.wait()
                        self._drained.clear()
        if self._writing is not None:
            self._writing.cancel()
        self._drained.set()  # a sender waiting for room goes on, and finds the channel closed
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(GOODBYE_S):
                await self._writer.wait_closed()

    def _enqueue(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._queued_bytes += len(frame)
        self._output.set()

    async def _write_frames(self) -> None:
        try:
            while True:
                await self._output.wait()
                self._output.clear()
                while self._outbox:
                    frame = self._outbox.popleft()
                    self._writer.write(frame)
                    await self._writer.drain()
                    self._queued_bytes -= len(frame)
                    self._bytes_sent += len(frame)
                    self._drained.set()
        except (ConnectionError, OSError):
            self._writer.close()  # the reader sees the end and ends the session
