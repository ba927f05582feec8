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


ROLE = re.compile(r"(?:^|\n\n)(Human|Assistant|User|System):[ \t]?")
"""A turn's start in transcript text (HH-RLHF's "\\n\\nHuman: ... \\n\\nAssistant: ...")."""


def turns(text: str) -> list[tuple[str, str]]:
    """A transcript -> [(role, text)], roles lower-case ("human", "assistant", "user",
    "system"); text before the first role marker, or a text with none, is one turn of
    role "". Only a marker at the start or after a blank line starts a turn, so "Note: ..."
    or "Human: " inside a sentence never splits one. Joined back with the markers, the
    turns give the text (bar the whitespace right after each marker)."""
    out: list[tuple[str, str]] = []
    marks = list(ROLE.finditer(text))
    if not marks:
        return [("", text)]
    if marks[0].start() > 0 and text[:marks[0].start()].strip():
        out.append(("", text[:marks[0].start()]))
    for m, nxt in zip(marks, [*marks[1:], None]):
        out.append((m.group(1).lower(), text[m.end():nxt.start() if nxt else len(text)]))
    return out
