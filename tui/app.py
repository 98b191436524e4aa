"""The Rallypoint console: a Textual front end that only orchestrates the node.

This module is the app: which screen shows (setup or unlock, sign-in, the terms of service while
the signed-in user has not accepted the current version, then the main screen, and the screens
it asks for with a Navigate message, each handed the node's services it uses), the idle lock,
the LAN worker, the command palette and `run_console`. Screens live in tui/screens/, dialogs in
tui/dialogs/, widgets in tui/widgets/, the messages workers post back in tui/messages.py.

Every node call runs in a worker and its outcome comes back to the UI as a Message, so the
event loop never waits on the store. Text that can come from the network (messages, names,
purposes, file names, error messages quoting them) is shown through `printable()` inside
`Content` objects: never parsed as markup, control characters made visible."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen
from textual.timer import Timer

from appliance.crypto import random_bytes
from appliance.feed import DirectoryChanged, FeedEvent, NodeWiped, Subscription
from appliance.kernel import Clock, Random, wall_clock_ms
from appliance.node import Node
from sync.errors import SyncError
from sync.lan import LanConfig, LanEvent, LanService, Received, RefusalsSummarised, Refused, SessionInfo, Wiped
from tui.messages import Destination, LanNotice, Navigate, NodeUnlocked, SignedIn, TermsPending
from tui.reports import node_label
from tui.screens.admin import AdminScreen, admin_screen
from tui.screens.courier import CourierScreen
from tui.screens.help import HelpScreen
from tui.screens.lock import LockScreen
from tui.screens.main import MainScreen
from tui.screens.mfa_enrol import MfaEnrolScreen
from tui.screens.peers import PeersScreen
from tui.screens.setup import SetupScreen
from tui.screens.signin import SignInScreen
from tui.screens.terms import TermsScreen
from tui.screens.unlock import UnlockScreen
from tui.text import printable
from tui.widgets.composer import Composer
from tui.widgets.message_list import MessageList


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """Where each binding applies, for the help screen; the classes' own BINDINGS are the source."""
    sections: list[tuple[str, type[DOMNode]]] = [
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

    def __init__(
        self, home: Path, passphrase: str | None = None, as_user: str | None = None, lan: LanConfig | None = None, *, clock: Clock = wall_clock_ms, rng: Random = random_bytes
    ) -> None:
        """`clock` and `rng` are the node's (tests fix them)."""
        super().__init__()
        self.clock = clock
        self.rng = rng
        self.home = home
        self.passphrase = passphrase
        self.as_user = as_user
        self.lan = lan  # None: no LAN service in this console (tests, or --no-lan)
        self.lan_service: LanService | None = None
        self.node: Node | None = None
        self.feed_subscription: Subscription | None = None  # the app exits when the node wipes itself
        self.lock_after = 0  # idle seconds before the console locks (0: never), the admin's setting
        self.idle_since = time.monotonic()  # the last key or mouse input
        self.idle_timer: Timer | None = None

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(binding_sections()))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette offers the console's own actions first, then Textual's (themes, keys)."""
        if isinstance(screen, MainScreen):
            yield SystemCommand("Peers and sync health", "every known node, its trust, session and lag (F2)", partial(screen.action_open, "peers"))
            yield SystemCommand("New channel", "create a channel (ctrl+n)", screen.action_new_channel)
            yield SystemCommand("Channel settings", "members, channel admins, rename, purpose, archive, read-only (F6)", screen.action_channel_settings)
            yield SystemCommand("Direct message", "start a conversation with 1 to 7 users (F7)", screen.action_direct_message)
            yield SystemCommand("Attach a file", "to the next message, from a path or the folder tree (ctrl+o in the composer)", screen.action_attach)
            yield SystemCommand("Search", "full-text search across channels (ctrl+f)", screen.action_search)
            yield SystemCommand("Courier", "import and export bundles on a USB stick or any folder (F4)", partial(screen.action_open, "courier"))
            yield SystemCommand("Lock the console", "sign out now; the channels leave the screen until someone signs in", self.action_lock_now)
            yield SystemCommand("Two-step sign-in", "enrol an authenticator app (TOTP) for your sign-in", self.action_enrol_mfa)
            if screen.identity.role == "admin":
                yield SystemCommand("Admin", "users and roles, enrollment, revocation, IP allowlist, audit log (F3)", partial(screen.action_open, "admin"))
        yield SystemCommand("Help", "every key binding (F1)", self.action_help)
        yield from super().get_system_commands(screen)

    def on_mount(self) -> None:
        if Node.exists(self.home):
            self.push_screen(UnlockScreen(self.home, self.as_user, self.passphrase, clock=self.clock, rng=self.rng))
        else:
            self.push_screen(SetupScreen(self.home))

    @on(NodeUnlocked)
    def node_unlocked(self, event: NodeUnlocked) -> None:
        """The node is open: its user signed in already (a new node, or the passphrase given on
        the command line), or the sign-in screen asks who is there."""
        node = self.node = event.node
        self.feed_subscription = node.feed.subscribe(self.node_changed)
        if self.lan is not None:
            self.serve_lan(node, self.lan)
        result = node.signin.result
        if result is not None and result.complete:
            self.show_channels(node)
        else:
            self.switch_screen(SignInScreen(node.signin, self.node_label(node), self.as_user))

    @staticmethod
    def node_label(node: Node) -> str:
        return f"{node.identity.row.node_name} ({node.identity.row.workspace_name})"

    @on(SignedIn)
    def signed_in(self) -> None:
        if self.node is not None:
            self.show_channels(self.node)

    def show_channels(self, node: Node) -> None:
        self.idle_since = time.monotonic()
        self.load_idle_lock(node)
        self.after_terms(node, lambda: self.show_main(node))

    def after_terms(self, node: Node, then: Callable[[], object]) -> None:
        """Runs `then` at once when the signed-in user has no terms to accept; else shows the
        terms first, and signs them out if they decline."""
        pending = node.directory.terms.pending()
        if pending is None:
            then()
            return

        def decided(accepted: bool | None) -> None:
            if accepted:
                then()
            else:
                self.sign_out(node)

        self.push_screen(TermsScreen(node.directory.terms, pending, node.identity.whoami().user_name), decided)

    @on(TermsPending)
    def terms_pending(self) -> None:
        """A new version arrived while the console runs: it covers everything until accepted."""
        node = self.node
        if node is not None and node.identity.signed_in and not isinstance(self.screen, TermsScreen | UnlockScreen | SetupScreen | SignInScreen | LockScreen):
            self.after_terms(node, lambda: None)

    def sign_out(self, node: Node) -> None:
        """Declined terms: the user is signed out and the console asks who signs in."""
        node.signin.sign_out()
        while len(self.screen_stack) > 2:  # the default screen, then the user's screens
            self.pop_screen()
        self.switch_screen(SignInScreen(node.signin, self.node_label(node), self.as_user))

    def show_main(self, node: Node) -> None:
        main = MainScreen(
            node.identity.whoami(),
            identity=node.identity,
            chat=node.chat,
            views=node.views,
            blobs=node.blobs,
            directory=node.directory,
            peers=node.peers,
            feed=node.feed,
        )
        self.switch_screen(main)

    @work(group="idle-lock", exclusive=True)
    async def load_idle_lock(self, node: Node) -> None:
        """The admin's idle time (read at each sign-in); the check runs every second."""
        self.lock_after = await node.signin.console_lock_seconds()
        if self.lock_after and self.idle_timer is None:
            self.idle_timer = self.set_interval(1.0, self.lock_if_idle)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown | events.MouseScrollUp | events.MouseScrollDown | events.MouseMove):
            self.idle_since = time.monotonic()
        await super().on_event(event)

    def lock_if_idle(self) -> None:
        node = self.node
        if node is None or not self.lock_after or isinstance(self.screen, SignInScreen | UnlockScreen) or not node.identity.signed_in:
            return
        if time.monotonic() - self.idle_since >= self.lock_after:
            self.lock_console(node)

    def action_lock_now(self) -> None:
        if self.node is not None and self.node.identity.signed_in:
            self.lock_console(self.node)

    def action_enrol_mfa(self) -> None:
        if self.node is not None and self.node.identity.signed_in:
            self.push_screen(MfaEnrolScreen(self.node.signin.mfa))

    def lock_console(self, node: Node) -> None:
        """Signs the user out and takes every screen of theirs away: the lock screen shows
        nothing of the channels until someone signs in again."""
        who = node.identity.whoami().user_name
        node.signin.sign_out()
        while len(self.screen_stack) > 2:  # the default screen, then the user's screens
            self.pop_screen()
        self.switch_screen(LockScreen(node.signin, self.node_label(node), who))

    def node_changed(self, event: FeedEvent) -> None:
        if isinstance(event, NodeWiped):  # the node's revocation arrived: nothing is left to show
            self.exit(result=event.reason)
        elif isinstance(event, DirectoryChanged) and self.node is not None and self.node.identity.signed_in and self.node.directory.terms.pending() is not None:
            self.post_message(TermsPending())

    @on(Navigate)
    def navigate(self, event: Navigate) -> None:
        if self.node is not None:
            self.push_screen(self.screen_for(event.destination, self.node))

    def screen_for(self, destination: Destination, node: Node) -> Screen[None]:
        if destination == "peers":
            return PeersScreen(peers=node.peers, feed=node.feed, lan_sessions=self.lan_sessions, backups=node.custody)
        if destination == "admin":
            return admin_screen(node)
        return CourierScreen(node)

    def lan_sessions(self) -> list[SessionInfo] | None:
        return None if self.lan_service is None else self.lan_service.sessions()

    @work(group="lan", exclusive=True)
    async def serve_lan(self, node: Node, config: LanConfig) -> None:
        """The same LAN service as `rallypoint serve`, for as long as the console runs."""
        try:
            async with LanService(node, config, on_event=self.lan_event) as service:
                self.lan_service = service
                await asyncio.Event().wait()
        except SyncError as exc:
            self.notify(f"LAN sync is off: {printable(str(exc))}", severity="warning", markup=False)
        finally:
            self.lan_service = None

    def lan_event(self, event: LanEvent) -> None:
        self.post_message(LanNotice(event))

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
