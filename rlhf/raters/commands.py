"""What a rater types in `rlhf rate`: one command per line in line mode (stdin piped, or
`--line`), one key at a time on the terminal screen.

Line-mode commands (the screen uses the same keys, without Enter):
 Any item
  s, skip       pass on this item (it goes back to the other raters)
  u, undo       take back your last answer (its item is shown again)
  note TEXT     a note standing alone: about the item, the prompt or the queue
  h, ?, help    help                   q, quit     stop (resume later where you stopped)
  A note may end any answer after `#`: `b2 # A repeats itself`.
 Compare A and B
  a, b          A (left / top) or B (right / bottom) is better; a strength may follow:
                `a1` / `a slightly`, `a2` / `a clearly`, `a3` / `a much`
  t, tie        equally good           n, bad      both bad
  c, cant       can't tell
 Rank A, B, C...
  b a=c d       the letters shown, best first, `=` between ties: B best, A and C next, D
                last (`b>a=c>d` and `ba=cd` say the same); every letter once
 Rate one response
  5             a whole number on the item's scale (its words are shown: 1 very bad ...)
  +, -          thumbs up / down (also up / down, 1 / 0)
 Correct one response
  e, edit       rewrite it in $VISUAL or $EDITOR (a copy of the response; the final newline
                an editor adds is dropped); without one, or with stdin piped, type the new
                text line by line and end it with a line holding only `.` (`..` for a line
                that is one dot). The change is then shown word by word, [-removed-] and
                {+added+}: y saves it, e edits again, n cancels. An empty or unchanged text
                is asked again; a text or note over its limit is refused, never cut.
On the screen, after a or b press 1 / 2 / 3 for the strength (any other key: none); a
ranking's letters and = build it and Enter saves it (Backspace takes one back, Esc clears);
a rating from 0-9 is one key, others are typed and end with Enter; m or # types a note for
the next answer, w a note standing alone; p pages through a long prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rlhf.feedback.items import Item
from rlhf.feedback.records import Answer, is_thumbs
from rlhf.raters.page import LETTERS, scale_words
from rlhf.raters.session import SHOWN_LABELS, STRENGTH_WORDS, Session, Shown

THUMB_WORDS = {"+": 1, "up": 1, "1": 1, "-": 0, "down": 0, "0": 0}
"""What answers a thumbs item: up (1) or down (0)."""


@dataclass
class Command:
    """A parsed line: kind is 'answer' (a comparison), 'rank', 'rate', 'edit' (a
    correction), 'skip', 'note' (standing alone), 'undo', 'help', 'quit' or 'error'.
    `comment` is the note that goes with the answer (or the note itself)."""

    kind: str
    choice: str = ""
    strength: str | None = None
    comment: str = ""
    error: str = ""
    places: list[int] = field(default_factory=list)
    """For 'rank': the place of each response as shown (A first; 1 = best)."""
    value: int | None = None
    """For 'rate': the value on the item's scale."""


def parse_ranking(text: str, k: int) -> list[int]:
    """`b a=c d` (the letters shown, best first; `=` joins ties; spaces, `>` and `,` only
    separate) -> the place of each shown response, A first, 1 = best, tied ones sharing a
    place and the next place following: `b a=c d` -> [2, 1, 2, 3]. Raises ValueError saying
    what is wrong (an unknown or repeated letter, a loose `=`, a letter missing)."""
    if k > len(LETTERS):
        raise ValueError(f"{k} responses: at most {len(LETTERS)} can be ranked by letter")
    letters = LETTERS[:k]
    s = re.sub(r"[\s>,]+", "", text.lower())
    if not s:
        raise ValueError("type the letters best first")
    places: dict[str, int] = {}
    place, tie = 0, False
    for ch in s:
        if ch == "=":
            if tie or place == 0:
                raise ValueError("`=` goes between two letters (b a=c d)")
            tie = True
            continue
        if ch not in letters:
            raise ValueError(f"{ch!r} is not a response here (the letters are "
                             f"{letters[0].upper()}-{letters[-1].upper()})")
        if ch in places:
            raise ValueError(f"{ch.upper()} is placed twice")
        place += 0 if tie else 1
        places[ch], tie = place, False
    if tie:
        raise ValueError("`=` goes between two letters (b a=c d)")
    missing = [x.upper() for x in letters if x not in places]
    if missing:
        raise ValueError(f"rank all {k}: {', '.join(missing)} missing")
    return [places[x] for x in letters]


