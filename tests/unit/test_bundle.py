"""The bundle codec (sync/bundle.py, sync/bundle_v1.py, docs/bundle-format.md): committed
vectors of both formats, round trips, what a file shows without a key, mutation and truncation
of real bundles, hostile headers and payloads, and bounded memory."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import cbor2
import nacl.bindings as sodium
import nacl.public
import nacl.signing
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import cbor, documents
from appliance.changes import SignedChange, parse_change, verify_batch
from appliance.wholes import vouch_for_whole
from sync import bundle, bundle_payload, errors, sealing
from sync.bundle import BundleContent, Limits, addressed_to, build_bundle, open_bundle, read_envelope
from tests import format1_writer
from tests import make_vectors as mv
from tests.conftest import REPO

MANIFEST: dict[str, dict[str, Any]] = json.loads((mv.VECTORS / mv.MANIFEST).read_text()) | {
    f"{folder}/{name}": entry for folder in (mv.V1, mv.V3) for name, entry in json.loads((mv.VECTORS / folder / mv.MANIFEST).read_text()).items()
}
POOL = [nacl.signing.SigningKey(bytes([40 + i]) * 32) for i in range(5)]
SENDER = mv.SENDER
EMPTY = BundleContent()
DEFAULT_LIMITS = Limits()
OUTCOMES = ["NotAddressedToMe", "Tampered", "Truncated", "UnknownSender", "RevokedSender", "UnsupportedVersion", "TooLarge", "Malformed"]


def pk(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


def only_sender(key: bytes) -> str:
    return "trusted" if key == pk(SENDER) else "unknown"


def make(content: BundleContent = EMPTY, recipients: list[nacl.signing.SigningKey] | None = None, **kwargs: Any) -> bytes:
    args: dict[str, Any] = {
        "sender_key": SENDER,
        "workspace": mv.WORKSPACE,
        "recipients": [pk(k) for k in (recipients if recipients is not None else [POOL[0]])],
        "heads": {},
        "created_at": mv.CREATED_AT,
        "incarnation": mv.INCARNATION,
        "randomness": bytes(range(32)),
    }
    if "recipient_keys" in kwargs:
        args["recipients"] = kwargs.pop("recipient_keys")
    args.update(kwargs)
    return build_bundle(content, **args)


def seal_raw(plaintext: bytes, recipient: nacl.signing.SigningKey = POOL[0], chunk_size: int = 65536, inner: mv.Inner | None = None) -> bytes:
    """A format 3 bundle around an arbitrary (possibly invalid) payload map, compressed as a writer does."""
    return bundle._seal_plaintext(
        bundle_payload.compress(plaintext), sender_key=SENDER, workspace=mv.WORKSPACE, recipients=[pk(recipient)], heads={},
        created_at=mv.CREATED_AT, incarnation=mv.INCARNATION, randomness=bytes(32), chunk_size=chunk_size, inner=inner,
    )


def open_as(data: bytes, key: nacl.signing.SigningKey = POOL[0], limits: Limits = DEFAULT_LIMITS, status: Callable[[bytes], str] = only_sender) -> tuple[bundle.BundleHeader, BundleContent]:
    return open_bundle(data, my_key=key, sender_status=status, limits=limits, workspace=mv.WORKSPACE)


def blob(data: bytes) -> tuple[bytes, bytes]:
    return hashlib.sha256(data).digest(), data


# --- committed vectors ---------------------------------------------------------------------


def test_committed_vectors_are_byte_identical_to_a_fresh_build() -> None:
    built = mv.build_vectors()
    on_disk = {path.relative_to(mv.VECTORS).as_posix() for path in mv.VECTORS.rglob("*") if path.is_file() and path.name != "README.md"}
    assert on_disk == set(built), "run: python -m tests.make_vectors --write"
    for name, data in sorted(built.items()):
        assert (mv.VECTORS / name).read_bytes() == data, f"{name} differs; run: python -m tests.make_vectors --write"


def test_manifest_covers_every_outcome() -> None:
    """Outcomes are named in the specification's words (section 9), one error class each."""
    assert sorted(kind.__name__ for kind in mv.OUTCOMES.values() if kind is not None) == sorted(OUTCOMES)
    expected = {entry["expected"] for name, entry in MANIFEST.items() if "/" not in name}
    assert expected == set(mv.OUTCOMES)
    v3_expected = {entry["expected"] for name, entry in MANIFEST.items() if name.startswith(mv.V3)}
    assert v3_expected == {mv.ACCEPTED, "rejected: malformed", "rejected: too large"}  # what format 3 changed: the payload
    v1_expected = {entry["expected"] for name, entry in MANIFEST.items() if name.startswith(mv.V1)}
    assert v1_expected == set(mv.OUTCOMES) - {"rejected: unsupported version"}  # version 1's own bad vectors, all still refused as before
    spec = (REPO / "docs" / "bundle-format.md").read_text()
    for outcome in mv.OUTCOMES:
        assert f"**{outcome}**" in spec, f"docs/bundle-format.md does not define {outcome!r}"
    for entry in MANIFEST.values():
        assert entry["open_as"] in mv.IDENTITIES and entry["sender_status"] in {"trusted", "unknown", "revoked"}
        assert ("contains" in entry) == (entry["expected"] == mv.ACCEPTED)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vector_has_exactly_its_expected_outcome(name: str) -> None:
    entry = MANIFEST[name]
    data = (mv.VECTORS / f"{name}.bundle").read_bytes()
    key = mv.IDENTITIES[entry["open_as"]]
    limits = Limits(**entry.get("limits", {}))

    def status(_sender: bytes) -> str:
        return str(entry["sender_status"])

    if entry["expected"] == mv.ACCEPTED:
        header, content = open_as(data, key, limits, status)
        assert mv.summarize(header, content) == entry["contains"]
        envelope = read_envelope(data)
        assert (envelope.version, envelope.stanzas, envelope.size) == (header.version, len(header.recipients), len(data))
        for doc_id, changes in content.directory + content.changes:  # real, verifiable changes
            assert verify_batch(doc_id, changes, known=set(), authorise=lambda _author: None)
        for whole in content.wholes:  # real documents whose author's signature vouches for every change
            listed = [parse_change(c.bytes) for c in documents.load_document(whole.data, bytes(48)).get_changes([])]
            assert vouch_for_whole(whole.doc_id, listed, dict(whole.signatures), lambda _author: None)
        for other in mv.IDENTITIES.values():
            if pk(other) in header.recipients:
                assert open_as(data, other, limits, status) == (header, content)
            else:
                with pytest.raises(errors.NotAddressedToMe):
                    open_as(data, other, limits, status)
            assert addressed_to(data[: bundle.ENVELOPE_MAX_BYTES], other) == (pk(other) in header.recipients or header.version == 1)
        return
    with pytest.raises(errors.BundleRejected) as caught:
        open_as(data, key, limits, status)
    if mv.OUTCOMES[entry["expected"]] is not errors.NotAddressedToMe:
        assert addressed_to(data[: bundle.ENVELOPE_MAX_BYTES], key)  # skipping it unread would hide the fault
    assert type(caught.value) is mv.OUTCOMES[entry["expected"]], str(caught.value)
    message = str(caught.value)
    assert message and "\n" not in message


