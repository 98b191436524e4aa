"""The store's tables (SQLAlchemy Core). Alembic migrations create them; a test checks the
migrations and these definitions agree."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

metadata = MetaData()

# One row: who this node is. Secret keys live in `sealed_secrets`, sealed by the data key,
# which is itself sealed by the passphrase (Argon2id + XSalsa20-Poly1305).
node_identity = Table(
    "node_identity",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("workspace_name", String(64), nullable=False),
    Column("workspace_key", LargeBinary(32), nullable=False),
    Column("node_name", String(64), nullable=False),
    Column("node_key", LargeBinary(32), nullable=False),
    Column("default_user", LargeBinary(32), nullable=False),
    Column("kdf_salt", LargeBinary(16), nullable=False),
    Column("kdf_opslimit", Integer, nullable=False),
    Column("kdf_memlimit", Integer, nullable=False),
    Column("sealed_data_key", LargeBinary, nullable=False),
    Column("created_at", Integer, nullable=False),
    # 16 random bytes made when this identity was installed on this machine (init, join; a
    # restore keeps them): two machines presenting one node key show different incarnations.
    Column("incarnation", LargeBinary(16), nullable=False),
    # Audit entries up to this seq were written before entries were signed (set on upgrade).
    Column("audit_legacy_until", Integer, nullable=False),
)

sealed_secrets = Table(
    "sealed_secrets",
    metadata,
    Column("public_key", LargeBinary(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # workspace | node | user
    Column("sealed", LargeBinary, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

documents = Table(
    "documents",
    metadata,
    Column("doc_id", String(96), primary_key=True),
    Column("kind", String(16), nullable=False),  # directory | head | segment
    Column("channel_id", String(32), nullable=False),
    Column("segment_index", Integer, nullable=False),
    Index("ix_documents_channel", "channel_id", "segment_index"),
)

# Append-only. Signatures are kept only when this node checked them; a change without one
# is vouched for by a later change of the same actor (`vouched_by`).
changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("doc_id", String(96), ForeignKey("documents.doc_id"), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),  # (doc_id, actor, seq) keeps a change from being stored twice
    Column("actor", LargeBinary(48), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("deps", LargeBinary, nullable=False),
    Column("data", LargeBinary),  # NULL: held in the document's snapshot (a segment carried whole)
    Column("signature", LargeBinary(64)),
    Column("vouched_by", LargeBinary(32), nullable=False),
    Column("received_from", String(32)),  # node id; NULL for changes made here
    Column("received_at", Integer, nullable=False),
    # A segment carried whole: the row of an actor's signed change stands for its earlier
    # changes there too (appliance/covered.py): how many, and their headers packed.
    Column("covered", Integer, nullable=False, server_default=text("0")),
    Column("covers", LargeBinary),
    UniqueConstraint("doc_id", "actor", "seq", name="uq_changes_actor_seq"),  # also finds a document's rows
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("doc_id", String(96), ForeignKey("documents.doc_id"), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("upto_change_id", Integer, nullable=False),
    Column("saved_at", Integer, nullable=False),
)

# Every certificate, revocation, terms record and acceptance ever accepted; the trusted directory
# (and the terms in force) are computed from these.
directory_entries = Table(
    "directory_entries",
    metadata,
    Column("fingerprint", LargeBinary(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # certificate | revocation | terms | acceptance
    Column("data", LargeBinary, nullable=False),
    Column("added_at", Integer, nullable=False),
)

# Materialised views, rebuilt from the documents; never the source of truth.
channels = Table(
    "channels",
    metadata,
    Column("channel_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("members", Text, nullable=False),  # JSON {user_hex: role}
    Column("read_only", Boolean, nullable=False, server_default=text("0")),  # announcements: only channel admins post
    Column("former", Text, nullable=False, server_default=text("'[]'")),  # JSON [user_hex]: removed members (their nodes get the head)
    Column("requires", Text, nullable=False, server_default=text("''")),  # attributes a user needs (appliance/policy.py), "" for none
)

# row_id is the stable rowid the FTS5 index (SQLite) points at; triggers keep it in step.
messages = Table(
    "messages",
    metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(26), nullable=False, unique=True),
    Column("channel_id", String(32), nullable=False),
    Column("doc_id", String(96), nullable=False),
    Column("author", String(64), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("root_id", String(26)),
    Column("edited_at", Integer),
    Column("deleted", Boolean, nullable=False),
    Column("files", Text, nullable=False),  # JSON [{name, size, hash}]
    Column("mentions", Text, nullable=False),  # JSON [user_hex]
    Column("tampered", Boolean, nullable=False),
    # Who set the delete flag when not the author (user hex): whether it counts depends on who
    # is an admin, so these rows are re-read when that changes. '' = not yet known (upgrade).
    Column("deleted_by", String(64)),
    # A post or reply from elsewhere by someone not a channel admin, arrived while its channel
    # was read-only or archived: kept in the document, never shown (appliance/services/withheld.py).
    Column("withheld", Boolean, nullable=False, server_default=text("0")),
    Index("ix_messages_channel", "channel_id", "message_id"),
    # Partial: most messages are no reply and deleted by nobody else, and write no entry.
    Index("ix_messages_thread", "root_id", "message_id", sqlite_where=text("root_id IS NOT NULL"), postgresql_where=text("root_id IS NOT NULL")),
    Index("ix_messages_doc", "doc_id"),
    Index("ix_messages_deleted_by", "deleted_by", sqlite_where=text("deleted_by IS NOT NULL"), postgresql_where=text("deleted_by IS NOT NULL")),
)

# A message's reactions, apart from its view row: most changes an import brings into segments
# held here are reactions, and one to every tenth message rewrites a row on nearly every page
# of `messages` (its text, ids and JSON) - here it is a narrow row in a table of its own. A
# message without reactions has no row. Keyed by the segment too, and read only where the view
# holds that message in that segment: a crafted segment naming a message id another segment
# holds reaches nothing, without a lookup of the view row on every write.
message_reactions = Table(
    "message_reactions",
    metadata,
    Column("doc_id", String(96), primary_key=True),
    Column("message_id", String(26), primary_key=True),
    Column("reactions", Text, nullable=False),  # JSON {emoji: [user_hex]}, never "{}"
    sqlite_with_rowid=False,
)
# A view row as read: its message's columns and its reactions ("{}" for none).
REACTIONS_READ = func.coalesce(message_reactions.c.reactions, "{}").label("reactions")
MESSAGES_WITH_REACTIONS = messages.outerjoin(
    message_reactions, (message_reactions.c.doc_id == messages.c.doc_id) & (message_reactions.c.message_id == messages.c.message_id)
)

read_markers = Table(
    "read_markers",
    metadata,
    Column("user_key", LargeBinary(32), primary_key=True),
    Column("channel_id", String(32), primary_key=True),
    Column("last_read", String(26), nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("hash", LargeBinary(32), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("added_at", Integer, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Integer, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(48), nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64)),  # the node key's signature over the hash
)

# Other nodes' audit trails, carried by bundles and LAN sessions (appliance/audit_feed.py): the
# entries as their origin node wrote and signed them, checked on arrival against its key, and
# where and when each arrived. This node's own trail stays in `audit_log`.
workspace_audit = Table(
    "workspace_audit",
    metadata,
    Column("origin", LargeBinary(32), primary_key=True),  # the origin node's key
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Integer, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(48), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64)),
    Column("received_at", Integer, nullable=False),
    Column("received_from", String(32), nullable=False),  # the node id that sent it
)

# Entries of other nodes' trails that a branch with a later restore superseded (its node was
# restored from a backup and went on from there: appliance/audit_feed.py), kept as evidence.
audit_superseded = Table(
    "audit_superseded",
    metadata,
    Column("origin", LargeBinary(32), primary_key=True),
    Column("hash", LargeBinary(32), primary_key=True),  # a seq may be superseded more than once
    Column("seq", Integer, nullable=False),
    Column("at", Integer, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(48), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64)),
    Column("received_at", Integer, nullable=False),
    Column("received_from", String(32), nullable=False),
    Column("superseded_at", Integer, nullable=False),
    Column("superseded_by", String(32), nullable=False),  # the node id that sent the later branch
)

# How far each peer told us it holds each origin's audit trail, and which branch (its
# acknowledgements): what is sent to it next starts after that. Never raised on sending: a lost
# bundle leaves no gap.
peer_audit = Table(
    "peer_audit",
    metadata,
    Column("peer", String(32), primary_key=True),  # node id
    Column("origin", LargeBinary(32), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),  # of its entry `seq`
    Column("restores", LargeBinary, nullable=False),  # its branch's `restored` entries: CBOR [[seq, hash, at], ...]
    Column("updated_at", Integer, nullable=False),
)

# What each peer has told us it holds, so later deltas are small (bundles, LAN sync).
peer_heads = Table(
    "peer_heads",
    metadata,
    Column("peer", String(32), primary_key=True),
    Column("doc_id", String(96), primary_key=True),
    Column("heads", LargeBinary, nullable=False),
    Column("updated_at", Integer, nullable=False),
)

# Blobs a peer holds as far as we know: received from it (heads NULL), or sent to it in a
# bundle and not yet confirmed - `heads` are our heads of `doc_id` when we sent it; once the
# peer acknowledges heads that include them, the row is confirmed (heads NULL).
peer_blobs = Table(
    "peer_blobs",
    metadata,
    Column("peer", String(32), primary_key=True),
    Column("hash", LargeBinary(32), primary_key=True),
    Column("doc_id", String(96)),
    Column("heads", LargeBinary),
    Column("updated_at", Integer, nullable=False),
)

# Every bundle this node decided on, by the SHA-256 of its bytes: a re-presented bundle is
# recognised without reopening it, and a rejected one is not audited twice.
bundle_log = Table(
    "bundle_log",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("bundle_id", LargeBinary(16)),
    Column("sender", String(32)),
    Column("created_at", Integer),
    Column("outcome", String(24), nullable=False),  # accepted | duplicate | rejected kind
    Column("reason", Text, nullable=False),
    Column("decided_at", Integer, nullable=False),
)

SCHEMA_REVISION = "0017"

# Nodes seen on the LAN (by mDNS or an incoming session), this workspace's or not: where they
# were last seen and when a session last synced with them. Written by the serving process, read
# by `rallypoint peers` and the console in any process.
lan_peers = Table(
    "lan_peers",
    metadata,
    Column("node_id", String(32), primary_key=True),
    Column("workspace_id", String(32), nullable=False),
    Column("address", String(64), nullable=False),
    Column("port", Integer, nullable=False),
    Column("last_seen", Integer, nullable=False),
    Column("last_sync", Integer),
)

# The operator's IP rules for incoming LAN sessions (`rallypoint allow` / `deny`).
network_rules = Table(
    "network_rules",
    metadata,
    Column("network", String(64), primary_key=True),  # normalised CIDR
    Column("action", String(8), nullable=False),  # allow | deny
    Column("created_at", Integer, nullable=False),
    Column("created_by", String(64), nullable=False),
)

# The incarnation each other node presented first (LAN handshake, bundle). A node key seen
# with a second incarnation is in conflict - an enrollment used twice, a cloned disk - and is
# refused from then on, both incarnations, until an admin revokes it.
peer_incarnations = Table(
    "peer_incarnations",
    metadata,
    Column("node_key", LargeBinary(32), primary_key=True),
    Column("incarnation", LargeBinary(16), nullable=False),
    Column("first_seen", Integer, nullable=False),
    Column("conflict_at", Integer),  # when a second incarnation showed up
    Column("conflicting", LargeBinary(16)),  # that second incarnation
    Column("refusals", Integer, nullable=False),  # contacts refused since the conflict
    Column("audited_at", Integer),  # the last refusal audited (at most one an hour)
)

# Each local user's signing key, sealed under a key derived (Argon2id, this salt, the node's KDF
# cost) from that user's own secret: unlocking the node does not let anyone act as them. A key
# still sealed under the data key (`sealed_secrets`, kind user) is from before this table.
user_secrets = Table(
    "user_secrets",
    metadata,
    Column("public_key", LargeBinary(32), primary_key=True),
    Column("salt", LargeBinary(16), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("must_change", Boolean, nullable=False),  # an initial or reset secret the user has to replace
    Column("changed_at", Integer, nullable=False),
)

# Failed sign-ins in a row, per local user, and until when they are refused without a try.
sign_in_failures = Table(
    "sign_in_failures",
    metadata,
    Column("public_key", LargeBinary(32), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Integer, nullable=False),
    Column("last_failure_at", Integer, nullable=False),
)

# A user's TOTP secret, sealed under their secret-derived key (the operator cannot read it), and
# the newest time step accepted (an older or equal one is a replay).
user_mfa = Table(
    "user_mfa",
    metadata,
    Column("public_key", LargeBinary(32), primary_key=True),
    Column("sealed_secret", LargeBinary, nullable=False),
    Column("enrolled_at", Integer, nullable=False),
    Column("last_step", Integer, nullable=False),
)

# One-time recovery codes: only a salted SHA-256 of each is kept; used ones keep when.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("salt", LargeBinary(16), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("used_at", Integer),
    Index("ix_recovery_codes_user", "public_key"),
)

# Every backup run and its check (the copy opened read-only: integrity, this node's identity, its
# audit chain against this node's key): what `backup --status` and the console's health show, and
# what pruning counts as verified. A run that failed before a file existed has `bytes` 0.
backup_checks = Table(
    "backup_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("file", String(128), nullable=False),
    Column("folder", Text, nullable=False),
    Column("taken_at", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("problem", Text),
    Column("checked_at", Integer, nullable=False),
    Column("sha256", LargeBinary(32)),  # of the kept file, as written beside it (`<file>.sha256`)
    Index("ix_backup_checks_file", "file"),
)