def parse_rating(text: str, scale: dict) -> int:
    """`5` on a scale, or `+` / `-` (up / down, 1 / 0) on thumbs -> the value. Raises
    ValueError naming the scale's range and words."""
    t = text.strip().lower()
    if is_thumbs(scale):
        if t in THUMB_WORDS:
            return THUMB_WORDS[t]
        raise ValueError("+ thumbs up, - thumbs down")
    if re.fullmatch(r"[+-]?\d{1,9}", t) and scale["low"] <= int(t) <= scale["high"]:
        return int(t)
    raise ValueError(f"a whole number from {scale['low']} to {scale['high']} "
                     f"({scale_words(scale)})")


def parse_command(line: str, item: Item | None = None) -> Command:
    """One line of input -> Command (see the module docstring for the syntax), for `item`
    (what it asks decides what an answer looks like; None: a comparison)."""
    if re.match(r"\s*note(\s|$)", line, re.IGNORECASE):
        text = line.strip()[4:].strip()
        return Command("note", comment=text) if text else \
            Command("error", error="a note needs its text: note TEXT")
    text, hashed, comment = line.partition("#")
    comment = comment.strip()
    words = text.strip().lower().split()
    if not words:
        return Command("error", error="a note goes after an answer (b # why) or on its own "
                       "(note TEXT)" if hashed else "empty line (h for help)")
    head, rest = words[0], words[1:]
    plain = {"u": "undo", "undo": "undo", "h": "help", "?": "help", "help": "help",
             "q": "quit", "quit": "quit", "exit": "quit"}
    if head in plain and not rest:  # alone: `h g f ...` is a ranking
        return Command(plain[head])
    if head in ("s", "skip") and not rest:
        return Command("skip", "skip", comment=comment)
    ask = item.ask if item is not None else "compare"
    if ask == "compare":
        return _comparison(head, rest, comment, line)
    if ask == "correct":
        if head in ("e", "edit") and not rest:
            return Command("edit", comment=comment)
        return Command("error", error=f"unknown command {line.strip()!r}: e edits the "
                                      "response, s skips (h for help)")
    try:
        if ask == "rank":
            return Command("rank", comment=comment,
                           places=parse_ranking(text, len(item.responses)))
        return Command("rate", comment=comment, value=parse_rating(text, item.rating_scale))
    except ValueError as e:
        return Command("error", error=f"{e} (h for help)")


def _comparison(head: str, rest: list[str], comment: str, line: str) -> Command:
    m = re.fullmatch(r"([ab])([123]?)", head)
    if m:
        strength = STRENGTH_WORDS.get(m.group(2)) if m.group(2) else None
        if rest:
            if len(rest) > 1 or rest[0] not in STRENGTH_WORDS or strength:
                return Command("error", error=f"unknown strength {' '.join(rest)!r} "
                                              "(1 slightly, 2 clearly, 3 much)")
            strength = STRENGTH_WORDS[rest[0]]
        side = "left" if m.group(1) == "a" else "right"
        return Command("answer", side, strength, comment)
    if head in SHOWN_LABELS and not rest:
        return Command("answer", SHOWN_LABELS[head], None, comment)
    return Command("error", error=f"unknown command {line.strip()!r} (h for help)")


def act(session: Session, shown: Shown, cmd: Command) -> Answer:
    """Record the answer `cmd` gives to `shown` (answer, rank, rate or skip) with its note;
    durable when this returns. `Refused` (nothing saved) for a note over its limit."""
    if cmd.kind == "skip":
        return session.skip(shown, cmd.comment)
    if cmd.kind == "answer":
        return session.answer(shown, cmd.choice, cmd.strength, cmd.comment)
    if cmd.kind == "rank":
        return session.rank(shown, cmd.places, cmd.comment)
    if cmd.kind == "rate":
        return session.rate(shown, cmd.value, cmd.comment)
    raise ValueError(f"not an answer: {cmd.kind}")


def help_text() -> str:
    body = __doc__.split("without Enter):", 1)[1].split("On the screen")[0]
    return "commands (one per line; in a terminal, single keys):" + body.rstrip()