def test_outcomes_are_distinct_sync_errors() -> None:
    types = [getattr(errors, name) for name in OUTCOMES]
    assert len(set(types)) == len(types)
    for kind in types:
        assert issubclass(kind, errors.BundleRejected) and issubclass(kind, errors.SyncError)
        assert all(not issubclass(kind, other) for other in types if other is not kind)


# --- the two libsodium constructions, reproducibly -------------------------------------------


def test_stream_is_byte_identical_to_libsodium_init_push() -> None:
    key = bytes(range(32))
    plaintext = bytes(i % 256 for i in range(5000))
    ad = b"\x07" * 32
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)  # libsodium's own randomness
    pieces = [plaintext[i : i + 1024] for i in range(0, len(plaintext), 1024)]
    reference = stream_header + b"".join(
        sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, ad, bundle.TAG_FINAL if i == len(pieces) - 1 else bundle.TAG_MESSAGE)
        for i, piece in enumerate(pieces)
    )
    assert sealing.encrypt_stream(key, stream_header, plaintext, 1024, ad) == reference
    decrypted = sealing.decrypt_stream(memoryview(reference), key, 1024, ad, 10_000)
    assert bytes(decrypted) == plaintext


def test_wrapped_key_is_a_libsodium_sealed_box() -> None:
    recipient = POOL[1]
    content_key = bytes(range(32, 64))
    wrapped = sealing.wrap_key(content_key, pk(recipient), b"\x11" * 32)
    assert len(wrapped) == bundle.WRAPPED_KEY_BYTES
    secret = recipient.to_curve25519_private_key()
    assert nacl.public.SealedBox(secret).decrypt(wrapped) == content_key
    assert sodium.crypto_box_seal_open(wrapped, bytes(secret.public_key), bytes(secret)) == content_key
    assert sealing.wrap_key(content_key, pk(recipient), b"\x11" * 32) == wrapped  # reproducible
    assert sealing.wrap_key(content_key, pk(recipient), b"\x12" * 32) != wrapped


