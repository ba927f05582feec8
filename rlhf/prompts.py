"""The project's one prompt reader: every command (`sample-pairs`, `train-policy`, `loop`) gets
its prompts from `load_prompts`, by one rule:

- default ('' / None, or the shared TinyStories sample itself): story openings from
  `../shared/data/text/tinystories-sample.txt`. The file is stories joined by blank lines
  with no marker between stories, so a paragraph is taken as a story's first when it opens
  like one ("Once upon a time", "Once there was", "One day, a ...", "Long ago", "There was");
  its first sentence is the prompt. Duplicates are dropped, order is kept.
- `*.jsonl`: one object per line with a "prompt" (or "text") string.
- any other text file: one prompt per non-empty line, stripped of surrounding whitespace
  (nothing is cut: a line is a prompt).
- Everywhere: exact duplicates are dropped (the first is kept) and the order is kept; then an
  optional seeded shuffle and an optional limit.

`split_prompts` makes a fixed held-out set for evaluation (every `every`-th prompt).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = ROOT.parent / "shared" / "data" / "text" / "tinystories-sample.txt"

_OPENING = re.compile(r"^(Once|Long ago|There (was|once|lived)|One (day|morning|sunny|night),"
                      r" (a|an|there|in) )")
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")


def story_openings(text: str, max_words: int = 24) -> list[str]:
    """First sentences of the paragraphs that open a story (see module docstring)."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not _OPENING.match(para):
            continue
        m = _SENTENCE.match(para)
        sentence = m.group(1) if m else para
        if len(sentence.split()) <= max_words and sentence not in out:
            out.append(sentence)
    return out


def read_prompt_file(path: Path) -> list[str]:
    """A .jsonl file ("prompt" or "text" per row) or a text file (one prompt per line)."""
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            text = obj.get("prompt", obj.get("text")) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise ValueError(f"{path}:{i}: expected an object with a 'prompt' string")
            rows.append(text)
        return rows
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_prompts(path: str | None = None, n: int | None = None, seed: int | None = None
                 ) -> list[str]:
    """Prompts from `path` (None: TinyStories openings from the shared sample).
    `seed` given: shuffled with random.Random(seed); `n` given: the first n of them."""
    p = Path(path) if path else DEFAULT_PROMPTS
    if not p.is_file():
        where = "" if path else " (the shared TinyStories sample; see ../shared/README.md)"
        raise FileNotFoundError(f"prompt file not found: {p}{where}")
    if path is None or p.resolve() == DEFAULT_PROMPTS.resolve():
        prompts = story_openings(p.read_text())
    else:
        prompts = read_prompt_file(p)
    prompts = list(dict.fromkeys(prompts))  # duplicates dropped, first kept, order kept
    if not prompts:
        raise ValueError(f"{p}: no prompts found")
    if seed is not None:
        random.Random(seed).shuffle(prompts)
    return prompts if n is None else prompts[:n]


def split_prompts(prompts: list[str], every: int) -> tuple[list[str], list[str]]:
    """(train, held_out): every `every`-th prompt is held out (every <= 0: none)."""
    if every <= 0:
        return list(prompts), []
    held = [p for i, p in enumerate(prompts) if i % every == every - 1]
    train = [p for i, p in enumerate(prompts) if i % every != every - 1]
    return train, held
