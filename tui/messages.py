"""The messages the console's workers (and the LAN service) post back to its screens, each
declared once. A worker never touches a widget: it posts one of these, and the screen that
started it updates itself from it. Every refusal comes back as the one `Failed`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from textual.message import Message

from appliance.audit import AuditVerdict
from appliance.model import ChannelMember, ChannelSummary, Enrollment, Identity, MessageView, NodeInfo, NodeTrail, PeerStatus, TermsInfo, TermsStanding, UserInfo
from appliance.netpolicy import NetworkRule
from appliance.node import Node
from appliance.retention import BackupHealth
from appliance.services.signed_in import SignInResult
from sync.lan import LanEvent, SessionInfo
from sync.sneakernet import Progress
from tui.history import Window

if TYPE_CHECKING:  # the dialog module posts FileChecked: imported for the annotation only
    from tui.dialogs.attach import LocalFile

Destination = Literal["peers", "admin", "courier"]


@dataclass(frozen=True)
class Draft:
    """A message that could not be posted, given back to the composer."""

    text: str
    files: tuple[LocalFile, ...] = ()


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: int
    action: str
    actor: str  # a name where the directory knows the key
    detail: str  # one line of JSON

    def matches(self, needle: str) -> bool:
        folded = needle.casefold()
        return any(folded in value.casefold() for value in (self.action, self.actor, self.detail))


@dataclass(frozen=True)
class Invitation:
    node_name: str
    user_name: str
    role: str
    path: Path
    kit_path: Path | None = None  # the node's recovery kit (None: the default place in the admin's home)


class Failed(Message, bubble=False):
    """A worker's call was refused: the node's RallypointError, sync's SyncError, or a file that
    could not be read or written. `draft` is a message to give back to the composer; `reload`
    says the node may have recorded the refusal (its audit log), so what shows it is reloaded."""

    def __init__(self, reason: str, *, draft: Draft | None = None, reload: bool = False) -> None:
        super().__init__()
        self.reason = reason
        self.draft = draft
        self.reload = reload


# --- the console: unlocking, the main screen, peers ---------------------------------


class NodeUnlocked(Message):
    """A node was created, joined or opened; the app owns it from here on."""

    def __init__(self, node: Node, identity: Identity) -> None:
        super().__init__()
        self.node = node
        self.identity = identity


class SignedIn(Message):
    """A user signed in on the unlocked node and has no step left: the channels may show."""


class SignInAnswered(Message, bubble=False):
    """The node's answer to a sign-in or secret change: what the user must still do."""

    def __init__(self, result: SignInResult) -> None:
        super().__init__()
        self.result = result


class CodeNeeded(Message, bubble=False):
    """The secret was right; the user's authenticator code is asked for next."""


class MfaEnrolled(Message, bubble=False):
    """An MFA enrolment was confirmed: the recovery codes to show once."""

    def __init__(self, codes: list[str], result: SignInResult) -> None:
        super().__init__()
        self.codes = codes
        self.result = result


class StoreChanged(Message, bubble=False):
    """The node stored changes (a local write, a LAN import, another process's write)."""


class LanNotice(Message, bubble=False):
    def __init__(self, event: LanEvent) -> None:
        super().__init__()
        self.event = event


class ViewLoaded(Message, bubble=False):
    def __init__(
        self,
        generation: int,
        identity: Identity,
        channels: list[ChannelSummary],
        channel_id: str | None,
        thread_root: str | None,
        messages: list[MessageView],
        window: Window,
        more_older: bool,
        beside: list[MessageView] | None = None,
        before_first_sync: bool = False,
    ) -> None:
        super().__init__()
        self.generation = generation
        self.identity = identity  # the role can change while the console runs
        self.channels = channels
        self.channel_id = channel_id
        self.thread_root = thread_root
        self.messages = messages
        self.window = window  # which stretch of the history `messages` is
        self.more_older = more_older
        self.beside = beside  # the open thread, shown beside the channel on a wide terminal
        self.before_first_sync = before_first_sync  # a joined node that has no channels yet


class OldestFound(Message, bubble=False):
    """Home: the window that begins with the first message of this channel (or thread),
    found from the window `start`."""

    def __init__(self, channel_id: str, thread_root: str | None, start: Window, window: Window, first: str | None) -> None:
        super().__init__()
        self.channel_id = channel_id
        self.thread_root = thread_root
        self.start = start
        self.window = window
        self.first = first


