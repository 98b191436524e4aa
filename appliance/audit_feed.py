"""Audit trails as feeds that travel: each node's audit log is an append-only feed of entries
(appliance/audit.py), self-verifying by its hash chain and its origin node's signatures, so any
node holding the origin's key (from the directory) can check a copy, whoever relayed it. Pure:
entries in, verdict or the verified new entries out.

A feed travels only up to a signed entry: an entry's signature covers, through the hash chain,
every entry before it, so unsigned entries (written before audit signing, or failed unlocks
written while the node was locked) are bound to the origin's key by the next signed entry. A
receiver therefore needs no `legacy_until` of the origin (a value a relay or an editor of a
database could raise to pass forged entries as legacy): it accepts an unsigned entry only when
a signed entry after it verifies, and a copy whose newest entry is unsigned fails.

A node restored from a backup goes on from the backup's entries with a signed `restored` entry:
its trail forks from what other nodes hold of the history it lost. Where two branches of one
node's trail part, the one whose last restore from there on is the later (by its time, ties by
hash) is the node as it now is: it supersedes the other from there, and the superseded entries
are kept apart as evidence. A branch with no restore from there on - the lost history relayed by
another node, or a copy of the node's store run twice - never supersedes. An acknowledgement
therefore says which branch it holds (its head's hash and its restores), so a sender holding a
later branch sees where the two part and sends from there."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from appliance import audit, crypto
from appliance.audit_actions import AuditAction

MAX_ACTOR_CHARS = 64
MAX_ACTION_CHARS = 48
MAX_DETAIL_BYTES = 16 * 1024
MAX_ENTRIES_CARRIED = 20_000  # entries one bundle or one LAN part carries, over all origins
ENTRY_OVERHEAD_BYTES = 200  # an entry's encoded size beyond its actor, action and detail (at most)


@dataclass(frozen=True)
class FeedHead:
    """How far a feed is held: the newest entry's sequence number and hash (0 and GENESIS: none)."""

    seq: int = 0
    hash: bytes = audit.GENESIS


MAX_RESTORES_ACKED = 16  # the newest restores of a branch an acknowledgement names


@dataclass(frozen=True)
class Restore:
    """A `restored` entry of a trail: where its node was brought back from a backup, and when."""

    seq: int
    hash: bytes
    at: int


@dataclass(frozen=True)
class TrailAck:
    """How far a node holds an origin's trail, and which branch: its head, and the restores in
    it (the newest MAX_RESTORES_ACKED, in order) - two branches agree up to a restore both hold."""

    head: FeedHead = FeedHead()
    restores: tuple[Restore, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "restores", tuple(self.restores)[-MAX_RESTORES_ACKED:])


@dataclass(frozen=True)
class HeldBranch:
    """What a node holds of an origin's trail, as much as judging a part needs: its head, its
    entries by sequence number from the one before the part's first on, and its restores."""

    head: FeedHead = FeedHead()
    entries: Mapping[int, audit.AuditEntry] = field(default_factory=dict)
    restores: tuple[Restore, ...] = ()


@dataclass(frozen=True)
class FeedPart:
    """Entries of the feed of node `origin` (its key), consecutive, the last one signed."""

    origin: bytes
    entries: tuple[audit.AuditEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))


@dataclass(frozen=True)
class AuditCarry:
    """What a bundle or a LAN session carries of audit trails: `held`, how far the sender holds
    each origin's feed (an acknowledgement: the receiver sends only what lies beyond), and
    `parts`, entries of feeds the receiver lacks, one part per origin."""

    held: Mapping[bytes, TrailAck] = field(default_factory=dict)
    parts: tuple[FeedPart, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "held", dict(sorted(self.held.items())))
        object.__setattr__(self, "parts", tuple(sorted(self.parts, key=lambda p: p.origin)))

    def __bool__(self) -> bool:
        return bool(self.held) or bool(self.parts)


@dataclass(frozen=True)
class Extension:
    """The entries of a part that extend a held feed (none: nothing new), or why the part is refused."""

    new: tuple[audit.AuditEntry, ...]
    problem: str | None = None
    # A gap or a fork is what an honest sender causes when the receiver holds less than it
    # acknowledged (restored from a backup) or the origin itself was restored: the part is
    # skipped, and the receiver's next acknowledgement corrects the sender. Anything else -
    # a bad link, hash or signature - is a forgery.
    recoverable: bool = False
    supersedes: int | None = None  # the held entries from this seq on give way to `new` (a later restore)


