"""Hostile bundles cannot make an import use more than a fixed amount of memory.

Every bundle here is properly encrypted for Bob and signed by Alice, a node Bob's directory
trusts, so it gets past the signature and reaches the checks that must refuse it without
building what it describes: a CBOR array declaring 2^32 items, arrays nested 100,000 deep, a
byte string claiming 2^40 bytes, maps of a million and of two million tiny entries (the
latter at the importer's limit of 4,000,000 CBOR items), string-reference tags, arrays at
and just past the item limit, a stanza count of 65,535, an inner header length field of
2^32 - 1, an inner header whose CBOR declares a 2^32-entry map, a ciphertext length field of
2^62, and the same header bombs in format 1 (still read). Next to them on the stick
lies an ordinary bundle (300 messages and a 200 KB attachment), imported after all of them,
so the same run shows that the normal path fits and that the node still works.

Bob imports them in a child process whose address space is capped (RLIMIT_AS) at its own
baseline plus AS_HEADROOM (768 MiB); its peak resident set (VmHWM) must stay within
RSS_HEADROOM (640 MiB) of the baseline. Measured on CPython 3.11 / x86-64, Linux, 2 cores:

| | VmPeak | peak RSS |
|---|---|---|
| baseline: the project's modules imported | 62 MB | 52 MB |
| ordinary bundle alone | 200 MB | 60 MB |
| map of 1,000,000 entries (2M items) | 410 MB | 319 MB |
| map of 1,999,999 entries (4M items, the limit) | 679 MB | 601 MB |
| every other bomb here | 200 MB | under 100 MB |

So the caps leave the costliest bomb about 150 MB (address space) and 90 MB (RSS) of room,
and the ordinary import uses a fifth of the address-space headroom. A map at the item limit
costs about 135 bytes per CBOR item (decoded objects plus the canonical re-encoding the
decoder compares against); no other shape measured costs more. Lowering the importer's
`max_items` lowers the bound in proportion.

How the numbers are taken: `ru_maxrss` is useless in the child, because Linux carries the
parent's peak RSS across fork and exec (it reports the pytest process's size); VmPeak and
VmHWM from /proc/self/status are the child's own. MALLOC_ARENA_MAX=2 (glibc otherwise
reserves 64 MB of address space per thread arena) and a fixed two-thread default executor
(the default grows with the CPU count) keep the address space about memory rather than
about the machine.

The second test does the same with decompression bombs, changes that deflate about a
thousandfold: a bundle of 250 that each inflate past the 4 MiB a change may have, and one of
900 that each stay just under the per-change inflation cap, so that only the cap on what
inflation may add to a whole batch stops them. Either would need about 1 GiB; without the
batch cap the child dies of MemoryError.

A MemoryError inside the decoder would surface as a Malformed rejection (the CBOR decoder
wraps every exception), so each rejection must also give the reason expected for that bomb,
not merely its outcome class. (Out of address space, cbor2 6's Rust encoder panics instead:
pyo3's PanicException is a BaseException and ends the import.)"""

from __future__ import annotations

import array
import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from appliance import cbor, crypto
from appliance import changes as ch
from appliance.node import Attachment, Node
from sync import bundle, bundle_payload, bundle_v1, sneakernet, stick
from sync.sneakernet import IMPORT_LIMITS, export_bundles
from tests import format1_writer
from tests.conftest import PASSPHRASE, REPO, make_workspace

MiB = 1024 * 1024
AS_HEADROOM = 768 * MiB  # address space allowed above the child's baseline
RSS_HEADROOM = 640 * MiB  # peak resident set allowed above the child's baseline
CHILD_TIMEOUT = 90

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory cap is enforced with Linux's RLIMIT_AS and measured in /proc/self/status")

