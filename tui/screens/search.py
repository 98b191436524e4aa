"""Full-text search across channels."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from appliance.errors import RallypointError
from appliance.model import MessageView
from tui.messages import SearchResults
from tui.services import ViewsService
from tui.text import printable
from tui.widgets.controls import StoppingOptionList

SEARCH_LIMIT = 50


class SearchScreen(ModalScreen[MessageView | None]):
    """Full-text search across every channel this user can read; Enter on a result opens it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("down", "focus_results", "Results", show=False)]

    def __init__(self, views: ViewsService) -> None:
        super().__init__()
        self.views = views
        self.found: list[MessageView] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="search"):
            yield Static("Search all channels", classes="dialog-title")
            yield Input(id="search-query", placeholder="words, then Enter")
            yield Static(id="search-status", classes="dialog-hint")
            yield StoppingOptionList(id="search-results")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted, "#search-query")
    def submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.query_one("#search-status", Static).update("searching…")
            self.run_search(event.value.strip())

    @work(group="search", exclusive=True)
    async def run_search(self, query: str) -> None:
        try:
            found = await self.views.search(query, limit=SEARCH_LIMIT)
        except RallypointError as exc:
            self.notify(printable(str(exc)), severity="error", markup=False)
            return
        self.post_message(SearchResults(query, found))

    @on(SearchResults)
    def show_results(self, event: SearchResults) -> None:
        self.found = event.found
        results = self.query_one("#search-results", OptionList)
        results.clear_options()
        for index, message in enumerate(event.found):
            where = f"#{printable(message.channel)}" + (" (thread)" if message.root_id else "")
            results.add_option(Option(Content(f"{where} · {printable(message.author)}: {printable(message.text)[:200]}"), id=str(index)))
        more = " (the first ones)" if len(event.found) == SEARCH_LIMIT else ""
        self.query_one("#search-status", Static).update(Content(f"{len(event.found)} message(s) for {printable(event.query)!r}{more} · ↓ to the results, Enter opens"))
        if event.found:
            results.highlighted = 0

    def action_focus_results(self) -> None:
        self.query_one("#search-results", OptionList).focus()

    @on(OptionList.OptionSelected, "#search-results")
    def opened(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.found[int(event.option.id or 0)])

    def action_cancel(self) -> None:
        self.dismiss(None)
