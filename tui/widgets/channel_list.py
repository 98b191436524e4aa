"""The channel list: the channels the view load found, held in a reactive attribute; direct
conversations below them, under a "Direct messages" heading. Same-named channels show their
creator and the start of their id."""

from __future__ import annotations

from textual.content import Content
from textual.events import Resize
from textual.reactive import var
from textual.widgets.option_list import Option

from appliance.model import ChannelSummary
from tui.text import printable
from tui.widgets.controls import StoppingOptionList


class ChannelList(StoppingOptionList):
    """Channels with unread and mention counts, right-aligned in whatever width the list has."""

    COMPONENT_CLASSES = {"channel--unread", "channel--count", "channel--mentions", "channel--archived", "channel--heading"}

    channels: var[list[ChannelSummary]] = var(list, always_update=True, init=False)  # a reload brings new counts
    current: var[str | None] = var(None)  # highlighted on the next rebuild

    def __init__(self, id: str) -> None:
        super().__init__(id=id, markup=False)

    def show(self, channels: list[ChannelSummary], current: str | None) -> None:
        self.current = current
        self.channels = channels

    def watch_channels(self) -> None:
        self.rebuild()

    def on_resize(self, event: Resize) -> None:
        self.rebuild()  # labels are truncated and padded to the width

    def rebuild(self) -> None:
        width = self.scrollable_content_region.width
        self.clear_options()
        rooms = [channel for channel in self.channels if not channel.is_direct]
        direct = [channel for channel in self.channels if channel.is_direct]
        self.add_options(Option(self.label(channel, width), id=channel.channel_id) for channel in rooms)
        if direct:
            self.add_option(Option(Content.styled("Direct messages", self.get_visual_style("channel--heading", partial=True)), disabled=True))
            self.add_options(Option(self.label(channel, width), id=channel.channel_id) for channel in direct)
        if self.current is not None and self.channels:
            self.highlighted = self.get_option_index(self.current)

    def label(self, channel: ChannelSummary, width: int) -> Content:
        if channel.is_direct:
            name = Content(printable(channel.label or "@?"))
        else:
            prefix = "🔒" if channel.kind == "private" else "# "
            shown = channel.label[1:] if channel.label.startswith("#") else channel.name
            name = Content(prefix + printable(shown))
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