# --- building and round trips ----------------------------------------------------------------


doc_ids = st.text(min_size=1, max_size=12)
signed_changes = st.builds(SignedChange, st.binary(min_size=1, max_size=200), st.none() | st.binary(min_size=64, max_size=64))
groups = st.lists(st.tuples(doc_ids, st.lists(signed_changes, max_size=3).map(tuple)), max_size=3, unique_by=lambda g: g[0]).map(tuple)
hashes = st.lists(st.binary(min_size=32, max_size=32), max_size=3)
contents = st.builds(
    BundleContent,
    directory=groups,
    changes=groups,
    blobs=st.lists(st.binary(max_size=2500), max_size=3, unique=True).map(lambda ds: tuple(blob(d) for d in ds)),
    acks=st.dictionaries(st.sampled_from([pk(k) for k in POOL]), st.dictionaries(doc_ids, hashes, max_size=2), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=contents,
    who=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=3, unique=True),
    heads=st.dictionaries(doc_ids, hashes, max_size=3),
    chunk_size=st.sampled_from([1024, 1025, 4096, 65536]) | st.integers(1024, 3000),
    created_at=st.integers(0, 2**63 - 1),
    randomness=st.binary(min_size=32, max_size=32),
)
def test_every_recipient_opens_the_same_content_and_no_one_else_does(
    content: BundleContent, who: list[int], heads: dict[str, list[bytes]], chunk_size: int, created_at: int, randomness: bytes
) -> None:
    recipients = [POOL[i] for i in who]
    data = make(content, recipients, heads=heads, chunk_size=chunk_size, created_at=created_at, randomness=randomness)
    assert make(content, recipients, heads=heads, chunk_size=chunk_size, created_at=created_at, randomness=randomness) == data
    assert pk(SENDER) not in data and mv.WORKSPACE not in data and not any(pk(k) in data for k in POOL)  # nobody named in clear
    header = open_as(data, recipients[0])[0]
    assert read_envelope(data).stanzas == len(recipients) and len(data) == read_envelope(data).size
    assert header.sender == pk(SENDER) and header.workspace == mv.WORKSPACE and header.created_at == created_at
    assert header.recipients == tuple(sorted(pk(k) for k in recipients)) and header.chunk_size == chunk_size
    assert header.heads == {doc: tuple(sorted(set(h))) for doc, h in heads.items()}
    for index, key in enumerate(POOL):
        assert addressed_to(data, key) == (index in who)
        if index in who:
            assert open_as(data, key) == (header, content)
        else:
            with pytest.raises(errors.NotAddressedToMe):
                open_as(data, key)


