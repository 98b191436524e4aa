"""The gate in front of the LAN handshake: how many unauthenticated connections may be in
progress, in all and per source address, and which one gives way when the gate is full.

A connection is admitted or shed the moment it is accepted, before the service gives it a
task or a buffer. When the gate is full, the oldest pending handshake gives way (of the same
address first, when that address is at its own limit) - provided it has been pending for at
least `min_age_s`; otherwise the newcomer is shed. So sockets left open by an attacker
(slowloris) cannot lock out a new legitimate session: a real handshake on a LAN takes
milliseconds, and only a flood of more than `max_pending` connections within `min_age_s` can
push it out (its dialler then retries).

Pure apart from calling the `abort` a connection was admitted with; time is a parameter."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class Pending:
    """An admitted connection whose handshake has not finished."""

    address: str
    admitted_at: float
    abort: Callable[[], None] = field(repr=False)
    evicted: bool = False  # it gave way to a newer connection


class HandshakeGate:
    def __init__(self, max_pending: int, max_per_address: int, min_age_s: float) -> None:
        if max_pending < 1 or max_per_address < 1:
            raise ValueError("the gate must admit at least one handshake")
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.min_age_s = min_age_s
        self._ids = itertools.count()
        self._pending: OrderedDict[int, Pending] = OrderedDict()  # oldest first
        self._by_address: dict[str, OrderedDict[int, Pending]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def pending_from(self, address: str) -> int:
        return len(self._by_address.get(address, ()))

    def admit(self, address: str, now: float, abort: Callable[[], None]) -> Pending | None:
        """The new connection's entry, or None if it is shed. May abort an older pending one."""
        same = self._by_address.get(address)
        if same is not None and len(same) >= self.max_per_address:
            if not self._evict_oldest(same, now):
                return None
        elif len(self._pending) >= self.max_pending:
            if not self._evict_oldest(self._pending, now):
                return None
        key = next(self._ids)
        entry = Pending(address, now, abort)
        self._pending[key] = entry
        self._by_address.setdefault(address, OrderedDict())[key] = entry
        return entry

    def release(self, entry: Pending) -> None:
        """The handshake finished (or failed): its place is free. Idempotent."""
        for key, candidate in self._by_address.get(entry.address, {}).items():
            if candidate is entry:
                self._remove(key, entry)
                return

    def _evict_oldest(self, among: OrderedDict[int, Pending], now: float) -> bool:
        key, oldest = next(iter(among.items()))
        if now - oldest.admitted_at < self.min_age_s:
            return False
        self._remove(key, oldest)
        oldest.evicted = True
        oldest.abort()
        return True

    def _remove(self, key: int, entry: Pending) -> None:
        self._pending.pop(key, None)
        same = self._by_address.get(entry.address)
        if same is not None:
            same.pop(key, None)
            if not same:
                del self._by_address[entry.address]
