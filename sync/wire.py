"""The LAN session codec: the three handshake messages and the encrypted frames (the messages
they carry: sync/messages.py). docs/lan-protocol.md is the specification; this module follows
it to the byte.

Pure: bytes in, bytes out; no sockets, no clock, no system randomness. The ephemeral key seeds
and stream headers are parameters, so the same inputs give the same bytes and the test vectors
are reproducible; callers pass fresh `appliance.crypto.random_bytes(...)` for every session.
Whether a peer's node key is trusted is not decided here: the handshake hands the key to the
caller, which checks it against the workspace directory before going on. Whatever a peer sends
raises a `SessionError` subclass (third-party exceptions are translated at this boundary);
misuse by the caller - steps out of order, arguments of the wrong length or type - raises
RuntimeError, ValueError or TypeError."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing

from appliance import cbor, crypto
from appliance.ids import key_id
from sync.errors import FrameRejected, HandshakeFailed, UnsupportedProtocol

MiB = 1024 * 1024

# --- handshake layout ----------------------------------------------------------------------

MAGIC = b"RPLAN"
PROTOCOL_VERSION = 4  # 3: Changes carries segments whole; 4: the Trails message (sync/messages.py)
ROLE_INITIATOR = 0  # the role byte of HELLO
ROLE_RESPONDER = 1  # the role byte of RESPONSE
SIGNATURE_DOMAIN = b"rallypoint/lan/v3\x00"
AUTH_LABEL = b"auth"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
INCARNATION_BYTES = 16  # which installation of its node key a side is (appliance.identity)
SEED_BYTES = sodium.crypto_kx_SEED_BYTES  # 32
EPHEMERAL_BYTES = sodium.crypto_kx_PUBLIC_KEY_BYTES  # 32
PREFIX_BYTES = len(MAGIC) + 2  # magic, version, role
HELLO_BYTES = PREFIX_BYTES + KEY_BYTES + EPHEMERAL_BYTES  # 71
RESPONSE_SIGNED_BYTES = HELLO_BYTES + KEY_BYTES + INCARNATION_BYTES  # 119: the part of RESPONSE before its signature
RESPONSE_BYTES = RESPONSE_SIGNED_BYTES + SIGNATURE_BYTES  # 183
AUTH_BYTES = KEY_BYTES + INCARNATION_BYTES + SIGNATURE_BYTES  # 112
SESSION_KEY_BYTES = sodium.crypto_kx_SESSION_KEY_BYTES  # 32
PERSON_I2R = b"rp-lan-i2r"
PERSON_R2I = b"rp-lan-r2i"

# --- frames --------------------------------------------------------------------------------

STREAM_HEADER_BYTES = crypto.SECRETSTREAM_HEADER_BYTES  # 24
FRAME_OVERHEAD = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17: tag byte + MAC
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
LENGTH_BYTES = 4
MAX_FRAME_BYTES = 4 * MiB  # ciphertext of one frame, length prefix excluded
MIN_FRAME_BYTES = FRAME_OVERHEAD + 1  # every frame carries a message, and no message is empty
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES - FRAME_OVERHEAD


# --- handshake -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionKeys:
    """One session's secretstream keys, seen from one side: `send` keys the stream this side
    writes, `receive` the one it reads. The initiator's `send` is the responder's `receive`."""

    send: bytes = field(repr=False)  # secrets stay out of logs and tracebacks
    receive: bytes = field(repr=False)


class Initiator:
    """The side that connects. Steps, each once and in this order:

    1. `hello()`: the HELLO to send.
    2. `read_response(data)`: checks the RESPONSE and returns the responder's node key (its
       incarnation is then `peer_incarnation`). The caller MUST check that key against the
       workspace directory (known, not revoked) and close the connection without sending
       anything if it is not trusted.
    3. `auth()`: the AUTH to send, and the session keys.

    A step that raised leaves the handshake failed: every later call raises RuntimeError."""

    def __init__(self, workspace_key: bytes, node_key: nacl.signing.SigningKey, ephemeral_seed: bytes, *, incarnation: bytes) -> None:
        self._workspace = _key_argument(workspace_key, "workspace_key")
        self._node_key = _signing_key_argument(node_key)
        self._incarnation = _incarnation_argument(incarnation)
        self.peer_incarnation = b""  # the responder's, once its RESPONSE is read
        self._ephemeral_public, self._ephemeral_secret = _ephemeral_keypair(ephemeral_seed)
        self._hello = MAGIC + bytes([PROTOCOL_VERSION, ROLE_INITIATOR]) + self._workspace + self._ephemeral_public
        self._response = b""
        self._raw_keys = (b"", b"")  # (initiator to responder, responder to initiator), from kx
        self._step = "hello"

    def hello(self) -> bytes:
        self._expect("hello")
        self._step = "read_response"
        return self._hello

    def read_response(self, data: cbor.Buffer) -> bytes:
        """Verifies the RESPONSE (layout, workspace, the responder's signature over both
        messages) and returns the responder's node key."""
        self._expect("read_response")
        self._step = "failed"  # until every check has passed
        response = bytes(data)
        _check_prefix(response, ROLE_RESPONDER, RESPONSE_BYTES, "RESPONSE")
        workspace, ephemeral, node, incarnation, signature = _split(response[PREFIX_BYTES:], KEY_BYTES, EPHEMERAL_BYTES, KEY_BYTES, INCARNATION_BYTES, SIGNATURE_BYTES)
        if workspace != self._workspace:
            raise HandshakeFailed(f"peer belongs to another workspace ({key_id(workspace)})")
        if not crypto.verify(node, SIGNATURE_DOMAIN + self._hello + response[:RESPONSE_SIGNED_BYTES], signature):
            raise HandshakeFailed(f"the responder's handshake signature does not verify (it claims to be node {key_id(node)})")
        try:
            receive, send = sodium.crypto_kx_client_session_keys(self._ephemeral_public, self._ephemeral_secret, ephemeral)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise HandshakeFailed(f"node {key_id(node)} sent an unusable ephemeral key") from exc
        self._ephemeral_secret = b""  # no longer needed: dropped early, for forward secrecy
        self._response = response
        self._raw_keys = (send, receive)
        self.peer_incarnation = incarnation
        self._step = "auth"
        return node

    def auth(self) -> tuple[bytes, SessionKeys]:
        """The AUTH message, and the session keys. Call only once the responder's node key is
        known to be trusted."""
        self._expect("auth")
        node = bytes(self._node_key.verify_key)
        signature = crypto.sign(self._node_key, SIGNATURE_DOMAIN + AUTH_LABEL + self._hello + self._response + node + self._incarnation)
        auth = node + self._incarnation + signature
        self._step = "done"
        return auth, _session_keys(self._hello + self._response + auth, *self._raw_keys, initiator=True)

    def _expect(self, step: str) -> None:
        if self._step != step:
            raise RuntimeError(f"Initiator: {step} called out of order (the handshake is at step {self._step!r})")


