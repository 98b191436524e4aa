"""The Rallypoint console: a Textual front end that only orchestrates the node.

Every node call runs in a worker and its outcome comes back to the UI as a Message, so the
event loop never waits on the store. Text that can come from the network (messages, names,
purposes, file names, error messages quoting them) is shown through `printable()` inside
`Content` objects: never parsed as markup, control characters made visible."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.events import Resize
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.suggester import Suggester
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, OptionList, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from appliance import identity
from appliance.errors import RallypointError, WrongPassphrase
from appliance.feed import FeedEvent, NodeWiped
from appliance.files import read_regular_file
from appliance.model import ChannelSummary, Identity, MessageView, PeerStatus
from appliance.node import MAX_ENROLLMENT_FILE_BYTES, Node
from sync.errors import SyncError
from sync.interfaces import interface_networks
from sync.lan import LanConfig, LanEvent, LanService, Received, RefusalsSummarised, Refused, SessionInfo, Wiped
from tui.admin import AdminScreen
from tui.attach import AttachScreen, LocalFile, read_file
from tui.controls import FormCheckbox, StoppingOptionList
from tui.courier import CourierScreen
from tui import firstsync
from tui.files import free_path, safe_file_name, write_atomically
from tui.history import PAGE, PagedOptionList, Window, oldest_window
from tui.reports import node_label
from tui.text import file_size, printable

POLL_SECONDS = 0.5  # how soon a message written by another process (the CLI, sync) shows up
WIDE_COLUMNS = 110  # from this width an open thread shows beside its channel
SEARCH_LIMIT = 50
PEERS_REFRESH_SECONDS = 2.0  # the peers view also changes without LAN events (courier visits, clocks)

def clock_time(ms: int) -> str:
    """Local HH:MM, with the date in front when it is not today."""
    moment = datetime.fromtimestamp(ms / 1000)
    return moment.strftime("%H:%M") if moment.date() == datetime.now().date() else moment.strftime("%Y-%m-%d %H:%M")


# --- messages from workers back to the UI -------------------------------------------


class NodeUnlocked(Message):
    """A node was created, joined or opened; the app owns it from here on."""

    def __init__(self, node: Node, identity: Identity) -> None:
        super().__init__()
        self.node = node
        self.identity = identity


class StoreChanged(Message, bubble=False):
    """The node stored changes (a local write, a LAN import, another process's write)."""


class LanNotice(Message, bubble=False):
    def __init__(self, event: LanEvent) -> None:
        super().__init__()
        self.event = event


class Failed(Message, bubble=False):
    """A node call refused with a RallypointError (or a file that could not be read)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


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


class PostFailed(Message, bubble=False):
    def __init__(self, reason: str, draft: str, files: tuple[LocalFile, ...] = ()) -> None:
        super().__init__()
        self.reason = reason
        self.draft = draft
        self.files = files


class ChannelCreated(Message, bubble=False):
    def __init__(self, channel: ChannelSummary) -> None:
        super().__init__()
        self.channel = channel


# --- first run and unlock -----------------------------------------------------------


class SetupScreen(Screen[None]):
    """First run: create a new workspace, or join one with an enrollment file and its code.
    Each form says how to reach the other (ctrl+t, also in the footer): typing starts in the
    Create form, and nothing else would tell an operator with a node to join that the tabs
    are a shift+tab away."""

    AUTO_FOCUS = "#create-workspace"  # type straight away
    BINDINGS = [
        Binding("ctrl+t", "show_form('join')", "Join a workspace instead"),
        Binding("ctrl+t", "show_form('create')", "Create a workspace instead"),
    ]

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="setup"):
            yield Static(Content(f"No node in {printable(str(self.home))} yet."), id="setup-intro")
            with TabbedContent(id="setup-tabs"):
                with TabPane("Create a workspace", id="create"):
                    yield Static("Joining a workspace someone else created? Press ctrl+t.", classes="form-hint")
                    with Grid(classes="form"):
                        yield Label("Workspace name")
                        yield Input(id="create-workspace", placeholder="no spaces, e.g. acme")
                        yield Label("Your user name")
                        yield Input(id="create-user", placeholder="e.g. alice")
                        yield Label("Node name")
                        yield Input(platform.node().split(".")[0] or "node", id="create-node")
                        yield Label("Passphrase")
                        yield Input(id="create-passphrase", password=True, placeholder="at least 8 characters")
                        yield Label("Confirm passphrase")
                        yield Input(id="create-confirm", password=True)
                    yield Button("Create workspace", id="create-submit", variant="primary")
                with TabPane("Join a workspace", id="join"):
                    yield Static("Starting a new workspace instead? Press ctrl+t.", classes="form-hint")
                    with Grid(classes="form"):
                        yield Label("Enrollment file")
                        yield Input(id="join-file", placeholder="path to the .enrollment file")
                        yield Label("One-time code")
                        yield Input(id="join-code", placeholder="XXXX-XXXX-XXXX")
                        yield Label("Passphrase")
                        yield Input(id="join-passphrase", password=True, placeholder="at least 8 characters")
                        yield Label("Confirm passphrase")
                        yield Input(id="join-confirm", password=True)
                    yield Button("Join workspace", id="join-submit", variant="primary")
            yield Static(id="setup-status")
        yield Footer(compact=True, show_command_palette=False)

    def field(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_form":
            return self.query_one(TabbedContent).active != parameters[0]  # the other form's key only
        return True

    def action_show_form(self, form: str) -> None:
        self.query_one(TabbedContent).active = form
        self.query_one(f"#{form}", TabPane).query(Input).first().focus()

    @on(TabbedContent.TabActivated)
    def form_shown(self) -> None:
        self.refresh_bindings()

    def show_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#setup-status", Static)
        status.update(Content(printable(text)))
        status.set_class(error, "error")

    @on(Input.Submitted)
    def next_field_or_submit(self, event: Input.Submitted) -> None:
        """Enter moves down the form; on its last field it submits."""
        pane = event.input.query_ancestor(TabPane)
        fields = list(pane.query(Input))
        if event.input is fields[-1]:
            self.submit(pane.id or "")
        else:
            fields[fields.index(event.input) + 1].focus()

    @on(Button.Pressed)
    def button_submit(self, event: Button.Pressed) -> None:
        self.submit(event.button.query_ancestor(TabPane).id or "")

    def submit(self, form: str) -> None:
        """`form` is the tab's id, "create" or "join", which prefixes its fields' ids."""
        if self.busy:
            return
        if self.field(f"{form}-passphrase") != self.field(f"{form}-confirm"):
            self.show_status("The passphrases do not match.", error=True)
            return
        self.busy = True
        if form == "create":
            self.show_status("Creating the workspace…")
            self.create_workspace(self.field("create-workspace"), self.field("create-user"), self.field("create-node"), self.field("create-passphrase"))
        else:
            self.show_status("Joining the workspace…")
            self.join_workspace(self.field("join-file"), self.field("join-code"), self.field("join-passphrase"))

    @work(group="setup")
    async def create_workspace(self, workspace: str, user: str, node_name: str, passphrase: str) -> None:
        try:
            node = await Node.init(self.home, workspace_name=workspace, user_name=user, node_name=node_name, passphrase=passphrase)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.app.post_message(NodeUnlocked(node, node.identity.whoami()))

    @work(group="setup")
    async def join_workspace(self, enrollment_path: str, code: str, passphrase: str) -> None:
        try:
            enrollment = await asyncio.to_thread(read_regular_file, Path(enrollment_path).expanduser(), MAX_ENROLLMENT_FILE_BYTES)
            node = await Node.join(self.home, enrollment, code, passphrase)
        except OSError as exc:
            self.post_message(Failed(f"cannot read the enrollment file: {exc.strerror or exc}"))
            return
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        unconsumed = await asyncio.to_thread(identity.consume_enrollment_file, Path(enrollment_path).expanduser(), node.identity.node_id, node.identity.now())
        if unconsumed is not None:
            self.app.notify(identity.UNCONSUMED_WARNING.format(reason=unconsumed), severity="warning", timeout=30)
        self.app.post_message(NodeUnlocked(node, node.identity.whoami()))

    @on(Failed)
    def setup_failed(self, event: Failed) -> None:
        self.busy = False
        self.show_status(event.reason, error=True)


class UnlockScreen(Screen[None]):
    """Asks for the passphrase; tries the one given on the command line first, if any."""

    def __init__(self, home: Path, as_user: str | None, passphrase: str | None) -> None:
        super().__init__()
        self.home = home
        self.as_user = as_user
        self.given_passphrase = passphrase

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="unlock"):
            yield Static(Content(f"Unlock the node in {printable(str(self.home))}"), id="unlock-prompt")
            yield Input(id="unlock-passphrase", password=True, placeholder="passphrase")
            yield Static(id="unlock-status")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if self.given_passphrase is not None:
            self.attempt(self.given_passphrase)

    @on(Input.Submitted, "#unlock-passphrase")
    def submit(self, event: Input.Submitted) -> None:
        self.attempt(event.value)

    def attempt(self, passphrase: str) -> None:
        field = self.query_one("#unlock-passphrase", Input)
        field.disabled = True  # one attempt at a time: each costs a key derivation
        self.show_status("Unlocking…")
        self.unlock(passphrase)

    def show_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#unlock-status", Static)
        status.update(Content(printable(text)))
        status.set_class(error, "error")

    @work(group="unlock")
    async def unlock(self, passphrase: str) -> None:
        try:
            node = await Node.open(self.home, passphrase, as_user=self.as_user)
        except WrongPassphrase:
            self.post_message(Failed("wrong passphrase — try again"))
            return
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.app.post_message(NodeUnlocked(node, node.identity.whoami()))

    @on(Failed)
    def unlock_failed(self, event: Failed) -> None:
        field = self.query_one("#unlock-passphrase", Input)
        field.disabled = False
        field.clear()
        field.focus()
        self.show_status(event.reason, error=True)


# --- small dialogs ------------------------------------------------------------------


@dataclass(frozen=True)
class NewChannel:
    name: str
    private: bool


class NewChannelScreen(ModalScreen[NewChannel | None]):
    """Enter creates the channel from anywhere in the form (Space ticks the checkbox)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "create", "Create", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("New channel", classes="dialog-title")
            yield Input(id="channel-name", placeholder="name: lowercase, digits, - and _")
            yield FormCheckbox("Private (members only)", id="channel-private")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create", id="channel-create", variant="primary")
                yield Button("Cancel", id="channel-cancel")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted)
    @on(Button.Pressed, "#channel-create")
    def action_create(self) -> None:
        self.dismiss(NewChannel(self.query_one("#channel-name", Input).value, self.query_one("#channel-private", FormCheckbox).value))

    @on(Button.Pressed, "#channel-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """One line of input (a reaction, an edited message); Enter saves, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str) -> None:
        super().__init__()
        self.title_text = title
        self.initial_value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Input(self.initial_value, id="prompt-value")
            yield Static("Enter saves · Escape cancels", classes="dialog-hint")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted)
    def save(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


REACTIONS = (("👍", "thumbs up"), ("❤️", "heart"), ("😄", "smile"), ("🎉", "party"), ("👀", "looking"), ("✅", "done"), ("❌", "no"), ("🙏", "thanks"))


class EmojiPicker(ModalScreen[str | None]):
    """Pick a reaction: arrows and Enter over the common ones, or type any other and Enter.
    Reactions the user already gave are marked (picking one again removes it)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, mine: Iterable[str]) -> None:
        super().__init__()
        self.mine = frozenset(mine)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="emoji-picker"):
            yield Static("React (again to remove)", classes="dialog-title")
            yield StoppingOptionList(
                *(Option(Content(f"{emoji}  {name}" + ("  (yours)" if emoji in self.mine else "")), id=emoji) for emoji, name in REACTIONS),
                id="emoji-choices",
            )
            yield Input(id="emoji-other", placeholder="or type any emoji, then Enter")
            yield Static("↑↓ Enter picks · Tab: type another · Escape cancels", classes="dialog-hint")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#emoji-choices", OptionList).focus()

    @on(OptionList.OptionSelected, "#emoji-choices")
    def picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Input.Submitted, "#emoji-other")
    def typed(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class MentionSuggester(Suggester):
    """Completes an @mention being typed at the end of the composer with a user's name."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.names = names

    async def get_suggestion(self, value: str) -> str | None:
        head, _, last = value.rpartition(" ")
        if not last.startswith("@") or len(last) < 2:
            return None
        typed = last[1:].lower()
        match = next((name for name in sorted(self.names()) if name.lower().startswith(typed) and name.lower() != typed), None)
        return None if match is None else f"{head}{' ' if head else ''}@{match}"


class SearchResults(Message, bubble=False):
    def __init__(self, query: str, found: list[MessageView]) -> None:
        super().__init__()
        self.query = query
        self.found = found


class SearchScreen(ModalScreen[MessageView | None]):
    """Full-text search across every channel this user can read; Enter on a result opens it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("down", "focus_results", "Results", show=False)]

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.found: list[MessageView] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="search"):
            yield Static("Search all channels", classes="dialog-title")
            yield Input(id="search-query", placeholder="words, then Enter")
            yield Static(id="search-status", classes="dialog-hint")
            yield StoppingOptionList(id="search-results")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted, "#search-query")
    def submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.query_one("#search-status", Static).update("searching…")
            self.run_search(event.value.strip())

    @work(group="search", exclusive=True)
    async def run_search(self, query: str) -> None:
        try:
            found = await self.node.views.search(query, limit=SEARCH_LIMIT)
        except RallypointError as exc:
            self.notify(printable(str(exc)), severity="error", markup=False)
            return
        self.post_message(SearchResults(query, found))

    @on(SearchResults)
    def show_results(self, event: SearchResults) -> None:
        self.found = event.found
        results = self.query_one("#search-results", OptionList)
        results.clear_options()
        for index, message in enumerate(event.found):
            where = f"#{printable(message.channel)}" + (" (thread)" if message.root_id else "")
            results.add_option(Option(Content(f"{where} · {printable(message.author)}: {printable(message.text)[:200]}"), id=str(index)))
        more = " (the first ones)" if len(event.found) == SEARCH_LIMIT else ""
        self.query_one("#search-status", Static).update(Content(f"{len(event.found)} message(s) for {printable(event.query)!r}{more} · ↓ to the results, Enter opens"))
        if event.found:
            results.highlighted = 0

    def action_focus_results(self) -> None:
        self.query_one("#search-results", OptionList).focus()

    @on(OptionList.OptionSelected, "#search-results")
    def opened(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.found[int(event.option.id or 0)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class SaveFilesScreen(ModalScreen[Path | None]):
    """Where to save a message's attachments: a folder; Enter saves them all there."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, message: MessageView) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        downloads = Path.home() / "Downloads"
        with Vertical(classes="dialog"):
            yield Static("Save attachments", classes="dialog-title")
            yield Static(Content("\n".join(f"📎 {printable(f.name)} ({file_size(f.size)})" for f in self.message.files)), classes="dialog-detail")
            yield Input(str(downloads if downloads.is_dir() else Path.home()), id="save-folder")
            yield Static("Enter saves into this folder (existing files are kept) · Escape cancels", classes="dialog-hint")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted, "#save-folder")
    def chosen(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(Path(event.value.strip()).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, detail: str) -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-title")
            yield Static(Content(printable(self.detail)), classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="confirm-yes", variant="error")
                yield Button("No (n)", id="confirm-no")
        yield Footer(compact=True, show_command_palette=False)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


# --- the main screen ----------------------------------------------------------------


class ChannelList(StoppingOptionList):
    """Channels with unread and mention counts, right-aligned in whatever width the list has."""

    COMPONENT_CLASSES = {"channel--unread", "channel--count", "channel--mentions", "channel--archived"}

    def __init__(self, id: str) -> None:
        super().__init__(id=id, markup=False)
        self.channels: list[ChannelSummary] = []
        self.current: str | None = None

    def show(self, channels: list[ChannelSummary], current: str | None) -> None:
        self.channels = channels
        self.current = current
        self.rebuild()

    def on_resize(self, event: Resize) -> None:
        self.rebuild()  # labels are truncated and padded to the width

    def rebuild(self) -> None:
        width = self.scrollable_content_region.width
        self.clear_options()
        self.add_options(Option(self.label(channel, width), id=channel.channel_id) for channel in self.channels)
        if self.current is not None and self.channels:
            self.highlighted = self.get_option_index(self.current)

    def label(self, channel: ChannelSummary, width: int) -> Content:
        prefix = "🔒" if channel.kind == "private" else "# "
        name = Content(prefix + printable(channel.name))
        if channel.archived:
            name = name.stylize(self.get_visual_style("channel--archived", partial=True))
        elif channel.unread:
            name = name.stylize(self.get_visual_style("channel--unread", partial=True))
        counts = Content()
        if channel.unread:
            counts = Content.styled(f" {channel.unread}", self.get_visual_style("channel--count", partial=True))
        if channel.mentions:
            counts += Content.styled(f" @{channel.mentions}", self.get_visual_style("channel--mentions", partial=True))
        if width <= counts.cell_length:
            return name + counts
        return name.truncate(width - counts.cell_length, ellipsis=True, pad=True) + counts


class MessageList(PagedOptionList):
    """The channel's (or one thread's) messages; the highlighted one is what actions act on.
    It holds a window of a long history: moving past either end of what it holds, while there
    is more that way, asks its screen for the next page (PastTheEnd)."""

    COMPONENT_CLASSES = {"message--author", "message--time", "message--edited", "message--tombstone", "message--meta", "message--tampered"}
    BINDINGS = [
        Binding("t,enter", "screen.open_thread", "Thread"),
        Binding("r", "screen.react", "React"),
        Binding("e", "screen.edit", "Edit"),
        Binding("d,delete", "screen.delete", "Delete"),
        Binding("c,i", "screen.focus_composer", "Write"),
        Binding("s", "screen.save_files", "Save files", show=False),
    ]

    def __init__(self, id: str) -> None:
        super().__init__(id=id, markup=False)
        self.messages: dict[str, MessageView] = {}  # oldest first

    def selected(self) -> MessageView | None:
        option = self.highlighted_option
        return self.messages.get(option.id) if option is not None and option.id is not None else None

    def show(
        self, messages: list[MessageView], select: str | None, *, step: int = 0, more_older: bool = False, more_newer: bool = False, empty: str = "No messages yet."
    ) -> None:
        """Keeps the highlight on the same message, unless it was on the newest one: then it
        follows new arrivals. `step` moves the highlight that many places from `select`."""
        previous = self.selected()
        following = self.highlighted is None or self.highlighted == self.option_count - 1
        self.messages = {message.id: message for message in messages}
        self.more_older, self.more_newer = more_older, more_newer
        self.clear_options()
        if not messages:
            self.add_option(Option(Content(empty), disabled=True))
            return
        self.add_options(Option(self.render_message(message), id=message.id) for message in messages)
        keep = select or (None if following or previous is None else previous.id)
        if keep in self.messages:
            self.highlighted = max(0, min(self.option_count - 1, self.get_option_index(keep) + step))
        else:
            self.highlighted = self.option_count - 1

    def render_message(self, message: MessageView) -> Content:
        def styled(text: str, component: str) -> Content:
            return Content.styled(text, self.get_visual_style(component, partial=True))

        header = styled(printable(message.author), "message--author") + " " + styled(clock_time(message.created_at), "message--time")
        if message.edited_at is not None and not message.deleted:
            header += styled(" (edited)", "message--edited")
        if message.tampered:
            header += styled(" ⚠ altered by someone other than its author", "message--tampered")
        if message.deleted:
            return Content("\n").join([header, styled("(message deleted)", "message--tombstone")])
        lines = [header, Content(printable(message.text, multiline=True))]
        lines += [styled(f"📎 {printable(f.name)} ({file_size(f.size)})", "message--meta") for f in message.files]
        if message.reactions:
            reactions = "   ".join(f"{printable(emoji)} {', '.join(printable(name) for name in names)}" for emoji, names in message.reactions.items() if names)
            lines.append(styled(reactions, "message--meta"))
        if message.reply_count:
            lines.append(styled(f"↳ {message.reply_count} {'reply' if message.reply_count == 1 else 'replies'}", "message--meta"))
        return Content("\n").join(lines)


class Composer(Input):
    BINDINGS = [
        Binding("up", "screen.focus_messages", "Messages"),
        Binding("ctrl+o", "screen.attach", "Attach"),
        Binding("ctrl+r", "screen.clear_attachments", "Remove files"),
    ]


class MainScreen(Screen[None]):
    """Channel list on the left; the channel and the composer on the right. An open thread takes
    the channel's place at 80 columns, and opens beside it on a terminal WIDE_COLUMNS wide."""

    BINDINGS = [
        Binding("f2", "peers", "Peers", show=False),
        Binding("f3", "admin", "Admin", show=False),
        Binding("f4", "courier", "Courier", show=False),
        Binding("ctrl+f", "search", "Search", show=False),
        Binding("ctrl+n", "new_channel", "New channel"),
        Binding("alt+down,ctrl+down", "cycle_channel(1)", "Channel", key_display="alt+↑↓"),
        Binding("alt+up,ctrl+up", "cycle_channel(-1)", "Previous channel", show=False),
        Binding("escape", "close_thread", "Close"),
    ]

    def __init__(self, node: Node, identity: Identity) -> None:
        super().__init__()
        self.node = node
        self.identity = identity
        self.channel_id: str | None = None
        self.thread_root: str | None = None
        self.generation = 0  # a view load older than the newest request is dropped
        self.select_after_load: str | None = None
        self.step_after_load = 0  # places from select_after_load (the message past a page's end)
        self.newest_after_load = False  # ↑ from the composer: the highlight goes to the newest message
        self.window = Window()  # the stretch of the channel's (or thread's) history the list holds
        self.channel_window = Window()  # the channel's, kept while a thread takes its place
        self.paging = False  # a page is being read: more presses at the end wait for it
        self.before_first_sync = False  # joined, never synced: no channels to show yet
        self.attachments: list[LocalFile] = []  # go with the next message sent
        self.attach_folder = Path.home()  # where the file picker opens: the last file's folder

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield ChannelList(id="channels")
            with Vertical(id="pane"):
                yield Static(id="pane-title")
                yield MessageList(id="messages")
                yield Static(id="attachments")
                yield Composer(id="composer", placeholder="Message", suggester=MentionSuggester(lambda: [u.name for u in self.node.directory.users()]))
            with Vertical(id="beside"):
                yield Static(id="beside-title")
                yield MessageList(id="beside-messages")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.show_identity()
        self.query_one(Composer).focus()
        self.reload()
        self.subscription = self.node.feed.subscribe(self.node_changed)
        self.watch_store()

    def on_unmount(self) -> None:
        self.subscription.close()

    @work(group="poll")
    async def watch_store(self) -> None:
        """Keeps the node's store poller running while this screen shows: what another process
        writes (the CLI, a courier's import) arrives through the change feed."""
        async with self.node.feed.polling(POLL_SECONDS):
            await asyncio.Event().wait()  # until the screen goes and cancels this worker

    def node_changed(self, event: FeedEvent) -> None:
        """Changes stored by anyone (LAN sync and other processes included) reload the view."""
        if isinstance(event, NodeWiped):  # the node's revocation arrived: nothing is left to show
            self.app.exit(result=event.reason)
        else:
            self.post_message(StoreChanged())

    @on(StoreChanged)
    def store_changed(self, _: StoreChanged) -> None:
        """Anything from elsewhere can move unread counts, so any change reloads the view."""
        self.reload()

    # --- loading ---

    def show_identity(self) -> None:
        me = self.identity
        self.title = printable(me.workspace_name)
        self.sub_title = f"{printable(me.user_name)} ({me.role}) on {printable(me.node_name)} {me.node_id}"

    def reload(self, select: str | None = None, step: int = 0) -> None:
        self.generation += 1
        if select is not None:
            self.select_after_load, self.step_after_load = select, step
        self.load_view(self.generation, self.channel_id, self.thread_root, self.window)

    @work(group="load", exclusive=True)
    async def load_view(self, generation: int, channel_id: str | None, thread_root: str | None, window: Window) -> None:
        """A newer load cancels this one; what it asked the node runs to its end all the same
        (reading marks messages read: a write that must not be cut off)."""
        try:
            await asyncio.shield(self.load_from_node(generation, channel_id, thread_root, window))
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))

    async def load_from_node(self, generation: int, channel_id: str | None, thread_root: str | None, window: Window) -> None:
        try:
            identity = self.node.identity.whoami()
            channels = await self.node.views.list_channels()
            if channel_id not in {channel.channel_id for channel in channels}:
                channel_id, thread_root, window = (channels[0].channel_id if channels else None), None, Window()
            beside = None
            if channel_id is not None and thread_root is not None and self.wide():
                beside = await self.node.views.read(channel_id, thread=thread_root, limit=PAGE)
                messages = await self.node.views.read(channel_id, before=window.anchor, limit=window.span + 1)
            else:
                messages = await self.node.views.read(channel_id, thread=thread_root, before=window.anchor, limit=window.span + 1) if channel_id else []
            if channel_id is not None:
                channels = await self.node.views.list_channels()  # unread counts after this read
            before_first_sync = not channels and await firstsync.awaiting_first_sync(self.node)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        more_older = len(messages) > window.span  # one more than the window was asked for
        messages = messages[-window.span :]
        self.post_message(ViewLoaded(generation, identity, channels, channel_id, thread_root, messages, window, more_older, beside, before_first_sync))

    def wide(self) -> bool:
        return self.size.width >= WIDE_COLUMNS

    def on_resize(self, event: Resize) -> None:
        if self.thread_root is not None and (self.beside_shown() != self.wide()):
            self.window = self.channel_window = Window()  # the list changes from channel to thread or back
            self.reload()

    def beside_shown(self) -> bool:
        return self.query_one("#beside").display

    @on(ViewLoaded)
    def view_loaded(self, event: ViewLoaded) -> None:
        if event.generation != self.generation:
            return  # a newer load is on its way
        self.channel_id, self.thread_root, self.window = event.channel_id, event.thread_root, event.window
        self.paging, self.before_first_sync = False, event.before_first_sync
        self.identity = event.identity
        self.show_identity()
        self.refresh_bindings()
        self.query_one(ChannelList).show(event.channels, event.channel_id)
        beside = self.query_one("#beside-messages", MessageList)
        if self.query_one("#beside").display != (event.beside is not None):
            self.query_one("#beside").display = event.beside is not None
        messages = self.query_one("#messages", MessageList)
        more = {"more_older": event.more_older, "more_newer": not event.window.at_newest}
        if event.beside is not None:
            beside.show(event.beside, self.select_after_load)
            messages.show(event.messages, event.thread_root, **more)
        else:
            empty = firstsync.DETAIL if event.before_first_sync else "No messages yet."
            messages.show(event.messages, self.select_after_load, step=self.step_after_load, empty=empty, **more)
        if self.newest_after_load:
            messages.highlighted = messages.option_count - 1
        self.select_after_load, self.step_after_load, self.newest_after_load = None, 0, False
        current = next((channel for channel in event.channels if channel.channel_id == event.channel_id), None)
        title, placeholder = self.titles(current, beside=event.beside is not None)
        self.query_one("#pane-title", Static).update(title)
        self.query_one("#beside-title", Static).update(Content("Thread · escape closes it"))
        self.query_one(Composer).placeholder = placeholder

    def titles(self, channel: ChannelSummary | None, *, beside: bool = False) -> tuple[Content, str]:
        if channel is None and self.before_first_sync:
            return Content(firstsync.TITLE), "Channels arrive with the first sync"
        if channel is None:
            return Content("No channels yet: press ctrl+n to create one."), "Create a channel first (ctrl+n)"
        name = printable(channel.name)
        if self.thread_root is not None and not beside:
            return Content(f"Thread in # {name} · escape closes it"), "Reply in thread"
        if self.thread_root is not None:
            return Content(f"# {name}"), "Reply in thread (beside)"
        purpose = f" — {printable(channel.purpose)}" if channel.purpose else ""
        return Content(f"# {name}{purpose}"), f"Message # {name}"

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.paging = False
        self.notify(printable(event.reason), severity="error", markup=False)

    # --- paging through a long history ---

    @on(MessageList.PastTheEnd, "#messages")
    def past_the_end(self, event: MessageList.PastTheEnd) -> None:
        """The cursor went past the messages the list holds: the page beyond, or the very end."""
        if self.paging or self.channel_id is None:
            return
        self.paging = True
        shown = list(self.query_one("#messages", MessageList).messages)
        if event.towards == "older":
            self.window = self.window.older(shown)
            self.reload(select=shown[0], step=-1)
        elif event.towards == "newer":
            self.window = self.window.newer_window()
            self.reload(select=shown[-1], step=1)
        elif event.towards == "newest":
            self.show_newest()
        else:
            self.find_oldest(self.channel_id, self.thread_root, self.window)

    def show_newest(self) -> None:
        self.window, self.newest_after_load = Window(), True
        self.reload()

    @work(group="history", exclusive=True)
    async def find_oldest(self, channel_id: str, thread_root: str | None, window: Window) -> None:
        async def read_ids(before: str | None, limit: int) -> list[str]:
            return [m.id for m in await self.node.views.read(channel_id, thread=thread_root, before=before, limit=limit, mark_read=False)]

        try:
            oldest, first = await oldest_window(read_ids, window)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(OldestFound(channel_id, thread_root, window, oldest, first))

    @on(OldestFound)
    def oldest_found(self, event: OldestFound) -> None:
        if (event.channel_id, event.thread_root, event.start) != (self.channel_id, self.thread_root, self.window):
            return  # the operator has moved on
        self.window = event.window
        self.reload(select=event.first)

    # --- channels ---

    @on(OptionList.OptionSelected, "#channels")
    def channel_clicked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.show_channel(event.option.id)

    def show_channel(self, channel_id: str) -> None:
        self.channel_id, self.thread_root, self.window = channel_id, None, Window()
        self.reload()

    def action_cycle_channel(self, step: int) -> None:
        ids = [channel.channel_id for channel in self.query_one(ChannelList).channels]
        if ids:
            position = ids.index(self.channel_id) if self.channel_id in ids else 0
            self.show_channel(ids[(position + step) % len(ids)])

    def action_search(self) -> None:
        def open_result(message: MessageView | None) -> None:
            if message is not None:
                self.channel_id, self.thread_root, self.window = message.channel_id, message.root_id, Window()
                self.reload(select=message.id)

        self.app.push_screen(SearchScreen(self.node), open_result)

    def action_courier(self) -> None:
        self.app.push_screen(CourierScreen(self.node))

    def action_admin(self) -> None:
        self.app.push_screen(AdminScreen(self.node))

    def action_peers(self) -> None:
        self.app.push_screen(PeersScreen())

    def action_new_channel(self) -> None:
        if not self.before_first_sync:
            self.app.push_screen(NewChannelScreen(), self.create_channel_from)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.app.push_screen(NewChannelScreen(), self.create_channel_from)

        self.app.push_screen(ConfirmScreen(firstsync.CONFIRM, firstsync.CONFIRM_DETAIL), confirmed)

    def create_channel_from(self, request: NewChannel | None) -> None:
        if request is not None:
            self.create_channel(request)

    @work(group="write")
    async def create_channel(self, request: NewChannel) -> None:
        try:
            channel = await self.node.chat.create_channel(request.name, private=request.private)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(ChannelCreated(channel))

    @on(ChannelCreated)
    def channel_created(self, event: ChannelCreated) -> None:
        self.show_channel(event.channel.channel_id)

    # --- composing ---

    def action_focus_composer(self) -> None:
        self.query_one(Composer).focus()

    def action_focus_messages(self) -> None:
        """↑ from the composer: the newest message, wherever the list was left."""
        messages = self.query_one("#messages", MessageList)
        messages.focus()
        if not self.window.at_newest:
            self.show_newest()
        elif messages.option_count:
            messages.highlighted = messages.option_count - 1

    @on(Input.Submitted, "#composer")
    def compose_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip() and not self.attachments:
            return
        if self.channel_id is None:
            self.notify(firstsync.TITLE if self.before_first_sync else "Create a channel first (ctrl+n).", severity="warning")
            return
        files = tuple(self.attachments)
        event.input.clear()
        self.show_attachments([])
        if not self.window.at_newest:
            self.window = Window()  # to show the message sent
        self.send(self.channel_id, event.value, self.thread_root, files)

    @work(group="write")
    async def send(self, channel_id: str, draft: str, reply_to: str | None, files: tuple[LocalFile, ...]) -> None:
        """Files alone make a message too: their names are its text."""
        text = draft if draft.strip() or not files else " ".join(file.name for file in files)
        try:
            attachments = [await asyncio.to_thread(read_file, file, self.node.blobs.max_blob_bytes) for file in files]
            message_id = await self.node.chat.post(channel_id, text, reply_to=reply_to, attachments=attachments)
        except RallypointError as exc:
            self.post_message(PostFailed(str(exc), draft, files))
            return
        self.post_message(Written(message_id))

    @on(PostFailed)
    def post_failed(self, event: PostFailed) -> None:
        composer = self.query_one(Composer)
        if not composer.value and not self.attachments:
            composer.value = event.draft  # the draft is not lost, nor the files picked
            self.show_attachments(list(event.files))
        self.notify(printable(event.reason), severity="error", markup=False)

    # --- attaching files ---

    def action_attach(self) -> None:
        if self.channel_id is None:
            self.notify(firstsync.TITLE if self.before_first_sync else "Create a channel first (ctrl+n).", severity="warning")
            return

        def attach(file: LocalFile | None) -> None:
            if file is not None:
                self.attach_folder = file.path.parent
                self.show_attachments([*self.attachments, file])
            self.query_one(Composer).focus()

        self.app.push_screen(AttachScreen(self.node.blobs.max_blob_bytes, self.attach_folder), attach)

    def action_clear_attachments(self) -> None:
        self.show_attachments([])

    def show_attachments(self, files: list[LocalFile]) -> None:
        self.attachments = files
        shown = self.query_one("#attachments", Static)
        shown.display = bool(files)
        shown.update(Content("  ".join(file.label() for file in files) + " · ctrl+r removes them"))
        self.refresh_bindings()

    @on(Written)
    def written(self, event: Written) -> None:
        self.reload(select=event.select)

    # --- acting on the highlighted message ---

    def selected_message(self) -> MessageView | None:
        focused = self.focused if isinstance(self.focused, MessageList) else self.query_one("#messages", MessageList)
        message = focused.selected()
        if message is None:
            self.notify("Select a message first.", severity="warning")
        return message

    def action_open_thread(self) -> None:
        message = self.selected_message()
        if message is not None:
            if not self.wide():  # the thread takes the channel's place (and its window) until closed
                self.channel_window, self.window = self.window, Window()
            self.thread_root = message.root_id or message.id
            self.reload(select=message.id)

    def action_close_thread(self) -> None:
        root, self.thread_root = self.thread_root, None
        if not self.beside_shown():
            self.window = self.channel_window
        self.reload(select=root)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "admin":
            return self.identity.role == "admin"  # others do not see it; the node refuses them anyway
        if action == "clear_attachments":
            return bool(self.attachments)
        # Thread and Close swap places in the footer as a thread opens and closes.
        if action == "close_thread":
            return self.thread_root is not None
        if action == "open_thread":
            return self.thread_root is None or self.beside_shown()
        return True

    def action_react(self) -> None:
        message = self.selected_message()
        if message is None:
            return

        def react_with(emoji: str | None) -> None:
            if emoji:
                already = self.identity.user_name in message.reactions.get(emoji, [])
                self.change(message.id, lambda: self.node.chat.react(message.id, emoji, remove=already))

        mine = [emoji for emoji, users in message.reactions.items() if self.identity.user_name in users]
        self.app.push_screen(EmojiPicker(mine), react_with)

    def action_edit(self) -> None:
        message = self.selected_message()
        if message is None:
            return
        if message.author_key != self.identity.user_key.hex():
            self.notify("You can only edit your own messages.", severity="warning")
            return

        def save(text: str | None) -> None:
            if text is not None and text != message.text:
                self.change(message.id, lambda: self.node.chat.edit(message.id, text))

        self.app.push_screen(PromptScreen("Edit message", message.text), save)

    def action_delete(self) -> None:
        message = self.selected_message()
        if message is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.change(message.id, lambda: self.node.chat.delete(message.id))

        self.app.push_screen(ConfirmScreen("Delete this message?", f"{message.author}: {message.text[:200]}"), confirmed)

    def action_save_files(self) -> None:
        message = self.selected_message()
        if message is None:
            return
        if not message.files:
            self.notify("This message has no attachments.", severity="warning")
            return

        def save_into(folder: Path | None) -> None:
            if folder is not None:
                self.save_files(message, folder)

        self.app.push_screen(SaveFilesScreen(message), save_into)

    @work(group="files")
    async def save_files(self, message: MessageView, folder: Path) -> None:
        saved: list[str] = []
        try:
            for file in message.files:
                data = await self.node.blobs.blob(file.hash)
                target = free_path(folder, safe_file_name(file.name, f"attachment-{file.hash[:12]}"))
                await asyncio.to_thread(write_atomically, target, data, 0o644)
                saved.append(str(target))
        except (RallypointError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.post_message(Failed(f"saving {len(saved) + 1} of {len(message.files)} failed: {reason}"))
            return
        self.notify(f"saved {', '.join(printable(path) for path in saved)}", markup=False)

    @work(group="write")
    async def change(self, message_id: str, write: Callable[[], Awaitable[None]]) -> None:
        try:
            await write()
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(Written(message_id))


# --- peers and sync health -----------------------------------------------------------


class PeersLoaded(Message, bubble=False):
    def __init__(self, rows: list[PeerStatus], sessions: dict[str, SessionInfo], lan_on: bool) -> None:
        super().__init__()
        self.rows = rows
        self.sessions = sessions
        self.lan_on = lan_on


def ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0, int(datetime.now().timestamp() - ms / 1000))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago" if seconds < 7200 else clock_time(ms)


