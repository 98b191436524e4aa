"""A node restored from a backup forks its audit trail: of two branches, the one with the later
restore where they part supersedes the other, wherever each copy travelled; a branch with no
restore there (the lost history relayed, a cloned store) never does; and once the holders
agree nothing is sent again."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import audit, crypto
from appliance.audit_feed import FeedHead, FeedPart, HeldBranch, TrailAck, extend_feed, resend_after, restores_in, wins

KEY = crypto.new_signing_key(bytes([7]) * 32)
ORIGIN = bytes(KEY.verify_key)


@dataclass
class Origin:
    """A node writing its trail: entries, backups of it, and restores from them."""

    trail: list[audit.AuditEntry] = field(default_factory=list)
    backups: list[list[audit.AuditEntry]] = field(default_factory=list)
    clock: int = 1000

    def write(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock += 1
            self.trail.append(audit.make_entry(self.trail[-1] if self.trail else None, self.clock, "ab" * 32, "channel_created", {"n": self.clock}, KEY))

    def backup(self) -> None:
        self.backups.append(list(self.trail))

    def restore(self, which: int) -> None:
        self.clock += 1
        self.trail = list(self.backups[which % len(self.backups)])
        self.trail.append(audit.make_entry(self.trail[-1] if self.trail else None, self.clock, "-", "restored", {"file": f"b{which}"}, KEY))


def held(trail: list[audit.AuditEntry]) -> HeldBranch:
    if not trail:
        return HeldBranch()
    return HeldBranch(FeedHead(trail[-1].seq, trail[-1].hash), {e.seq: e for e in trail}, restores_in(trail))


def ack(trail: list[audit.AuditEntry]) -> TrailAck:
    return TrailAck(FeedHead(trail[-1].seq, trail[-1].hash), restores_in(trail)) if trail else TrailAck()


def send(sender: list[audit.AuditEntry], receiver: list[audit.AuditEntry]) -> tuple[list[audit.AuditEntry], bool]:
    """One carry from `sender` to `receiver` as the nodes do it: from where the receiver's
    acknowledgement says, checked by the receiver; returns its trail after, and whether
    anything was sent."""
    theirs = ack(receiver)
    at_ack = sender[theirs.head.seq - 1].hash if 0 < theirs.head.seq <= len(sender) else None
    after = resend_after(theirs, at_ack, restores_in(sender))
    if after is None or len(sender) <= after:
        return receiver, False
    extension = extend_feed(held(receiver), FeedPart(ORIGIN, tuple(sender[after:])))
    assert extension.problem is None or extension.recoverable, extension.problem
    kept = receiver if extension.supersedes is None else receiver[: extension.supersedes - 1]
    return kept + list(extension.new), True


def later_branch(a: list[audit.AuditEntry], b: list[audit.AuditEntry]) -> list[audit.AuditEntry]:
    """Which of two copies of the trail is the node as it now is: the longer if one holds the
    other, else the one whose last restore after where they part is the later."""
    common = 0
    while common < min(len(a), len(b)) and a[common].hash == b[common].hash:
        common += 1
    if common == len(b):
        return a
    if common == len(a):
        return b
    return b if wins(restores_in(b[common:]), restores_in(a[common:])) else a


def test_the_restored_branch_supersedes_the_lost_history_from_where_they_part() -> None:
    node = Origin()
    node.write(5)
    node.backup()
    node.write(6)
    lost = list(node.trail)
    node.restore(0)
    node.write(2)
    extension = extend_feed(held(lost), FeedPart(ORIGIN, tuple(node.trail[3:])))
    assert (extension.problem, extension.supersedes, extension.new) == (None, 6, tuple(node.trail[5:]))
    # The lost history, relayed to a node that holds the restored branch, never wins it back.
    relayed = extend_feed(held(node.trail), FeedPart(ORIGIN, tuple(lost[4:])))
    assert relayed.recoverable and relayed.supersedes is None and relayed.new == ()
    assert relayed.problem == "entry 6 differs from the one held here: the trail forked, and the branch held here has the later restore, so the held one is kept"


def test_a_fork_no_restore_explains_is_kept_and_not_resent() -> None:
    node = Origin()
    node.write(4)
    clone = list(node.trail)
    node.write(3)
    clone.append(audit.make_entry(clone[-1], 5000, "-", "channel_created", {"clone": True}, KEY))
    skipped = extend_feed(held(node.trail), FeedPart(ORIGIN, tuple(clone)))
    assert skipped.recoverable and skipped.supersedes is None and "a rewritten or cloned store" in (skipped.problem or "")
    assert resend_after(ack(node.trail), None, restores_in(clone)) is None


def test_a_sender_starts_where_the_branches_part_and_never_before_the_last_shared_restore() -> None:
    node = Origin()
    node.write(3)
    node.backup()
    node.write(3)
    node.restore(0)  # entry 4
    node.write(5)
    node.backup()
    node.write(4)
    older = list(node.trail)  # restores at 4; head 13
    node.restore(1)  # entry 10 supersedes 10..13
    node.write(1)
    ours = restores_in(node.trail)
    assert [r.seq for r in ours] == [4, 10]
    assert resend_after(ack(older), None, ours) == 9  # both hold the restore at 4: from 10 on
    assert resend_after(ack(older), older[12].hash, ours) == 13  # were it ours, from its head
    assert resend_after(ack(node.trail), None, restores_in(older)) is None  # the peer's is the later
    assert resend_after(TrailAck(), None, ours) == 0
    assert extend_feed(held(older), FeedPart(ORIGIN, tuple(node.trail[8:]))).supersedes == 10


def test_an_earlier_restore_sent_anyway_does_not_win_a_later_one_back() -> None:
    node = Origin()
    node.write(3)
    node.backup()
    node.write(5)
    node.backup()
    node.restore(0)  # entry 4, restored first
    first = list(node.trail)
    node.restore(1)  # entry 9, on the history the first restore left: parts from `first` at 4
    later = list(node.trail)
    kept = extend_feed(held(later), FeedPart(ORIGIN, tuple(first[2:])))
    assert kept.recoverable and kept.supersedes is None and kept.new == ()
    assert kept.problem == "entry 4 differs from the one held here: the trail forked, and the branch held here has the later restore, so the held one is kept"
    assert extend_feed(held(first), FeedPart(ORIGIN, tuple(later[2:]))).supersedes == 4


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["write", "backup", "restore", "snap"]), st.integers(min_value=0, max_value=6)), min_size=2, max_size=24), st.data())
def test_any_two_copies_converge_on_the_later_branch_and_then_send_nothing(ops: list[tuple[str, int]], data: st.DataObject) -> None:
    node = Origin()
    node.write(2)
    node.backup()
    copies: list[list[audit.AuditEntry]] = [list(node.trail)]
    for op, n in ops:
        if op == "write":
            node.write(n + 1)
        elif op == "backup":
            node.backup()
        elif op == "restore":
            node.restore(n)
        else:  # a node holding the trail as it is now, or a shorter prefix of it
            copies.append(list(node.trail[: max(1, len(node.trail) - n)]))
    copies.append(list(node.trail))
    a = data.draw(st.sampled_from(copies))
    b = data.draw(st.sampled_from(copies))
    expected = later_branch(a, b)
    after, _ = send(b, a)
    assert after == expected
    assert send(b, after)[1] is False  # nothing sent again, whichever branch stayed
    back, _ = send(after, b)
    assert back == expected
    assert send(after, back)[1] is False
