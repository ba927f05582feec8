"""The rating page's API, apart from HTTP: what the page gets for the item on screen and how
its answers are recorded, for every kind of item (compare two, rank K, rate one, correct one).

The page gets what the item asks, the prompt as its turns (`feedback.text.turns`), the
responses as shown (through `visible`), a rating's scale with its anchors' words, and a
correction's response to prefill; never the side drawn, the item id, a repeat or gold flag.
An answer names the item by the one-time nonce it was served with and gives, by kind: `choice`
(and `strength`) for a pair, `places` (in shown order, 1 = best, equal = tie) for a ranking,
`value` for a rating, `text` for a correction; `choice: "skip"` passes on any item, and any
answer may carry a `note` (`comment`, its old name, is still read). The session's `Refused`
(a note or correction over its limit, an empty or unchanged correction) is the caller's to
answer (422 in `raters.web`): nothing was saved, the item stays on screen. A rating that is
not a whole number (a missing or empty value) is refused the same way. `diff` gives the page
a correction's change word by word before it is sent (`raters.editing.word_diff`, the
terminal's, each run through `visible`); a note standing alone (`note`) sent with the nonce of
the item on screen is tied to that item, as the terminal's `w` is.
"""

from __future__ import annotations

import hmac
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field

from rlhf.feedback.items import Item
from rlhf.feedback.records import Answer, Comparison, RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import turns, visible
from rlhf.raters.editing import word_diff
from rlhf.raters.guidelines import render
from rlhf.raters.page import rank_markers
from rlhf.raters.session import (
    MAX_CORRECTION,
    MAX_NOTE,
    SHOWN_LABELS,
    STRENGTH_WORDS,
    Refused,
    Session,
    Shown,
    marker,
    read_guidelines,
    too_long,
)
from rlhf.raters.web_tokens import digest

BYTES_PER_CHAR = 12
"""Most bytes one character can take in a JSON body: an astral character escaped as two
`\\uXXXX` (a control character takes 6, raw UTF-8 at most 4)."""
CHOICES = {"left", "right", *SHOWN_LABELS.values()}


WAIT_RETRY_MS = 3000
"""How often a waiting page asks for an item again (ms): a rater whose remaining items are on
other raters' screens waits, and the page picks an item up without a reload."""


def max_body(max_note: int = MAX_NOTE, max_correction: int = MAX_CORRECTION) -> int:
    """Largest request body accepted (bytes): a correction and a note at their limits, every
    character at its most expensive (`BYTES_PER_CHAR`), and 4 KiB for the rest."""
    return BYTES_PER_CHAR * (max_note + max_correction) + 4096


MAX_BODY = max_body()
"""`max_body` at the default limits (`--max-note-chars`, `--max-correction-chars` change it)."""


@dataclass
class Rater:
    """One rater's state on the server: their session and the item on their screen."""

    name: str
    session: Session
    lock: threading.Lock = field(default_factory=threading.Lock)
    nonce: str | None = None
    shown: Shown | None = None
    waits: bool = False
    """More items may come (a growing queue, `raters.web_live`): with none, wait, never end."""


def prompt_turns(prompt: str) -> list[dict]:
    """The prompt as its turns for the page: [{"role", "text"}] (role "" for plain text); an
    empty turn (the "Assistant:" a prompt ends with) is left out."""
    return [{"role": role, "text": visible(text.strip("\n"))} for role, text in turns(prompt)
            if text.strip()]


def markers(ask: str, texts: tuple[str, ...]) -> list[str]:
    """A note per response shown: `[empty response]`, `[A and B are identical]` for a pair,
    `[same as A]` for a response to rank that repeats an earlier one (the terminal's)."""
    return list(marker(texts)) if ask == "compare" else rank_markers(texts)


def diff_runs(old: str, new: str) -> list[list[str]]:
    """The change from the response `old` to the correction `new` as the page shows it: runs
    [op, text] ('=' kept, '-' removed, '+' added) from the terminal's `word_diff`, every text
    through `visible`. `old`'s line ends are first made `\\n`, as a textarea makes them."""
    return [[op, visible(text)] for op, text in word_diff(re.sub(r"\r\n?", "\n", old), new)]