def test_same_randomness_with_other_content_never_reuses_a_stream() -> None:
    one = make(BundleContent(blobs=(blob(b"one"),)))
    two = make(BundleContent(blobs=(blob(b"two"),)))
    assert open_as(one)[0].id != open_as(two)[0].id
    assert bundle_stream_header(one) != bundle_stream_header(two)
    assert make(BundleContent(blobs=(blob(b"one"),))) == one


def bundle_stream_header(data: bytes) -> bytes:
    start = bundle.PREFIX_BYTES + read_envelope(data).stanzas * bundle.STANZA_BYTES + bundle.LENGTH_BYTES
    return data[start : start + bundle.STREAM_HEADER_BYTES]


def test_a_thousand_and_twenty_four_recipients_fit_and_each_can_open() -> None:
    keys = [nacl.signing.SigningKey(i.to_bytes(32, "big")) for i in range(1, bundle.MAX_RECIPIENTS + 1)]
    data = make(BundleContent(blobs=(blob(b"all"),)), keys)
    header, content = open_as(data, keys[-1])
    assert len(header.recipients) == read_envelope(data).stanzas == bundle.MAX_RECIPIENTS and len(header.raw) <= bundle.MAX_HEADER_BYTES
    assert content.blobs == (blob(b"all"),)
    with pytest.raises(ValueError, match="recipients"):
        make(BundleContent(), keys + [POOL[0]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipients": []}, "no recipients"),
        ({"recipients": [POOL[0], POOL[0]]}, "twice"),
        ({"recipient_keys": [bytes(32)]}, "Ed25519"),
        ({"chunk_size": 1023}, "chunk_size"),
        ({"chunk_size": 2**20 + 1}, "chunk_size"),
        ({"randomness": bytes(31)}, "randomness"),
        ({"workspace": bytes(31)}, "workspace"),
        ({"created_at": -1}, "created_at"),
        ({"heads": {"": []}}, "document id"),
        ({"heads": {f"doc-{i:06d}": [bytes(32)] for i in range(6000)}}, "header is"),
    ],
)
def test_builder_refuses_what_no_reader_would_accept(change: dict[str, Any], message: str) -> None:
    if "recipient_keys" in change:
        change = {"recipients": [], **change}
    with pytest.raises(ValueError, match=message):
        make(BundleContent(), **change)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (BundleContent(blobs=((bytes(32), b"data"),)), "does not hash"),
        (BundleContent(blobs=(blob(b"x"), blob(b"x"))), "twice"),
        (BundleContent(changes=(("d", (SignedChange(b"c", None),)), ("d", ()))), "twice"),
        (BundleContent(changes=(("d", (SignedChange(b"c", b"short"),)),)), "signature"),
        (BundleContent(changes=(("d", (SignedChange(b"", None),)),)), "non-empty"),
        (BundleContent(acks={b"short": {}}), "node key"),
    ],
)
def test_builder_refuses_bad_content(content: BundleContent, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(content)


# --- the order of checks -----------------------------------------------------------------------


def test_recipients_then_stream_then_standing_then_signature() -> None:
    """Format 2's order: only a recipient can read who sent a bundle, so the stanza comes
    first; the sender's standing is judged before its signature, as in format 1."""
    payload = cbor.encode(bundle_payload.content_to_wire(BundleContent(blobs=(blob(b"x" * 100),)), 3))
    forged = seal_raw(payload, inner=lambda e, h, p, sig: bundle._inner_plaintext(e, h, p, sig[:-1] + bytes([sig[-1] ^ 1])))
    with pytest.raises(errors.RevokedSender):
        open_as(forged, status=lambda _k: "revoked")
    with pytest.raises(errors.UnknownSender):
        open_as(forged, status=lambda _k: "unknown")
    with pytest.raises(errors.Tampered, match="signature"):
        open_as(forged)
    with pytest.raises(errors.NotAddressedToMe):
        open_as(forged, POOL[3])  # a non-recipient learns nothing, not even that it was forged
    data = seal_raw(payload)
    damaged = data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
    with pytest.raises(errors.Tampered, match="chunk"):
        open_as(damaged, status=lambda _k: "revoked")  # the stream is checked before the sender is known
    with pytest.raises(ValueError, match="sender_status"):
        open_as(data, status=lambda _k: "maybe")


def test_workspace_is_checked_only_when_given() -> None:
    data = make(workspace=mv.OTHER_WORKSPACE)
    with pytest.raises(errors.UnknownSender, match="another workspace"):
        open_as(data)
    header, _ = open_bundle(data, my_key=POOL[0], sender_status=only_sender)
    assert header.workspace == mv.OTHER_WORKSPACE


def test_read_envelope_needs_no_key_shows_counts_only_and_accepts_any_buffer() -> None:
    data = make(BundleContent(blobs=(blob(b"y"),)), [POOL[0], POOL[1]])
    envelope = read_envelope(data)
    assert envelope == read_envelope(bytearray(data)) == read_envelope(memoryview(data))
    assert (envelope.version, envelope.size, envelope.stanzas, envelope.chunk_size) == (bundle.FORMAT_VERSION, len(data), 2, bundle.DEFAULT_CHUNK_SIZE)
    assert open_bundle(memoryview(data), my_key=POOL[1], sender_status=only_sender)[0] == open_as(data)[0]
    with pytest.raises(errors.TooLarge):
        read_envelope(data, max_bundle_bytes=envelope.ciphertext_length - 1)


def test_a_format_1_bundle_still_opens_and_shows_its_clear_header() -> None:
    content = BundleContent(blobs=(blob(b"old"),))
    data = format1_writer.build_bundle(content, sender_key=SENDER, workspace=mv.WORKSPACE, recipients=[pk(POOL[0])], heads={}, created_at=7, randomness=bytes(32))
    header, opened = open_as(data)
    assert (header.version, header.created_at, opened) == (1, 7, content)
    assert read_envelope(data).version == 1 and pk(SENDER) in data  # why format 2 exists
    assert addressed_to(data, POOL[3])  # version 1 is judged by opening it
    with pytest.raises(errors.NotAddressedToMe):
        open_as(data, POOL[3])


# --- mutation and truncation of real bundles ----------------------------------------------------


SMALL = make(BundleContent(changes=(("doc", (SignedChange(b"c" * 700, bytes(64)),)),), blobs=(blob(b"b" * 600),)), [POOL[0], POOL[1]], chunk_size=1024, heads={"doc": [bytes(32)]})


def test_flipping_any_byte_is_rejected() -> None:
    assert open_as(SMALL)
    for offset in range(len(SMALL)):
        mutated = SMALL[:offset] + bytes([SMALL[offset] ^ 0x01]) + SMALL[offset + 1 :]
        for key in (POOL[0], POOL[2]):
            with pytest.raises(errors.BundleRejected):
                open_as(mutated, key)


@settings(max_examples=150, deadline=None)
@given(offset=st.integers(0, len(SMALL) - 1), mask=st.integers(1, 255), reader=st.sampled_from([0, 1, 2]))
def test_any_byte_changed_any_way_is_rejected(offset: int, mask: int, reader: int) -> None:
    mutated = SMALL[:offset] + bytes([SMALL[offset] ^ mask]) + SMALL[offset + 1 :]
    with pytest.raises(errors.BundleRejected):
        open_as(mutated, POOL[reader])


def test_every_truncation_is_truncated_and_any_extension_malformed() -> None:
    for length in range(len(SMALL)):
        with pytest.raises(errors.Truncated):
            open_as(SMALL[:length])
        with pytest.raises(errors.Truncated):
            read_envelope(SMALL[:length])
    for extra in (b"\x00", b"\x00" * 64, SMALL):
        with pytest.raises(errors.Malformed, match="trailing"):
            open_as(SMALL + extra)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.tuples(st.sampled_from([b"\x01", b"\x02"]), st.binary(max_size=400)).map(lambda v: bundle.MAGIC + v[0] + v[1]))
