"""Help: every key binding of the console, screen by screen."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """Every key binding of the console, screen by screen (the footer shows only what fits)."""

    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[Binding]]]) -> None:
        super().__init__()
        self.sections = sections  # (where, its bindings): tui/app.py gathers them

    def compose(self) -> ComposeResult:
        lines: list[str] = []
        for title, bindings in self.sections:
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
