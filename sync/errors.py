"""The sync package's exceptions: its sub-root under `RallypointError`, the distinct outcomes of
opening a bundle, and the ways a courier stick, a LAN session or discovery fails.

Every exception's message is one line meant for the user (the CLI prints it as is).

    RallypointError                        appliance/errors.py draws the whole tree
    └── SyncError
        ├── BundleRejected
        │   ├── NotAddressedToMe
        │   ├── Tampered
        │   ├── Truncated
        │   ├── UnknownSender
        │   ├── RevokedSender
        │   ├── UnsupportedVersion
        │   ├── TooLarge
        │   ├── Malformed
        │   └── AuditTrailRefused
        ├── StickError
        ├── SessionError
        │   ├── HandshakeFailed
        │   ├── UnsupportedProtocol
        │   ├── FrameRejected
        │   └── MessageMalformed
        ├── ChannelLost
        ├── ExportRefused
        │   └── DoesNotFit
        ├── DiscoveryError
        └── ServiceAlreadyRunning          (sync.service_lock)
"""

from __future__ import annotations

from appliance.errors import RallypointError


class SyncError(RallypointError):
    """Root of every error the sync package raises on purpose."""


class BundleRejected(SyncError):
    """A bundle this node will not import; the subclass says why."""


class NotAddressedToMe(BundleRejected):
    """An intact bundle that carries no content key for this node (it may be carried on)."""


class Tampered(BundleRejected):
    """The signature, a wrapped key or an encrypted chunk does not verify: the bytes were altered."""


class Truncated(BundleRejected):
    """The file is shorter than its own lengths say, or its encrypted stream stops before the final chunk."""


class UnknownSender(BundleRejected):
    """Signed by a node this workspace's directory does not know (or for another workspace)."""


class RevokedSender(BundleRejected):
    """Signed by a node whose certificate has been revoked."""


class UnsupportedVersion(BundleRejected):
    """A bundle format version this node cannot read."""


class TooLarge(BundleRejected):
    """A length, size or item count over a hard limit."""


class Malformed(BundleRejected):
    """Bytes that do not follow the bundle format (bad magic, non-canonical CBOR, wrong fields, trailing bytes)."""


class AuditTrailRefused(BundleRejected):
    """A bundle whose audit trail of some node has a gap, a broken link or a bad signature, or
    belongs to a node the directory never certified (appliance's AuditFeedRefused, at the bundle's edge)."""


class StickError(SyncError):
    """A courier stick or the quarantine folder could not be read or written as asked: missing, full,
    read-only, damaged or unplugged, or laid out in a way this node refuses (a link where a folder
    belongs, a file that changed since the scan, an unknown layout)."""


class SessionError(SyncError):
    """A LAN session failed or was refused; the subclass says why. The connection is closed."""


class HandshakeFailed(SessionError):
    """The peer's handshake does not verify: a bad signature or key, another workspace, a short message."""


class UnsupportedProtocol(SessionError):
    """The peer does not speak this protocol: unknown magic, version or role byte."""


class FrameRejected(SessionError):
    """A frame fails authentication or decryption, has a zero, short or oversized length, or follows the final frame."""


class MessageMalformed(SessionError):
    """A frame's plaintext is not a valid message (bad CBOR, unknown type or field, too many items)."""


class ChannelLost(SyncError):
    """A session's connection broke (reset, or ended without its final frame); the message says how."""


class ExportRefused(SyncError):
    """An export this node cannot make as asked: a size limit too small for what must travel, a
    recipient that is not an enrolled node, no one to export for."""


class DoesNotFit(ExportRefused):
    """One indivisible piece (a change's causal group, an attachment) exceeds the part size."""


class DiscoveryError(SyncError):
    """mDNS discovery could not start, advertise or stop as asked: no usable interface, an address
    that cannot be bound, or another node on the LAN already advertising this node's id."""
