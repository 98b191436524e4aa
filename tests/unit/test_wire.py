"""The LAN session codec (sync/wire.py, docs/lan-protocol.md): a pinned test vector, the
handshake and its tampering, frames and their reordering, replay and truncation, and messages
(round trips, strict decoding, fuzzing, the size helpers a sender packs with)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable

import cbor2
import nacl.bindings as sodium
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import cbor, crypto
from appliance.changes import SignedChange
from appliance.model import WholeSegment
from appliance.wholes import MAX_WHOLE_BYTES
from sync import errors, messages, wire
from sync.messages import BlobPart, Bye, Changes, Heads, Message, Ping, Pong
from sync.wire import FrameOpener, FrameSealer, Initiator, Responder, SessionKeys


def pk(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


WORKSPACE = pk(nacl.signing.SigningKey(bytes([0x10]) * 32))
OTHER_WORKSPACE = pk(nacl.signing.SigningKey(bytes([0x11]) * 32))
INITIATOR_NODE = nacl.signing.SigningKey(bytes(range(32)))
RESPONDER_NODE = nacl.signing.SigningKey(bytes(range(32, 64)))
THIRD_NODE = nacl.signing.SigningKey(bytes(range(64, 96)))
INITIATOR_SEED = bytes([0xA1]) * 32
RESPONDER_SEED = bytes([0xB2]) * 32
I2R_HEADER = bytes([0xC3]) * 24
R2I_HEADER = bytes([0xD4]) * 24
INITIATOR_INCARNATION = bytes([0xE5]) * 16
RESPONDER_INCARNATION = bytes([0xF6]) * 16
DIRECTORY_HEAD = hashlib.sha256(b"rallypoint").digest()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def handshake(
    initiator_seed: bytes = INITIATOR_SEED, responder_seed: bytes = RESPONDER_SEED
) -> tuple[list[bytes], tuple[bytes, SessionKeys], tuple[bytes, SessionKeys]]:
    """[HELLO, RESPONSE, AUTH], (responder's node key as the initiator saw it, initiator's keys),
    (initiator's node key as the responder saw it, responder's keys)."""
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, initiator_seed, incarnation=INITIATOR_INCARNATION)
    responder = Responder(WORKSPACE, RESPONDER_NODE, responder_seed, incarnation=RESPONDER_INCARNATION)
    hello = initiator.hello()
    response = responder.read_hello(hello)
    responder_node = initiator.read_response(response)
    auth, initiator_keys = initiator.auth()
    initiator_node, responder_keys = responder.read_auth(auth)
    return [hello, response, auth], (responder_node, initiator_keys), (initiator_node, responder_keys)


def flipped(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


# --- the pinned test vector -----------------------------------------------------------------


def test_fixed_vector_pins_the_format() -> None:
    """Fixed keys, seeds and stream header (above): these bytes are the format. A change here
    is a protocol change and needs a new version (docs/lan-protocol.md, "Versioning")."""
    (hello, response, auth), (responder_node, keys), (initiator_node, _) = handshake()
    assert hello.hex() == (
        "52504c414e04005c9c6df261c9cb840475776aaefcd944b405328fab28f9b3a95ef40490d3de84a493bfe285ca79c30588e4ce8c98a165"
        "dd799dfe110ba485fd3bdebb6faf5d5c"
    )
    assert response.hex() == (
        "52504c414e04015c9c6df261c9cb840475776aaefcd944b405328fab28f9b3a95ef40490d3de84e8448df25f5742a1b60d3d1f88e28bd1"
        "5ca119d8d56e8efc7e619de9d51f3b2929acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7f6f6f6f6f6f6f6"
        "f6f6f6f6f6f6f6f6f66a3cfde03971f9404faa11c9ee015566a3a2177008524db2118bfca4957fdc5a741e6fdab26dd2271548ad563bc7"
        "3069d50276511b95ea6419a56cb905ee5e0e"
    )
    assert auth.hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e59841259660d7d5"
        "622d8d5c6dca4a2addef62534c5d867b5c078ead301e3fa83c92f1bd3eebe1f62176ea573f147dd809af579df07bea3c7c38e2bc3be854"
        "4703"
    )
    assert keys.send.hex() == "d220f687cc75c180c47dce9ca90e8545e82c0e8920a3b98ad33ddce378b694f7"
    assert keys.receive.hex() == "b5194c869d3b19494088e29b35a4176a599885064a596758450d933c582d1e58"
    assert (responder_node, initiator_node) == (pk(RESPONDER_NODE), pk(INITIATOR_NODE))

    message = messages.encode_message(Heads({"directory": (DIRECTORY_HEAD,)}, complete=True))
    assert message.hex() == (
        "a36174656865616473656865616473a1696469726563746f7279815820a908050dda8d73ca8206cf01dc350c2ff1fd3d69db7f23d4ff"
        "b7acd56cbcaa3868636f6d706c65746501"
    )
    sealer = FrameSealer(keys.send, I2R_HEADER)
    assert sealer.header == I2R_HEADER
    assert sealer.seal(message).hex() == (
        "00000058f5eea597f1a4bf22ebf6213a9fc99ef52969b19e09b006027199c61e92b0cb1793248c44b49d18429799ec1d85e43f0136c938"
        "92c344a78b72e7de8d6222523eadc325eddcfaf53bc147de3bd50cd00ea80312ed1006f29c"
    )


def test_session_keys_follow_the_spec() -> None:
    """Recomputed from libsodium and hashlib exactly as docs/lan-protocol.md says."""
    (hello, response, auth), (_, initiator_keys), (_, responder_keys) = handshake()
    client_pk, client_sk = sodium.crypto_kx_seed_keypair(INITIATOR_SEED)
    server_pk, _ = sodium.crypto_kx_seed_keypair(RESPONDER_SEED)
    assert hello[39:71] == client_pk and response[39:71] == server_pk
    rx, tx = sodium.crypto_kx_client_session_keys(client_pk, client_sk, server_pk)
    transcript = hashlib.sha256(hello + response + auth).digest()
    i2r = hashlib.blake2b(transcript, key=tx, digest_size=32, person=b"rp-lan-i2r").digest()
    r2i = hashlib.blake2b(transcript, key=rx, digest_size=32, person=b"rp-lan-r2i").digest()
    assert (initiator_keys.send, initiator_keys.receive) == (i2r, r2i)
    assert (responder_keys.send, responder_keys.receive) == (r2i, i2r)
    domain = b"rallypoint/lan/v3\x00"
    assert response[103:119] == RESPONDER_INCARNATION and auth[32:48] == INITIATOR_INCARNATION
    assert crypto.verify(pk(RESPONDER_NODE), domain + hello + response[:119], response[119:])
    assert crypto.verify(pk(INITIATOR_NODE), domain + b"auth" + hello + response + pk(INITIATOR_NODE) + INITIATOR_INCARNATION, auth[48:])


# --- handshake --------------------------------------------------------------------------------


def test_handshake_gives_both_sides_matching_keys_and_each_other_s_node_key() -> None:
    (hello, response, auth), (responder_node, initiator_keys), (initiator_node, responder_keys) = handshake()
    assert (len(hello), len(response), len(auth)) == (wire.HELLO_BYTES, wire.RESPONSE_BYTES, wire.AUTH_BYTES) == (71, 183, 112)
    assert responder_node == pk(RESPONDER_NODE) and initiator_node == pk(INITIATOR_NODE)
    assert initiator_keys.send == responder_keys.receive and initiator_keys.receive == responder_keys.send
    assert initiator_keys.send != initiator_keys.receive
    assert initiator_keys.send.hex() not in repr(initiator_keys)  # keys stay out of logs

    # both directions carry frames
    i2r = FrameSealer(initiator_keys.send, I2R_HEADER)
    r2i = FrameSealer(responder_keys.send, R2I_HEADER)
    at_responder = FrameOpener(responder_keys.receive, i2r.header)
    at_initiator = FrameOpener(initiator_keys.receive, r2i.header)
    assert at_responder.open(i2r.seal(b"to responder")[4:]) == (b"to responder", False)
    assert at_initiator.open(r2i.seal(b"to initiator")[4:]) == (b"to initiator", False)


def test_fresh_ephemeral_seeds_give_fresh_keys() -> None:
    _, (_, first), _ = handshake()
    _, (_, other_initiator), _ = handshake(initiator_seed=bytes([0xA2]) * 32)
    _, (_, other_responder), _ = handshake(responder_seed=bytes([0xB3]) * 32)
    assert len({first.send, other_initiator.send, other_responder.send}) == 3


def test_a_flipped_byte_in_hello_fails_the_handshake() -> None:
    hello = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello()
    for index in range(len(hello)):
        for mask in (0x01, 0x80):
            initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
            initiator.hello()
            responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
            tampered = flipped(hello, index, mask)
            if index < wire.PREFIX_BYTES:  # magic, version, role
                with pytest.raises(errors.UnsupportedProtocol):
                    responder.read_hello(tampered)
            elif index < wire.PREFIX_BYTES + 32:
                with pytest.raises(errors.HandshakeFailed, match="another workspace"):
                    responder.read_hello(tampered)
            else:  # the ephemeral key: the responder cannot tell, the initiator sees its signature fail
                with pytest.raises(errors.HandshakeFailed):
                    initiator.read_response(responder.read_hello(tampered))


def test_a_flipped_byte_in_response_fails_the_handshake() -> None:
    responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
    hello = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello()
    response = responder.read_hello(hello)
    for index in range(len(response)):
        for mask in (0x01, 0x80):
            initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
            initiator.hello()
            tampered = flipped(response, index, mask)
            expected: type[errors.SessionError] = errors.UnsupportedProtocol if index < wire.PREFIX_BYTES else errors.HandshakeFailed
            with pytest.raises(expected):
                initiator.read_response(tampered)


def test_a_flipped_byte_in_auth_fails_the_handshake() -> None:
    (hello, response, auth), _, _ = handshake()
    for index in range(len(auth)):
        for mask in (0x01, 0x80):
            responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
            assert responder.read_hello(hello) == response
            with pytest.raises(errors.HandshakeFailed):
                responder.read_auth(flipped(auth, index, mask))


def test_peers_of_another_workspace_are_refused_by_both_sides() -> None:
    stranger_hello = Initiator(OTHER_WORKSPACE, THIRD_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello()
    with pytest.raises(errors.HandshakeFailed, match="peer belongs to another workspace"):
        Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION).read_hello(stranger_hello)

    # a responder of another workspace, answering a HELLO of its own workspace, correctly signed
    foreign_response = Responder(OTHER_WORKSPACE, THIRD_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION).read_hello(stranger_hello)
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    initiator.hello()
    with pytest.raises(errors.HandshakeFailed, match="peer belongs to another workspace"):
        initiator.read_response(foreign_response)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda hello: b"SSH-2" + hello[5:], "bad magic"),
        (lambda hello: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".ljust(71, b" "), "bad magic"),
        (lambda hello: hello[:5] + b"\x01" + hello[6:], "version 1"),
        (lambda hello: hello[:5] + b"\x03" + hello[6:], "version 3, of an older Rallypoint release: upgrade it"),
        (lambda hello: hello[:5] + b"\x05" + hello[6:], "version 5, of a newer Rallypoint release"),
        (lambda hello: hello[:5] + b"\x00" + hello[6:], "version 0"),
        (lambda hello: hello[:6] + b"\x01" + hello[7:], "role 1"),
    ],
)
def test_wrong_magic_version_or_role_is_an_unsupported_protocol(edit: Callable[[bytes], bytes], match: str) -> None:
    hello = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello()
    with pytest.raises(errors.UnsupportedProtocol, match=match):
        Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION).read_hello(edit(hello))


def test_a_response_sent_back_as_hello_or_a_hello_as_response_is_refused() -> None:
    (hello, response, _), _, _ = handshake()
    with pytest.raises(errors.UnsupportedProtocol, match="role"):
        Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION).read_hello(response[:71])
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    initiator.hello()
    with pytest.raises(errors.UnsupportedProtocol, match="role"):
        initiator.read_response(hello + bytes(112))


@pytest.mark.parametrize("size", [0, 3, 6, 70, 72, 183])
def test_a_hello_of_the_wrong_length_is_refused(size: int) -> None:
    hello = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello()
    data = (hello + bytes(200))[:size]
    with pytest.raises(errors.HandshakeFailed, match="bytes; expected 71"):
        Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION).read_hello(data)


@pytest.mark.parametrize("size", [0, 71, 182, 184])
def test_a_response_of_the_wrong_length_is_refused(size: int) -> None:
    (_, response, _), _, _ = handshake()
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    initiator.hello()
    with pytest.raises(errors.HandshakeFailed, match="bytes; expected 183"):
        initiator.read_response((response + bytes(10))[:size])


@pytest.mark.parametrize("size", [0, 32, 111, 113])
def test_an_auth_of_the_wrong_length_is_refused(size: int) -> None:
    (hello, _, auth), _, _ = handshake()
    responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
    responder.read_hello(hello)
    with pytest.raises(errors.HandshakeFailed, match="bytes; expected 112"):
        responder.read_auth((auth + bytes(10))[:size])


def test_a_response_replayed_from_another_session_is_refused() -> None:
    (_, old_response, old_auth), _, _ = handshake()
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, bytes([0xA2]) * 32, incarnation=INITIATOR_INCARNATION)  # a new session: new ephemeral key
    initiator.hello()
    with pytest.raises(errors.HandshakeFailed, match="signature does not verify"):
        initiator.read_response(old_response)

    # and an AUTH replayed into a new session with the responder
    responder = Responder(WORKSPACE, RESPONDER_NODE, bytes([0xB3]) * 32, incarnation=RESPONDER_INCARNATION)
    responder.read_hello(Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello())
    with pytest.raises(errors.HandshakeFailed, match="signature does not verify"):
        responder.read_auth(old_auth)


def test_an_auth_swapped_by_another_trusted_node_leaves_it_with_keys_that_open_nothing() -> None:
    """Identity misbinding: a third node signs the same transcript with its own key and puts its
    AUTH in place of the initiator's. The responder accepts that node's signature (the caller's
    directory decides about it), but the keys bind the whole transcript, so the initiator's
    frames do not open and nothing is misattributed."""
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
    hello = initiator.hello()
    response = responder.read_hello(hello)
    initiator.read_response(response)
    _, initiator_keys = initiator.auth()
    third = pk(THIRD_NODE)
    swapped = third + INITIATOR_INCARNATION + crypto.sign(THIRD_NODE, wire.SIGNATURE_DOMAIN + b"auth" + hello + response + third + INITIATOR_INCARNATION)
    claimed, responder_keys = responder.read_auth(swapped)
    assert claimed == third
    opener = FrameOpener(responder_keys.receive, I2R_HEADER)
    with pytest.raises(errors.FrameRejected):
        opener.open(FrameSealer(initiator_keys.send, I2R_HEADER).seal(b"hello")[4:])


def test_a_low_order_ephemeral_key_is_refused() -> None:
    hello = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION).hello()
    with pytest.raises(errors.HandshakeFailed, match="unusable ephemeral key"):
        Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION).read_hello(hello[:39] + bytes(32))

    # a responder with a zero ephemeral key, signing it properly: the initiator still refuses
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    hello = initiator.hello()
    signed = wire.MAGIC + bytes([wire.PROTOCOL_VERSION, 1]) + WORKSPACE + bytes(32) + pk(RESPONDER_NODE) + RESPONDER_INCARNATION
    response = signed + crypto.sign(RESPONDER_NODE, wire.SIGNATURE_DOMAIN + hello + signed)
    with pytest.raises(errors.HandshakeFailed, match="unusable ephemeral key"):
        initiator.read_response(response)


def test_steps_out_of_order_are_programming_errors() -> None:
    (hello, response, auth), _, _ = handshake()
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    with pytest.raises(RuntimeError):
        initiator.read_response(response)
    with pytest.raises(RuntimeError):
        initiator.auth()
    initiator.hello()
    with pytest.raises(RuntimeError):
        initiator.hello()
    with pytest.raises(RuntimeError):
        initiator.auth()  # before the responder's node key was seen and checked
    initiator.read_response(response)
    initiator.auth()
    with pytest.raises(RuntimeError):
        initiator.auth()

    responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
    with pytest.raises(RuntimeError):
        responder.read_auth(auth)
    responder.read_hello(hello)
    with pytest.raises(RuntimeError):
        responder.read_hello(hello)
    responder.read_auth(auth)
    with pytest.raises(RuntimeError):
        responder.read_auth(auth)


def test_a_failed_step_leaves_the_handshake_failed() -> None:
    (hello, response, auth), _, _ = handshake()
    initiator = Initiator(WORKSPACE, INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    initiator.hello()
    with pytest.raises(errors.HandshakeFailed):
        initiator.read_response(flipped(response, 150))
    with pytest.raises(RuntimeError):
        initiator.read_response(response)  # no second try on the same connection
    with pytest.raises(RuntimeError):
        initiator.auth()

    responder = Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED, incarnation=RESPONDER_INCARNATION)
    responder.read_hello(hello)
    with pytest.raises(errors.HandshakeFailed):
        responder.read_auth(flipped(auth, 50))
    with pytest.raises(RuntimeError):
        responder.read_auth(auth)


def test_bad_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        Initiator(WORKSPACE[:31], INITIATOR_NODE, INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)
    with pytest.raises(ValueError):
        Responder(WORKSPACE, RESPONDER_NODE, RESPONDER_SEED[:31], incarnation=RESPONDER_INCARNATION)
    with pytest.raises(TypeError):
        Initiator(WORKSPACE, bytes(INITIATOR_NODE), INITIATOR_SEED, incarnation=INITIATOR_INCARNATION)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FrameSealer(bytes(32), bytes(23))
    with pytest.raises(ValueError):
        FrameOpener(bytes(31), bytes(24))


def test_session_errors_are_distinct_sync_errors() -> None:
    kinds = [errors.HandshakeFailed, errors.UnsupportedProtocol, errors.FrameRejected, errors.MessageMalformed]
    for kind in kinds:
        assert issubclass(kind, errors.SessionError) and issubclass(kind, errors.SyncError)
        assert not issubclass(kind, errors.BundleRejected)
        assert all(not issubclass(kind, other) for other in kinds if other is not kind)


# --- frames ---------------------------------------------------------------------------------

KEY = bytes(range(100, 132))


def stream(*messages: bytes, final_last: bool = True) -> list[bytes]:
    """Frames (prefix + ciphertext) of one stream under KEY and I2R_HEADER."""
    sealer = FrameSealer(KEY, I2R_HEADER)
    return [sealer.seal(m, final=final_last and i == len(messages) - 1) for i, m in enumerate(messages)]


def read(opener: FrameOpener, frame: bytes) -> tuple[bytes, bool]:
    size = opener.length(frame[:4])
    assert size == len(frame) - 4
    return opener.open(frame[4:])


def test_frames_round_trip_in_order_and_end_with_the_final_one() -> None:
    sent = [b"a", b"b" * 1000, bytes(range(256)) * 40, b"bye"]
    opener = FrameOpener(KEY, I2R_HEADER)
    opened = [read(opener, frame) for frame in stream(*sent)]
    assert opened == [(m, i == len(sent) - 1) for i, m in enumerate(sent)]
    assert opener.finished
    opener.end_of_stream()  # a clean end


def test_the_stream_is_what_libsodium_init_push_writes() -> None:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, KEY)  # libsodium's own randomness
    reference = sodium.crypto_secretstream_xchacha20poly1305_push(state, b"message", None, wire.TAG_MESSAGE)
    assert FrameSealer(KEY, header).seal(b"message") == len(reference).to_bytes(4, "big") + reference


def test_a_reordered_frame_is_rejected() -> None:
    first, second, _ = stream(b"one", b"two", b"three")
    opener = FrameOpener(KEY, I2R_HEADER)
    with pytest.raises(errors.FrameRejected, match="fails authentication"):
        read(opener, second)
    with pytest.raises(RuntimeError):
        read(opener, first)  # the stream is dead; the caller closes the connection


def test_a_replayed_frame_is_rejected() -> None:
    first, _ = stream(b"one", b"two")
    opener = FrameOpener(KEY, I2R_HEADER)
    read(opener, first)
    with pytest.raises(errors.FrameRejected):
        read(opener, first)


def test_a_frame_of_another_stream_is_rejected() -> None:
    other = FrameSealer(KEY, R2I_HEADER).seal(b"one")
    with pytest.raises(errors.FrameRejected):
        read(FrameOpener(KEY, I2R_HEADER), other)
    with pytest.raises(errors.FrameRejected):
        read(FrameOpener(bytes(32), I2R_HEADER), stream(b"one")[0])


def test_a_truncated_or_altered_frame_is_rejected() -> None:
    (frame,) = stream(b"some message", final_last=False)
    for cut in (1, 5, len(frame) - 4 - wire.MIN_FRAME_BYTES):
        with pytest.raises(errors.FrameRejected):
            FrameOpener(KEY, I2R_HEADER).open(frame[4:-cut])
    for index in range(4, len(frame)):
        with pytest.raises(errors.FrameRejected):
            FrameOpener(KEY, I2R_HEADER).open(flipped(frame, index)[4:])


def test_a_stream_that_ends_without_its_final_frame_is_rejected() -> None:
    frames = stream(b"one", b"two")
    opener = FrameOpener(KEY, I2R_HEADER)
    read(opener, frames[0])  # the final frame is dropped
    with pytest.raises(errors.FrameRejected, match="without its final frame"):
        opener.end_of_stream()
    unfinished = FrameOpener(KEY, I2R_HEADER)
    for frame in stream(b"one", b"two", final_last=False):
        read(unfinished, frame)
    with pytest.raises(errors.FrameRejected, match="without its final frame"):
        unfinished.end_of_stream()


def test_a_frame_after_the_final_frame_is_rejected() -> None:
    state = crypto.secretstream_push_state(KEY, I2R_HEADER)  # a sender that ignores the rules
    final = sodium.crypto_secretstream_xchacha20poly1305_push(state, b"bye", None, wire.TAG_FINAL)
    after = sodium.crypto_secretstream_xchacha20poly1305_push(state, b"more", None, wire.TAG_MESSAGE)
    opener = FrameOpener(KEY, I2R_HEADER)
    assert opener.open(final) == (b"bye", True)
    with pytest.raises(errors.FrameRejected, match="after its final frame"):
        opener.length(len(after).to_bytes(4, "big"))
    opener = FrameOpener(KEY, I2R_HEADER)
    opener.open(final)
    with pytest.raises(errors.FrameRejected, match="after its final frame"):
        opener.open(after)

    sealer = FrameSealer(KEY, I2R_HEADER)  # our own sender refuses outright
    sealer.seal(b"bye", final=True)
    with pytest.raises(RuntimeError):
        sealer.seal(b"more")


def test_a_frame_with_another_tag_is_rejected() -> None:
    state = crypto.secretstream_push_state(KEY, I2R_HEADER)
    pushed = sodium.crypto_secretstream_xchacha20poly1305_push(state, b"x", None, sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH)
    with pytest.raises(errors.FrameRejected, match="unexpected stream tag"):
        FrameOpener(KEY, I2R_HEADER).open(pushed)


@pytest.mark.parametrize("size", [0, 1, wire.FRAME_OVERHEAD, wire.MAX_FRAME_BYTES + 1, 2**32 - 1])
def test_a_zero_short_or_oversized_length_is_rejected_before_reading(size: int) -> None:
    with pytest.raises(errors.FrameRejected, match="length 0" if size == 0 else "frame of"):
        FrameOpener(KEY, I2R_HEADER).length(size.to_bytes(4, "big"))


def test_lengths_at_the_limits_are_accepted() -> None:
    assert FrameOpener(KEY, I2R_HEADER).length(wire.MIN_FRAME_BYTES.to_bytes(4, "big")) == 18
    assert FrameOpener(KEY, I2R_HEADER).length(wire.MAX_FRAME_BYTES.to_bytes(4, "big")) == 4 * 1024 * 1024
    largest = FrameSealer(KEY, I2R_HEADER).seal(bytes(wire.MAX_MESSAGE_BYTES))
    assert len(largest) == 4 + wire.MAX_FRAME_BYTES
    assert read(FrameOpener(KEY, I2R_HEADER), largest) == (bytes(wire.MAX_MESSAGE_BYTES), False)


def test_the_sealer_refuses_empty_and_oversized_messages() -> None:
    sealer = FrameSealer(KEY, I2R_HEADER)
    with pytest.raises(ValueError):
        sealer.seal(b"")
    with pytest.raises(ValueError):
        sealer.seal(bytes(wire.MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize("size", [0, 23, 25])
def test_a_stream_header_of_the_wrong_length_is_rejected(size: int) -> None:
    with pytest.raises(errors.FrameRejected, match="stream header"):
        FrameOpener(KEY, bytes(size))


# --- messages -------------------------------------------------------------------------------

text_characters = st.characters(codec="utf-8")  # no lone surrogates: they are not UTF-8
doc_ids = st.text(text_characters, min_size=1, max_size=12)
hashes = st.binary(min_size=32, max_size=32)
hash_lists = st.lists(hashes, max_size=3)
heads_maps = st.dictionaries(doc_ids, hash_lists, max_size=4)
signed_changes = st.builds(SignedChange, st.binary(min_size=1, max_size=80), st.none() | st.binary(min_size=64, max_size=64))


signature_maps = st.dictionaries(hashes, st.binary(min_size=64, max_size=64), min_size=1, max_size=3)


@st.composite
def changes_messages(draw: st.DrawFn) -> Changes:
    docs = draw(st.dictionaries(doc_ids, st.tuples(st.lists(signed_changes, max_size=4), hash_lists), max_size=4))
    whole_docs = draw(st.dictionaries(doc_ids.filter(lambda doc_id: doc_id not in docs), st.tuples(st.binary(min_size=1, max_size=300), signature_maps, hash_lists), max_size=3))
    blob_data = draw(st.lists(st.binary(max_size=100), max_size=3, unique=True))
    return Changes(
        docs=tuple((doc_id, tuple(changes)) for doc_id, (changes, _) in docs.items()),
        blobs=tuple((hashlib.sha256(data).digest(), data) for data in blob_data),
        heads={doc_id: tuple(h) for doc_id, (_, h) in docs.items()} | {doc_id: tuple(h) for doc_id, (_, _, h) in whole_docs.items()},
        wholes=tuple(WholeSegment(doc_id, data, tuple(signed.items())) for doc_id, (data, signed, _) in whole_docs.items()),
    )


@st.composite
def blob_parts(draw: st.DrawFn) -> BlobPart:
    data = draw(st.binary(min_size=1, max_size=100))
    offset = draw(st.integers(min_value=0, max_value=2**39))
    size = draw(st.integers(min_value=offset + len(data), max_value=2**40))
    return BlobPart(draw(hashes), size, offset, data)


nonces = st.integers(min_value=0, max_value=2**64 - 1)
any_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Heads, heads_maps, st.booleans()),
    changes_messages(),
    blob_parts(),
    st.builds(Ping, nonces),
    st.builds(Pong, nonces),
    st.builds(Bye, st.text(text_characters, max_size=300)),
)


@FAST
@given(any_messages)
def test_every_message_round_trips(message: Message) -> None:
    raw = messages.encode_message(message)
    assert messages.decode_message(raw) == message
    assert messages.decode_message(bytearray(raw)) == message


def test_messages_normalise_hash_lists_so_equal_content_compares_equal() -> None:
    a, b = sorted([DIRECTORY_HEAD, bytes(32)])
    assert Heads({"d": (b, a, b)}, complete=False) == Heads({"d": (a, b)}, complete=False)
    decoded = messages.decode_message(messages.encode_message(Heads({"d": (b, a)}, complete=False)))
    assert isinstance(decoded, Heads) and decoded.heads == {"d": (a, b)}


def good_changes() -> Changes:
    blob = b"attachment"
    return Changes(
        docs=(("directory", (SignedChange(b"change-1", None), SignedChange(b"change-2", bytes(64)))), ("c/head", ())),
        blobs=((hashlib.sha256(blob).digest(), blob),),
        heads={"directory": (DIRECTORY_HEAD,), "c/head": (), "c/seg/000000": (DIRECTORY_HEAD,)},
        wholes=(WholeSegment("c/seg/000000", b"document", ((DIRECTORY_HEAD, bytes(64)),)),),
    )


def with_whole(entry: object) -> bytes:
    return with_field(good_changes(), "wholes", [entry])


def wire_of(message: Message) -> dict[str, object]:
    value = cbor2.loads(messages.encode_message(message))
    assert isinstance(value, dict)
    return value


def with_field(message: Message, name: str, value: object) -> bytes:
    obj = wire_of(message)
    obj[name] = value
    return cbor.encode(obj)


def without_field(message: Message, name: str) -> bytes:
    obj = wire_of(message)
    del obj[name]
    return cbor.encode(obj)


BAD_MESSAGES: dict[str, tuple[bytes, str]] = {  # name: (bytes, part of the error message)
    "empty": (b"", "ends inside"),
    "not a map": (cbor.encode(["ping", 1]), "not a CBOR map"),
    "no type": (cbor.encode({"nonce": 1}), "no text field t"),
    "type not text": (cbor.encode({"t": b"ping", "nonce": 1}), "no text field t"),
    "unknown type": (cbor.encode({"t": "shutdown", "nonce": 1}), "unknown LAN message type 'shutdown'"),
    "extra field": (with_field(Ping(1), "extra", 1), "exactly the fields"),
    "missing field": (without_field(good_changes(), "blobs"), "exactly the fields"),
    "nonce negative": (with_field(Ping(1), "nonce", -1), "nonce must be"),
    "nonce over 64 bits": (with_field(Pong(1), "nonce", 2**64), "tags"),
    "nonce text": (with_field(Ping(1), "nonce", "1"), "nonce must be"),
    "complete 2": (with_field(Heads({}, complete=True), "complete", 2), "complete must be 0 or 1"),
    "complete CBOR true": (cbor2.dumps({"t": "heads", "heads": {}, "complete": True}, canonical=True), "simple value"),
    "reason too long": (with_field(Bye(""), "reason", "x" * 301), "at most 300"),
    "reason bytes": (with_field(Bye(""), "reason", b"x"), "reason must be text"),
    "heads unsorted": (with_field(Heads({}, complete=True), "heads", {"d": [DIRECTORY_HEAD, bytes(32)]}), "not sorted"),
    "heads duplicate": (with_field(Heads({}, complete=True), "heads", {"d": [bytes(32), bytes(32)]}), "without duplicates"),
    "hash short": (with_field(Heads({}, complete=True), "heads", {"d": [bytes(31)]}), "must be 32 bytes"),
    "doc id empty": (with_field(Heads({}, complete=True), "heads", {"": []}), "document id is empty"),
    "doc id too long": (with_field(Heads({}, complete=True), "heads", {"d" * 257: []}), "over 256 bytes"),
    "doc id bytes": (with_field(Heads({}, complete=True), "heads", {b"d": []}), "not a text string"),
    "changes heads for other docs": (with_field(good_changes(), "heads", {"directory": []}), "heads for exactly"),
    "changes doc twice": (with_field(good_changes(), "docs", [["d", []], ["d", []]]), "appears twice"),
    "change empty": (with_field(good_changes(), "docs", [["d", [[b"", None]]]]), "non-empty bytes"),
    "signature short": (with_field(good_changes(), "docs", [["d", [[b"x", bytes(63)]]]]), "neither 64 bytes"),
    "blob hash mismatch": (with_field(good_changes(), "blobs", [[bytes(32), b"data"]]), "does not hash"),
    "blob twice": (with_field(good_changes(), "blobs", [[hashlib.sha256(b"").digest(), b""]] * 2), "appears twice"),
    "whole not a list": (with_field(good_changes(), "wholes", {}), "wholes is not a list"),
    "whole of two fields": (with_whole(["c/seg/000000", b"document"]), "not [document id, document, signatures]"),
    "whole also as changes": (with_whole(["c/head", b"document", [[DIRECTORY_HEAD, bytes(64)]]]), "appears twice"),
    "whole empty": (with_whole(["c/seg/000000", b"", [[DIRECTORY_HEAD, bytes(64)]]]), "not non-empty bytes"),
    "whole over its cap": (with_whole(["c/seg/000000", bytes(MAX_WHOLE_BYTES + 1), [[DIRECTORY_HEAD, bytes(64)]]]), "exceeds"),
    "whole unsigned": (with_whole(["c/seg/000000", b"document", []]), "non-empty list"),
    "whole signature short": (with_whole(["c/seg/000000", b"document", [[DIRECTORY_HEAD, bytes(63)]]]), "must be 64 bytes"),
    "whole hash short": (with_whole(["c/seg/000000", b"document", [[bytes(31), bytes(64)]]]), "must be 32 bytes"),
    "whole signatures unsorted": (with_whole(["c/seg/000000", b"d", [[DIRECTORY_HEAD, bytes(64)], [bytes(32), bytes(64)]]]), "not sorted"),
    "whole without heads": (with_field(good_changes(), "heads", {"directory": [DIRECTORY_HEAD], "c/head": []}), "heads for exactly"),
    "non-canonical integer": (
        bytes.fromhex("a2") + cbor.encode("t") + cbor.encode("ping") + cbor.encode("nonce") + bytes.fromhex("1801"),
        "not canonical",
    ),
    "non-canonical key order": (
        bytes.fromhex("a2") + cbor.encode("nonce") + b"\x01" + cbor.encode("t") + cbor.encode("ping"),
        "not canonical",
    ),
    "blob part beyond its size": (with_field(BlobPart(bytes(32), 10, 5, b"x"), "offset", 10), "within its size"),
    "blob part empty": (with_field(BlobPart(bytes(32), 10, 0, b"x"), "data", b""), "non-empty bytes"),
    "blob size zero": (with_field(BlobPart(bytes(32), 10, 0, b"x"), "size", 0), "size must be"),
    "blob size over 2^40": (with_field(BlobPart(bytes(32), 10, 0, b"x"), "size", 2**40 + 1), "size must be"),
    "blob digest short": (with_field(BlobPart(bytes(32), 10, 0, b"x"), "digest", bytes(31)), "32 bytes"),
    "trailing bytes": (messages.encode_message(Ping(1)) + b"\x00", "trailing bytes"),
    "cbor tag": (bytes.fromhex("c1") + messages.encode_message(Ping(1)), "tags"),
    "float nonce": (with_field(Ping(1), "nonce", 1.5), "float"),
    "too many items": (cbor.encode({"t": "ping", "nonce": [0] * messages.MAX_MESSAGE_ITEMS}), "more than 524,288"),
    "over the frame size": (bytes(wire.MAX_MESSAGE_BYTES + 1), "exceeds"),
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_decode_rejects_invalid_messages(name: str) -> None:
    data, reason = BAD_MESSAGES[name]
    with pytest.raises(errors.MessageMalformed, match=re.escape(reason)) as caught:
        messages.decode_message(data)
    assert "\n" not in str(caught.value) and str(caught.value)


def test_encode_refuses_what_a_reader_would_reject() -> None:
    for message in (
        Changes(blobs=((bytes(32), b"data"),)),  # blob key is not its hash
        Changes(docs=(("d", ()),), heads={}),  # heads must cover exactly the documents
        Heads({"": ()}, complete=True),
        Heads({"d": (bytes(31),)}, complete=True),
        Ping(-1),
        Pong(2**64),
        Bye("x" * 301),
    ):
        with pytest.raises(ValueError):
            messages.encode_message(message)
    with pytest.raises(TypeError):
        messages.encode_message(Heads({}, complete=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        messages.encode_message(Changes(docs=(("d", (b"raw bytes",)),), heads={"d": ()}))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        messages.encode_message("ping")  # type: ignore[arg-type]
    big = b"x" * (wire.MAX_MESSAGE_BYTES - 10)
    with pytest.raises(ValueError, match="one frame carries at most"):
        messages.encode_message(Changes(blobs=((hashlib.sha256(big).digest(), big),)))


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_decode_only_to_message_malformed(data: bytes) -> None:
    with contextlib.suppress(errors.MessageMalformed):
        messages.decode_message(data)


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), st.integers(min_value=0), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


def mutate(raw: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(raw)
    for kind, position, value in steps:
        at = position % (len(data) + 1)
        if kind == "insert":
            data[at:at] = bytes([value])
        elif not data:
            continue
        elif kind == "truncate":
            del data[at:]
        else:
            at %= len(data)
            if kind == "flip":
                data[at] ^= 1 << (value % 8)
            elif kind == "set":
                data[at] = value
            else:
                del data[at]
    return bytes(data)


@FAST
@given(any_messages, MUTATIONS)
def test_mutated_messages_decode_only_to_message_malformed_or_a_canonical_message(
    message: Message, steps: list[tuple[str, int, int]]
) -> None:
    data = mutate(messages.encode_message(message), steps)
    try:
        decoded = messages.decode_message(data)
    except errors.MessageMalformed:
        return
    assert messages.encode_message(decoded) == data  # one encoding per message: whatever decodes is canonical


# --- sizes for packing ------------------------------------------------------------------------


def size_bound(message: Changes) -> int:
    return (
        messages.CHANGES_OVERHEAD_BYTES
        + sum(messages.doc_entry_bytes(doc_id, message.heads[doc_id]) for doc_id, _ in message.docs)
        + sum(messages.change_entry_bytes(change) for _, changes in message.docs for change in changes)
        + sum(messages.blob_entry_bytes(data) for _, data in message.blobs)
        + sum(messages.whole_entry_bytes(whole, message.heads[whole.doc_id]) for whole in message.wholes)
    )


@FAST
@given(changes_messages())
def test_the_size_helpers_bound_a_changes_message_tightly(message: Changes) -> None:
    actual = len(messages.encode_message(message))
    slack = 4 * 8 + 8 * len(message.docs)  # container heads counted at their largest; a whole's size is exact
    assert actual <= size_bound(message) <= actual + slack


def test_a_sender_packing_greedily_by_the_helpers_stays_under_the_frame_cap() -> None:
    change = SignedChange(bytes(range(256)) * 40, bytes(64))  # about 10 KiB
    heads = {"c/seg/000000": (DIRECTORY_HEAD,)}
    budget = wire.MAX_MESSAGE_BYTES - messages.CHANGES_OVERHEAD_BYTES - messages.doc_entry_bytes("c/seg/000000", heads["c/seg/000000"])
    count = budget // messages.change_entry_bytes(change)
    packed = Changes(docs=(("c/seg/000000", (change,) * count),), heads=heads)
    raw = messages.encode_message(packed)
    assert wire.MAX_MESSAGE_BYTES - messages.change_entry_bytes(change) < len(raw) <= wire.MAX_MESSAGE_BYTES
    frame = FrameSealer(KEY, I2R_HEADER).seal(raw)
    opener = FrameOpener(KEY, I2R_HEADER)
    assert messages.decode_message(read(opener, frame)[0]) == packed
