"""An option list holding one window of a longer run (tui/history.py says which window)."""

from __future__ import annotations

from typing import Literal

from textual.events import MouseScrollDown, MouseScrollUp
from textual.message import Message

from tui.widgets.controls import StoppingOptionList

Towards = Literal["older", "newer", "oldest", "newest"]


class PagedOptionList(StoppingOptionList):
    """An option list that holds one window of a longer run. Its owner says whether there is
    more either way (`more_older`, `more_newer`); moving past that end (↑ ↓, page keys, Home,
    End, the mouse wheel) then posts PastTheEnd instead, for the owner to page in."""

    class PastTheEnd(Message):
        def __init__(self, paged_list: PagedOptionList, towards: Towards) -> None:
            super().__init__()
            self.paged_list = paged_list
            self.towards = towards

        @property
        def control(self) -> PagedOptionList:
            return self.paged_list

    more_older: bool = False
    more_newer: bool = False

    def at_first(self) -> bool:
        return self.highlighted == 0

    def at_last(self) -> bool:
        return self.highlighted == self.option_count - 1

    def action_cursor_up(self) -> None:
        if self.more_older and self.at_first():
            self.post_message(self.PastTheEnd(self, "older"))
        else:
            super().action_cursor_up()

    def action_cursor_down(self) -> None:
        if self.more_newer and self.at_last():
            self.post_message(self.PastTheEnd(self, "newer"))
        else:
            super().action_cursor_down()

    def action_page_up(self) -> None:
        if self.more_older and self.at_first():
            self.post_message(self.PastTheEnd(self, "older"))
        else:
            super().action_page_up()  # type: ignore[no-untyped-call]  # Textual leaves it unannotated

    def action_page_down(self) -> None:
        if self.more_newer and self.at_last():
            self.post_message(self.PastTheEnd(self, "newer"))
        else:
            super().action_page_down()  # type: ignore[no-untyped-call]  # Textual leaves it unannotated

    def action_first(self) -> None:
        if self.more_older:
            self.post_message(self.PastTheEnd(self, "oldest"))
        else:
            super().action_first()

    def action_last(self) -> None:
        if self.more_newer:
            self.post_message(self.PastTheEnd(self, "newest"))
        else:
            super().action_last()

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        if self.more_older and self.scroll_y == 0:
            self.post_message(self.PastTheEnd(self, "older"))

    def on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        if self.more_newer and self.scroll_y >= self.max_scroll_y:
            self.post_message(self.PastTheEnd(self, "newer"))