class Written(Message, bubble=False):
    """A write succeeded; `select` is the message to highlight afterwards, if any."""

    def __init__(self, select: str | None = None) -> None:
        super().__init__()
        self.select = select


class ChannelCreated(Message, bubble=False):
    def __init__(self, channel: ChannelSummary) -> None:
        super().__init__()
        self.channel = channel


class SettingsLoaded(Message, bubble=False):
    """A channel's members, read for its settings dialog; `manages`: the acting user may change it."""

    def __init__(self, channel: ChannelSummary, members: list[ChannelMember], manages: bool) -> None:
        super().__init__()
        self.channel = channel
        self.members = members
        self.manages = manages


class ChannelEdited(Message, bubble=False):
    """A channel admin's change went through: what to tell the operator, which channel to show."""

    def __init__(self, done: str, channel_id: str) -> None:
        super().__init__()
        self.done = done
        self.channel_id = channel_id


class SearchResults(Message, bubble=False):
    def __init__(self, query: str, found: list[MessageView]) -> None:
        super().__init__()
        self.query = query
        self.found = found


class Navigate(Message):
    """A screen asks the app for another screen; the app hands that one the services it uses."""

    def __init__(self, destination: Destination) -> None:
        super().__init__()
        self.destination = destination


class PeersLoaded(Message, bubble=False):
    def __init__(self, rows: list[PeerStatus], sessions: dict[str, SessionInfo], lan_on: bool, backups: BackupHealth | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.sessions = sessions
        self.lan_on = lan_on
        self.backups = backups  # None: the backups' health could not be read


# --- attaching files -------------------------------------------------------------------


class FileChecked(Message, bubble=False):
    def __init__(self, path: Path, file: LocalFile | None, problem: str, chosen: bool) -> None:
        super().__init__()
        self.path = path
        self.file = file
        self.problem = problem  # "" when there is nothing to say yet
        self.chosen = chosen  # Enter asked for it: attach it if it passes


# --- the courier screen ----------------------------------------------------------------


class ProgressChanged(Message, bubble=False):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


class JobDone(Message, bubble=False):
    """A courier run finished; its report is plain text (tui/reports.py)."""

    def __init__(self, report: str) -> None:
        super().__init__()
        self.report = report


class NodesLoaded(Message, bubble=False):
    """The nodes a courier run can export for."""

    def __init__(self, peers: list[NodeInfo]) -> None:
        super().__init__()
        self.peers = peers


class QuarantineLoaded(Message, bubble=False):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


# --- the admin screen ------------------------------------------------------------------


class AdminLoaded(Message, bubble=False):
    def __init__(
        self, identity: Identity, users: list[UserInfo], nodes: list[NodeInfo], rules: list[NetworkRule], audit: list[AuditRow], verdict: AuditVerdict
    ) -> None:
        super().__init__()
        self.identity = identity  # the acting user's role can change while the screen is open
        self.users = users
        self.nodes = nodes
        self.rules = rules
        self.audit = audit
        self.verdict = verdict


class WorkspaceAuditLoaded(Message, bubble=False):
    def __init__(self, trails: list[NodeTrail]) -> None:
        super().__init__()
        self.trails = trails  # every node's trail held here, verified


class ActionDone(Message, bubble=False):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Enrolled(Message, bubble=False):
    def __init__(self, enrollment: Enrollment, request: Invitation) -> None:
        super().__init__()
        self.enrollment = enrollment
        self.request = request


class DirectoryChanged(Message, bubble=False):
    """Users, nodes or revocations changed (here, or arriving from another node)."""


# --- terms of service ------------------------------------------------------------------


class TermsAccepted(Message, bubble=False):
    """The acting user's acceptance of the shown terms is recorded."""

    def __init__(self, standing: TermsStanding) -> None:
        super().__init__()
        self.standing = standing


class TermsLoaded(Message, bubble=False):
    """The admin's view of the terms: the current version and where each user stands."""

    def __init__(self, current: TermsInfo | None, standings: list[TermsStanding]) -> None:
        super().__init__()
        self.current = current
        self.standings = standings


class TermsPending(Message):
    """The directory changed and the acting user now has terms to accept (a new version)."""