def within(entries: Sequence[audit.AuditEntry], max_bytes: int) -> int:
    """How many of `entries`, from the first, fit in about `max_bytes` once encoded."""
    total = 0
    for count, entry in enumerate(entries):
        total += ENTRY_OVERHEAD_BYTES + len(entry.actor) + len(entry.action) + len(entry.detail.encode("utf-8", "surrogatepass"))
        if total > max_bytes:
            return count
    return len(entries)


def carried_bytes(entries: Sequence[audit.AuditEntry]) -> int:
    return sum(ENTRY_OVERHEAD_BYTES + len(e.actor) + len(e.action) + len(e.detail.encode("utf-8", "surrogatepass")) for e in entries)


def up_to_signed(entries: Sequence[audit.AuditEntry], limit: int) -> tuple[audit.AuditEntry, ...]:
    """The longest prefix of `entries`, at most `limit` long, that ends with a signed entry."""
    cut = min(len(entries), limit)
    while cut and entries[cut - 1].signature is None:
        cut -= 1
    return tuple(entries[:cut])


def _bad_signature(entry: audit.AuditEntry, unsigned_since: int | None) -> str:
    also = "" if unsigned_since is None else f" (or an unsigned entry from {unsigned_since} on before it)"
    return f"entry {entry.seq}{also} was altered: its signature by its node's key does not verify"


def _walk(entries: Sequence[audit.AuditEntry], origin: bytes, start: FeedHead) -> tuple[int, FeedHead, str | None]:
    """Checks entries following `start`: sequence, link, hash, signatures; unsigned entries
    must be covered by a later signed one. Returns how many are good (up to the last signed
    entry that verifies), the head there, and the first problem."""
    expected, prev_hash, head, good = start.seq + 1, start.hash, start, 0
    unsigned_since: int | None = None  # the first unsigned entry since the last signed one
    for entry in entries:
        if entry.seq != expected:
            return good, head, f"entry {expected} is missing or out of order (found {entry.seq})"
        if entry.prev_hash != prev_hash:
            return good, head, f"entry {entry.seq} does not link to entry {entry.seq - 1}"
        if audit.entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.detail, entry.prev_hash) != entry.hash:
            return good, head, f"entry {entry.seq} was altered"
        if entry.signature is None:
            unsigned_since = entry.seq if unsigned_since is None else unsigned_since
        elif not crypto.verify(origin, audit.SIGNATURE_DOMAIN + entry.hash, entry.signature):
            return good, head, _bad_signature(entry, unsigned_since)
        else:
            good, head, unsigned_since = good + (entry.seq - head.seq), FeedHead(entry.seq, entry.hash), None
        expected, prev_hash = expected + 1, entry.hash
    if unsigned_since is not None:
        return good, head, f"entries from {unsigned_since} on are not covered by a signature of their node's key"
    return good, head, None


def verify_feed(entries: Sequence[audit.AuditEntry], origin: bytes) -> audit.AuditVerdict:
    """A copy of another node's feed, from its first entry, checked against `origin`, that
    node's key. The problem names the first bad entry."""
    good, head, problem = _walk(entries, origin, FeedHead())
    return audit.AuditVerdict(problem is None, good, head.hash, problem)


def check_kept(entries: Iterable[audit.AuditEntry], origin: bytes) -> str | None:
    """Why one of `entries` - kept apart, each on its own (a superseded branch) - is not as its
    node wrote it: its hash recomputed, its signature checked. None: all are."""
    for entry in entries:
        if audit.entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.detail, entry.prev_hash) != entry.hash:
            return f"superseded entry {entry.seq} was altered"
        if entry.signature is not None and not crypto.verify(origin, audit.SIGNATURE_DOMAIN + entry.hash, entry.signature):
            return f"superseded entry {entry.seq} was altered: its signature by its node's key does not verify"
    return None


def restores_in(entries: Iterable[audit.AuditEntry]) -> tuple[Restore, ...]:
    return tuple(Restore(e.seq, e.hash, e.at) for e in entries if e.action == AuditAction.RESTORED)


def wins(theirs: Sequence[Restore], ours: Sequence[Restore]) -> bool:
    """Whether a branch whose restores after where it parts from ours are `theirs` supersedes
    ours, whose restores after there are `ours`: its last restore is the later one."""
    if not theirs:
        return False
    return not ours or (theirs[-1].at, theirs[-1].hash) > (ours[-1].at, ours[-1].hash)


