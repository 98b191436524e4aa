"""A QR code as lines of plain text: two modules a character with unicode half blocks, drawn
light-on-dark (the light modules are the ink), so a phone reads it off a dark terminal."""

from __future__ import annotations

import segno

BORDER = 1  # modules of quiet zone drawn around the code (the terminal's edge adds to it)
_CELLS = {(False, False): "█", (False, True): "▀", (True, False): "▄", (True, True): " "}  # (top dark, bottom dark)


def qr_lines(text: str) -> list[str]:
    """The QR code of `text` (lowest error correction: the smallest code), one string a row."""
    code = segno.make(text, error="l", micro=False)
    size = len(code.matrix) + 2 * BORDER
    dark = [[False] * size for _ in range(size + 1)]  # an extra light row under an odd count
    for y, row in enumerate(code.matrix):
        for x, module in enumerate(row):
            dark[y + BORDER][x + BORDER] = bool(module)
    return ["".join(_CELLS[(dark[y][x], dark[y + 1][x])] for x in range(size)) for y in range(0, size, 2)]
