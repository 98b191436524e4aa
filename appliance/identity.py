"""One node identity, one machine. An identity installed on a home (init, join) gets an
*incarnation*, 16 random bytes kept with it (a restore keeps them: the same machine,
replaced). Peers present their incarnation (LAN handshake, bundle payload); a node key seen
with two incarnations is being used by two machines - an enrollment file used twice, a copied
disk - and is refused from then on until an admin revokes it. An enrollment file is consumed
by the join that used it: overwritten in place with a marker saying so."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import cbor
from appliance import schema as t

INCARNATION_BYTES = 16
USED_ENROLLMENT_FORMAT = "rallypoint-enrollment-used/1"
REFUSAL_AUDIT_INTERVAL_MS = 3_600_000  # a conflicted peer that keeps trying is audited once an hour
CONFLICT_PREFIX = "identity conflict: "  # begins every refusal for a conflict (a LAN peer's Bye says it)


# --- enrollment files used once ------------------------------------------------------------


def used_enrollment_marker(node_id: str, used_at: int) -> bytes:
    """What a consumed enrollment file holds afterwards."""
    return cbor.encode({"format": USED_ENROLLMENT_FORMAT, "node": node_id, "used_at": used_at})


def consume_enrollment_file(path: Path, node_id: str, used_at: int) -> str | None:
    """After a successful join: overwrites the enrollment file in place - its sealed keys
    first with the used marker and zeros, flushed to the medium, then cut to the marker - so
    the file cannot be joined with again. Returns None, or why the file could not be consumed
    (a read-only stick): the caller then tells the operator to destroy it (UNCONSUMED_WARNING)."""
    return overwrite_with_marker(path, used_enrollment_marker(node_id, used_at))


def overwrite_with_marker(path: Path, marker: bytes) -> str | None:
    """Overwrites a file of sealed keys in place - with `marker` and zeros, flushed to the
    medium, then cut to the marker. Returns None, or why it could not be (a read-only stick)."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            os.write(fd, marker + bytes(max(0, size - len(marker))))
            os.fsync(fd)
            os.ftruncate(fd, len(marker))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


UNCONSUMED_WARNING = (
    "WARNING: the enrollment file could not be marked as used ({reason}). Destroy it now: anyone with it and the code"
    " can install this node's identity on a second machine, and both would then be refused by every peer."
)


# --- incarnations seen ----------------------------------------------------------------------


@dataclass(frozen=True)
class IncarnationVerdict:
    refused: bool  # the key is in conflict: refuse this contact
    detected: bool  # the conflict was found by this contact
    audit: bool  # this refusal is to be audited (the first, then at most one an interval)
    refusals: int  # contacts refused since the conflict, this one included


async def record_incarnation(
    conn: AsyncConnection, node_key: bytes, incarnation: bytes, now: int, *, first: bytes | None = None, record: bool = True
) -> IncarnationVerdict:
    """Judges one contact of `node_key` presenting `incarnation`, in the caller's transaction.
    `first` is the incarnation the key is known to have when it was not seen yet (this
    node's own, for its own key). Without `record` nothing is written (nor to be audited)."""
    row: Mapping[Any, Any] | None = (await conn.execute(select(t.peer_incarnations).where(t.peer_incarnations.c.node_key == node_key))).mappings().first()
    if row is None:
        known = first or incarnation
        if record:
            await conn.execute(insert(t.peer_incarnations).values(node_key=node_key, incarnation=known, first_seen=now, refusals=0))
        row = {"incarnation": known, "conflict_at": None, "refusals": 0, "audited_at": None}
    if row["conflict_at"] is None and row["incarnation"] == incarnation:
        return IncarnationVerdict(False, False, False, 0)
    detected = row["conflict_at"] is None
    refusals = row["refusals"] + 1
    if not record:
        return IncarnationVerdict(True, detected, False, refusals)
    audit = detected or row["audited_at"] is None or now - row["audited_at"] >= REFUSAL_AUDIT_INTERVAL_MS
    values: dict[str, object] = {"refusals": refusals}
    if detected:
        values.update(conflict_at=now, conflicting=incarnation)
    if audit:
        values["audited_at"] = now
    await conn.execute(update(t.peer_incarnations).where(t.peer_incarnations.c.node_key == node_key).values(**values))
    return IncarnationVerdict(True, detected, audit, refusals)


async def adopt_incarnation(conn: AsyncConnection, node_key: bytes, incarnation: bytes, now: int) -> bytes | None:
    """In the caller's transaction: `node_key` is known by `incarnation` from now on - the node
    came back from the recovery kit its certificate commits to (certs.Certificate.recovers_as),
    so the lost machine's incarnation is the one refused from then on: a conflict recorded
    before is cleared once, and one the lost machine causes later stays (it is refused, audited
    at most hourly, while this incarnation is still accepted). Returns the incarnation replaced
    (None: the key was not seen before, or was known by this one already)."""
    before = (await conn.execute(select(t.peer_incarnations.c.incarnation).where(t.peer_incarnations.c.node_key == node_key))).scalar()
    if before is None:
        await conn.execute(insert(t.peer_incarnations).values(node_key=node_key, incarnation=incarnation, first_seen=now, refusals=0))
        return None
    if bytes(before) == incarnation:
        return None
    reset = {"incarnation": incarnation, "conflict_at": None, "conflicting": None, "refusals": 0, "audited_at": None}
    await conn.execute(update(t.peer_incarnations).where(t.peer_incarnations.c.node_key == node_key).values(**reset))
    return bytes(before)


async def known_good(conn: AsyncConnection, node_key: bytes, incarnation: bytes) -> bool:
    """Whether `node_key` was first seen with `incarnation` and is not in conflict: the common
    case, answered by a read alone (no write lock for every LAN session)."""
    row = (await conn.execute(select(t.peer_incarnations.c.incarnation, t.peer_incarnations.c.conflict_at).where(t.peer_incarnations.c.node_key == node_key))).first()
    return row is not None and row.conflict_at is None and row.incarnation == incarnation


async def conflicted_keys(conn: AsyncConnection) -> set[bytes]:
    """Node keys two machines were seen presenting."""
    rows = await conn.execute(select(t.peer_incarnations.c.node_key).where(t.peer_incarnations.c.conflict_at.is_not(None)))
    return set(rows.scalars().all())
