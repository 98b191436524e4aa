"""What the main screen does to the highlighted message (react, edit, delete, save its files)
and the files attached to the next one: the half of the main screen that acts rather than
shows. MainScreen (tui/screens/main.py) is the one subclass; it loads and lays out the view."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual import work
from textual.screen import Screen

from appliance.errors import RallypointError
from appliance.model import Identity, MessageView
from tui import firstsync
from tui.dialogs.attach import AttachScreen, LocalFile
from tui.dialogs.confirm import ConfirmScreen
from tui.dialogs.emoji import EmojiPicker
from tui.dialogs.prompt import PromptScreen
from tui.dialogs.save_files import SaveFilesScreen
from tui.files import free_path, safe_file_name, write_atomically
from tui.messages import Failed, Written
from tui.services import BlobsService, ChatService
from tui.text import printable
from tui.widgets.attachment_bar import AttachmentBar
from tui.widgets.composer import Composer
from tui.widgets.message_list import MessageList


class MessageActions(Screen[None]):
    """The main screen's actions on messages: the highlighted one (its list's bindings say
    `screen.react`, `screen.edit`...) and the files for the next. Writes run in workers and
    come back as Written or Failed, which MainScreen handles by reloading its view."""

    def __init__(self, me: Identity, *, chat: ChatService, blobs: BlobsService) -> None:
        super().__init__()
        self.identity = me  # the role can change while the console runs: each view load updates it
        self.chat = chat
        self.blobs = blobs
        self.channel_id: str | None = None
        self.before_first_sync = False  # joined, never synced: no channels to show yet
        self.attachments: list[LocalFile] = []  # go with the next message sent
        self.attach_folder = Path.home()  # where the file picker opens: the last file's folder

    # --- acting on the highlighted message ---

    def selected_message(self) -> MessageView | None:
        focused = self.focused if isinstance(self.focused, MessageList) else self.query_one("#messages", MessageList)
        message = focused.selected()
        if message is None:
            self.notify("Select a message first.", severity="warning")
        return message

    def action_react(self) -> None:
        message = self.selected_message()
        if message is None:
            return

        def react_with(emoji: str | None) -> None:
            if emoji:
                already = self.identity.user_name in message.reactions.get(emoji, [])
                self.change(message.id, lambda: self.chat.react(message.id, emoji, remove=already))

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
                self.change(message.id, lambda: self.chat.edit(message.id, text))

        self.app.push_screen(PromptScreen("Edit message", message.text), save)

    def action_delete(self) -> None:
        message = self.selected_message()
        if message is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.change(message.id, lambda: self.chat.delete(message.id))

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
                data = await self.blobs.blob(file.hash)
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

        self.app.push_screen(AttachScreen(self.blobs.max_blob_bytes, self.attach_folder), attach)

    def action_clear_attachments(self) -> None:
        self.show_attachments([])

    def show_attachments(self, files: list[LocalFile]) -> None:
        self.attachments = files
        self.query_one(AttachmentBar).files = tuple(files)
        self.refresh_bindings()