class PeersScreen(Screen[None]):
    """Every known and discovered node: trust, where it was seen, its live session, when it last
    synced by LAN and by courier, and how many of our changes it lacks. Live: LAN events reload it."""

    BINDINGS = [Binding("escape,f2", "app.pop_screen", "Back"), Binding("f5", "reload", "Refresh")]
    COLUMNS = ("Node", "Trust", "Address", "Session", "LAN sync", "Courier", "Behind")

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="peers-status")
        yield DataTable(id="peers", cursor_type="row", zebra_stripes=True)
        yield Static(id="peers-refused")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.title = "Peers and sync health"
        self.query_one(DataTable).add_columns(*self.COLUMNS)
        self.reload()
        self.set_interval(PEERS_REFRESH_SECONDS, self.reload)

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.load_peers()

    @work(group="peers", exclusive=True)
    async def load_peers(self) -> None:
        app = self.app
        assert isinstance(app, RallypointApp) and app.node is not None
        try:
            rows = await app.node.peers.peer_overview(interface_networks())
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        service = app.lan_service
        sessions = {info.node_id: info for info in service.sessions()} if service is not None else {}
        self.post_message(PeersLoaded(rows, sessions, service is not None))

    @on(PeersLoaded)
    def peers_loaded(self, event: PeersLoaded) -> None:
        table = self.query_one(DataTable)
        selected = table.cursor_row
        table.clear()
        for row in event.rows:
            session = event.sessions.get(row.node_id)
            cells = (
                printable(row.name) or row.node_id[:15],
                row.trust if row.conflict is None else "CONFLICT",
                f"{printable(row.address)}:{row.port}" if row.address else "-",
                "up" if session else "refused" if row.refused else "-",
                ago(row.last_sync),
                ago(row.last_courier),
                "-" if row.behind is None else str(row.behind),
            )
            table.add_row(*(Text(cell) for cell in cells), key=row.node_id)  # Text: never parsed as markup
        if event.rows:
            table.move_cursor(row=min(selected, len(event.rows) - 1))
        up = sum(1 for row in event.rows if row.node_id in event.sessions)
        lan = f"LAN sync on, {up} session{'s' if up != 1 else ''} up" if event.lan_on else "LAN sync is off in this console"
        conflicts = "".join(f"\n{printable(row.conflict)}" for row in event.rows if row.conflict)
        self.query_one("#peers-status", Static).update(Content(f"{len(event.rows)} node(s) · {lan} · Behind: our changes it lacks{conflicts}"))
        refused = [f"{printable(row.name) or row.node_id}: not synced by LAN: {printable(row.refused)}" for row in event.rows if row.refused]
        self.query_one("#peers-refused", Static).update(Content("\n".join(refused)))

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.notify(printable(event.reason), severity="error", markup=False)