class Responder:
    """The side that accepts. The caller checks the peer's address against the allowlist before
    reading anything. Steps, each once and in this order:

    1. `read_hello(data)`: checks the HELLO and returns the RESPONSE to send.
    2. `read_auth(data)`: checks the AUTH and returns the initiator's node key (its incarnation
       is then `peer_incarnation`) and the session keys. The caller MUST check that key against
       the workspace directory and close the connection without sending anything if it is not
       trusted.

    A step that raised leaves the handshake failed: every later call raises RuntimeError."""

    def __init__(self, workspace_key: bytes, node_key: nacl.signing.SigningKey, ephemeral_seed: bytes, *, incarnation: bytes) -> None:
        self._workspace = _key_argument(workspace_key, "workspace_key")
        self._node_key = _signing_key_argument(node_key)
        self._incarnation = _incarnation_argument(incarnation)
        self.peer_incarnation = b""  # the initiator's, once its AUTH is read
        self._ephemeral_public, self._ephemeral_secret = _ephemeral_keypair(ephemeral_seed)
        self._hello = b""
        self._response = b""
        self._raw_keys = (b"", b"")  # (initiator to responder, responder to initiator), from kx
        self._step = "read_hello"

    def read_hello(self, data: cbor.Buffer) -> bytes:
        """Checks the HELLO (layout, workspace, the ephemeral key) and returns the signed RESPONSE."""
        self._expect("read_hello")
        self._step = "failed"
        hello = bytes(data)
        _check_prefix(hello, ROLE_INITIATOR, HELLO_BYTES, "HELLO")
        workspace, ephemeral = _split(hello[PREFIX_BYTES:], KEY_BYTES, EPHEMERAL_BYTES)
        if workspace != self._workspace:
            raise HandshakeFailed(f"peer belongs to another workspace ({key_id(workspace)})")
        try:
            receive, send = sodium.crypto_kx_server_session_keys(self._ephemeral_public, self._ephemeral_secret, ephemeral)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise HandshakeFailed("the initiator sent an unusable ephemeral key") from exc
        self._ephemeral_secret = b""  # no longer needed: dropped early, for forward secrecy
        signed = (
            MAGIC + bytes([PROTOCOL_VERSION, ROLE_RESPONDER]) + self._workspace + self._ephemeral_public + bytes(self._node_key.verify_key) + self._incarnation
        )
        self._hello = hello
        self._response = signed + crypto.sign(self._node_key, SIGNATURE_DOMAIN + hello + signed)
        self._raw_keys = (receive, send)
        self._step = "read_auth"
        return self._response

    def read_auth(self, data: cbor.Buffer) -> tuple[bytes, SessionKeys]:
        """Verifies the AUTH (the initiator's signature over the whole handshake) and returns the
        initiator's node key and the session keys."""
        self._expect("read_auth")
        self._step = "failed"
        auth = bytes(data)
        if len(auth) != AUTH_BYTES:
            raise HandshakeFailed(f"the peer's AUTH is {len(auth)} bytes; expected {AUTH_BYTES}")
        node, incarnation, signature = _split(auth, KEY_BYTES, INCARNATION_BYTES, SIGNATURE_BYTES)
        if not crypto.verify(node, SIGNATURE_DOMAIN + AUTH_LABEL + self._hello + self._response + node + incarnation, signature):
            raise HandshakeFailed(f"the initiator's handshake signature does not verify (it claims to be node {key_id(node)})")
        self.peer_incarnation = incarnation
        self._step = "done"
        return node, _session_keys(self._hello + self._response + auth, *self._raw_keys, initiator=False)

    def _expect(self, step: str) -> None:
        if self._step != step:
            raise RuntimeError(f"Responder: {step} called out of order (the handshake is at step {self._step!r})")


