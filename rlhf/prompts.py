"""The project's one prompt reader: every command (`sample-pairs`, `train-policy`, `loop`) gets
its prompts from `load_prompts`, by one rule:

- default ('' / None, or the shared TinyStories sample itself): story openings from
  `../shared/data/text/tinystories-sample.txt`. The file is stories joined by blank lines
  with no marker between stories, so a paragraph is taken as a story's first when it opens
  like one ("Once upon a time", "Once there was", "One day, a ...", "Long ago", "There was");
  its first sentence is the prompt. Duplicates are dropped, order is kept.
- `*.jsonl` (one object per line) and `*.json` (an array): each row a string, or an object
  with a `prompt` string, a `prompt` list of chat messages (TRL's conversational format), a
  `messages` list, or a `text` string (or the key named by `column`).
- `*.parquet`, a `datasets` `save_to_disk` folder, or a Hub dataset name (`org/name`, where
  the user has network; `split`, default "train"): rows as above, from `column` or the first
  of prompt / messages / text.
- any other text file: one prompt per non-empty line, stripped of surrounding whitespace
  (nothing is cut: a line is a prompt).
- Chat messages become a `ChatPrompt`: a string (a readable "role: content" transcript, what
  raters and logs see) that keeps its `messages`; the tokenizer applies the model's chat
  template to them (with the generation prompt). A conversation ending in assistant turns is
  cut before them (the prompt is what precedes the answer).
- Everywhere: exact duplicates are dropped (the first is kept) and the order is kept; then an
  optional seeded shuffle and an optional limit. A bad row fails with file:line.

`write_prompts` writes any prompts as JSONL that `load_prompts` reads back unchanged
(multi-line prompts and chat messages included); `split_prompts` makes a fixed held-out set.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from rlhf.config import UserError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = ROOT.parent / "shared" / "data" / "text" / "tinystories-sample.txt"

_OPENING = re.compile(r"^(Once|Long ago|There (was|once|lived)|One (day|morning|sunny|night),"
                      r" (a|an|there|in) )")
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")
COLUMNS = ("prompt", "messages", "text")


class PromptsError(UserError, ValueError):
    """A prompt file or dataset that cannot be read; the message names file:line."""


class ChatPrompt(str):
    """A chat prompt: as a string, the transcript "role: content" (turns joined by blank lines);
    `.messages`, the messages the chat template is applied to."""

    messages: list[dict]

    def __new__(cls, messages: list[dict]):
        obj = super().__new__(cls, "\n\n".join(f"{m['role']}: {m['content']}" for m in messages))
        obj.messages = [dict(m) for m in messages]
        return obj


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


def _messages(value, where: str) -> ChatPrompt:
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value)
    if not ok:
        raise PromptsError(f"{where}: expected a string or chat messages, a list of "
                           '{"role": ..., "content": ...} objects with string values')
    msgs = [{"role": m["role"], "content": m["content"]} for m in value]
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    if not msgs:
        raise PromptsError(f"{where}: the conversation has no turn before the assistant's")
    return ChatPrompt(msgs)


def row_prompt(row, where: str, column: str | None = None) -> str:
    """One row (a string or an object) -> a prompt (str or ChatPrompt); see the module docstring."""
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        keys = [column] if column else [k for k in COLUMNS if k in row]
        if keys and keys[0] in row:
            value = row[keys[0]]
            if isinstance(value, str):
                return value
            return _messages(value, f"{where}: {keys[0]}")
    want = f"a {column!r} key" if column else "a 'prompt', 'messages' or 'text' key"
    raise PromptsError(f"{where}: expected a string or an object with {want}")


def read_text(path: Path) -> str:
    """A prompt file's text; a byte that is not UTF-8 is a PromptsError naming file:line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise PromptsError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x})") from None


def read_prompt_file(path: Path, column: str | None = None) -> list[str]:
    """A .jsonl, .json or .parquet file, or a text file (one prompt per line)."""
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptsError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            rows.append(row_prompt(obj, f"{path}:{i}", column))
        return rows
    if path.suffix == ".json":
        try:
            arr = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise PromptsError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(arr, list):
            raise PromptsError(f"{path}: expected a JSON array of prompts")
        return [row_prompt(r, f"{path}: item {i}", column) for i, r in enumerate(arr, 1)]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's own reasons (not parquet, truncated)
            raise PromptsError(f"{path}: not a readable parquet file ({e})") from None
        return [row_prompt(r, f"{path}: row {i}", column) for i, r in enumerate(rows, 1)]
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_dataset(name: str, column: str | None, split: str) -> list[str]:
    """A `datasets` save_to_disk folder, or a Hub dataset name (network needed)."""
    import datasets

    try:
        if Path(name).is_dir():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # missing, offline, not a dataset: datasets says which
        raise PromptsError(f"{name}: not a readable dataset ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise PromptsError(f"{name}: no split {split!r} (has {', '.join(ds)})")
        ds = ds[split]
    return [row_prompt(r, f"{name}: row {i}", column) for i, r in enumerate(ds, 1)]


FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".gz", ".parquet", ".csv", ".tsv", ".arrow",
                 ".md", ".yaml", ".yml")
"""Endings that make a name a file, never a Hub data set (names like `teknium/OpenHermes-2.5`
carry other dots)."""


def looks_like_file(name: str) -> bool:
    """`name` can only be a path: it starts with '.', '/' or '~', or ends in a file suffix
    (`d/prompts.txt`); a missing one is "not found", not a Hub data set."""
    return name.startswith((".", "/", "~")) or name.lower().endswith(FILE_SUFFIXES)


def load_prompts(path: str | None = None, n: int | None = None, seed: int | None = None,
                 column: str | None = None, split: str = "train") -> list[str]:
    """Prompts from `path` (None: TinyStories openings from the shared sample).
    `seed` given: shuffled with random.Random(seed); `n` given: the first n of them."""
    p = Path(path) if path else DEFAULT_PROMPTS
    if p.is_dir():
        prompts = read_dataset(str(p), column, split)
    elif not p.is_file() and path and "/" in path and not looks_like_file(path):
        prompts = read_dataset(path, column, split)  # "org/name": the Hub
    elif not p.is_file():
        where = "" if path else " (the shared TinyStories sample; see ../shared/README.md)"
        raise FileNotFoundError(f"prompt file not found: {p}{where}")
    elif path is None or p.resolve() == DEFAULT_PROMPTS.resolve():
        prompts = story_openings(read_text(p))
    else:
        prompts = read_prompt_file(p, column)
    prompts = list(dict.fromkeys(prompts))  # duplicates dropped, first kept, order kept
    if not prompts:
        raise PromptsError(f"{p}: no prompts found")
    if seed is not None:
        random.Random(seed).shuffle(prompts)
    return prompts if n is None else prompts[:n]


def write_prompts(path: Path, prompts: list[str]) -> None:
    """Prompts as JSONL ({"prompt": text} or {"messages": [...]}): `load_prompts` reads back
    the same prompts, multi-line ones and chat messages included."""
    rows = [{"messages": p.messages} if isinstance(p, ChatPrompt) else {"prompt": str(p)}
            for p in prompts]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def split_prompts(prompts: list[str], every: int) -> tuple[list[str], list[str]]:
    """(train, held_out): every `every`-th prompt is held out (every <= 0: none)."""
    if every <= 0:
        return list(prompts), []
    held = [p for i, p in enumerate(prompts) if i % every == every - 1]
    train = [p for i, p in enumerate(prompts) if i % every != every - 1]
    return train, held
