"""An item as text, the same in the terminal screen and in line mode: the prompt (a
conversation as its turns, each under its role), the responses (A and B to compare, side by
side from `SIDE_BY_SIDE` columns on; A, B, C... to rank, one above the other; the one response
to rate or correct), and for the kinds beyond comparisons a line saying how to answer (a
rating's scale with its anchors' words).

Widths are display columns (`wcwidth`: 2 for CJK and most emoji, 0 for combining marks), so
wrapping and the side-by-side divider hold for any script. Every text passes through
`rlhf.feedback.text.visible` (an escape in a response is shown as `\\x1b[2J`, never acted on);
empty responses and repeated ones are marked.
"""

from __future__ import annotations

import re
import string
import textwrap

from wcwidth import wcswidth, wcwidth

from rlhf.feedback.records import is_thumbs
from rlhf.feedback.text import turns, visible
from rlhf.raters.session import Shown, marker

SIDE_BY_SIDE = 120
"""Narrowest terminal (columns) that shows A and B side by side."""
RESERVED = 7
"""Screen rows kept for the header, key legend and status line."""
LETTERS = string.ascii_lowercase
"""The names of responses to rank, as typed (shown upper-case): at most 26 by letter."""


def width_of(text: str) -> int:
    """Columns `text` takes in a terminal (control characters count 0: `visible` first)."""
    w = wcswidth(text)
    return w if w >= 0 else sum(max(wcwidth(ch), 0) for ch in text)


def pad(text: str, width: int) -> str:
    """`text` padded with spaces to `width` columns."""
    return text + " " * max(0, width - width_of(text))


def clip(text: str, cols: int) -> str:
    """`text` cut to at most `cols` display columns."""
    out, used = [], 0
    for ch in text:
        used += max(wcwidth(ch), 0)
        if used > cols:
            break
        out.append(ch)
    return "".join(out)


class _Wrapper(textwrap.TextWrapper):
    """textwrap's greedy wrapping, measured in display columns instead of characters (for
    ASCII text the lines are exactly textwrap's)."""

    def _handle_long_word(self, chunks, cur_line, cur_len, width):
        room = width - cur_len if width >= 1 else 1
        chunk, end, used = chunks[-1], 0, 0
        while end < len(chunk) and used + max(wcwidth(chunk[end]), 0) <= room:
            used += max(wcwidth(chunk[end]), 0)
            end += 1
        if end == 0 and not cur_line:  # a wide character in a 1-column room: it overflows
            end = 1
        cur_line.append(chunk[:end])
        chunks[-1] = chunk[end:]

    def _wrap_chunks(self, chunks):
        lines: list[str] = []
        chunks.reverse()
        while chunks:
            cur, cur_len = [], 0
            indent = self.subsequent_indent if lines else self.initial_indent
            width = self.width - width_of(indent)
            if chunks[-1].strip() == "" and lines:
                del chunks[-1]
            while chunks and cur_len + width_of(chunks[-1]) <= width:
                cur_len += width_of(chunks[-1])
                cur.append(chunks.pop())
            if chunks and width_of(chunks[-1]) > width:
                self._handle_long_word(chunks, cur, cur_len, width)
            if cur and cur[-1].strip() == "":
                del cur[-1]
            if cur:
                lines.append(indent + "".join(cur))
        return lines


def wrap(text: str, width: int) -> list[str]:
    """Wrap each line of `text` to `width` display columns, keeping blank lines; the
    continuation of a list item ("- ...", "1. ...") is indented under its text. Control
    characters are shown as escapes (`rlhf.feedback.text.visible`)."""
    lines: list[str] = []
    for para in visible(text).strip("\n").split("\n"):
        bullet = re.match(r"\s*(?:[-*]|\d+[.)])\s+", para)
        indent = " " * (len(bullet.group(0)) if bullet else 0)
        lines += _Wrapper(width, subsequent_indent=indent,
                          break_on_hyphens=False).wrap(para) or [""]
    return lines


def prompt_lines(prompt: str, width: int) -> list[str]:
    """The prompt, indented 2 columns; a conversation ("Human: ... Assistant: ...") as its
    turns, each under its role's name with its text indented 4 (`feedback.text.turns`)."""
    parts = turns(prompt)
    if len(parts) == 1 and not parts[0][0]:
        return ["  " + line for line in wrap(prompt, width - 2)]
    out = []
    for role, text in parts:
        if not role:
            out += ["  " + line for line in wrap(text, width - 2)]
            continue
        out.append(f"  {role.capitalize()}:")
        if text.strip():
            out += ["    " + line for line in wrap(text, width - 4)]
    return out


def responses(shown: Shown, width: int) -> list[str]:
    """The two responses: side by side from SIDE_BY_SIDE columns on, else stacked; an empty
    response or two identical ones carry a marker line."""
    left, right = shown.texts
    notes = marker((left, right))
    if width < SIDE_BY_SIDE:
        return stacked(["A", "B"], [left, right], notes, width)
    col = (width - 3) // 2
    la, lb = (([n] if n else []) + wrap(t, col) for n, t in zip(notes, (left, right)))
    out = ["-" * col + "-+-" + "-" * (width - 3 - col), f"{'A':<{col}} | B"]
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else ""
        y = lb[i] if i < len(lb) else ""
        out.append(f"{pad(x, col)} | {y}".rstrip())
    return out + ["-" * width]


