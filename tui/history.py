"""Which stretch of a long history the message list holds.

A channel can hold far more messages than a widget should: the list holds a window of at
most WINDOW of them, paged in PAGE at a time as the cursor reaches either end, and the
window is read with nothing but `node.views.read(before=ID, limit=N)`. A window is the `span`
messages just before its `anchor` (None: the newest ones); moving back up past WINDOW drops
the newest page and remembers the anchor it had, so moving down again re-reads that window
exactly. One read per move: messages that arrive in between (a courier's bundle of older
messages) show up, and the list always holds a contiguous run of the history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

PAGE = 200  # messages read per step, and the newest page shown when a channel opens
WINDOW = 3 * PAGE  # the most messages the message list holds at once (a multiple of PAGE)


@dataclass(frozen=True)
class Window:
    anchor: str | None = None  # the window ends just before this message id; None: at the newest
    span: int = PAGE
    newer: tuple[str | None, ...] = ()  # the anchors of the windows further down, the nearest last

    @property
    def at_newest(self) -> bool:
        return self.anchor is None

    def older(self, shown: Sequence[str]) -> Window:
        """One page further back. `shown` is what this window holds, oldest first (all `span`
        of them, as there are older ones): the window grows up to WINDOW, then gives up its
        newest page."""
        if self.span + PAGE <= WINDOW:
            return replace(self, span=self.span + PAGE)
        return Window(shown[-PAGE], self.span, (*self.newer, self.anchor))

    def newer_window(self) -> Window:
        """One page further down: the window this one came from."""
        if not self.newer:
            return self
        return Window(self.newer[-1], self.span, self.newer[:-1])


ReadIds = Callable[[str | None, int], Awaitable[Sequence[str]]]


async def oldest_window(read_ids: ReadIds, start: Window) -> tuple[Window, str | None]:
    """The window that begins with the very first message, reached from `start` as if by
    paging back one page at a time (so moving down from it pages forward the same way), and
    that first message's id (None: there is none). `read_ids(before, limit)` gives the ids of
    the `limit` messages before `before`, oldest first. Reads WINDOW messages at a time and
    keeps one id a page: memory stays bounded."""
    boundaries: list[str] = []  # the oldest id of each page back from start.anchor, nearest first
    before, total, first = start.anchor, 0, None
    while True:
        chunk = await read_ids(before, WINDOW)
        total += len(chunk)
        boundaries += [chunk[index] for index in range(len(chunk) - PAGE, -1, -PAGE)]
        if chunk:
            first = chunk[0]
        if len(chunk) < WINDOW:
            break
        before = chunk[0]
    pages_back = max(0, -(-(total - WINDOW) // PAGE))  # the fewest pages back that leave ≤ WINDOW before
    if pages_back == 0:
        return Window(start.anchor, WINDOW, start.newer), first
    return Window(boundaries[pages_back - 1], WINDOW, (*start.newer, start.anchor, *boundaries[: pages_back - 1])), first
