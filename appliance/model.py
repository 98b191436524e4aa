"""Values the node hands to its callers (CLI, console, sync). Frozen, plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # annotations only: the CLI reads these values without loading CBOR or Automerge
    from appliance.certs import Role, Trust
    from appliance.changes import SignedChange
    from appliance.documents import ChannelKind

MAX_READ_PAGE = 10_000  # messages one read returns at most; older ones are read with `before`


def iso_utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    workspace_name: str
    workspace_id: str
    workspace_key: bytes
    node_name: str
    node_id: str
    node_key: bytes
    user_name: str
    user_key: bytes
    role: Role  # Role.REVOKED when the acting user's certificate is gone
    holds_workspace_key: bool


@dataclass(frozen=True)
class UserInfo:
    name: str
    key: bytes
    role: Role
    local: bool  # this node holds the user's secret key
    revoked: bool = False
    attributes: tuple[tuple[str, str], ...] = ()  # what an admin assigned (appliance/policy.py)
    initial_secret: str | None = None  # made up by the node when a user was added: shown once


@dataclass(frozen=True)
class ChannelSummary:
    channel_id: str
    name: str
    purpose: str
    kind: ChannelKind
    archived: bool
    unread: int
    mentions: int
    members: tuple[str, ...]  # user names (private channels, direct conversations' participants)
    label: str = ""  # as lists show it: `#ops`, `#ops (alice, 3f2a)` when names clash, `@bob` for a direct conversation
    read_only: bool = False
    admins: tuple[str, ...] = ()  # channel admins' user names
    created_by: str = ""  # its creator's user name
    requires: tuple[tuple[str, str], ...] = ()  # attributes a user needs to be in it (appliance/policy.py)

    @property
    def is_direct(self) -> bool:
        return self.kind == "direct"


class MemberRole(StrEnum):
    """A member's place in a channel as shown ("owner" in older heads shows as channel admin)."""

    CHANNEL_ADMIN = "channel admin"
    MEMBER = "member"
    PARTICIPANT = "participant"  # of a direct conversation


@dataclass(frozen=True)
class ChannelMember:
    name: str
    user_key: str  # hex
    role: MemberRole


@dataclass(frozen=True)
class FileView:
    name: str
    size: int
    hash: str


@dataclass(frozen=True)
class MessageView:
    id: str
    channel: str
    channel_id: str
    author: str
    author_key: str
    created_at: int
    text: str
    root_id: str | None
    edited_at: int | None
    deleted: bool
    reactions: dict[str, list[str]]
    files: list[FileView]
    mentions: list[str]
    reply_count: int = 0
    tampered: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "channel": self.channel,
            "author": self.author,
            "author_key": self.author_key,
            "created_at": iso_utc(self.created_at),
            "text": self.text,
            "root_id": self.root_id,
            "edited_at": iso_utc(self.edited_at),
            "deleted": self.deleted,
            "reactions": self.reactions,
            "files": [{"name": f.name, "size": f.size, "hash": f.hash} for f in self.files],
            "mentions": self.mentions,
            "reply_count": self.reply_count,
            "tampered": self.tampered,
        }


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    bytes: int
    taken_at: int  # ms
    debris_files: int = 0  # left in the folder by interrupted backups, removed by this one
    debris_bytes: int = 0
    pruned: tuple[str, ...] = ()  # this node's older backups the retention policy deleted


@dataclass(frozen=True)
class RecoveryKit:
    """A recovery kit's bytes and the code that opens it (shown once, never stored)."""

    data: bytes
    code: str
    node_id: str
    users: int  # local users whose sealed keys it carries
    replaces: str | None = None  # replace-node: the id of the node it replaces
    made_at: int = 0


@dataclass(frozen=True)
class Enrollment:
    """An enrollment file's bytes and the one-time code that opens it (shown, never stored)."""

    data: bytes
    code: str
    node_id: str
    user_name: str
    kit: RecoveryKit | None = None  # the node's recovery kit for the admin to keep (its own code)


