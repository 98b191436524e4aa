"""The audit log's hash chain. Pure: entries in, verdict out.

Each entry's hash covers its sequence number, time, actor, action, detail and the previous
entry's hash, so editing, deleting or reordering any entry breaks the chain from there on.
(Cutting entries off the end leaves a valid shorter chain; `audit --verify` prints the count
and head hash so an operator can compare with a copy taken earlier.)"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from appliance import cbor, crypto

GENESIS = bytes(32)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: int
    actor: str
    action: str
    detail: str  # canonical JSON object
    prev_hash: bytes
    hash: bytes

    def detail_dict(self) -> dict[str, object]:
        value = json.loads(self.detail)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class AuditVerdict:
    ok: bool
    count: int
    head: bytes
    problem: str | None  # the first broken link, described


def canonical_detail(detail: dict[str, object]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(seq: int, at: int, actor: str, action: str, detail: str, prev_hash: bytes) -> bytes:
    return crypto.sha256(cbor.encode([seq, at, actor, action, detail, prev_hash]))


def make_entry(prev: AuditEntry | None, at: int, actor: str, action: str, detail: dict[str, object]) -> AuditEntry:
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    text = canonical_detail(detail)
    return AuditEntry(seq, at, actor, action, text, prev_hash, entry_hash(seq, at, actor, action, text, prev_hash))


def verify_chain(entries: Iterable[AuditEntry]) -> AuditVerdict:
    expected_seq, prev_hash, count = 1, GENESIS, 0
    for entry in entries:
        if entry.seq != expected_seq:
            return AuditVerdict(False, count, prev_hash, f"entry {expected_seq} is missing or out of order (found {entry.seq})")
        if entry.prev_hash != prev_hash:
            return AuditVerdict(False, count, prev_hash, f"entry {entry.seq} does not link to entry {entry.seq - 1}")
        if entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.detail, entry.prev_hash) != entry.hash:
            return AuditVerdict(False, count, prev_hash, f"entry {entry.seq} was altered")
        prev_hash, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    return AuditVerdict(True, count, prev_hash, None)
