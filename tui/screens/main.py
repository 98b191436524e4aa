"""The main screen: the channel list, the open channel (or thread) and the composer. It loads
the view in a worker, pages through a long history, opens threads, and reloads when the
change feed says documents changed. What it does to messages is its base, MessageActions."""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.events import Resize
from textual.widgets import Footer, Header, Input, OptionList, Static

from appliance.errors import RallypointError
from appliance.feed import ChangeFeed, FeedEvent, NodeWiped
from appliance.model import ChannelSummary, Identity, MessageView
from tui import firstsync
from tui.dialogs.attach import LocalFile, read_file
from tui.dialogs.confirm import ConfirmScreen
from tui.dialogs.new_channel import NewChannel, NewChannelScreen
from tui.history import PAGE, Window, oldest_window
from tui.messages import ChannelCreated, Destination, Draft, Failed, Navigate, OldestFound, StoreChanged, ViewLoaded, Written
from tui.screens.channel_actions import ChannelActions
from tui.screens.search import SearchScreen
from tui.services import BlobsService, ChatService, DirectoryService, IdentityService, PeersService, ViewsService
from tui.text import printable
from tui.widgets.attachment_bar import AttachmentBar
from tui.widgets.channel_list import ChannelList
from tui.widgets.composer import Composer, MentionSuggester
from tui.widgets.message_list import MessageList

POLL_SECONDS = 0.5  # how soon a message written by another process (the CLI, sync) shows up
WIDE_COLUMNS = 110  # from this width an open thread shows beside its channel