class Carrier(StrEnum):
    """How changes travelled from another node."""

    BUNDLE = "bundle"  # a signed, encrypted file on a courier stick
    LAN = "lan"  # an authenticated LAN session


class ImportOutcome(StrEnum):
    """What became of one bundle file (the store's `bundle_log.outcome`, the courier report).
    A rejection is named by the error that refused it: the values are those classes' names,
    as stored since the first release."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # intact and from a trusted sender, but nothing in it was new
    SEEN = "seen"  # this exact file was imported (or rejected) before
    NOT_FOR_ME = "not for this node"
    WAITING = "waiting"  # builds on a bundle this node has not imported yet; left on the stick
    UNREADABLE = "Unreadable"  # the stick would not give its bytes
    TAMPERED = "Tampered"
    TRUNCATED = "Truncated"
    UNKNOWN_SENDER = "UnknownSender"
    REVOKED_SENDER = "RevokedSender"
    UNSUPPORTED_VERSION = "UnsupportedVersion"
    TOO_LARGE = "TooLarge"
    MALFORMED = "Malformed"
    CHANGE_REJECTED = "ChangeRejected"
    IDENTITY_CONFLICT = "IdentityConflict"
    AUDIT_TRAIL_REFUSED = "AuditTrailRefused"  # an audit trail with a gap, a broken link or a forged entry

    @property
    def rejected(self) -> bool:
        return self not in _NOT_REJECTED


_NOT_REJECTED = frozenset({ImportOutcome.ACCEPTED, ImportOutcome.DUPLICATE, ImportOutcome.SEEN, ImportOutcome.NOT_FOR_ME, ImportOutcome.WAITING})


@dataclass(frozen=True)
class ImportResult:
    doc_id: str
    applied: int
    duplicates: int


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    name: str
    key: bytes
    revoked: bool
    this_node: bool


@dataclass(frozen=True)
class ChannelIntake:
    """What an import brought to one channel."""

    channel_id: str
    name: str  # "" while the channel's head is unknown here
    readable: bool  # the acting user may read it (otherwise this node only carries it)
    changes: int
    new_messages: int


@dataclass(frozen=True)
class ImportSummary:
    """What an import changed (or, with preview, would change)."""

    changes: int  # new changes applied
    duplicates: int  # changes this node already had
    directory_entries: int  # certificates and revocations in the directory document
    channels: tuple[ChannelIntake, ...]
    blobs: int  # new blobs stored
    preview: bool
    wiped: bool = False  # the batch revoked this very node: it locked itself and wiped its data
    audit_entries: int = 0  # entries of other nodes' audit trails stored

    @property
    def outcome(self) -> ImportOutcome:
        """An import that stored nothing new was a duplicate."""
        return ImportOutcome.ACCEPTED if self.changes or self.blobs or self.audit_entries else ImportOutcome.DUPLICATE


@dataclass(frozen=True)
class Receipt:
    """Where an imported batch came from; recorded in the import's own transaction."""

    source: Carrier
    sender: bytes  # the sending node's key
    created_at: int  # the sender's clock when it made the batch, ms
    sender_heads: Mapping[str, tuple[bytes, ...]]  # what the sender holds: an acknowledgement
    digest: bytes | None = None  # SHA-256 of the bundle file
    bundle_id: bytes | None = None
    complete: bool = False  # sender_heads lists every document the sender holds that we may receive


class DocumentDelta(NamedTuple):
    """One document's changes a peer lacks. A named tuple: callers still unpack the pair."""

    doc_id: str
    changes: tuple[SignedChange, ...]


@dataclass(frozen=True)
class WholeSegment:
    """A segment a peer lacks entirely, carried whole: its compacted document (the bytes of
    Automerge's `save()`, stored by the receiver as they came) and, for each actor that wrote
    changes in it, that actor's author's signature (`changes.sign_change`) over the actor's
    newest change in it. The receiver accepts it only if every change of each actor is covered
    by that actor's own signature (appliance/wholes.py)."""

    doc_id: str
    data: bytes
    signatures: tuple[tuple[bytes, bytes], ...]  # (change hash, signature), one per actor