# --- the app ------------------------------------------------------------------------


class HelpScreen(ModalScreen[None]):
    """Every key binding of the console, screen by screen (the footer shows only what fits)."""

    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        lines: list[str] = []
        for title, bindings in binding_sections():
            lines.append(title)
            for binding in bindings:
                keys = binding.key_display or ", ".join(binding.key.split(","))
                lines.append(f"  {keys:<22} {binding.description or binding.action}")
            lines.append("")
        with Vertical(classes="dialog", id="help"):
            yield Static(Content("Keys (ctrl+p: command palette; the mouse works too)"), classes="dialog-title")
            with VerticalScroll(id="help-keys"):
                yield Static(Text("\n".join(lines)))
            yield Static(Content("escape closes"), classes="dialog-hint")


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """Where each binding applies, for the help screen; the classes' own BINDINGS are the source."""
    sections: list[tuple[str, type]] = [
        ("Everywhere", RallypointApp),
        ("Channels", MainScreen),
        ("Message list", MessageList),
        ("Composer", Composer),
        ("Peers and sync health", PeersScreen),
        ("Courier (USB stick)", CourierScreen),
        ("Admin (admins only)", AdminScreen),
    ]
    return [(title, [b for b in cls.BINDINGS if isinstance(b, Binding)]) for title, cls in sections]


