"""The bundle decoder's fuzz target (docs/bundle-format.md, "Fuzzing").

Seeds are the committed good vectors of both formats (tests/vectors and tests/vectors/v1,
`"expected": "accepted"` in manifest.json) and, for the import path, a real bundle one node exported
for another. Hypothesis mutates them - bit flips and byte overwrites at any offset and around
every field boundary, insertions, deletions, truncations, splices of two bundles, duplicated,
dropped and swapped ciphertext chunks or byte ranges, length and count fields overwritten with
extreme values, the CBOR header (format 2: the inner one) replaced by generated CBOR or edited
field by field and sealed again, payloads altered and sealed again - and, for half the format 1
cases, signs the result again with a key the reader trusts, so the checks behind the signature
(header fields, wrapped key, stream framing and tags, payload CBOR and shape) are reached too.
In format 2 everything past the stanzas is authenticated by the stream itself: only resealing
with the content key (what the sender, or a recipient, can do) gets a mutant past it.

Properties:

- codec: `read_envelope` and `open_bundle` return or raise a `sync.errors.BundleRejected`
  subclass with a one-line message - nothing else, and never hang; both agree on framing
  errors; a file whose bytes changed opens only if it was sealed or signed again.
- import: `import_bundles` never raises; a bundle whose bytes changed is rejected (quarantined,
  off the stick), never accepted; the node's messages stay as they were and its audit chain
  verifies. Mutants signed again by the sending node may be anything but an exception.

CI runs a short pass (200 codec cases, 25 imports). RALLYPOINT_FUZZ_EXAMPLES=N runs N codec
cases and N // 8 imports; the docs say how to run a long one."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from appliance import cbor, crypto
from appliance import schema as t
from appliance.changes import SignedChange
from appliance.node import Attachment, Node
from sync import bundle, bundle_payload, bundle_v1, errors, sneakernet, stick
from sync.bundle import BundleContent, Limits, open_bundle, read_envelope
from sync.sneakernet import export_bundles, import_bundles
from tests import format1_writer
from tests import make_vectors as mv
from tests.conftest import PASSPHRASE, make_workspace

_FUZZ_EXAMPLES = os.environ.get("RALLYPOINT_FUZZ_EXAMPLES", "").strip()
CODEC_EXAMPLES = int(_FUZZ_EXAMPLES) if _FUZZ_EXAMPLES else 200
IMPORT_EXAMPLES = max(1, int(_FUZZ_EXAMPLES) // 8) if _FUZZ_EXAMPLES else 25
# Backstops for the whole test; a hang inside one codec case is caught sooner by `watchdog`.
CODEC_TIMEOUT = 120 + CODEC_EXAMPLES // 5
IMPORT_TIMEOUT = 120 + IMPORT_EXAMPLES
CASE_CPU_SECONDS = 10  # one codec case takes milliseconds

# Not derandomized: every run (CI included) explores cases no earlier run tried, and the
# properties hold for all inputs, so a failure is always a real bug, never noise. print_blob
# lets a failure seen in CI (no .hypothesis database there) be replayed with @reproduce_failure.
# Inside CI (the CI variable set) Hypothesis's own "ci" profile derandomizes anyway.
FUZZ_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}

MANIFEST: dict[str, dict[str, Any]] = json.loads((mv.VECTORS / mv.MANIFEST).read_text()) | {
    f"{folder}/{name}": entry for folder in (mv.V1, mv.V3) for name, entry in json.loads((mv.VECTORS / folder / mv.MANIFEST).read_text()).items()
}
SEEDS: dict[str, bytes] = {name: (mv.VECTORS / f"{name}.bundle").read_bytes() for name, entry in sorted(MANIFEST.items()) if entry["expected"] == mv.ACCEPTED}
SEED_NAMES = sorted(SEEDS)
SPLICE_PARTNERS = [SEEDS[name] for name in SEED_NAMES]
ORIGINALS = set(SPLICE_PARTNERS)  # a splice at (0, 0) is another seed, unaltered

U32_EXTREMES = [0, 1, 2, 41, 42, 255, 256, bundle.MAX_HEADER_BYTES - 1, bundle.MAX_HEADER_BYTES, bundle.MAX_HEADER_BYTES + 1, 2**31 - 1, 2**31, 2**32 - 1]
U64_EXTREMES = [
    0, 1, 23, 24, 41, 42, 43, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    bundle.DEFAULT_MAX_BUNDLE_BYTES, bundle.DEFAULT_MAX_BUNDLE_BYTES + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
]  # fmt: skip
CBOR_HEADS = [0x18, 0x19, 0x1A, 0x1B, 0x1F, 0x40, 0x5B, 0x5F, 0x60, 0x7B, 0x80, 0x9B, 0x9F, 0xA0, 0xBB, 0xBF, 0xC0, 0xD8, 0xD9, 0xF4, 0xF5, 0xF6, 0xF7, 0xF9, 0xFB, 0xFF]

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=8) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=9) | st.binary(max_size=4), inner, max_size=4),
    max_leaves=20,
)


# --- mutations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    header: bytes
    ciphertext: bytes
    signature: bytes


def frame_of(data: bytes) -> Frame | None:
    """The parts of a format 1 file whose magic, version and lengths agree with its size, else None."""
    if len(data) < bundle_v1.PREFIX_BYTES + bundle_v1.LENGTH_BYTES + bundle.SIGNATURE_BYTES or data[:9] != bundle.MAGIC + b"\x01":
        return None
    header_length = int.from_bytes(data[9:13], "big")
    start = bundle_v1.PREFIX_BYTES + header_length + bundle_v1.LENGTH_BYTES
    if start > len(data) or start + int.from_bytes(data[start - 8 : start], "big") + bundle.SIGNATURE_BYTES != len(data):
        return None
    return Frame(*mv.split(data))


@dataclass(frozen=True)
class Frame2:
    envelope: bytes  # magic to the last stanza
    ciphertext: bytes


def frame2_of(data: bytes) -> Frame2 | None:
    """The parts of a format 2 or 3 file whose magic, version, count and length agree with its size."""
    if len(data) < bundle.PREFIX_BYTES or data[:8] != bundle.MAGIC or data[8] not in bundle.FRAMED_VERSIONS:
        return None
    end = bundle.PREFIX_BYTES + int.from_bytes(data[13:15], "big") * bundle.STANZA_BYTES
    if end + 8 > len(data) or end + 8 + int.from_bytes(data[end : end + 8], "big") != len(data):
        return None
    return Frame2(data[:end], data[end + 8 :])


def reframe2(envelope: bytes, ciphertext: bytes) -> bytes:
    return envelope + len(ciphertext).to_bytes(8, "big") + ciphertext


def chunk_size_of(header: bytes) -> int | None:
    try:
        value = cbor2.loads(header)
    except Exception:  # noqa: BLE001 - any bytes at all: cbor2 raises several unrelated types
        return None
    size = value.get("chunk_size") if isinstance(value, dict) else None
    return size if type(size) is int and 1 <= size <= bundle.MAX_CHUNK_SIZE else None


def landmarks(data: bytes) -> list[int]:
    """Offsets where a field starts or ends: where off-by-one mutations do the most damage."""
    marks = [0, 8, 9, 13, 15, len(data) - bundle.SIGNATURE_BYTES, len(data)]
    v2 = frame2_of(data)
    size: int | None
    if v2 is not None:
        size = int.from_bytes(data[9:13], "big")
        start = len(v2.envelope) + 8
        marks += list(range(bundle.PREFIX_BYTES, len(v2.envelope) + 1, bundle.STANZA_BYTES)) + [start, start + bundle.STREAM_HEADER_BYTES]
        if bundle.MIN_CHUNK_SIZE <= size <= bundle.MAX_CHUNK_SIZE:
            marks += list(range(start + bundle.STREAM_HEADER_BYTES, len(data), size + bundle.CHUNK_OVERHEAD))
    elif len(data) >= 13:
        header_length = int.from_bytes(data[9:13], "big")
        marks += [13 + header_length, 21 + header_length, 21 + header_length + bundle.STREAM_HEADER_BYTES]
        size = chunk_size_of(data[13 : 13 + header_length]) if 13 + header_length <= len(data) else None
        if size is not None:
            marks += list(range(21 + header_length + bundle.STREAM_HEADER_BYTES, len(data), size + bundle.CHUNK_OVERHEAD))
    return [m for m in marks if 0 <= m <= len(data)]


def draw_offset(draw: st.DrawFn, data: bytes, *, end: bool = False) -> int:
    """An offset into `data` (up to len(data) with `end`): uniform, or near a landmark."""
    top = len(data) if end else len(data) - 1
    if top < 0:
        return 0
    if draw(st.booleans()):
        return draw(st.integers(0, top))
    near = draw(st.sampled_from(landmarks(data))) + draw(st.integers(-3, 3))
    return min(max(near, 0), top)


@dataclass
class Context:
    """What a mutation may use besides the seed: the key the reader trusts (to sign a mutant
    again), the seed's header and plaintext or content (to seal an altered payload), and
    well-formed document ids to move changes to."""

    signer: nacl.signing.SigningKey
    plaintext: bytes | None
    header: bundle.BundleHeader  # its version says which builder seals again
    content: BundleContent | None = None
    doc_ids: tuple[str, ...] = ()


class Mutant:
    """A mutated bundle and how it was made (not a dataclass: Hypothesis would print its bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.resigned = False  # signed again (or sealed anew) by a key the reader trusts
        self.steps: list[str] = []

    def __repr__(self) -> str:
        return f"Mutant({len(self.data)} bytes, resigned={self.resigned}, steps={self.steps})"


def flip_bits(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    if not m.data:
        return
    out = bytearray(m.data)
    for _ in range(draw(st.integers(1, 16))):
        offset, bit = draw_offset(draw, m.data), draw(st.integers(0, 7))
        out[offset] ^= 1 << bit
        m.steps.append(f"flip bit {bit} at {offset}")
    m.data = bytes(out)


def set_byte(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    if not m.data:
        return
    offset = draw_offset(draw, m.data)
    value = draw(st.sampled_from(CBOR_HEADS) | st.integers(0, 255))
    m.data = m.data[:offset] + bytes([value]) + m.data[offset + 1 :]
    m.steps.append(f"byte {offset} := {value:#04x}")


def insert_bytes(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    offset = draw_offset(draw, m.data, end=True)
    extra = draw(st.binary(min_size=1, max_size=64) | st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(1, 4096)))
    m.data = m.data[:offset] + extra + m.data[offset:]
    m.steps.append(f"insert {len(extra)} bytes at {offset}")


def delete_bytes(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    if not m.data:
        return
    start = draw_offset(draw, m.data)
    length = draw(st.integers(1, 16) | st.integers(1, len(m.data) - start))
    m.data = m.data[:start] + m.data[start + length :]
    m.steps.append(f"delete {length} bytes at {start}")


def truncate(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    if not m.data:
        return
    size = draw_offset(draw, m.data)
    m.data = m.data[:size]
    m.steps.append(f"truncate to {size}")


def splice(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    other = draw(st.sampled_from(SPLICE_PARTNERS))
    i, j = draw_offset(draw, m.data, end=True), draw_offset(draw, other, end=True)
    m.data = m.data[:i] + other[j:]
    m.steps.append(f"splice: first {i} bytes, then another bundle from {j}")


def overwrite_length(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    v2 = frame2_of(m.data)
    if v2 is not None:
        if draw(st.booleans()):
            count = draw(st.sampled_from([0, 1, 2, 1024, 1025, 2**16 - 1]))
            m.data = m.data[:13] + count.to_bytes(2, "big") + m.data[15:]
            m.steps.append(f"stanza count := {count}")
        else:
            value = draw(st.sampled_from(U64_EXTREMES) | st.integers(-70, 70).map(lambda d: min(max(len(v2.ciphertext) + d, 0), 2**64 - 1)))
            m.data = v2.envelope + value.to_bytes(8, "big") + v2.ciphertext
            m.steps.append(f"ciphertext length := {value}")
        return
    if len(m.data) < 13:
        return
    header_length = int.from_bytes(m.data[9:13], "big")
    if draw(st.booleans()) or len(m.data) < 21 + header_length:
        value = draw(st.sampled_from(U32_EXTREMES) | st.integers(-4, 4).map(lambda d: min(max(header_length + d, 0), 2**32 - 1)))
        m.data = m.data[:9] + value.to_bytes(4, "big") + m.data[13:]
        m.steps.append(f"header length := {value}")
        return
    at = 13 + header_length
    actual = len(m.data) - 21 - header_length - bundle.SIGNATURE_BYTES
    value = draw(st.sampled_from(U64_EXTREMES) | st.integers(-70, 70).map(lambda d: min(max(actual + d, 0), 2**64 - 1)))
    m.data = m.data[:at] + value.to_bytes(8, "big") + m.data[at + 8 :]
    m.steps.append(f"ciphertext length := {value}")


def mangle_ciphertext(draw: st.DrawFn, m: Mutant, _ctx: Context) -> None:
    """Duplicates, drops or swaps stream chunks or byte ranges of the ciphertext; the lengths
    are fixed up (so the framing stays valid) or left as they were."""
    parts = frame_of(m.data)
    v2 = frame2_of(m.data)
    size: int | None
    if v2 is not None and v2.ciphertext:
        ct, size = v2.ciphertext, int.from_bytes(m.data[9:13], "big")
    elif parts is None or not parts.ciphertext:
        return flip_bits(draw, m, _ctx)
    else:
        ct, size = parts.ciphertext, chunk_size_of(parts.header)
    stream_header, pieces = mv.chunks(ct, size) if size is not None and size > 0 else (b"", [])
    action = draw(st.sampled_from(["dup_range", "dup_chunk", "drop_chunk", "swap_chunks", "dup_stream_header"]))
    if action != "dup_range" and pieces:
        i, j = draw(st.integers(0, len(pieces) - 1)), draw(st.integers(0, len(pieces)))
        if action == "dup_chunk":
            pieces.insert(j, pieces[i])
        elif action == "drop_chunk" and len(pieces) > 1:
            del pieces[i]
        elif action == "swap_chunks":
            k = min(j, len(pieces) - 1)
            pieces[i], pieces[k] = pieces[k], pieces[i]
        elif action == "dup_stream_header":
            stream_header += stream_header
        new = stream_header + b"".join(pieces)
        m.steps.append(f"{action} ({i}, {j}) of {len(pieces)}")
    else:
        start = draw(st.integers(0, len(ct) - 1))
        length = draw(st.integers(1, len(ct) - start))
        at = draw(st.integers(0, len(ct)))
        new = ct[:at] + ct[start : start + length] + ct[at:]
        m.steps.append(f"duplicate ciphertext[{start}:{start + length}] at {at}")
    if draw(st.booleans()):
        m.data = reframe2(v2.envelope, new) if v2 is not None else format1_writer.frame(parts.header, new, parts.signature) if parts is not None else m.data
        m.steps.append("lengths fixed")
    else:
        start = len(m.data) - (0 if v2 is not None else bundle.SIGNATURE_BYTES) - len(ct)
        m.data = m.data[:start] + new + m.data[start + len(ct) :]


def header_edits(draw: st.DrawFn, fields: dict[Any, Any], names: frozenset[str]) -> tuple[dict[Any, Any], str]:
    fields = dict(fields)
    key = draw(st.sampled_from(sorted(names)))
    edit = draw(st.sampled_from(["drop", "extra", "generated", "extreme"]))
    if edit == "drop":
        fields.pop(key, None)
    elif edit == "extra":
        fields[draw(st.text(max_size=10).filter(lambda k: k not in names))] = draw(cbor_values)
    elif edit == "generated":
        fields[key] = draw(cbor_values)
    else:
        found = fields.get("recipients")
        recipients: list[Any] = found if isinstance(found, list) else []
        extremes: dict[str, list[Any]] = {
            "v": [0, 2, 2**64 - 1, -1],
            "id": [b"", bytes(15), bytes(17), "id"],
            "workspace": [bytes(32), bytes(31), mv.OTHER_WORKSPACE],
            "sender": [bytes(32), mv.pk(mv.STRANGER), mv.pk(mv.REVOKED), bytes(33)],
            "created_at": [0, 2**63 - 1, 2**63, 2**64 - 1, -1],
            "incarnation": [b"", bytes(15), bytes(17), None, "incarnation"],
            "chunk_size": [0, 1, 1023, 1024, 1025, 2**20, 2**20 + 1, 2**64 - 1],
            "heads": [{}, {"": []}, {"x" * 257: []}, {"d": [bytes(32), bytes(32)]}, {"d": [bytes(31)]}, []],
            "recipients": [[], recipients * 2, list(reversed(recipients)), [bytes(32)], [[bytes(32), bytes(80)]], [[bytes(32)]], recipients[:1] * 1025],
        }
        fields[key] = draw(st.sampled_from(extremes[key]))
    return fields, f"header {edit} {key}"


def replace_header(draw: st.DrawFn, m: Mutant, ctx: Context) -> None:
    """The CBOR header replaced: generated CBOR, the real header with one field edited, or
    bytes. Format 2's header is inside the encryption: the mutant is sealed again, by the
    trusted key, around the seed's payload (what a sender, or a recipient, could do)."""
    parts = frame_of(m.data)
    if ctx.header.version != 1 and ctx.plaintext is not None:
        raw = ctx.header.raw
    elif parts is None:
        return set_byte(draw, m, ctx)
    else:
        raw = parts.header
    kind = draw(st.sampled_from(["edit", "edit", "generated", "bytes"]))
    if kind == "bytes":
        header = draw(st.binary(max_size=300))
        m.steps.append(f"header := {len(header)} random bytes")
    else:
        try:
            fields = cbor2.loads(raw)
        except Exception:  # noqa: BLE001 - as in chunk_size_of
            fields = None
        value: Any
        if kind == "edit" and isinstance(fields, dict):
            value, step = header_edits(draw, fields, bundle.HEADER_FIELDS if ctx.header.version != 1 else bundle_v1.HEADER_FIELDS)
        else:
            value, step = draw(cbor_values), "header := generated CBOR"
        canonical = draw(st.booleans())
        header = cbor2.dumps(value, canonical=canonical)
        m.steps.append(step + ("" if canonical else " (not canonical)"))
    if ctx.header.version != 1 and ctx.plaintext is not None:
        signer = ctx.signer

        def inner(envelope: bytes, _h: bytes, payload: bytes, _s: bytes) -> bytes:
            return bundle._inner_plaintext(envelope, header, payload, crypto.sign(signer, bundle._signed_message(envelope, header, payload)))

        seal(draw, m, ctx, ctx.plaintext, "inner header replaced", inner=inner)
    elif parts is not None:
        m.data = format1_writer.frame(header, parts.ciphertext, parts.signature)


def reseal_payload(draw: st.DrawFn, m: Mutant, ctx: Context) -> None:
    """The seed's payload altered byte-wise or replaced by generated CBOR, then encrypted and
    signed by the trusted key: everything up to the payload checks passes."""
    assert ctx.plaintext is not None
    plaintext = ctx.plaintext
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "generated", "near"]))
    if kind == "flip":
        out = bytearray(plaintext)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        plaintext = bytes(out)
    elif kind == "truncate":
        plaintext = plaintext[: draw(st.integers(1, len(plaintext)))]
    elif kind == "insert":
        at = draw(st.integers(0, len(plaintext)))
        plaintext = plaintext[:at] + draw(st.binary(min_size=1, max_size=16) | st.sampled_from(CBOR_HEADS).map(lambda b: bytes([b]))) + plaintext[at:]
    elif kind == "generated":
        plaintext = cbor2.dumps(draw(cbor_values), canonical=draw(st.booleans()))
    else:
        near = draw(st.fixed_dictionaries({k: cbor_values for k in bundle_payload.PAYLOAD_FIELDS}, optional={"x": cbor_values}))
        plaintext = cbor2.dumps(near, canonical=True)
    seal(draw, m, ctx, plaintext or b"\xf6", f"payload {kind}")


def seal(draw: st.DrawFn, m: Mutant, ctx: Context, plaintext: bytes, step: str, inner: mv.Inner | None = None) -> None:
    """Encrypts (and signs) `plaintext` anew with the seed's header fields, in the seed's format
    (format 3 compresses it first, as its writer does)."""
    chunk_size = draw(st.sampled_from([bundle.MIN_CHUNK_SIZE, bundle.MIN_CHUNK_SIZE + 1, ctx.header.chunk_size]))
    if ctx.header.version >= bundle_payload.COMPRESSED_FROM:
        plaintext = bundle_payload.compress(plaintext)
    if ctx.header.version != 1:
        probe = bundle._seal_plaintext(
            plaintext, version=ctx.header.version, sender_key=ctx.signer, workspace=ctx.header.workspace, recipients=ctx.header.recipients, heads=ctx.header.heads,
            created_at=ctx.header.created_at, incarnation=ctx.header.incarnation or bytes(bundle.INCARNATION_BYTES), randomness=bytes(32), chunk_size=chunk_size, inner=inner,
        )  # fmt: skip
        stream_bytes = len(probe) - len(frame2_of(probe).envelope) - 8 - bundle.STREAM_HEADER_BYTES  # type: ignore[union-attr]
        pieces = -(-stream_bytes // (chunk_size + bundle.CHUNK_OVERHEAD))
    else:
        pieces = -(-len(plaintext) // chunk_size)
    tags = None
    if draw(st.integers(0, 4)) == 0:  # now and then, stream tags of the builder's choosing
        tags = draw(st.lists(st.sampled_from([bundle.TAG_MESSAGE, 1, 2, bundle.TAG_FINAL]), min_size=pieces, max_size=pieces))
    sealer = bundle._seal_plaintext if ctx.header.version != 1 else format1_writer.seal_plaintext
    extra: dict[str, Any] = {"inner": inner} if inner is not None else {}
    if ctx.header.version != 1:
        extra["incarnation"] = ctx.header.incarnation
        extra["version"] = ctx.header.version
    m.data = sealer(
        plaintext,
        sender_key=ctx.signer,
        workspace=ctx.header.workspace,
        recipients=ctx.header.recipients,
        heads=ctx.header.heads,
        created_at=ctx.header.created_at,
        randomness=draw(st.binary(min_size=32, max_size=32)),
        chunk_size=chunk_size,
        stream_tags=tags,
        **extra,
    )
    m.resigned = True
    m.steps.append(f"{step}, sealed again ({len(plaintext)} bytes, chunk size {chunk_size}{', tags ' + str(tags) if tags else ''})")


def edit_content(draw: st.DrawFn, m: Mutant, ctx: Context) -> None:
    """Structured payload edits, sealed again by the trusted key: changes dropped, repeated,
    reordered, moved to another (well-formed) document, altered or stripped of their
    signatures; blobs dropped or altered. Document ids stay well formed (a malformed one has its own test)."""
    assert ctx.content is not None
    groups = [(doc, list(changes)) for doc, changes in ctx.content.directory + ctx.content.changes]
    blobs = list(ctx.content.blobs)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "repeat", "reverse", "strip", "forge", "alter", "cut", "move", "blob"]))
        g = draw(st.integers(0, len(groups) - 1)) if groups else None
        changes = groups[g][1] if g is not None else []
        i = draw(st.integers(0, len(changes) - 1)) if changes else None
        if kind == "blob" and blobs:
            b = draw(st.integers(0, len(blobs) - 1))
            digest, data = blobs[b]
            if draw(st.booleans()):
                del blobs[b]
            else:
                blobs[b] = (digest, data[: draw(st.integers(0, len(data)))] + b"!")
        elif i is None or g is None:
            continue
        elif kind == "drop":
            del changes[i]
        elif kind == "repeat":
            changes.insert(draw(st.integers(0, len(changes))), changes[i])
        elif kind == "reverse":
            changes.reverse()
        elif kind == "strip":
            changes[i] = SignedChange(changes[i].data, None)
        elif kind == "forge":
            changes[i] = SignedChange(changes[i].data, draw(st.binary(min_size=64, max_size=64)))
        elif kind == "alter":
            altered = bytearray(changes[i].data)
            altered[draw(st.integers(0, len(altered) - 1))] ^= 1 << draw(st.integers(0, 7))
            changes[i] = SignedChange(bytes(altered), changes[i].signature)
        elif kind == "cut":
            changes[i] = SignedChange(changes[i].data[: draw(st.integers(1, len(changes[i].data)))], changes[i].signature)
        elif kind == "move":
            target = draw(st.sampled_from(ctx.doc_ids))
            if all(doc != target for doc, _ in groups):
                groups[g] = (target, changes)
        m.steps.append(f"content {kind} (group {g}, item {i})")
    directory = [(d, tuple(c)) for d, c in groups if d == "directory"]
    channel = [(d, tuple(c)) for d, c in groups if d != "directory"]
    wire = bundle_payload.content_to_wire(BundleContent(directory=tuple(directory), changes=tuple(channel), blobs=tuple(blobs)), ctx.header.version)
    seal(draw, m, ctx, cbor.encode(wire), "content edited")


OPERATORS: dict[str, Callable[[st.DrawFn, Mutant, Context], None]] = {
    "flip_bits": flip_bits,
    "set_byte": set_byte,
    "insert": insert_bytes,
    "delete": delete_bytes,
    "truncate": truncate,
    "splice": splice,
    "length": overwrite_length,
    "ciphertext": mangle_ciphertext,
    "header": replace_header,
}


@st.composite
def mutants(draw: st.DrawFn, seed: bytes, ctx: Context, *, payload_ops: tuple[str, ...]) -> Mutant:
    """1-3 stacked mutations of `seed`; then, half the time, signed again by `ctx.signer`
    when the framing still holds (so the checks behind the signature are what decides)."""
    m = Mutant(seed)
    names = sorted(OPERATORS) + list(payload_ops)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        if name == "payload":
            reseal_payload(draw, m, ctx)
        elif name == "content":
            edit_content(draw, m, ctx)
        else:
            OPERATORS[name](draw, m, ctx)
    parts = frame_of(m.data)
    if parts is not None and ctx.header.version == 1 and draw(st.booleans()):
        m.data = mv.resign(parts.header, parts.ciphertext, ctx.signer)
        m.resigned = True
        m.steps.append("signed again")
    return m


# --- codec property -------------------------------------------------------------------------


def seed_context(name: str) -> Context:
    data = SEEDS[name]
    header, content = open_bundle(data, my_key=mv.IDENTITIES[MANIFEST[name]["open_as"]], sender_status=lambda _k: "trusted", workspace=mv.WORKSPACE)
    return Context(signer=mv.SENDER, plaintext=cbor.encode(bundle_payload.content_to_wire(content, header.version)), header=header)


SEED_CONTEXTS = {name: seed_context(name) for name in SEED_NAMES}


@st.composite
def codec_cases(draw: st.DrawFn) -> tuple[str, Mutant]:
    name = draw(st.sampled_from(SEED_NAMES))
    return name, draw(mutants(SEEDS[name], SEED_CONTEXTS[name], payload_ops=("payload", "payload")))


@dataclass(frozen=True)
class Reader:
    key: str
    trust: str  # "directory": the vectors' sender trusted, the revoked one revoked, others unknown; "everyone"
    workspace: bytes | None
    limits: Limits

    def status(self, sender: bytes) -> str:
        if self.trust == "everyone":
            return "trusted"
        return "trusted" if sender == mv.pk(mv.SENDER) else "revoked" if sender == mv.pk(mv.REVOKED) else "unknown"


small_limits = st.builds(
    Limits,
    max_bundle_bytes=st.sampled_from([bundle.MIN_CIPHERTEXT_BYTES, 1000, 4096, 2**20, 2**31, 2**64 - 1]),
    max_plaintext_bytes=st.sampled_from([1, 100, 2048, 2**20, 2**64 - 1]),
    max_items=st.sampled_from([1, 10, 100, 10**6]),
    max_blob_bytes=st.sampled_from([1, 2048, 2**25]),
)


@st.composite
def readers(draw: st.DrawFn, seed_name: str) -> Reader:
    key = draw(st.just(MANIFEST[seed_name]["open_as"]) | st.sampled_from(sorted(mv.IDENTITIES)))
    return Reader(
        key=key,
        trust=draw(st.sampled_from(["directory", "everyone"])),
        workspace=draw(st.sampled_from([mv.WORKSPACE, None])),
        limits=draw(st.just(Limits()) | small_limits),
    )


class Hang(Exception):
    """A codec case ran for CASE_CPU_SECONDS of CPU time."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raises Hang in a case that spins, so Hypothesis shrinks it and shows it. A CPU-time
    timer (SIGPROF) leaves pytest-timeout's SIGALRM alone; that one is the backstop for a hang
    inside C code, which a Python signal handler cannot interrupt."""

    def fire(_signum: int, _frame: object) -> None:
        raise Hang(f"a case used more than {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, fire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def outcome(action: Callable[[], Any]) -> Any:
    """The result, or the BundleRejected raised; any other exception fails the test."""
    try:
        return action()
    except errors.BundleRejected as exc:
        message = str(exc)
        assert message and "\n" not in message, f"{type(exc).__name__} message is not one line: {message!r}"
        return exc


@pytest.mark.timeout(CODEC_TIMEOUT)
@settings(max_examples=CODEC_EXAMPLES, **FUZZ_SETTINGS)
@given(case=codec_cases(), data=st.data())
def test_decoder_returns_or_rejects_every_mutated_bundle(case: tuple[str, Mutant], data: st.DataObject) -> None:
    name, mutant = case
    reader = data.draw(readers(name), label="reader")
    note(f"seed {name}: {'; '.join(mutant.steps)} -> {len(mutant.data)} bytes")
    with watchdog(CASE_CPU_SECONDS):
        envelope = outcome(lambda: read_envelope(mutant.data, max_bundle_bytes=reader.limits.max_bundle_bytes))
        opened = outcome(
            lambda: open_bundle(mutant.data, my_key=mv.IDENTITIES[reader.key], sender_status=reader.status, limits=reader.limits, workspace=reader.workspace)
        )
    event(f"open_bundle: {type(opened).__name__ if isinstance(opened, errors.BundleRejected) else 'opened'}")
    if isinstance(envelope, errors.BundleRejected):  # framing: both run the same checks first
        assert type(opened) is type(envelope), f"read_envelope: {envelope!r}; open_bundle: {opened!r}"
    if not isinstance(opened, errors.BundleRejected):
        assert (envelope.version, envelope.stanzas) == (opened[0].version, len(opened[0].recipients))
        assert mutant.resigned or mutant.data in ORIGINALS, "a bundle whose bytes changed opened without being sealed or signed again"


# --- import property -------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Courier:
    """Alice's bundle for Bob, which Bob's node already holds the content of (he imported an
    earlier bundle with the same changes): the unaltered seed imports as a duplicate."""

    stick: Path
    bob_home: Path
    bob_id: str
    seed: bytes
    seed_name: str
    messages: int
    context: Context

    def __repr__(self) -> str:
        return f"Courier({self.bob_home})"


async def message_count(node: Node) -> int:
    async with node.store.reading() as conn:
        return int((await conn.execute(select(func.count()).select_from(t.messages))).scalar_one())


async def prepare_courier(root: Path) -> Courier:
    alice, bob = await make_workspace(root, "bob")
    stick_root = root / "stick"
    stick_root.mkdir()
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", [f"fuzz message {i} " + "x" * (i % 50) for i in range(240)])
        # Incompressible, so the compressed bundle still spans several stream chunks.
        await alice.chat.post("general", "a file", attachments=[Attachment("blob.bin", hashlib.shake_256(b"fuzz attachment").digest(150_000))])
        await export_bundles(alice, stick_root, for_nodes=[bob.identity.node_id])
        first = await import_bundles(bob, stick_root)
        assert [f.outcome for f in first.files] == [sneakernet.ACCEPTED]
        await export_bundles(alice, stick_root, for_nodes=[bob.identity.node_id])  # same changes, fresh bytes
        (path,) = sorted((stick_root / stick.STICK_DIR / stick.BUNDLES).glob("*.rpb"))
        seed = path.read_bytes()
        path.unlink()
        header, content = open_bundle(seed, my_key=bob.identity.signing_key, sender_status=lambda _k: "trusted")
        assert header.ciphertext_length > 2 * header.chunk_size  # several stream chunks to mangle
        channel_id = (await alice.views.list_channels())[0].channel_id
        doc_ids = ("directory", f"{channel_id}/head", f"{channel_id}/seg/000000", f"{channel_id}/seg/000001", "0123456789abcdef0123/seg/000000")
        context = Context(
            signer=alice.identity.signing_key, plaintext=cbor.encode(bundle_payload.content_to_wire(content, header.version)), header=header, content=content, doc_ids=doc_ids
        )
        return Courier(stick_root, bob.home, bob.identity.node_id, seed, path.name, await message_count(bob), context)


@pytest.fixture(scope="module")
def courier(tmp_path_factory: pytest.TempPathFactory) -> Courier:
    return asyncio.run(prepare_courier(tmp_path_factory.mktemp("fuzz-import")))


def import_once(courier: Courier, data: bytes) -> tuple[sneakernet.ImportReport, int]:
    """Bob imports `data` from the stick's bundles/; the stick is emptied afterwards (an
    UnknownSender, a bundle not for him or a re-presented rejected bundle stays on it) and
    the quarantine before."""
    outbox = courier.stick / stick.STICK_DIR / stick.BUNDLES
    shutil.rmtree(courier.bob_home / sneakernet.QUARANTINE_DIR, ignore_errors=True)
    (outbox / courier.seed_name).write_bytes(data)

    async def run() -> tuple[sneakernet.ImportReport, int]:
        async with await Node.open(courier.bob_home, PASSPHRASE) as bob:
            report = await import_bundles(bob, courier.stick)
            verdict = await bob.audit.verify()
            assert verdict.ok, verdict.problem
            return report, await message_count(bob)

    try:
        return asyncio.run(run())
    finally:
        for path in list(outbox.iterdir()):
            path.unlink()


@pytest.mark.timeout(IMPORT_TIMEOUT)
@settings(max_examples=IMPORT_EXAMPLES, **FUZZ_SETTINGS)
@given(data=st.data())
def test_import_never_raises_and_accepts_no_altered_bundle(courier: Courier, data: st.DataObject) -> None:
    mutant = data.draw(mutants(courier.seed, courier.context, payload_ops=("content",)), label="mutant")
    note(f"{'; '.join(mutant.steps)} -> {len(mutant.data)} bytes")
    report, messages = import_once(courier, mutant.data)  # raises: the property fails
    assert messages == courier.messages
    (file,) = report.files
    note(f"outcome {file.outcome}: {file.reason}")
    event(f"import: {file.outcome}{' (signed again)' if mutant.resigned else ''}")
    if mutant.data == courier.seed:
        assert file.outcome in (sneakernet.DUPLICATE, sneakernet.SEEN)
    elif mutant.data in ORIGINALS:  # a committed vector: for other nodes, from a stranger to Bob (format 1 says so first)
        assert file.outcome == ("UnknownSender" if mutant.data[len(bundle.MAGIC)] == 1 else sneakernet.NOT_FOR_ME)
    elif not mutant.resigned:  # a damaged stanza looks like one for another node: not imported either way
        assert file.rejected or file.outcome == sneakernet.NOT_FOR_ME or (file.outcome == sneakernet.SEEN and file.reason.startswith("already rejected")), file
        if file.quarantined is not None:
            assert file.quarantined.read_bytes() == mutant.data
    else:  # signed again by a node Bob trusts: anything but an exception and new messages
        assert file.outcome in (sneakernet.DUPLICATE, sneakernet.SEEN, sneakernet.NOT_FOR_ME, sneakernet.WAITING) or file.rejected, file
    if file.rejected and file.outcome not in ("UnknownSender", "Unreadable"):
        assert file.quarantined is not None


def test_import_rejects_a_trusted_bundle_naming_an_unknown_document(courier: Courier) -> None:
    ctx = courier.context
    plaintext = cbor.encode({"directory": [], "changes": [["not-a-document", [[b"\x01", None]]]], "blobs": [], "acks": {}, "wholes": []})
    data = bundle._seal_plaintext(
        bundle_payload.compress(plaintext), sender_key=ctx.signer, workspace=ctx.header.workspace, recipients=ctx.header.recipients,
        heads={}, created_at=ctx.header.created_at, incarnation=ctx.header.incarnation or bytes(bundle.INCARNATION_BYTES), randomness=bytes(32), chunk_size=bundle.DEFAULT_CHUNK_SIZE,
    )  # fmt: skip
    report, messages = import_once(courier, data)
    assert [f.outcome for f in report.files] == ["ChangeRejected"]
    assert messages == courier.messages

