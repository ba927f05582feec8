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
  of prompt / messages / text. A Hub name is loaded by `load_hub`, the project's one Hub
  reader (feedback files use it too): without network it fails at once, in one line saying
  how to use a local copy (`HF_HUB_OFFLINE=1` reads the local cache without asking).
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
import os
import random
import re
import threading
import urllib.error
import urllib.request
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

    def __getnewargs__(self):  # copy, deepcopy (dataclasses.asdict) and pickle: the messages
        return (self.messages,)


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


class HubUnreachable(PromptsError):
    """A Hub data set name that cannot be loaded here (no network, offline mode, not cached)."""


HUB_TIMEOUT = 3.0
"""Seconds the check that the Hub answers may take before the Hub counts as unreachable."""


def hub_offline() -> bool:
    """Whether the user set Hugging Face's offline mode (then only the local cache is read)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """Whether the Hub's endpoint (HF_ENDPOINT, default huggingface.co) answers within
    `timeout` seconds, name lookup included (any HTTP answer counts; proxies are honoured).
    `datasets` itself would retry for about half a minute before failing."""
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    answered: list[bool] = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            answered.append(True)
        except urllib.error.HTTPError:  # an answer, if not a 200
            answered.append(True)
        except Exception:  # no route, no name, refused, timed out
            answered.append(False)

    t = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    t.start()
    t.join(timeout)
    return bool(answered and answered[0])


def unreachable(name: str, why: str) -> HubUnreachable:
    """The one line for a Hub name that cannot be loaded: why, and how to use a local copy."""
    return HubUnreachable(
        f"{name}: the Hub data set could not be reached ({why}); to use a local copy, run "
        f"where there is network: python -c \"import datasets; datasets.load_dataset("
        f"'{name}').save_to_disk('DIR')\" and give DIR instead"
        + ("" if hub_offline() else " (or set HF_HUB_OFFLINE=1 to read a copy already in the "
                                    "Hugging Face cache)"))


def load_hub(name: str, split: str = "train"):
    """Hub data set `name` ("org/name"), split `split`, as a `datasets.Dataset`. Offline
    mode (`hub_offline`) reads the local cache only; otherwise the Hub must answer within
    HUB_TIMEOUT seconds. Any failure is one `HubUnreachable` line."""
    import datasets

    if not hub_offline() and not hub_reachable():
        raise unreachable(name, f"no answer from the Hub within {HUB_TIMEOUT:g} s")
    try:
        return datasets.load_dataset(name, split=split)
    except ValueError as e:  # e.g. an unknown split: datasets names the ones there are
        raise PromptsError(f"{name}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # offline and not cached, no such data set: datasets says which
        why = "offline mode, not in the local cache" if hub_offline() else type(e).__name__
        raise unreachable(name, f"{why}: {str(e).splitlines()[0] if str(e) else ''}") from None


def is_hub_name(name: str) -> bool:
    """`name` is no existing path and reads as a Hub data set ("org/name", not a file name:
    `looks_like_file`)."""
    return not Path(name).exists() and "/" in name and not looks_like_file(name)


def read_dataset(name: str, column: str | None, split: str) -> list[str]:
    """A `datasets` save_to_disk folder, or a Hub dataset name (`load_hub`)."""
    import datasets

    if not Path(name).is_dir():
        ds = load_hub(name, split)
    else:
        try:
            ds = datasets.load_from_disk(name)
        except Exception as e:  # not a saved dataset: datasets says why
            raise PromptsError(f"{name}: not a readable dataset ({type(e).__name__}: "
                               f"{e})") from None
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
    elif path and is_hub_name(path):
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
