"""The message list: the messages of one window of a channel or thread, held in a reactive
attribute; the highlighted one is what the main screen's actions act on."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.content import Content
from textual.reactive import var
from textual.widgets.option_list import Option

from appliance.model import MessageView
from tui.formatting import clock_time, file_size
from tui.text import printable
from tui.widgets.paged_option_list import PagedOptionList


@dataclass(frozen=True)
class Placement:
    keep: str | None = None  # the message to highlight; None: the newest
    step: int = 0  # places from `keep` (the message past a page's end)
    empty: str = "No messages yet."  # shown when there are none


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

    messages: var[dict[str, MessageView]] = var(dict, always_update=True, init=False)  # oldest first

    def __init__(self, id: str) -> None:
        super().__init__(id=id, markup=False)
        self.placement = Placement()  # where the highlight goes when `messages` is next shown

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
        self.placement = Placement(select or (None if following or previous is None else previous.id), step, empty)
        self.more_older, self.more_newer = more_older, more_newer
        self.messages = {message.id: message for message in messages}

    def watch_messages(self, messages: dict[str, MessageView]) -> None:
        self.clear_options()
        if not messages:
            self.add_option(Option(Content(self.placement.empty), disabled=True))
            return
        self.add_options(Option(self.render_message(message), id=message.id) for message in messages.values())
        keep = self.placement.keep
        if keep in messages:
            self.highlighted = max(0, min(self.option_count - 1, self.get_option_index(keep) + self.placement.step))
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