def shown_payload(r: Rater) -> dict:
    """What the page gets for the item on screen (see the module docstring)."""
    s = r.session
    done, total, _ = s.progress()
    if r.shown is None:
        held = s.held_elsewhere()
        if held or r.waits:  # on others' screens, or more to come: the page asks again
            return {"done": False, "waiting": True, "held": held, "progress": [done, total],
                    "retry_ms": WAIT_RETRY_MS}
        return {"done": True, "progress": [done, total], "summary": s.summary()}
    item, texts = r.shown.item, r.shown.texts
    out = {"done": False, "nonce": r.nonce, "ask": item.ask,
           "prompt": prompt_turns(item.prompt), "responses": [visible(t) for t in texts],
           "notes": markers(item.ask, texts), "progress": [done, total],
           "limits": {"note": s.max_note, "correction": s.max_correction}}
    if item.ask == "rate":
        scale = item.rating_scale
        out["scale"] = {"name": visible(scale["name"]), "low": scale["low"],
                        "high": scale["high"], "anchors": {
                            str(k): visible(str(w)) for k, w in scale.get("anchors", {}).items()}}
    if item.ask == "correct":
        out["prefill"] = texts[0]  # the text itself: a textarea's value is never markup
    return out


def _serve_next(r: Rater) -> dict:
    """The item now on the rater's screen (a reload shows the same one and renews its lease,
    unless the lease ran out and the item went to others), else the next."""
    s = r.session
    if r.shown is not None and r.shown.repeat_of is None and s.store.claim(
            r.name, [r.shown.item.id], s.overlap, s.lease_seconds) is None:
        r.shown = None
    if r.shown is None:
        r.shown = r.session.next()
        r.nonce = secrets.token_urlsafe(9) if r.shown else None
    return shown_payload(r)


def _note(body: dict) -> str:
    """The answer's note (`note`, or `comment`, its old name); never cut short."""
    note = body.get("note", body.get("comment")) or ""
    if not isinstance(note, str):
        raise RecordError("note: expected text")
    return note


def _choice(body: dict) -> tuple[str, str | None]:
    choice = body.get("choice")
    strength = body.get("strength") or None
    if choice not in CHOICES or (strength is not None and strength not in STRENGTH_WORDS):
        raise RecordError(f"unknown answer {choice!r} / strength {strength!r}")
    return choice, STRENGTH_WORDS.get(strength) if strength else None


