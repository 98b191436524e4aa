"""The handshake gate (sync.gate) and the refusal log (sync.refusals): pure, time as a
parameter. The flood they are for is tests/system/test_lan_flood.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.gate import HandshakeGate
from sync.refusals import RefusalLog


class Connections:
    """Stand-ins for accepted connections: `abort` records which were dropped."""

    def __init__(self) -> None:
        self.aborted: list[str] = []

    def abort_of(self, name: str) -> Callable[[], None]:
        return lambda: self.aborted.append(name)


def test_a_full_gate_drops_the_oldest_handshake_of_the_address_at_its_limit_else_of_all() -> None:
    gate, conns = HandshakeGate(max_pending=4, max_per_address=2, penalty_s=2.0), Connections()
    a1 = gate.admit("10.0.0.1", 0.0, conns.abort_of("a1"))
    gate.admit("10.0.0.1", 0.1, conns.abort_of("a2"))
    gate.admit("10.0.0.1", 0.2, conns.abort_of("a3"))  # 10.0.0.1 at its limit: its oldest goes
    assert conns.aborted == ["a1"] and a1 is not None and a1.evicted and len(gate) == 2
    gate.admit("10.0.0.2", 0.3, conns.abort_of("b1"))
    gate.admit("10.0.0.3", 0.4, conns.abort_of("c1"))
    newcomer = gate.admit("10.0.0.4", 0.5, conns.abort_of("d1"))  # full: the oldest of all goes
    assert newcomer is not None and conns.aborted == ["a1", "a2"] and len(gate) == 4


def test_a_released_handshake_frees_its_place_once() -> None:
    gate, conns = HandshakeGate(max_pending=1, max_per_address=1, penalty_s=2.0), Connections()
    first = gate.admit("10.0.0.1", 0.0, conns.abort_of("first"))
    assert first is not None
    gate.release(first)
    gate.release(first)
    assert len(gate) == 0
    gate.admit("10.0.0.2", 0.1, conns.abort_of("second"))
    assert conns.aborted == [] and len(gate) == 1


def test_a_penalised_address_is_shed_until_its_penalty_ends() -> None:
    gate, conns = HandshakeGate(max_pending=8, max_per_address=8, penalty_s=2.0), Connections()
    gate.penalise("10.0.0.9", 10.0)
    assert gate.admit("10.0.0.9", 11.9, conns.abort_of("x")) is None
    assert gate.admit("10.0.0.8", 11.9, conns.abort_of("y")) is not None
    assert gate.admit("10.0.0.9", 12.0, conns.abort_of("z")) is not None


def test_the_gate_needs_room_for_one() -> None:
    with pytest.raises(ValueError):
        HandshakeGate(max_pending=0, max_per_address=1, penalty_s=1.0)


def test_refusals_are_reported_at_a_bounded_rate_and_the_rest_summarised() -> None:
    log = RefusalLog(0.0, per_interval=3, repeat_s=60.0)
    assert log.note("10.0.0.1", "unknown node", 0.1)
    assert not log.note("10.0.0.1", "unknown node", 0.2)  # the same address and kind: once per repeat_s
    assert log.note("10.0.0.1", "handshake failed", 0.3)
    reported = [log.note(f"10.1.{i // 250}.{i % 250}", "unknown node", 1.0) for i in range(1000)]
    assert reported.count(True) == 1  # three per interval in all
    (unknown,) = log.summaries(10.0)
    assert (unknown.kind, unknown.refusals, unknown.addresses) == ("unknown node", 1000, 1000)
    assert unknown.text() == "refused 1,000 connections from 1,000 addresses in the last 10 s: unknown node"
    assert log.summaries(20.0) == []  # a new interval: nothing unreported
    assert log.note("10.0.0.2", "unknown node", 20.5)  # and reports again
    assert not log.note("10.0.0.1", "unknown node", 30.0) and log.note("10.0.0.1", "unknown node", 60.1)