def _key_argument(value: bytes, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes")
    return value


def _incarnation_argument(value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != INCARNATION_BYTES:
        raise ValueError(f"incarnation must be {INCARNATION_BYTES} bytes")
    return value


def _signing_key_argument(value: nacl.signing.SigningKey) -> nacl.signing.SigningKey:
    if not isinstance(value, nacl.signing.SigningKey):
        raise TypeError(f"node_key must be a nacl.signing.SigningKey, not {type(value).__name__}")
    return value


def _ephemeral_keypair(seed: bytes) -> tuple[bytes, bytes]:
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"ephemeral_seed must be {SEED_BYTES} bytes, fresh from a CSPRNG for every session")
    public, secret = sodium.crypto_kx_seed_keypair(seed)
    return public, secret


def _check_prefix(data: bytes, role: int, size: int, what: str) -> None:
    """Magic, version and role first, so a peer speaking something else is told so rather than
    that its message has the wrong length."""
    if len(data) >= len(MAGIC) and data[: len(MAGIC)] != MAGIC:
        raise UnsupportedProtocol("the peer does not speak the Rallypoint LAN protocol (bad magic)")
    if len(data) > len(MAGIC) and data[len(MAGIC)] != PROTOCOL_VERSION:
        version = data[len(MAGIC)]
        release = "an older Rallypoint release: upgrade it" if version < PROTOCOL_VERSION else "a newer Rallypoint release: upgrade this node"
        raise UnsupportedProtocol(f"the peer speaks LAN protocol version {version}, of {release} (this node speaks version {PROTOCOL_VERSION})")
    if len(data) > len(MAGIC) + 1 and data[len(MAGIC) + 1] != role:
        raise UnsupportedProtocol(f"the peer's {what} carries role {data[len(MAGIC) + 1]}, not {role}")
    if len(data) != size:
        raise HandshakeFailed(f"the peer's {what} is {len(data)} bytes; expected {size}")


def _split(data: bytes, *sizes: int) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    return out


def _session_keys(transcript: bytes, raw_i2r: bytes, raw_r2i: bytes, *, initiator: bool) -> SessionKeys:
    """Each direction's kx key, bound to the whole handshake: a peer that swapped any message,
    or the other side's AUTH for its own, ends up with different keys and its first frame fails."""
    digest = crypto.sha256(transcript)
    i2r = hashlib.blake2b(digest, key=raw_i2r, digest_size=SESSION_KEY_BYTES, person=PERSON_I2R).digest()
    r2i = hashlib.blake2b(digest, key=raw_r2i, digest_size=SESSION_KEY_BYTES, person=PERSON_R2I).digest()
    return SessionKeys(send=i2r, receive=r2i) if initiator else SessionKeys(send=r2i, receive=i2r)


# --- frames --------------------------------------------------------------------------------


class FrameSealer:
    """The writing half of one direction: send `header` first, then what each `seal` returns.
    `header` is 24 bytes that MUST come fresh from a CSPRNG for each session."""

    def __init__(self, key: bytes, header: bytes) -> None:
        self._state = crypto.secretstream_push_state(key, header)
        self._header = bytes(header)
        self._finished = False

    @property
    def header(self) -> bytes:
        return self._header

    def seal(self, message: bytes, *, final: bool = False) -> bytes:
        """One frame: the u32 length of the ciphertext, then the ciphertext. `final` marks the
        last frame of the stream; nothing may be sealed after it."""
        if self._finished:
            raise RuntimeError("the stream is finished: nothing may follow its final frame")
        if not message or len(message) > MAX_MESSAGE_BYTES:
            raise ValueError(f"a frame carries 1 to {MAX_MESSAGE_BYTES:,} bytes of message, not {len(message):,}")
        ciphertext = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, message, None, TAG_FINAL if final else TAG_MESSAGE)
        self._finished = final
        return len(ciphertext).to_bytes(LENGTH_BYTES, "big") + ciphertext


