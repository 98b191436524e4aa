"""The composer and its @mention completion."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.binding import Binding
from textual.suggester import Suggester
from textual.widgets import Input


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


class Composer(Input):
    BINDINGS = [
        Binding("up", "screen.focus_messages", "Messages"),
        Binding("ctrl+o", "screen.attach", "Attach"),
        Binding("ctrl+r", "screen.clear_attachments", "Remove files"),
    ]
