"""Every action the node writes to its audit log (`audit_log.action`), one member each. Values
are the strings stored since the first release, so entries already written and their hashes
stay as they are.

When each is written (actor: the acting user's key, the node's key, or "-" for none):

- INIT: a workspace is created on this node (its first admin and node certificates).
- UNLOCK_FAILED: opening the node with a wrong passphrase (unsigned: the key is still sealed).
- PERMISSION_DENIED: a user tried what their role does not allow, or to act as a user whose key
  this node does not hold.
- JOINED: this node joined a workspace with an enrollment file.
- INVITED: an admin issued an enrollment for a new node (and its user).
- USER_ADDED, ROLE_CHANGED, REVOKED: an admin added a user, changed a role, revoked a user or
  a node.
- CHANNEL_CREATED, MEMBER_ADDED: a channel was created; a user was added to a private channel.
- ATTRIBUTES_SET: an admin set a user's attributes (a new certificate; old and new).
- ATTRIBUTES_REFUSED: a certificate carrying attributes issued by someone never an admin
  arrived from another node; the batch was refused.
- CHANNEL_POLICY_SET: a channel admin set the attributes a channel requires (none: cleared).
- MEMBER_REMOVED: a channel admin (or workspace admin) removed a member from a channel.
- CHANNEL_ADMIN_GRANTED, CHANNEL_ADMIN_REVOKED: a user was made a channel admin of a channel,
  or stopped being one (still a member).
- CHANNEL_RENAMED, CHANNEL_PURPOSE_SET: a channel's name or purpose was set (old and new).
- CHANNEL_ARCHIVED, CHANNEL_UNARCHIVED: a channel was archived (nobody posts) or brought back.
- CHANNEL_READ_ONLY_SET: a channel was made read-only (announcements: only channel admins post
  or reply; everyone still reacts) or writable again (detail "read_only": true or false).
- HEAD_CHANGE_REFUSED: a change to a channel's head (members, roles, name, purpose, archived,
  read-only) arrived from another node by someone who may not make it; the batch was refused.
- POSTS_WITHHELD: posts from another node by users who are not channel admins arrived in a
  channel that is read-only or archived: kept in the document, not shown (one entry per import
  and channel, with their ids and authors).
- DIRECT_STARTED: the acting user started a direct conversation (its participants).
- MESSAGE_DELETED: an admin deleted another user's message (deleting one's own is not audited).
- SETTING_CHANGED: a node setting changed (the attachment size limit).
- NETWORK_RULE: an admin allowed, denied or removed a network in the LAN allowlist.
- BUNDLE_EXPORTED: bundles were written for a peer (or a broadcast): for whom, how many,
  their size, the changes and the audit trail entries they carry.
- AUDIT_EXPORTED: an admin exported audit trails (`rallypoint audit export`): whose, how many
  entries, from when.
- COMPLIANCE_EXPORTED: an admin (or the schedule an admin set) wrote a compliance export: its
  format, filters, records, file name, size and SHA-256, and the recipient it was encrypted to.
- COMPLIANCE_EXPORT_FAILED: a compliance export could not be written (full, read-only or
  vanished folder); nothing that looks whole was left.
- COMPLIANCE_SCHEDULE_SET: an admin set or cleared the scheduled compliance export's policy.
- BUNDLE_ACCEPTED, BUNDLE_DUPLICATE: a courier bundle was imported; it brought something new,
  or nothing this node lacked.
- BUNDLE_REJECTED: a bundle was refused (also when an audit trail it carries has a gap, a broken
  link or a forged entry: nothing of the bundle is stored) (tampered, truncated, from a revoked or unknown node,
  ...), with what happened to its quarantined copy; a bundle presented again is not audited
  again.
- LAN_ACCEPTED, LAN_DUPLICATE: changes received in a LAN session were imported; new, or
  nothing this node lacked.
- LAN_REFUSED: a LAN connection was refused before anything was parsed (unknown, revoked or
  filtered peer, a bad handshake), at a bounded rate.
- LAN_REFUSALS_SUMMARISED: refusals beyond that rate, counted in one entry.
- IDENTITY_CONFLICT: two machines presented one node identity; the key is refused from then on.
- IDENTITY_CONFLICT_REPORTED: a peer reported such a conflict about this node.
- WIPED: this node's revocation arrived and it erased what it held.
- BACKUP: an admin took a backup of the running node.
- RESTORED: a backup was restored into an empty home (detail `as_at`: as the node was at that time; `read_only`: an inspection copy).
- RECOVERY_KIT_MADE: a recovery kit of this node was written (its node key, sealed under a code);
  on an admin's node, with `at_enrollment`, the kit of a node it invited (`node`, `name`).
- PEER_RECOVERED: another node came back from the recovery kit made at its enrollment: it
  presented the incarnation its certificate commits to, and is known by that one from now on.
- NODE_REPLACED: an admin replaced a node whose hardware was taken: revoked it, certified a new
  node key in its place and its users anew with that home, and wrote the new identity's kit.
- RECOVERED: this node was rebuilt on new hardware from a recovery kit, with an empty store.
- TRAIL_SUPERSEDED: another node's audit trail held here gave way, from an entry on, to a
  branch of it with a later restore (that node was restored from a backup); the entries it
  replaced are kept apart.
- BACKUP_CHECKED: a backup run's check (opens, integrity, identity, audit chain): passed or why not.
- BACKUP_PRUNED: a backup of this node was deleted by the retention policy.
- BACKUP_SCHEDULE_SET: an admin set (or cleared) the scheduled backup's folder and retention.
- TERMS_PUBLISHED: an admin published a version of the terms of service (and accepted it).
- TERMS_ACCEPTED: a user accepted the current terms of service on this node.
- SIGNED_IN: a local user signed in with their own secret (and code); the node's own user
  signing in with the passphrase as the node opens is not audited, as unlocking is not.
- SIGN_IN_FAILED: a sign-in was refused (unknown user, wrong secret, wrong or replayed code,
  a key from before per-user sign-in, or while locked out).
- SIGN_IN_LOCKED_OUT: a user's failed sign-ins reached the point where they wait before the next.
- SECRET_CHANGED: a user set their own secret (or their key moved under it on upgrade).
- SECRET_RESET: an admin gave a user a one-time secret (re-keying them when their key was
  sealed under a secret nobody knows any more).
- MFA_ENROLLED, MFA_RESET: a user enrolled an authenticator app; an admin removed a user's.
- RECOVERY_CODE_USED: a sign-in used one of the user's one-time recovery codes.
- MFA_REQUIRED_SET, MFA_WINDOW_SET: an admin changed who must use MFA, or the accepted clock skew.
- CONSOLE_LOCK_SET: an admin changed the console's idle lock time.
- DATA_KEY_EXPORTED: an admin wrote this node's data key to a root-only file, so an unattended
  relay opens without the passphrase (`rallypoint data-key --out FILE`).
- STORE_ENCRYPTED: a store from before encryption at rest was encrypted in place at this unlock.
"""

