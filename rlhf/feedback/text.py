"""Showing stored text safely: every text from a model or a data file is shown through
`visible`, so control characters become visible escapes (`\\x1b[2J`), never acted on by a
terminal or a page. Used by `rlhf stats` here and by the rating front ends in `rlhf.raters`."""

from __future__ import annotations

import re

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ufeff]")


def visible(text: str) -> str:
    """`text` with control characters (C0 but newline and tab, DEL, C1, and the invisible
    bidi marks and zero-width space; joiners stay, emoji need them) written as escapes
    `\\x1b`, `\\u202e`: shown, never acted on."""
    def esc(m: re.Match) -> str:
        o = ord(m.group(0))
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
    return CONTROL.sub(esc, text.replace("\r\n", "\n"))
