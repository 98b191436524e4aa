"""What the main screen does to channels themselves: the channel settings dialog (F6: members,
channel admins, rename, purpose, archive, read-only) and starting a direct conversation (F7).
Node calls run in workers and come back as SettingsLoaded, ChannelEdited or Failed. MainScreen
(tui/screens/main.py) is the one subclass; it shows the channel an edit leaves."""

from __future__ import annotations

from textual import on, work

from appliance.errors import RallypointError
from appliance.model import ChannelSummary
from tui.dialogs.channel_settings import ChannelEdit, ChannelSettingsScreen, EditKind
from tui.dialogs.prompt import PromptScreen
from tui.messages import ChannelEdited, Failed, SettingsLoaded
from tui.screens.message_actions import MessageActions
from tui.services import IdentityService
from tui.text import printable
from tui.widgets.channel_list import ChannelList


class ChannelActions(MessageActions):
    """Channel settings and direct conversations, for the main screen."""

    identity_service: IdentityService  # set by MainScreen

    def show_channel(self, channel_id: str) -> None:
        raise NotImplementedError  # MainScreen shows it

    def action_channel_settings(self) -> None:
        current = next((c for c in self.query_one(ChannelList).channels if c.channel_id == self.channel_id), None)
        if current is not None:
            self.load_settings(current)

    @work(group="settings", exclusive=True)
    async def load_settings(self, channel: ChannelSummary) -> None:
        try:
            members = await self.chat.admin.members(channel.channel_id)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        me = self.identity_service.whoami()
        manages = not channel.is_direct and (me.role == "admin" or me.user_name in channel.admins)
        self.post_message(SettingsLoaded(channel, members, manages))

    @on(SettingsLoaded)
    def settings_loaded(self, event: SettingsLoaded) -> None:
        def edited(edit: ChannelEdit | None) -> None:
            if edit is not None:
                self.edit_channel(edit)

        self.app.push_screen(ChannelSettingsScreen(event.channel, event.members, manages=event.manages), edited)

    @work(group="write")
    async def edit_channel(self, edit: ChannelEdit) -> None:
        admin, channel, value = self.chat.admin, edit.channel_id, edit.value
        try:
            if edit.kind == EditKind.RENAME:
                await admin.rename(channel, value)
            elif edit.kind == EditKind.PURPOSE:
                await admin.set_purpose(channel, value)
            elif edit.kind == EditKind.ADD:
                await admin.add_member(channel, value)
            elif edit.kind == EditKind.REMOVE:
                await admin.remove_member(channel, value)
            elif edit.kind in (EditKind.GRANT_ADMIN, EditKind.REVOKE_ADMIN):
                await admin.set_channel_admin(channel, value, edit.kind == EditKind.GRANT_ADMIN)
            elif edit.kind in (EditKind.ARCHIVE, EditKind.UNARCHIVE):
                await admin.set_archived(channel, edit.kind == EditKind.ARCHIVE)
            else:
                await admin.set_read_only(channel, edit.kind == EditKind.READ_ONLY)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        done = {
            EditKind.RENAME: f"Renamed to #{value}",
            EditKind.PURPOSE: "Purpose set",
            EditKind.ADD: f"{value} added",
            EditKind.REMOVE: f"{value} removed",
            EditKind.GRANT_ADMIN: f"{value} is a channel admin",
            EditKind.REVOKE_ADMIN: f"{value} is no longer a channel admin",
            EditKind.ARCHIVE: "Archived",
            EditKind.UNARCHIVE: "Unarchived",
            EditKind.READ_ONLY: "Read-only: only channel admins post",
            EditKind.WRITABLE: "Everyone posts again",
        }[edit.kind]
        self.post_message(ChannelEdited(done, channel))

    @on(ChannelEdited)
    def channel_edited(self, event: ChannelEdited) -> None:
        self.notify(printable(event.done), markup=False)
        self.show_channel(event.channel_id)

    def action_direct_message(self) -> None:
        def chosen(names: str | None) -> None:
            if names is not None and names.strip():
                self.start_direct([name.strip().lstrip("@") for name in names.replace(" ", ",").split(",") if name.strip()])

        self.app.push_screen(PromptScreen("Direct message with (1 to 7 user names)", ""), chosen)

    @work(group="write")
    async def start_direct(self, names: list[str]) -> None:
        try:
            head = await self.chat.admin.start_direct(names)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(ChannelEdited(f"Direct conversation with {', '.join(names)}", head.channel_id))