def resend_after(ack: TrailAck, ours_at_ack: bytes | None, restores: Sequence[Restore]) -> int | None:
    """After which entry to send a peer that acknowledged `ack` of a trail of which this node
    holds a branch with `restores` (in order) and, at the acknowledged seq, the entry hashed
    `ours_at_ack` (None: none there). The peer's branch is ours up to its head: after its head.
    Another branch: the two agree up to the last restore both hold and part at a restore after
    it; if ours wins there, from before the first such restore of either; else nothing (None):
    the peer's branch is the later, or a fork no restore explains, which resending cannot mend."""
    if ack.head.seq == 0 or ours_at_ack == ack.head.hash:
        return ack.head.seq
    shared = max((r.seq for r in ack.restores if r in restores), default=0)
    ours, theirs = [r for r in restores if r.seq > shared], [r for r in ack.restores if r.seq > shared]
    if not wins(ours, theirs):
        return None
    return min(r.seq for r in ours + theirs) - 1


def extend_feed(held: HeldBranch, part: FeedPart) -> Extension:
    """The entries of `part` beyond what is `held`, checked: entries held already are skipped;
    the first new one must follow the held head (a gap is refused: the sender is to send from
    what was acknowledged), and every new one must verify against the origin's key. Where the
    part parts from the held branch (a fork), its branch supersedes if it wins there (`wins`);
    otherwise the part is skipped, the held branch kept."""
    entries = list(part.entries)
    head = held.head
    if not entries:
        return Extension(())
    if any(b.seq != a.seq + 1 for a, b in zip(entries, entries[1:], strict=False)):
        return Extension((), "its entries are not consecutive")
    if entries[-1].signature is None:
        return Extension((), f"its last entry {entries[-1].seq} is not signed")
    if entries[0].seq > head.seq + 1:
        return Extension((), f"entries {head.seq + 1} to {entries[0].seq - 1} are missing (a gap)", recoverable=True)
    parted = next((i for i, e in enumerate(entries) if e.seq <= head.seq and (e.seq not in held.entries or held.entries[e.seq].hash != e.hash)), None)
    if parted is not None:
        return _fork(held, part.origin, entries[parted:])
    new = [e for e in entries if e.seq > head.seq]
    if not new:
        return Extension(())
    good, _, problem = _walk(new, part.origin, head)
    if problem is not None and new[0].prev_hash != head.hash and _walk(new, part.origin, FeedHead(new[0].seq - 1, new[0].prev_hash))[2] is None:
        # The entries hold together and their node signed them, but not after the entry held
        # here, and the part does not reach back to where they part: skipped until a sender
        # with the later restore sends from there (see `resend_after`).
        forked = f"entry {new[0].seq} does not follow the entry {head.seq} held here, though its node signed it"
        return Extension((), f"{forked}: the trail forked (its node restored from a backup, or rewritten)", recoverable=True)
    if problem is not None:
        return Extension((), problem)
    assert good == len(new)
    return Extension(tuple(new))


def _fork(held: HeldBranch, origin: bytes, branch: Sequence[audit.AuditEntry]) -> Extension:
    """`branch` parts from the held entries at its first: it verifies from the held entry before
    it, and supersedes the held ones from there if it wins there."""
    at = branch[0].seq
    before = FeedHead() if at == 1 else FeedHead(at - 1, held.entries[at - 1].hash) if at - 1 in held.entries else None
    if before is None:
        return Extension((), f"entry {at} differs from the one held here, and the entry before it is not at hand: the trail forked", recoverable=True)
    if branch[0].prev_hash != before.hash and _walk(branch, origin, FeedHead(at - 1, branch[0].prev_hash))[2] is None:
        return Extension((), f"entry {at} differs from the one held here and the branches part before it: the trail forked", recoverable=True)
    good, _, problem = _walk(branch, origin, before)
    if problem is not None:
        return Extension((), problem)
    assert good == len(branch)
    ours = [r for r in held.restores if r.seq >= at]
    if wins(restores_in(branch), ours):
        return Extension(tuple(branch), supersedes=at)
    why = "the branch held here has the later restore" if ours else "neither branch was restored from a backup there (a rewritten or cloned store)"
    return Extension((), f"entry {at} differs from the one held here: the trail forked, and {why}, so the held one is kept", recoverable=True)


def check_entry_shape(entry: audit.AuditEntry) -> str | None:
    """Why an entry from elsewhere is not one a node writes (sizes), or None."""
    if entry.seq < 1 or entry.at < 0:
        return f"entry {entry.seq}: a sequence number or time is out of range"
    if len(entry.actor) > MAX_ACTOR_CHARS or len(entry.action) > MAX_ACTION_CHARS:
        return f"entry {entry.seq}: its actor or action is too long"
    if len(entry.detail.encode("utf-8", "surrogatepass")) > MAX_DETAIL_BYTES:
        return f"entry {entry.seq}: its detail is over {MAX_DETAIL_BYTES:,} bytes"
    return None