def test_random_bytes_are_rejected_cleanly(data: bytes) -> None:
    with pytest.raises(errors.BundleRejected):
        open_as(data)
    with pytest.raises(errors.BundleRejected):
        read_envelope(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(SMALL)), st.integers(0, len(SMALL)), st.binary(max_size=50))
def test_splices_are_rejected(start: int, end: int, insert: bytes) -> None:
    mutated = SMALL[:start] + insert + SMALL[max(start, end) :]
    if mutated == SMALL:
        return
    with pytest.raises(errors.BundleRejected):
        open_as(mutated)


# --- hostile content signed by a trusted sender ------------------------------------------------


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=8) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=9) | st.binary(max_size=4), inner, max_size=4),
    max_leaves=20,
)
near_payloads = st.fixed_dictionaries(
    {"directory": cbor_values, "changes": cbor_values, "blobs": cbor_values, "acks": cbor_values, "wholes": cbor_values},
    optional={"x": cbor_values},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(cbor_values, near_payloads))
def test_any_payload_from_a_trusted_sender_opens_or_is_malformed(value: Any) -> None:
    plaintext = cbor2.dumps(value, canonical=True)
    data = seal_raw(plaintext, chunk_size=1024)
    try:
        _, content = open_as(data)
    except (errors.Malformed, errors.TooLarge):
        return
    assert cbor.encode(bundle_payload.content_to_wire(content, 3)) == plaintext


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(cbor_values, st.fixed_dictionaries({k: cbor_values for k in bundle.HEADER_FIELDS})))
def test_any_header_from_a_trusted_sender_parses_or_is_rejected(value: Any) -> None:
    header_raw = cbor2.dumps(value, canonical=True)
    data = seal_raw(cbor.encode(bundle_payload.content_to_wire(EMPTY, 3)), inner=mv.resigned_header(lambda _fields: header_raw))
    with pytest.raises(errors.BundleRejected):
        open_as(data)
    ciphertext = bytes(100)  # format 1: the same header in clear
    with pytest.raises(errors.BundleRejected):
        open_as(format1_writer.frame(header_raw, ciphertext, format1_writer.sign(SENDER, header_raw, ciphertext)))


