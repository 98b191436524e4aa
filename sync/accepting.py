"""The protocol of an incoming LAN connection, in front of the handshake gate (`sync.gate`).

The gate admits or sheds the connection as it is accepted. An admitted connection gets its
stream writer and its task only once it sends something (an initiator sends its HELLO at
once): a flood of silent connections costs a transport and a timer each, and a silent one is
closed at the handshake deadline. What to do at each step is the service's (`AcceptHooks`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sync.gate import Pending


@dataclass(frozen=True)
class AcceptHooks:
    admit: Callable[[asyncio.Transport], Pending | None]  # the gate's entry, or None: shed
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Pending], Awaitable[None]]  # from its first bytes on
    closed_silent: Callable[[Pending, bool], None]  # it ended without a byte; True: at the deadline
    deadline_s: float


class GatedProtocol(asyncio.StreamReaderProtocol):
    def __init__(self, hooks: AcceptHooks) -> None:
        self.hooks = hooks
        self.pending: Pending | None = None
        self._silent: asyncio.Transport | None = None  # the transport, while nothing came
        self._deadline: asyncio.TimerHandle | None = None
        # A module function, not a bound method: the protocol must not hold itself (a reference
        # cycle per connection that waits for the collector: a flood would pile them up).
        super().__init__(asyncio.StreamReader(), _serve)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pending = self.hooks.admit(transport)
        if self.pending is None:
            transport.abort()
            return
        self._silent = transport
        self._deadline = asyncio.get_running_loop().call_later(self.hooks.deadline_s, self._silent_too_long)

    def data_received(self, data: bytes) -> None:
        if self._silent is not None:  # the first bytes: the handshake starts
            transport, self._silent = self._silent, None
            self._cancel_deadline()
            super().connection_made(transport)
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._silent is not None:
            self._silent.abort()
            return None
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._silent is not None:
            self._silent = None
            self._cancel_deadline()
            if self.pending is not None:
                self.hooks.closed_silent(self.pending, False)
        super().connection_lost(exc)

    def _silent_too_long(self) -> None:
        self._deadline = None
        if self._silent is not None and self.pending is not None:
            transport, self._silent = self._silent, None
            self.hooks.closed_silent(self.pending, True)
            transport.abort()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    protocol = writer.transport.get_protocol()
    assert isinstance(protocol, GatedProtocol) and protocol.pending is not None
    await protocol.hooks.serve(reader, writer, protocol.pending)
