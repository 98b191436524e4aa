"""Form controls that behave as an operator expects of a form: lists stop at their ends (Textual's
wrap round, so ↓ ↓ from "member" once landed on "admin"), and Enter on a checkbox submits the
form instead of toggling it (Space toggles)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Checkbox, OptionList


class StoppingOptionList(OptionList):
    """An OptionList whose ↑ stops at the first option and ↓ at the last."""

    def action_cursor_up(self) -> None:
        self.move_highlight(-1)

    def action_cursor_down(self) -> None:
        self.move_highlight(1)

    def move_highlight(self, step: int) -> None:
        """To the nearest enabled option `step`'s way; none there: the highlight stays."""
        if self.highlighted is None:
            if step > 0:
                self.action_first()
            else:
                self.action_last()
            return
        index = self.highlighted + step
        while 0 <= index < self.option_count:
            if not self.get_option_at_index(index).disabled:
                self.highlighted = index
                return
            index += step


class FormCheckbox(Checkbox, inherit_bindings=False):
    """Space toggles; Enter is left to the form (its screen binds it to submitting)."""

    BINDINGS = [Binding("space", "toggle_button", "Toggle", show=False)]
