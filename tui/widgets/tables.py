"""Data tables as the admin screens fill them: cells never parsed as markup, rows replaced
with the cursor kept on its row, the highlighted row's key."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from tui.text import printable


def cell(value: str, width: int | None = None) -> Text:
    """A table cell that is never parsed as markup, cut with an ellipsis at `width`."""
    text = Text(printable(value), no_wrap=True)
    if width is not None:
        text.truncate(width, overflow="ellipsis")
    return text


def fill(table: DataTable[Text], rows: Iterable[tuple[str, tuple[Text, ...]]], follow_first: bool = False) -> None:
    """Replaces a table's rows, keeping the cursor on the same row when it is still there
    (with `follow_first`, a cursor on the first row stays there: the newest audit entry)."""
    kept = highlighted(table)
    position = table.cursor_row
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if table.row_count:
        keys = [row_key.value for row_key in table.rows]
        stay = follow_first and position == 0
        table.move_cursor(row=keys.index(kept) if kept in keys and not stay else min(position, table.row_count - 1))


def highlighted(table: DataTable[Text]) -> str | None:
    if table.row_count == 0:
        return None
    return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
