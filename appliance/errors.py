"""The one exception tree of Rallypoint, and the distinct outcomes callers act on.

Every error raised on purpose is a `RallypointError`; its message is one line meant for the
user. Each package declares its own sub-root in its `errors.py`; an error a module of the
package keeps beside the code that raises it says so in brackets. Third-party exceptions are
translated at the boundary (`raise X(...) from exc`).

    RallypointError
    ├── ApplianceError                     this file: the node, its store and its values
    │   ├── NotInitialised
    │   ├── AlreadyInitialised
    │   ├── WrongPassphrase
    │   │   └── WrongKey
    │   ├── SignInRefused
    │   │   ├── SignInLockedOut
    │   │   └── MfaCodeRequired
    │   ├── NotSignedIn
    │   ├── EnrollmentRejected
    │   ├── KitRejected                    (appliance.recovery_kit)
    │   ├── PermissionDenied
    │   │   └── TermsNotAccepted
    │   ├── NotFound
    │   ├── InvalidInput
    │   │   ├── BlobTooLarge
    │   │   ├── CborTooLarge               (appliance.cbor)
    │   │   ├── NotARegularFile            (appliance.files)
    │   │   ├── FileTooLarge               (appliance.files)
    │   │   ├── AmbiguousChannel           (appliance.services.heads)
    │   │   └── SealedExportError          (appliance.export_sealing)
    │   ├── ChangeRejected
    │   │   ├── AttributesRefused
    │   │   ├── HeadChangeRefused
    │   │   ├── MissingDependencies
    │   │   └── AuditFeedRefused
    │   ├── MalformedChange                (appliance.changes)
    │   ├── DocumentError                  (appliance.documents)
    │   ├── NodeLocked
    │   ├── CertificateInvalid
    │   │   └── TermsInvalid               (appliance.terms)
    │   ├── StorageError
    │   │   ├── BackupCheckFailed
    │   │   └── KeyFileInvalid
    │   └── IdentityConflict
    ├── SyncError                          sync/errors.py draws its tree
    └── TuiError                           tui/errors.py: the console and the CLI
"""


class RallypointError(Exception):
    """Root of every error Rallypoint raises on purpose; its message is shown to the user."""


class ApplianceError(RallypointError):
    """Root of every error the appliance package (the node) raises on purpose."""


class NotInitialised(ApplianceError):
    """The home directory holds no node yet."""


class AlreadyInitialised(ApplianceError):
    """`init` or `join` on a home that already holds a node."""


class WrongPassphrase(ApplianceError):
    """The passphrase does not open the sealed keys."""


class SignInRefused(ApplianceError):
    """A sign-in with a wrong secret or code (or as nobody this node holds a key for)."""


class SignInLockedOut(SignInRefused):
    """Too many failed sign-ins in a row for this user: refused without a try until a time."""


class MfaCodeRequired(SignInRefused):
    """The secret was right; this user also signs in with a code from their authenticator app."""


class NotSignedIn(ApplianceError):
    """Nobody is signed in (or they still have a step to take): nothing can be signed."""


class EnrollmentRejected(ApplianceError):
    """An enrollment file that is damaged, for another workspace, or opened with a wrong code."""


class PermissionDenied(ApplianceError):
    """The acting user's certificate or channel role does not allow the action."""


class TermsNotAccepted(PermissionDenied):
    """The acting user has not accepted the current terms of service: nothing is read or written
    for them until they do (`rallypoint terms show`, `rallypoint terms accept`)."""


class NotFound(ApplianceError):
    """A channel, message, user or blob that this node does not have."""


class InvalidInput(ApplianceError):
    """A name, text or file the node refuses before touching anything."""


class BlobTooLarge(InvalidInput):
    """An attachment over the configured size limit."""


class ChangeRejected(ApplianceError):
    """A batch of changes that failed verification; nothing of it was applied."""


class HeadChangeRefused(ChangeRejected):
    """A change to a channel's head (members, roles, name, purpose, archived, read-only) by
    someone who may not make it, from elsewhere: the whole batch is refused and audited."""

    def __init__(self, message: str, *, channel_id: str, channel: str, author: str) -> None:
        super().__init__(message)
        self.channel_id = channel_id
        self.channel = channel
        self.author = author


class AttributesRefused(ChangeRejected):
    """A certificate carrying attributes whose issuer is not an admin, from elsewhere: the
    whole batch is refused and audited."""

    def __init__(self, message: str, *, subject: str, issuer: str) -> None:
        super().__init__(message)
        self.subject = subject
        self.issuer = issuer


class MissingDependencies(ChangeRejected):
    """A batch that builds on changes this node does not have yet (an earlier bundle is missing)."""


class AuditFeedRefused(ChangeRejected):
    """Another node's audit trail that arrived with a gap, a broken link or a signature that does
    not verify, or from a node the directory never certified; nothing of the batch was stored."""


class NodeLocked(ApplianceError):
    """This node's own revocation arrived: it locked itself and wiped its data key."""


class CertificateInvalid(ApplianceError):
    """A certificate or revocation that is malformed or whose signature does not verify."""


class StorageError(ApplianceError):
    """The database refused a write (full disk, read-only medium, locked); nothing was half-written."""


class BackupCheckFailed(StorageError):
    """A fresh backup failed its check (integrity, identity, audit chain): it was not kept."""


class WrongKey(WrongPassphrase):
    """The data key given (a relay's key file) does not open this node's store; nothing changed."""


class KeyFileInvalid(StorageError):
    """A node's key file (or a relay's data key file) is damaged, of an unknown format, or open
    to other users."""


class IdentityConflict(ApplianceError):
    """Two machines present one node identity (an enrollment file used twice, a copied disk):
    that node is refused until an admin revokes it and it is re-enrolled."""