class FrameOpener:
    """The reading half of one direction, made from the 24-byte stream header the peer sends
    first. For each frame: read 4 bytes, `length(...)`, read that many bytes, `open(...)`. When
    the connection ends, call `end_of_stream()`. A call that raised FrameRejected leaves the
    opener failed: every later call raises RuntimeError (the caller closes the connection)."""

    def __init__(self, key: bytes, header: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != SESSION_KEY_BYTES:
            raise ValueError(f"key must be {SESSION_KEY_BYTES} bytes")
        if len(header) != STREAM_HEADER_BYTES:
            raise FrameRejected(f"the peer's stream header is {len(header)} bytes; expected {STREAM_HEADER_BYTES}")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, bytes(header), key)
        self._finished = False
        self._failed = False

    @property
    def finished(self) -> bool:
        """Whether the final frame has been opened."""
        return self._finished

    def length(self, prefix: cbor.Buffer) -> int:
        """The ciphertext length a 4-byte prefix announces, checked against the limits before the
        caller reads (or allocates) anything for it."""
        if len(prefix) != LENGTH_BYTES:
            raise ValueError(f"a length prefix is {LENGTH_BYTES} bytes")
        self._usable()
        size = int.from_bytes(prefix, "big")
        self._check_length(size)
        return size

    def open(self, ciphertext: cbor.Buffer) -> tuple[bytes, bool]:
        """The frame's message, and whether this was the final frame."""
        self._usable()
        self._check_length(len(ciphertext))
        try:
            message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, bytes(ciphertext), None)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise self._reject("a frame fails authentication (altered, reordered, replayed, cut short or under another key)") from exc
        if tag == TAG_FINAL:
            self._finished = True
        elif tag != TAG_MESSAGE:
            raise self._reject(f"a frame carries the unexpected stream tag {tag}")
        return message, self._finished

    def end_of_stream(self) -> None:
        """The connection ended. Raises FrameRejected unless the final frame came first: a
        stream that stops without it was cut, whatever its last frame said."""
        self._usable(after_final_ok=True)
        if not self._finished:
            raise self._reject("the peer's stream ended without its final frame (connection cut)")

    def _usable(self, *, after_final_ok: bool = False) -> None:
        if self._failed:
            raise RuntimeError("this stream already failed; close the connection")
        if self._finished and not after_final_ok:
            raise self._reject("the peer sent a frame after its final frame")

    def _check_length(self, size: int) -> None:
        if size == 0:
            raise self._reject("the peer sent a frame of length 0")
        if size < MIN_FRAME_BYTES:
            raise self._reject(f"the peer sent a frame of {size} bytes; a frame holds at least {MIN_FRAME_BYTES}")
        if size > MAX_FRAME_BYTES:
            raise self._reject(f"the peer sent a frame of {size:,} bytes; the limit is {MAX_FRAME_BYTES:,}")

    def _reject(self, message: str) -> FrameRejected:
        self._failed = True
        return FrameRejected(message)