from __future__ import annotations

import enum


class AuditAction(enum.StrEnum):
    INIT = "init"
    UNLOCK_FAILED = "unlock_failed"
    PERMISSION_DENIED = "permission_denied"
    JOINED = "joined"
    INVITED = "invited"
    USER_ADDED = "user_added"
    ROLE_CHANGED = "role_changed"
    REVOKED = "revoked"
    CHANNEL_CREATED = "channel_created"
    MEMBER_ADDED = "member_added"
    MESSAGE_DELETED = "message_deleted"
    MEMBER_REMOVED = "member_removed"
    CHANNEL_ADMIN_GRANTED = "channel_admin_granted"
    CHANNEL_ADMIN_REVOKED = "channel_admin_revoked"
    CHANNEL_RENAMED = "channel_renamed"
    CHANNEL_PURPOSE_SET = "channel_purpose_set"
    CHANNEL_ARCHIVED = "channel_archived"
    CHANNEL_UNARCHIVED = "channel_unarchived"
    CHANNEL_READ_ONLY_SET = "channel_read_only_set"
    HEAD_CHANGE_REFUSED = "head_change_refused"
    POSTS_WITHHELD = "posts_withheld"
    DIRECT_STARTED = "direct_started"
    ATTRIBUTES_SET = "attributes_set"
    CHANNEL_POLICY_SET = "channel_policy_set"
    ATTRIBUTES_REFUSED = "attributes_refused"
    SETTING_CHANGED = "setting_changed"
    NETWORK_RULE = "network_rule"
    BUNDLE_EXPORTED = "bundle_exported"
    AUDIT_EXPORTED = "audit_exported"
    COMPLIANCE_EXPORTED = "compliance_exported"
    COMPLIANCE_EXPORT_FAILED = "compliance_export_failed"
    COMPLIANCE_SCHEDULE_SET = "compliance_schedule_set"
    BUNDLE_ACCEPTED = "bundle_accepted"
    BUNDLE_DUPLICATE = "bundle_duplicate"
    BUNDLE_REJECTED = "bundle_rejected"
    LAN_ACCEPTED = "lan_accepted"
    LAN_DUPLICATE = "lan_duplicate"
    LAN_REFUSED = "lan_refused"
    LAN_REFUSALS_SUMMARISED = "lan_refusals_summarised"
    IDENTITY_CONFLICT = "identity_conflict"
    IDENTITY_CONFLICT_REPORTED = "identity_conflict_reported"
    WIPED = "wiped"
    BACKUP = "backup"
    RESTORED = "restored"
    TRAIL_SUPERSEDED = "audit_trail_superseded"
    BACKUP_CHECKED = "backup_checked"
    BACKUP_PRUNED = "backup_pruned"
    BACKUP_SCHEDULE_SET = "backup_schedule_set"
    RECOVERY_KIT_MADE = "recovery_kit_made"
    RECOVERED = "recovered"
    PEER_RECOVERED = "peer_recovered"
    NODE_REPLACED = "node_replaced"
    TERMS_PUBLISHED = "terms_published"
    TERMS_ACCEPTED = "terms_accepted"
    SIGNED_IN = "signed_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_LOCKED_OUT = "sign_in_locked_out"
    SECRET_CHANGED = "secret_changed"
    SECRET_RESET = "secret_reset"
    MFA_ENROLLED = "mfa_enrolled"
    MFA_RESET = "mfa_reset"
    RECOVERY_CODE_USED = "recovery_code_used"
    MFA_REQUIRED_SET = "mfa_required_set"
    MFA_WINDOW_SET = "mfa_window_set"
    CONSOLE_LOCK_SET = "console_lock_set"
    DATA_KEY_EXPORTED = "data_key_exported"
    STORE_ENCRYPTED = "store_encrypted"