class MainScreen(ChannelActions):
    """Channel list on the left; the channel and the composer on the right. An open thread takes
    the channel's place at 80 columns, and opens beside it on a terminal WIDE_COLUMNS wide."""

    BINDINGS = [
        Binding("f2", "open('peers')", "Peers", show=False),
        Binding("f3", "open('admin')", "Admin", show=False),
        Binding("f4", "open('courier')", "Courier", show=False),
        Binding("ctrl+f", "search", "Search", show=False),
        Binding("ctrl+n", "new_channel", "New channel"),
        Binding("alt+down,ctrl+down", "cycle_channel(1)", "Channel", key_display="alt+↑↓"),
        Binding("alt+up,ctrl+up", "cycle_channel(-1)", "Previous channel", show=False),
        Binding("escape", "close_thread", "Close"),
        Binding("f6", "channel_settings", "Channel settings and members", show=False),
        Binding("f7", "direct_message", "Direct message", show=False),
    ]

    def __init__(
        self,
        me: Identity,
        *,
        identity: IdentityService,
        chat: ChatService,
        views: ViewsService,
        blobs: BlobsService,
        directory: DirectoryService,
        peers: PeersService,
        feed: ChangeFeed,
    ) -> None:
        super().__init__(me, chat=chat, blobs=blobs)
        self.identity_service = identity
        self.views = views
        self.directory = directory
        self.peers = peers
        self.feed = feed
        self.channel_id: str | None = None
        self.thread_root: str | None = None
        self.generation = 0  # a view load older than the newest request is dropped
        self.select_after_load: str | None = None
        self.step_after_load = 0  # places from select_after_load (the message past a page's end)
        self.newest_after_load = False  # ↑ from the composer: the highlight goes to the newest message
        self.window = Window()  # the stretch of the channel's (or thread's) history the list holds
        self.channel_window = Window()  # the channel's, kept while a thread takes its place
        self.paging = False  # a page is being read: more presses at the end wait for it

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield ChannelList(id="channels")
            with Vertical(id="pane"):
                yield Static(id="pane-title")
                yield MessageList(id="messages")
                yield AttachmentBar(id="attachments")
                yield Composer(id="composer", placeholder="Message", suggester=MentionSuggester(lambda: [u.name for u in self.directory.users()]))
            with Vertical(id="beside"):
                yield Static(id="beside-title")
                yield MessageList(id="beside-messages")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.show_identity()
        self.query_one(Composer).focus()
        self.reload()
        self.subscription = self.feed.subscribe(self.node_changed)
        self.watch_store()

    def on_unmount(self) -> None:
        self.subscription.close()

    @work(group="poll")
    async def watch_store(self) -> None:
        """Keeps the node's store poller running while this screen shows: what another process
        writes (the CLI, a courier's import) arrives through the change feed."""
        async with self.feed.polling(POLL_SECONDS):
            await asyncio.Event().wait()  # until the screen goes and cancels this worker

    def node_changed(self, event: FeedEvent) -> None:
        """Changes stored by anyone (LAN sync and other processes included) reload the view."""
        if not isinstance(event, NodeWiped):  # a wipe: the app exits, nothing is left to show
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
            identity = self.identity_service.whoami()
            channels = await self.views.list_channels()
            if channel_id not in {channel.channel_id for channel in channels}:
                channel_id, thread_root, window = (channels[0].channel_id if channels else None), None, Window()
            beside = None
            if channel_id is not None and thread_root is not None and self.wide():
                beside = await self.views.read(channel_id, thread=thread_root, limit=PAGE)
                messages = await self.views.read(channel_id, before=window.anchor, limit=window.span + 1)
            else:
                messages = await self.views.read(channel_id, thread=thread_root, before=window.anchor, limit=window.span + 1) if channel_id else []
            if channel_id is not None:
                channels = await self.views.list_channels()  # unread counts after this read
            before_first_sync = not channels and await firstsync.awaiting_first_sync(self.identity_service, self.peers)
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
        more_older, more_newer = event.more_older, not event.window.at_newest
        if event.beside is not None:
            beside.show(event.beside, self.select_after_load)
            messages.show(event.messages, event.thread_root, more_older=more_older, more_newer=more_newer)
        else:
            empty = firstsync.DETAIL if event.before_first_sync else "No messages yet."
            messages.show(event.messages, self.select_after_load, step=self.step_after_load, empty=empty, more_older=more_older, more_newer=more_newer)
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
        name = printable(channel.label[1:]) if channel.is_direct else printable(channel.name)
        sign = "@ " if channel.is_direct else "# "
        if self.thread_root is not None and not beside:
            return Content(f"Thread in {sign}{name} · escape closes it"), "Reply in thread"
        if self.thread_root is not None:
            return Content(f"{sign}{name}"), "Reply in thread (beside)"
        purpose = f" — {printable(channel.purpose)}" if channel.purpose else ""
        flags = " (archived)" if channel.archived else " (read-only)" if channel.read_only else ""
        return Content(f"{sign}{name}{flags}{purpose}"), f"Message {sign}{name}"

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.paging = False
        composer = self.query_one(Composer)
        if event.draft is not None and not composer.value and not self.attachments:
            composer.value = event.draft.text  # the draft is not lost, nor the files picked
            self.show_attachments(list(event.draft.files))
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
            return [m.id for m in await self.views.read(channel_id, thread=thread_root, before=before, limit=limit, mark_read=False)]

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

        self.app.push_screen(SearchScreen(self.views), open_result)

    def action_open(self, destination: Destination) -> None:
        """F2 peers, F3 admin, F4 courier: the app builds the screen with the services it uses."""
        self.post_message(Navigate(destination))

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
            channel = await self.chat.create_channel(request.name, private=request.private)
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
            attachments = [await asyncio.to_thread(read_file, file, self.blobs.max_blob_bytes) for file in files]
            message_id = await self.chat.post(channel_id, text, reply_to=reply_to, attachments=attachments)
        except RallypointError as exc:
            self.post_message(Failed(str(exc), draft=Draft(draft, files)))
            return
        self.post_message(Written(message_id))

    @on(Written)
    def written(self, event: Written) -> None:
        self.reload(select=event.select)

    # --- threads ---

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
        if action == "open" and parameters == ("admin",):
            return self.identity.role == "admin"  # others do not see it; the node refuses them anyway
        if action == "clear_attachments":
            return bool(self.attachments)
        # Thread and Close swap places in the footer as a thread opens and closes.
        if action == "close_thread":
            return self.thread_root is not None
        if action == "open_thread":
            return self.thread_root is None or self.beside_shown()
        return True