CHILD = r"""
import asyncio, concurrent.futures, json, re, resource, sys
from pathlib import Path

def status(field: str) -> int:
    return int(re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

from appliance.node import Node
from sync.sneakernet import import_bundles

home, passphrase, root, headroom = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
baseline = status("VmPeak")
baseline_rss = status("VmHWM")
cap = baseline + headroom
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

async def main():
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    async with await Node.open(home, passphrase) as node:
        report = await import_bundles(node, root)
    return report

report = asyncio.run(main())
print(json.dumps({
    "baseline_vm_peak": baseline,
    "baseline_rss": baseline_rss,
    "cap": cap,
    "vm_peak": status("VmPeak"),
    "peak_rss": status("VmHWM"),
    "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "files": [{"name": f.name, "outcome": f.outcome, "reason": f.reason, "rejected": f.rejected} for f in report.files],
}))
"""


def cbor_head(major: int, value: int) -> bytes:
    """A CBOR item head in its shortest form (what canonical CBOR requires)."""
    if value < 24:
        return bytes([major << 5 | value])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes([major << 5 | info]) + value.to_bytes(width, "big")
    raise ValueError(value)


@dataclass(frozen=True)
class Bomb:
    label: str
    data: bytes
    outcome: str | None  # None: any rejection
    reason: str  # a regular expression the rejection's reason must match


@dataclass(frozen=True)
class Setup:
    bob_home: Path
    stick: Path
    bombs: dict[str, Bomb]  # by file name
    legit: str  # file name of the ordinary bundle


class Sealer:
    """Bundles from Alice to Bob around any plaintext, made with the codec's own helpers."""

    def __init__(self, alice: Node, bob: Node, root: Path, created_at: int) -> None:
        self.alice, self.bob, self.root, self.created_at = alice, bob, root, created_at
        self.placed = 0

    def seal(self, plaintext: bytes, *, version: int = bundle.FORMAT_VERSION, inner: Any = None, as_carried: bool = False) -> bytes:
        """Format 3 compresses `plaintext` as its writer does, unless it is `as_carried` already."""
        self.created_at += 1
        extra: dict[str, Any] = {"inner": inner} if inner is not None else {}
        if version != 1:
            extra["incarnation"] = self.alice.identity.incarnation
            extra["version"] = version
        payload = bundle_payload.compress(plaintext) if version >= bundle_payload.COMPRESSED_FROM and not as_carried else plaintext
        return (bundle._seal_plaintext if version != 1 else format1_writer.seal_plaintext)(
            payload,
            sender_key=self.alice.identity.signing_key,
            workspace=self.alice.directory.current.workspace,
            recipients=[bytes(self.bob.identity.signing_key.verify_key)],
            heads={},
            created_at=self.created_at,
            randomness=hashlib.sha256(plaintext[:64] + self.created_at.to_bytes(8, "big")).digest(),
            chunk_size=bundle.MAX_CHUNK_SIZE,
            **extra,
        )

    def place(self, bomb: Bomb, bombs: dict[str, Bomb]) -> None:
        """Formats 2 and 3 in bundles/ under names that sort first; format 1 in Bob's outbox of the
        earlier layout, named like any bundle from Alice."""
        self.placed += 1
        if bomb.data[len(bundle.MAGIC)] == 1:
            outbox, name = stick.outbox_name(self.bob.identity.node_id), stick.bundle_file_name(self.alice.identity.node_id, self.created_at + self.placed, hashlib.sha256(bomb.data).digest()[:16])
        else:
            outbox, name = stick.BUNDLES, stick.anonymous_file_name(self.placed.to_bytes(16, "big"))
        folder = self.root / stick.STICK_DIR / outbox
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(bomb.data)
        bombs[name] = bomb


