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
- MESSAGE_DELETED: an admin deleted another user's message (deleting one's own is not audited).
- SETTING_CHANGED: a node setting changed (the attachment size limit).
- NETWORK_RULE: an admin allowed, denied or removed a network in the LAN allowlist.
- BUNDLE_ACCEPTED, BUNDLE_DUPLICATE: a courier bundle was imported; it brought something new,
  or nothing this node lacked.
- BUNDLE_REJECTED: a bundle was refused (tampered, truncated, from a revoked or unknown node,
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
- RESTORED: a backup was restored into an empty home.
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
    SETTING_CHANGED = "setting_changed"
    NETWORK_RULE = "network_rule"
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