class BlobDelta(NamedTuple):
    """One blob a peer lacks. A named tuple: callers still unpack the triple."""

    hash: bytes
    doc_id: str  # a document that references it (its readers may have it)
    data: bytes


@dataclass(frozen=True)
class Delta:
    """What some peers lack, in priority order: the directory, channel heads, then segments
    (newest first); blobs they lack. `heads` are this node's heads of every document the
    peers may receive (sent along as an acknowledgement)."""

    documents: tuple[DocumentDelta, ...]
    blobs: tuple[BlobDelta, ...]
    heads: Mapping[str, tuple[bytes, ...]]
    # Segments the peers lack entirely, newest first; they travel after the directory and heads.
    wholes: tuple[WholeSegment, ...] = ()

    @property
    def change_count(self) -> int:
        return sum(len(changes) for _, changes in self.documents)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: int
    actor: str
    action: str
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TrailEntry:
    """One entry of a node's audit trail as the workspace view lists it: as its origin node
    wrote and signed it, the actor's name when the directory knows it, and for another node's
    entry when and from which node it arrived here."""

    origin: str  # the node id that wrote it
    seq: int
    at: int
    actor: str  # a user's or node's key (hex), or "-"
    actor_name: str | None
    action: str
    detail: str  # canonical JSON, as hashed
    prev_hash: bytes
    hash: bytes
    signature: bytes | None
    received_at: int | None = None  # None: written by this node
    received_from: str | None = None
    superseded_at: int | None = None  # set: of a branch a later restore of its node superseded
    superseded_by: str | None = None  # the node id that sent the later branch


@dataclass(frozen=True)
class NodeTrail:
    """One node's audit trail held here and its chain verified against that node's key: `ok`,
    how many entries verified, the head hash, and the first problem (naming the bad entry)."""

    node_id: str
    node_key: bytes  # what the chain is verified against
    name: str
    this_node: bool
    revoked: bool
    ok: bool
    count: int  # entries held here (before any filter)
    verified: int
    head: bytes
    problem: str | None
    entries: tuple[TrailEntry, ...]  # those the filter kept
    # Entries a branch with a later restore of the node superseded (those the filter kept), kept
    # as evidence; each is checked on its own (hash, signature), a problem makes `ok` false.
    superseded: tuple[TrailEntry, ...] = ()


@dataclass(frozen=True)
class LanPeer:
    """A node seen on the LAN, by mDNS or by an incoming session."""

    node_id: str
    workspace_id: str
    address: str
    port: int
    last_seen: int  # ms
    last_sync: int | None  # ms; when a session last exchanged heads with it


@dataclass(frozen=True)
class PeerStatus:
    """One row of `rallypoint peers`: a workspace node, a node seen on the LAN, or both."""

    node_id: str
    name: str  # "" for a node the directory does not know
    trust: Trust
    key: bytes | None  # the node key, for nodes of the directory
    address: str | None  # where it was last seen on the LAN
    port: int | None
    last_seen: int | None
    last_sync: int | None
    last_courier: int | None  # when a bundle from it was last accepted
    behind: int | None  # changes of ours it lacks as far as it told us; None if it is not ours to sync
    conflict: str | None = None  # why it is refused although trusted: two machines present its identity
    refused: str | None = None  # a trusted node at an address the IP allowlist refuses: why, and the command that allows it


@dataclass(frozen=True)
class TermsInfo:
    """One version of the workspace's terms of service, as `terms show` and the console show it."""

    version: int
    title: str
    text: str
    published_at: int
    publisher: str  # the admin's name (or "workspace key")
    fingerprint: str  # hex: what an acceptance names


@dataclass(frozen=True)
class TermsStanding:
    """Where one user stands with the terms: the newest version they accepted, when, on which
    node, and whether that is the current version."""

    user: str
    key: bytes
    role: Role
    accepted_version: int | None
    accepted_at: int | None
    node_name: str | None
    node_id: str | None
    current: bool  # accepted the current version (True for everyone when no terms are published)