# --- bounded memory ------------------------------------------------------------------------------


def peak_of(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
    except errors.BundleRejected:
        pass
    else:
        raise AssertionError("expected a rejection")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_declared_lengths_are_refused_without_allocating() -> None:
    data = make(BundleContent(blobs=(blob(b"z" * 50),)))
    at = bundle.PREFIX_BYTES + bundle.STANZA_BYTES
    huge_stream = data[:at] + (2**40).to_bytes(8, "big") + data[at + 8 :]
    huge_count = data[:13] + b"\xff\xff" + data[15:]
    assert peak_of(lambda: open_as(huge_count)) < 1_000_000
    with pytest.raises(errors.TooLarge):
        open_as(huge_count)
    old = format1_writer.build_bundle(BundleContent(), sender_key=SENDER, workspace=mv.WORKSPACE, recipients=[pk(POOL[0])], heads={}, created_at=0, randomness=bytes(32))
    huge_header = old[:9] + (2**32 - 1).to_bytes(4, "big") + old[13:]
    assert peak_of(lambda: open_as(huge_stream)) < 1_000_000
    with pytest.raises(errors.TooLarge):
        open_as(huge_stream)
    assert peak_of(lambda: open_as(huge_stream, limits=Limits(max_bundle_bytes=2**41))) < 1_000_000
    with pytest.raises(errors.Truncated):
        open_as(huge_stream, limits=Limits(max_bundle_bytes=2**41))
    assert peak_of(lambda: open_as(huge_header)) < 1_000_000
    with pytest.raises(errors.TooLarge):
        open_as(huge_header)


def test_an_oversized_payload_is_refused_before_it_is_decrypted() -> None:
    data = seal_raw(cbor.encode({"directory": [], "changes": [], "blobs": [blob(bytes(8 * 2**20))], "acks": {}, "wholes": []}), chunk_size=2**20)
    limits = Limits(max_plaintext_bytes=64 * 1024)
    assert peak_of(lambda: open_as(data, limits=limits)) < 2_000_000
    with pytest.raises(errors.TooLarge, match="payload"):
        open_as(data, limits=limits)


def test_a_zstd_bomb_is_refused_before_it_is_decompressed() -> None:
    """300 MiB of zeros compress to a few KiB: the frame's declared size, over the default
    256 MiB limit, refuses it before a byte is decompressed."""
    zeros, pieces = bytes(2**20), 300
    compressor = zstandard.ZstdCompressor(level=1).compressobj(size=len(zeros) * pieces)
    bomb = b"".join(compressor.compress(zeros) for _ in range(pieces)) + compressor.flush()
    data = bundle._seal_plaintext(
        bomb, sender_key=SENDER, workspace=mv.WORKSPACE, recipients=[pk(POOL[0])], heads={},
        created_at=mv.CREATED_AT, incarnation=mv.INCARNATION, randomness=bytes(32), chunk_size=2**20,
    )  # fmt: skip
    assert len(data) < 64 * 1024
    assert peak_of(lambda: open_as(data)) < 2_000_000
    with pytest.raises(errors.TooLarge, match="decompresses to 314,572,800 bytes; the limit is 268,435,456"):
        open_as(data)


def test_a_frame_that_holds_more_than_it_declares_stops_at_its_declared_size() -> None:
    """The decompressor produces at most the declared size plus one byte, whatever follows."""
    honest = bundle_payload.compress(cbor.encode(bundle_payload.content_to_wire(EMPTY, 3)))
    more = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(50 * 2**20))
    assert peak_of(lambda: bundle_payload.decompress(honest + more, 256 * 2**20)) < 4 * bundle_payload.READ_PIECE
    with pytest.raises(errors.Malformed, match="more than the"):
        bundle_payload.decompress(honest + more, 256 * 2**20)


