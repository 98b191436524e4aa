"""The one root exception of the node, and the distinct outcomes callers act on."""


class RallypointError(Exception):
    """Root of every error the node raises on purpose; its message is shown to the user."""


class NotInitialised(RallypointError):
    """The home directory holds no node yet."""


class AlreadyInitialised(RallypointError):
    """`init` or `join` on a home that already holds a node."""


class WrongPassphrase(RallypointError):
    """The passphrase does not open the sealed keys."""


class EnrollmentRejected(RallypointError):
    """An enrollment file that is damaged, for another workspace, or opened with a wrong code."""


class PermissionDenied(RallypointError):
    """The acting user's certificate or channel role does not allow the action."""


class NotFound(RallypointError):
    """A channel, message, user or blob that this node does not have."""


class InvalidInput(RallypointError):
    """A name, text or file the node refuses before touching anything."""


class BlobTooLarge(InvalidInput):
    """An attachment over the configured size limit."""


class ChangeRejected(RallypointError):
    """A batch of changes that failed verification; nothing of it was applied."""


class MissingDependencies(ChangeRejected):
    """A batch that builds on changes this node does not have yet (an earlier bundle is missing)."""


class NodeLocked(RallypointError):
    """This node's own revocation arrived: it locked itself and wiped its data key."""


class CertificateInvalid(RallypointError):
    """A certificate or revocation that is malformed or whose signature does not verify."""


class AuditChainBroken(RallypointError):
    """The audit log's hash chain does not verify."""


class StorageError(RallypointError):
    """The database refused a write (full disk, read-only medium, locked); nothing was half-written."""


class IdentityConflict(RallypointError):
    """Two machines present one node identity (an enrollment file used twice, a copied disk):
    that node is refused until an admin revokes it and it is re-enrolled."""