def _whole(key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{key}: expected a whole number, got {value!r}")
    return value


def _answer(s: Session, shown: Shown, body: dict) -> Answer:
    """Record the answer `body` gives to `shown`, whatever the item asks (`Refused` or
    RecordError when it cannot be kept: nothing saved)."""
    note, ask = _note(body), shown.item.ask
    if body.get("choice") == "skip":
        return s.skip(shown, note)
    if ask == "compare":
        return s.answer(shown, *_choice(body), note)
    if ask == "rank":
        places = body.get("places")
        if not isinstance(places, list):
            raise RecordError("places: expected a place for each response, in shown order")
        return s.rank(shown, [_whole("places", p) for p in places], note)
    if ask == "rate":  # (not a whole number, or none: refused, as a number out of range is)
        value = body.get("value")
        return s.rate(shown, value if type(value) is int else None, note)
    text = body.get("text")
    if not isinstance(text, str):
        raise RecordError("text: expected the corrected response")
    if text == re.sub(r"\r\n?", "\n", shown.item.a):  # a textarea's line ends, untouched
        text = shown.item.a
    return s.correct(shown, text, note)


def _diff(r: Rater, body: dict) -> tuple[int, dict]:
    """The `diff` action: the correction `text` of the item on screen (named by its nonce)
    as runs (`diff_runs`). One longer than the limit is refused unread (`Refused`)."""
    if r.shown is None or r.shown.item.ask != "correct" or body.get("nonce") != r.nonce:
        return 409, {"error": "this item is no longer on your screen; reload"}
    text = body.get("text")
    if not isinstance(text, str):
        raise RecordError("text: expected the corrected response")
    if len(text) > r.session.max_correction:
        raise Refused(too_long("correction", len(text), r.session.max_correction))
    return 200, {"runs": diff_runs(r.shown.item.a, text)}


def _history(r: Rater) -> dict:
    """This rater's live answers of every kind, latest first (a comparison with its sides, to
    revise)."""
    r.session.refresh()
    rows = []
    for c in reversed(r.session.mine[-500:]):
        row = {"id": c.id, "kind": c.kind, "prompt": visible(c.prompt),
               "answer": visible(r.session.described(c)), "revised": "revises" in c.meta}
        if isinstance(c, Comparison):
            left, right = (c.a, c.b) if c.left == "a" else (c.b, c.a)
            row.update(left=visible(left), right=visible(right))
        rows.append(row)
    return {"answers": rows}


class RatingServer:
    """The app's state: items, raters by token digest, the store path, session settings.
    `tokens` gives raters by their token ({name: token}), `digests` by the stored hash of it
    ({name: "sha256:..."}, `raters.web_tokens`)."""

    def __init__(self, items: list[Item], store_path, tokens: dict[str, str] | None = None,
                 guidelines_path=None, *, digests: dict[str, str] | None = None,
                 **session_kw):
        self.version, text = read_guidelines(guidelines_path)
        self.blocks = render(text)
        self.max_body = max_body(session_kw.get("max_note", MAX_NOTE),
                                 session_kw.get("max_correction", MAX_CORRECTION))
        self.store = ComparisonStore(store_path)  # one parse cache for every rater's session
        named = {**{n: digest(t) for n, t in (tokens or {}).items()}, **(digests or {})}
        self.raters = {d: Rater(name, Session(
            items, self.store, name, guidelines=self.version, **session_kw))
            for name, d in named.items()}

    def rater(self, token: str) -> Rater | None:
        """The rater whose token this is (compared in constant time with every digest)."""
        found, wanted = None, digest(token).encode()
        for d, r in self.raters.items():  # (every one compared: no early exit)
            if hmac.compare_digest(wanted, d.encode()):
                found = r
        return found

    def handle(self, r: Rater, action: str, body: dict) -> tuple[int, dict]:
        """One API call for rater `r` (run in a worker thread, under the rater's lock). A
        200 answer carries `warning` when the leases could not be saved (a full disk)."""
        if action not in ACTIONS:
            return 404, {"error": "unknown action"}
        with r.lock:
            status, out = ACTIONS[action](self, r, body)
        problem = self.store.lease_problem
        if status == 200 and problem and "warning" not in out:
            out["warning"] = problem
        return status, out


def _after_write(r: Rater, out: dict, what: str) -> dict:
    """`out` with the next item for the page, once an answer was written (or undone): what
    fails now (the leases, reading the store back) is a warning added to the message, never
    a failure, since the write is on disk and must not be sent again."""
    try:
        out["next"] = _serve_next(r)
    except Exception as e:  # noqa: BLE001 - whatever it is, the write stands
        r.shown = r.nonce = None
        print(f"rating server: {what}, then {type(e).__name__}: {e}"[:500], file=sys.stderr)
        out["warning"] = f"the next item could not be fetched ({e}); trying again"
        out["next"] = {"done": False, "waiting": True, "held": 0, "progress": None,
                       "retry_ms": WAIT_RETRY_MS}
    problem = out.get("warning") or r.session.store.lease_problem
    if problem:
        out["warning"] = problem
        key = "saved" if "saved" in out else "undone"
        out[key] = f"{out[key] or 'nothing to undo'} (warning: {problem})"
    return out


def _answer_action(server: RatingServer, r: Rater, body: dict) -> tuple[int, dict]:
    s = r.session
    if r.shown is None or body.get("nonce") != r.nonce:
        return 409, {"error": "this item is no longer on your screen; reload"}
    c = _answer(s, r.shown, body)  # fsynced: from here on it is saved, whatever follows
    r.shown = r.nonce = None
    try:
        done, total, _ = s.progress()
        saved = f"saved {done}/{total}: {visible(s.described(c))}"
    except Exception:  # noqa: BLE001 - (reading back for the count): the answer stands
        saved = "saved"
    return 200, _after_write(r, {"saved": saved, "id": c.id}, "an answer was saved")


def _note_action(server: RatingServer, r: Rater, body: dict) -> tuple[int, dict]:
    """A note standing alone, tied to the item on screen when it names it."""
    on_screen = r.shown is not None and body.get("nonce") == r.nonce
    n = r.session.note(_note({"note": body.get("text")}), shown=r.shown if on_screen else None)
    return 200, {"saved": "note saved", "id": n.id}


def _undo_action(server: RatingServer, r: Rater, body: dict) -> tuple[int, dict]:
    s = r.session
    c = s.undo()
    r.shown = r.nonce = None
    return 200, _after_write(r, {"undone": visible(s.described(c)) if c else None},
                             "an answer was undone")


def _revise_action(server: RatingServer, r: Rater, body: dict) -> tuple[int, dict]:
    s = r.session
    s.refresh()
    if not any(isinstance(c, Comparison) and c.id == body.get("id")
               for c in s.mine):  # (undo takes back an answer of another kind)
        return 404, {"error": "no such comparison of yours"}
    c = s.revise(body["id"], *_choice(body), _note(body))
    return 200, {"saved": f"revised: {visible(s.described(c))}", "id": c.id}


ACTIONS = {
    "guidelines": lambda server, r, body: (200, {
        "version": server.version, "blocks": server.blocks, "rater": visible(r.name)}),
    "next": lambda server, r, body: (200, _serve_next(r)),
    "answer": _answer_action,
    "note": _note_action,
    "diff": lambda server, r, body: _diff(r, body),
    "undo": _undo_action,
    "history": lambda server, r, body: (200, _history(r)),
    "revise": _revise_action,
}
"""What each API action does: (server, rater, checked body) -> (status, answer)."""