def test_segments_travel_whole_in_format_3_only() -> None:
    whole = mv.whole_segment(mv.AUTHOR, mv.SEGMENT_DOC, ["one", "two"])
    content = BundleContent(wholes=(whole,))
    _, opened = open_as(make(content, heads={mv.SEGMENT_DOC: [whole.signatures[0][0]]}))
    assert opened == content and opened.wholes[0].data == whole.data
    with pytest.raises(ValueError, match="format 2 cannot carry segments whole"):
        bundle_payload.encode_payload(content, 2)


@pytest.mark.parametrize(
    ("plaintext", "outcome"),
    [
        (b"\x9a\x00\x0f\x42\x40" + b"\x40" * 1_000_000, errors.TooLarge),  # a million empty byte strings
        (b"\x81" * 200_000 + b"\xf6", errors.Malformed),  # nesting far past the depth limit
        (b"\xd9\x01\x00\x9a\x00\x01\x86\xa0\x5a\x00\x01\x86\xa0" + b"A" * 100_000 + b"\xd8\x19\x00" * 99_999, errors.Malformed),  # string references
        (b"\x9b" + b"\xff" * 8, errors.Malformed),  # an array claiming 2^64 - 1 items
    ],
)
def test_cbor_bombs_from_a_trusted_sender_stay_within_a_few_megabytes(plaintext: bytes, outcome: type[Exception]) -> None:
    data = seal_raw(plaintext, chunk_size=2**20)
    limits = Limits(max_items=100_000)
    assert peak_of(lambda: open_as(data, limits=limits)) < 3 * len(plaintext) + 1_000_000
    with pytest.raises(outcome):
        open_as(data, limits=limits)