def cbor_bombs(sealer: Sealer) -> list[Bomb]:
    empty_v1 = b"\xa4" + b"\x64acks\xa0" + b"\x65blobs\x80" + b"\x67changes\x80" + b"\x69directory\x80"
    empty = cbor.encode({"acks": {}, "blobs": [], "changes": [], "directory": [], "wholes": []})
    small = sealer.seal(empty)
    small_v1 = sealer.seal(empty_v1, version=1)
    header, ciphertext, _ = frame_parts(small_v1)
    at = bundle_v1.PREFIX_BYTES + len(header)
    stream_at = bundle.PREFIX_BYTES + bundle.STANZA_BYTES
    signer = sealer.alice.identity.signing_key

    def inner_header(header_raw: bytes, declared: int | None = None) -> Any:
        def inner(envelope: bytes, _h: bytes, payload: bytes, _s: bytes) -> bytes:
            signature = crypto.sign(signer, bundle._signed_message(envelope, header_raw, payload))
            plaintext = bundle._inner_plaintext(envelope, header_raw, payload, signature)
            return plaintext if declared is None else declared.to_bytes(4, "big") + plaintext[4:]

        return inner

    items = IMPORT_LIMITS.max_items  # CBOR data items, the array's own head included
    # The real header with its "heads" map (empty: a0) replaced by one declaring 2^32 entries, signed again.
    huge_heads = header.replace(b"\x65heads\xa0", b"\x65heads" + cbor_head(5, 2**32), 1)
    assert huge_heads != header
    # zstd: 1 GiB of zeros in a frame of ~32 KiB (declared), and the same without a declared size.
    zeros, pieces = bytes(MiB), 1024
    declared = zstandard.ZstdCompressor(level=1).compressobj(size=len(zeros) * pieces)
    undeclared = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    zstd_bomb = b"".join(declared.compress(zeros) for _ in range(pieces)) + declared.flush()
    zstd_unsized = b"".join(undeclared.compress(zeros) for _ in range(pieces)) + undeclared.flush()
    return [
        Bomb("zstd frame declaring 1 GiB", sealer.seal(zstd_bomb, as_carried=True), "TooLarge", r"decompresses to 1,073,741,824 bytes; the limit is"),
        Bomb("zstd frame of 1 GiB, size not declared", sealer.seal(zstd_unsized, as_carried=True), "Malformed", r"does not declare its content size"),
        Bomb(
            "a small payload followed by a second frame of 1 GiB",
            sealer.seal(bundle_payload.compress(empty) + zstd_unsized, as_carried=True),
            "Malformed",
            r"holds more than the \d+ bytes it declares",
        ),
        Bomb("array of 2^32 items", sealer.seal(cbor_head(4, 2**32) + b"\xf6" * 100_000), "Malformed", r"payload: CBOR ends inside an item"),
        Bomb("arrays nested 100,000 deep", sealer.seal(b"\x81" * 100_000 + b"\xf6"), "Malformed", r"payload: CBOR nested deeper than 16"),
        Bomb("byte string of 2^40 bytes", sealer.seal(cbor_head(2, 2**40) + bytes(1000)), "Malformed", r"payload: CBOR ends inside an item"),
        Bomb("map of 1,000,000 tiny entries", sealer.seal(tiny_map(1_000_000)), "Malformed", r"payload must have exactly the fields"),
        Bomb(
            f"map of {(items - 1) // 2:,} tiny entries (the item limit)",
            sealer.seal(tiny_map((items - 1) // 2)),
            "Malformed",
            r"payload must have exactly the fields",
        ),
        Bomb(
            "string references (tag 256 and tag 25)",
            sealer.seal(b"\xd9\x01\x00\x9a\x00\x01\x86\xa0\x5a\x00\x01\x86\xa0" + b"A" * 100_000 + b"\xd8\x19\x00" * 99_999),
            "Malformed",
            r"payload: CBOR tags are not allowed",
        ),
        Bomb(f"array of {items:,} nulls (at the item limit)", sealer.seal(cbor_head(4, items - 1) + b"\xf6" * (items - 1)), "Malformed", r"payload is not a CBOR map"),
        Bomb(
            f"array of {items + 1:,} nulls (past the item limit)",
            sealer.seal(cbor_head(4, items) + b"\xf6" * items),
            "TooLarge",
            rf"payload holds more than {IMPORT_LIMITS.max_items:,} CBOR items",
        ),
        Bomb("stanza count 65,535", small[:13] + b"\xff\xff" + small[15:], "TooLarge", r"65,535 recipient stanzas"),
        Bomb("inner header length field 2^32 - 1", sealer.seal(empty, inner=inner_header(b"\xa0", 2**32 - 1)), "TooLarge", r"header declares 4,294,967,295 bytes"),
        Bomb("inner header map declaring 2^32 entries", sealer.seal(empty, inner=inner_header(cbor_head(5, 2**32))), "Malformed", r"header: CBOR ends inside an item"),
        Bomb(
            "ciphertext length field 2^62",
            small[:stream_at] + (2**62).to_bytes(8, "big") + small[stream_at + 8 :],
            "TooLarge",
            r"declares 4,611,686,018,427,387,904 bytes of ciphertext",
        ),
        Bomb("format 1: header length field 2^32 - 1", small_v1[:9] + (2**32 - 1).to_bytes(4, "big") + small_v1[13:], "TooLarge", r"header declares 4,294,967,295 bytes"),
        Bomb(
            "format 1: header map declaring 2^32 entries",
            format1_writer.frame(huge_heads, ciphertext, format1_writer.sign(signer, huge_heads, ciphertext)),
            "Malformed",
            r"header: CBOR ends inside an item",
        ),
        Bomb(
            "format 1: ciphertext length field 2^62",
            small_v1[:at] + (2**62).to_bytes(8, "big") + small_v1[at + 8 :],
            "TooLarge",
            r"declares 4,611,686,018,427,387,904 bytes of ciphertext",
        ),
    ]


def tiny_map(entries: int) -> bytes:
    """{0: null, 1: null, ...}: canonical (integer keys ascending), so it is decoded in full and
    encoded again before its shape is refused - the costliest CBOR per item found for cbor2."""
    short = min(entries, 2**16)
    parts = [cbor_head(5, entries), b"".join(cbor_head(0, i) + b"\xf6" for i in range(short))]
    if entries > short:  # keys 65,536 and up: 1a + 4 bytes, then null; laid out without a Python loop
        count = entries - short
        keys = array.array("I", range(short, entries))
        assert keys.itemsize == 4
        if sys.byteorder == "little":
            keys.byteswap()
        raw = keys.tobytes()
        entry = bytearray(6 * count)
        entry[0::6] = b"\x1a" * count
        for k in range(4):
            entry[1 + k :: 6] = raw[k::4]
        entry[5::6] = b"\xf6" * count
        parts.append(bytes(entry))
    return b"".join(parts)


def frame_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, ciphertext, signature) of a format 1 bundle."""
    header_length = int.from_bytes(data[9:13], "big")
    start = bundle_v1.PREFIX_BYTES + header_length + bundle_v1.LENGTH_BYTES
    length = int.from_bytes(data[start - 8 : start], "big")
    return data[bundle_v1.PREFIX_BYTES : bundle_v1.PREFIX_BYTES + header_length], data[start : start + length], data[start + length :]


def deflate_bomb_changes(actor: bytes, seqs: range, inflated: int) -> list[bytes]:
    """Compressed Automerge change chunks (about 1 KB per MiB) that each inflate to `inflated`
    bytes. Their headers (checksum, actor, seq) are valid; they carry no valid author
    signature. The zeros after each header compress once: after a full flush, deflate output
    does not depend on what came before."""
    size = inflated - 64
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros_tail = zeros.compress(bytes(size)) + zeros.flush()
    out = []
    for seq in seqs:
        prefix = ch.uleb128(0) + ch.uleb128(len(actor)) + actor + ch.uleb128(seq)
        body_start = bytes([ch.CHUNK_CHANGE]) + ch.uleb128(len(prefix) + size) + prefix
        digest = hashlib.sha256(body_start)
        digest.update(bytes(size))
        head = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH) + zeros_tail
        out.append(ch.MAGIC + digest.digest()[:4] + bytes([ch.CHUNK_COMPRESSED_CHANGE]) + ch.uleb128(len(deflated)) + deflated)
    return out


async def prepare(root: Path, make_bombs: str) -> Setup:
    alice, bob = await make_workspace(root, "bob")
    stick_root = root / "stick"
    stick_root.mkdir()
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", [f"ordinary message {i}" for i in range(300)])
        await alice.chat.post("general", "with a file", attachments=[Attachment("photo.jpg", os.urandom(200_000))])
        exported = await export_bundles(alice, stick_root, for_nodes=[bob.identity.node_id])
        (legit,) = exported.bundles
        # Bombs sort before the ordinary bundle: it is imported after all of them.
        legit_name = stick.anonymous_file_name(b"\xff" * 16)
        legit.path.rename(legit.path.with_name(legit_name))
        sealer = Sealer(alice, bob, stick_root, created_at=1_767_225_600_000)
        bombs: dict[str, Bomb] = {}
        if make_bombs == "cbor":
            for bomb in cbor_bombs(sealer):
                sealer.place(bomb, bombs)
        else:
            channel_id = (await alice.views.list_channels())[0].channel_id
            actor = alice.identity.user_key + bytes(16)
            # Changes over the per-change inflation cap, and changes just under it that only the
            # cap on a whole batch's inflation stops: each bomb alone would need ~1 GiB.
            for count, inflated in ((250, ch.MAX_CHANGE_BYTES), (900, ch.MAX_INFLATED_CHANGE_BYTES - 1024)):
                changes = [[change, bytes(64)] for change in deflate_bomb_changes(actor, range(1000, 1000 + count), inflated)]
                plaintext = cbor.encode({"directory": [], "changes": [[f"{channel_id}/seg/000000", changes]], "blobs": [], "acks": {}, "wholes": []})
                label = f"{count} compressed changes inflating to {count * inflated // MiB:,} MiB"
                sealer.place(Bomb(label, sealer.seal(plaintext), "ChangeRejected", r"compressed change"), bombs)
        return Setup(bob.home, stick_root, bombs, legit_name)


def import_capped(setup: Setup) -> dict[str, Any]:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(setup.bob_home), PASSPHRASE, str(setup.stick), str(AS_HEADROOM)],
        check=False, capture_output=True, text=True, timeout=CHILD_TIMEOUT, cwd=REPO, env=env,
    )  # fmt: skip
    assert child.returncode == 0, f"the capped import failed (exit {child.returncode}):\n{child.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(child.stdout)
    return result


def check(setup: Setup, result: dict[str, Any]) -> None:
    files = {f["name"]: f for f in result["files"]}
    assert set(files) == {*setup.bombs, setup.legit}
    assert files[setup.legit]["outcome"] == sneakernet.ACCEPTED, files[setup.legit]
    for name, bomb in setup.bombs.items():
        got = files[name]
        expected = got["rejected"] if bomb.outcome is None else got["outcome"] == bomb.outcome
        assert expected and re.search(bomb.reason, got["reason"]), f"{bomb.label}: {got['outcome']}: {got['reason']}"
    assert result["vm_peak"] <= result["cap"]
    assert result["peak_rss"] - result["baseline_rss"] < RSS_HEADROOM, f"peak RSS {result['peak_rss']:,} bytes"


@pytest.mark.timeout(150)
def test_cbor_and_length_bombs_are_rejected_within_a_fixed_memory_cap(tmp_path: Path) -> None:
    setup = asyncio.run(prepare(tmp_path, "cbor"))
    result = import_capped(setup)
    check(setup, result)
    assert result["baseline_vm_peak"] < 200 * MiB


@pytest.mark.timeout(150)
def test_a_decompression_bomb_is_rejected_within_the_same_cap(tmp_path: Path) -> None:
    setup = asyncio.run(prepare(tmp_path, "deflate"))
    check(setup, import_capped(setup))