def stacked(names: list[str], texts, notes, width: int) -> list[str]:
    """Responses one above the other, each under a `--- NAME ---` rule, with its marker."""
    out = []
    for name, text, note in zip(names, texts, notes):
        out.append(f"--- {name} " + "-" * max(3, width - 5 - width_of(name)))
        out += ["  " + line for line in ([note] if note else []) + wrap(text, width - 2)]
    return out + ["-" * width]


def name(j: int) -> str:
    """The name of the j-th response shown to rank: A, B, ... Z, then its number."""
    return LETTERS[j].upper() if j < len(LETTERS) else str(j + 1)


def rank_markers(texts) -> list[str]:
    """`[empty response]`, or `[same as A]` for a response that repeats an earlier one."""
    out = []
    for j, t in enumerate(texts):
        same = texts.index(t)
        out.append("[empty response]" if not t.strip() else
                   f"[same as {name(same)}]" if same < j else "")
    return out


def scale_words(scale: dict) -> str:
    """A rating scale as the rater reads it: `1 very bad, 4 acceptable, 7 excellent` (its
    anchors' words, lowest first), or `1 to 7` without anchors."""
    def order(key):
        return int(key) if re.fullmatch(r"-?\d+", str(key)) else 0
    anchors = sorted(scale.get("anchors", {}).items(), key=lambda kv: order(kv[0]))
    words = ", ".join(f"{visible(str(k))} {visible(str(w))}" for k, w in anchors)
    return words or f"{scale['low']} to {scale['high']}"


def example_ranking(k: int) -> str:
    """A ranking of `k` letters to show as an example: `b a=c d` for 4."""
    letters = [LETTERS[1], LETTERS[0], *LETTERS[2:k]]
    return " ".join(letters[:2]) + "".join(
        ("=" if i == 2 else " ") + x for i, x in enumerate(letters[2:], 2))


def how_to_answer(shown: Shown) -> str:
    """The line under an item that says how to answer it (none for a comparison)."""
    it = shown.item
    if it.ask == "rank" and len(it.responses) > len(LETTERS):
        return f"RANK: more than {len(LETTERS)} responses cannot be ranked by letter: s skips"
    if it.ask == "rank":
        example = example_ranking(len(it.responses))
        return f"RANK: the letters best first, = for ties (e.g. {example}), then Enter"
    if it.ask == "rate":
        s = it.rating_scale
        if is_thumbs(s):
            words = s.get("anchors", {})
            return (f"RATE: + thumbs up ({visible(str(words.get('1', 'good')))}), - thumbs "
                    f"down ({visible(str(words.get('0', 'bad')))})")
        return f"RATE {s['low']}-{s['high']}: {scale_words(s)}"
    if it.ask == "correct":
        return "CORRECT: e to rewrite the response (in your editor, or typed line by line)"
    return ""


def body(shown: Shown, width: int) -> list[str]:
    """The responses of an item of any kind, and the line saying how to answer it."""
    it, texts = shown.item, shown.texts
    if it.ask == "compare":
        return responses(shown, width)
    if it.ask == "rank":
        out = stacked([name(j) for j in range(len(texts))], texts,
                      rank_markers(texts), width)
    else:
        note = "[empty response]" if not texts[0].strip() else ""
        out = stacked(["RESPONSE"], texts, [note], width)
    return out + wrap(how_to_answer(shown), width)


def header(shown: Shown, progress: tuple[int, int, float], width: int) -> str:
    """`==== item 3 of 10: rank 4   (120/hour) ====` (a comparison says no kind)."""
    done, total, rate = progress
    speed = "--" if rate != rate else f"{rate:.0f}"  # nan during the first minute
    it = shown.item
    kind = {"compare": "", "rank": f": rank {len(it.responses)}", "rate": ": rate",
            "correct": ": correct"}[it.ask]
    head = f" item {done + 1} of {total}{kind}   ({speed}/hour) "  # repeats and gold alike
    return head.center(width, "=")[:width]


def layout(shown: Shown, progress: tuple[int, int, float], width: int,
           height: int | None = None) -> str:
    """The page for one item as text, `width` columns wide. With `height`, a long prompt
    keeps only its last lines (the latest turn) so that the page fits, 3 lines at least."""
    width = max(width, 40)
    below = body(shown, width)
    prompt = prompt_lines(shown.item.prompt, width)
    if height is not None:
        room = max(3, height - len(below) - RESERVED)
        if len(prompt) > room:
            hidden = len(prompt) - room + 1
            prompt = [f"[... {hidden} earlier lines: p shows the whole prompt]"] + \
                prompt[hidden:]
    return "\n".join([header(shown, progress, width), "PROMPT", *prompt, *below])
