"""The reaction picker."""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.widgets.controls import StoppingOptionList

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
