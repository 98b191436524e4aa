"""Text for the terminal, for the CLI and the console: untrusted text (from other nodes) made
safe to show (sizes and times in words: tui/formatting.py)."""

from __future__ import annotations

# C0 controls (ESC, BEL, ...) become their visible Unicode "control pictures"; C1 controls and
# bidi overrides/isolates (which can reorder or hide text) become U+FFFD.
_CONTROL_PICTURES: dict[int, str] = {code: chr(0x2400 + code) for code in range(0x20)} | {0x7F: "\u2421"}
_HIDDEN_HAZARDS: dict[int, str] = {code: "\ufffd" for code in (*range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_ONE_LINE = str.maketrans(_CONTROL_PICTURES | _HIDDEN_HAZARDS)
_MULTI_LINE = str.maketrans(_CONTROL_PICTURES | _HIDDEN_HAZARDS | {ord("\n"): "\n", ord("\t"): "    "})


def printable(value: str, *, multiline: bool = False) -> str:
    """Untrusted text made inert for a terminal: no escape sequences, no hidden reordering."""
    if multiline:
        return value.replace("\r\n", "\n").translate(_MULTI_LINE)
    return value.translate(_ONE_LINE)
