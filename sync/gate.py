"""The gate in front of the LAN handshake: how many unauthenticated connections may be in
progress, in all and per source address, and which one gives way when the gate is full.

A connection is admitted or shed the moment it is accepted, before the service gives it a
task or a buffer. A full gate admits the newcomer and drops the oldest pending handshake -
of the newcomer's own address when that address is at its limit, else of any address. So
sockets left open by an attacker (slowloris) cannot lock out a new legitimate session: a real
handshake on a LAN takes milliseconds, and only a flood of more than `max_pending` new
connections within that time can push it out (its dialler then retries). An address whose
handshake just failed in a way no honest node's does (an unknown or revoked key, a bad
signature) is shed outright for `penalty_s`, so such a flood costs the node an accept each
instead of a handshake's cryptography.

Pure apart from calling the `abort` a connection was admitted with; time is a parameter."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PENALISED = 4096  # addresses remembered as penalised; the oldest are forgotten first


@dataclass(eq=False)
class Pending:
    """An admitted connection whose handshake has not finished."""

    address: str
    abort: Callable[[], None] = field(repr=False)
    evicted: bool = False  # it gave way to a newer connection


class HandshakeGate:
    def __init__(self, max_pending: int, max_per_address: int, penalty_s: float) -> None:
        if max_pending < 1 or max_per_address < 1:
            raise ValueError("the gate must admit at least one handshake")
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.penalty_s = penalty_s
        self._ids = itertools.count()
        self._pending: OrderedDict[int, Pending] = OrderedDict()  # oldest first
        self._by_address: dict[str, OrderedDict[int, Pending]] = {}
        self._penalised: OrderedDict[str, float] = OrderedDict()  # address -> until

    def __len__(self) -> int:
        return len(self._pending)

    def admit(self, address: str, now: float, abort: Callable[[], None]) -> Pending | None:
        """The new connection's entry, or None if it is shed (a penalised address). May abort
        an older pending one to make room."""
        until = self._penalised.get(address)
        if until is not None:
            if now < until:
                return None
            del self._penalised[address]
        same = self._by_address.get(address)
        if same is not None and len(same) >= self.max_per_address:
            self._evict_oldest(same)
        elif len(self._pending) >= self.max_pending:
            self._evict_oldest(self._pending)
        key = next(self._ids)
        entry = Pending(address, abort)
        self._pending[key] = entry
        self._by_address.setdefault(address, OrderedDict())[key] = entry
        return entry

    def release(self, entry: Pending) -> None:
        """The handshake finished (or failed): its place is free. Idempotent."""
        for key, candidate in self._by_address.get(entry.address, {}).items():
            if candidate is entry:
                self._remove(key, entry)
                return

    def penalise(self, address: str, now: float) -> None:
        """Sheds new connections from `address` for `penalty_s`."""
        self._penalised[address] = now + self.penalty_s
        self._penalised.move_to_end(address)
        while len(self._penalised) > MAX_PENALISED:
            self._penalised.popitem(last=False)

    def _evict_oldest(self, among: OrderedDict[int, Pending]) -> None:
        key, oldest = next(iter(among.items()))
        self._remove(key, oldest)
        oldest.evicted = True
        oldest.abort()

    def _remove(self, key: int, entry: Pending) -> None:
        self._pending.pop(key, None)
        same = self._by_address.get(entry.address)
        if same is not None:
            same.pop(key, None)
            if not same:
                del self._by_address[entry.address]
