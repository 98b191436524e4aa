"""The rule that admits a segment carried whole (model.WholeSegment): pure, over the change
headers the receiver listed from the loaded document itself.

A compacted document carries no per-change signatures, only one per actor over that actor's
newest change. A change's hash covers its dependencies' hashes, so that signature vouches for
everything the signed change depends on - but not for a change slipped in beside it under the
same actor id. So each actor's changes must be exactly sequence numbers 1..n with the signed
change the n-th, and every change in the document must be an ancestor of (or be) a signed one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from appliance import crypto, ids
from appliance.changes import ACTOR_BYTES, AUTHOR_KEY_BYTES, Authorise, ChangeHeader, signing_payload
from appliance.errors import ChangeRejected

# A segment larger than this compacted travels as change chunks instead: it must fit a LAN frame
# (4 MiB) with room to spare, and bounds what a reader loads from one item.
MAX_WHOLE_BYTES = 2 * 1024 * 1024


def vouch_for_whole(doc_id: str, listed: Sequence[ChangeHeader], signatures: Mapping[bytes, bytes], authorise: Authorise) -> dict[bytes, bytes]:
    """Checks a whole segment's changes (`listed`, every change of the loaded document) against
    `signatures` (change hash -> its author's signature). Returns, for every change hash, the
    hash of the signed change that vouches for it. Raises ChangeRejected naming the first
    problem: an actor id that names no author, an author `authorise` refuses, a bad or missing
    signature, a change no signature covers."""
    by_hash = {header.hash: header for header in listed}
    if len(by_hash) != len(listed):
        raise ChangeRejected(f"{doc_id}: the document lists a change twice")
    by_actor: dict[bytes, list[ChangeHeader]] = {}
    for header in listed:
        if len(header.actor) != ACTOR_BYTES:
            raise ChangeRejected(f"{doc_id}: change by an actor id that names no author")
        by_actor.setdefault(header.actor, []).append(header)
    signed_of: dict[bytes, ChangeHeader] = {}
    for change_hash in signatures:
        named = by_hash.get(change_hash)
        if named is None:
            raise ChangeRejected(f"{doc_id}: a signature names change {change_hash.hex()[:12]}, which the document does not hold")
        if named.actor in signed_of:
            raise ChangeRejected(f"{doc_id}: two signatures for actor {ids.key_id(named.author)}")
        signed_of[named.actor] = named
    refused: dict[bytes, str | None] = {}
    for actor, headers in by_actor.items():
        author = actor[:AUTHOR_KEY_BYTES]
        if author not in refused:
            refused[author] = authorise(author)
        if refused[author] is not None:
            raise ChangeRejected(f"{doc_id}: {refused[author]}")
        signed = signed_of.get(actor)
        if signed is None:
            raise ChangeRejected(f"{doc_id}: the changes of actor {ids.key_id(author)} carry no signature of their author")
        sequences = sorted(header.seq for header in headers)
        if sequences != list(range(1, len(headers) + 1)) or signed.seq != len(headers):
            raise ChangeRejected(
                f"{doc_id}: actor {ids.key_id(author)} has {len(headers)} change(s) but its author signed change {signed.seq}:"
                " a change was slipped in under its actor id"
            )
        if not crypto.verify(author, signing_payload(doc_id, signed.hash), signatures[signed.hash]):
            raise ChangeRejected(f"{doc_id}: change {signed.hash.hex()[:12]} is not signed by its author")
    vouched: dict[bytes, bytes] = {}
    for actor, signed in signed_of.items():
        # Each actor's changes must all be ancestors of its own signed change: the hash chain
        # then binds them to its author's signature, and no other author's.
        stack, seen = [signed.hash], set()
        while stack:
            current = stack.pop()
            ancestor = by_hash.get(current)
            if ancestor is None or current in seen:
                continue
            seen.add(current)
            if ancestor.actor == actor:
                vouched[current] = signed.hash
            stack.extend(ancestor.deps)
    unvouched = [header for header in listed if header.hash not in vouched]
    if unvouched:
        raise ChangeRejected(f"{doc_id}: change {unvouched[0].hash.hex()[:12]} is not covered by its author's signature")
    return vouched