class RallypointApp(App[str]):
    CSS_PATH = "app.tcss"
    TITLE = "Rallypoint"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help: every key", show=False),
    ]

    def __init__(self, home: Path, passphrase: str | None = None, as_user: str | None = None, lan: LanConfig | None = None) -> None:
        super().__init__()
        self.home = home
        self.passphrase = passphrase
        self.as_user = as_user
        self.lan = lan  # None: no LAN service in this console (tests, or --no-lan)
        self.lan_service: LanService | None = None
        self.node: Node | None = None

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette offers the console's own actions first, then Textual's (themes, keys)."""
        if isinstance(screen, MainScreen):
            yield SystemCommand("Peers and sync health", "every known node, its trust, session and lag (F2)", screen.action_peers)
            yield SystemCommand("New channel", "create a channel (ctrl+n)", screen.action_new_channel)
            yield SystemCommand("Attach a file", "to the next message, from a path or the folder tree (ctrl+o in the composer)", screen.action_attach)
            yield SystemCommand("Search", "full-text search across channels (ctrl+f)", screen.action_search)
            yield SystemCommand("Courier", "import and export bundles on a USB stick or any folder (F4)", screen.action_courier)
            if screen.identity.role == "admin":
                yield SystemCommand("Admin", "users and roles, enrollment, revocation, IP allowlist, audit log (F3)", screen.action_admin)
        yield SystemCommand("Help", "every key binding (F1)", self.action_help)
        yield from super().get_system_commands(screen)

    def on_mount(self) -> None:
        if Node.exists(self.home):
            self.push_screen(UnlockScreen(self.home, self.as_user, self.passphrase))
        else:
            self.push_screen(SetupScreen(self.home))

    @on(NodeUnlocked)
    def node_unlocked(self, event: NodeUnlocked) -> None:
        self.node = event.node
        self.switch_screen(MainScreen(event.node, event.identity))
        if self.lan is not None:
            self.serve_lan(event.node, self.lan)

    @work(group="lan", exclusive=True)
    async def serve_lan(self, node: Node, config: LanConfig) -> None:
        """The same LAN service as `rallypoint serve`, for as long as the console runs."""
        try:
            async with LanService(node, config, on_event=lambda event: self.post_message(LanNotice(event))) as service:
                self.lan_service = service
                await asyncio.Event().wait()
        except SyncError as exc:
            self.notify(f"LAN sync is off: {printable(str(exc))}", severity="warning", markup=False)
        finally:
            self.lan_service = None

    @on(LanNotice)
    def lan_notice(self, notice: LanNotice) -> None:
        event = notice.event
        if isinstance(self.screen, PeersScreen):
            self.screen.reload()
        names = {info.node_id: info.name for info in self.node.directory.nodes()} if self.node is not None else {}
        if isinstance(event, Refused):
            peer = printable(event.address) if event.node_id is None else f"{node_label(event.node_id, names)} at {printable(event.address)}"
            self.notify(f"refused a LAN session from {peer}: {printable(event.reason)}", severity="warning", markup=False)
        elif isinstance(event, RefusalsSummarised):
            self.notify(printable(event.summary), severity="warning", markup=False)
        elif isinstance(event, Received) and event.messages:
            self.notify(f"{event.messages} new message(s) from {node_label(event.node_id, names)}", markup=False)
        elif isinstance(event, Wiped):
            self.exit(result=event.reason)  # nothing is left to show; the command says why

    async def on_unmount(self) -> None:
        if self.node is not None:
            await self.node.close()


def run_console(home: Path, passphrase: str | None, as_user: str | None, lan: LanConfig | None) -> str | None:
    """Runs the console until the operator quits (None) or the node wipes itself (the reason)."""
    return RallypointApp(home, passphrase, as_user, lan).run()
