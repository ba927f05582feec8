"""Model cards: the README.md in every model folder the project writes (a policy; a DPO, SFT
or KTO policy; a reward model), so that the folder says what it is on the Hub or a disk.

One function writes them all (`render_card`), from a `card` dict that the saving function
fills with what it knows (the architecture, the size, the method its meta file names) and the
caller with what it has (its summary):

    title       str   the heading (default: "<method> model")
    base_model  str   the folder or Hub name training started from
    data        str | list[str]   the training data (files, folders, Hub names)
    method      str   how it was trained (e.g. "DPO", "reward model: Bradley-Terry ...")
    settings    dict  the settings worth knowing (beta, steps, max_len, ...)
    metrics     dict  held-out metrics (name: value), as measured by the caller
    model       dict  facts about the weights (architecture, parameters, vocabulary, ...)
    usage       str   Markdown: how to load and use the folder (a code block)

Factual only: a field nobody gave is "not recorded", never guessed. Values are written on
one line each with backticks and newlines taken out, so a data path cannot break the page.
`card_from_meta` reads the fields from the JSON a trainer already writes beside the weights
(`base_model` / `init`, `data`, `metrics`; the rest as settings);
`set_metrics` fills in the held-out metrics of a card already written (a trainer measures
them after it saves; the loop adds its round's evaluation to the round's policy with
`keep`); `held_out` reads them from a run's metrics.jsonl (the last validation's `val_*`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlhf.files import write_atomic

CARD_FILE = "README.md"
NOT_RECORDED = "not recorded"
BASE_KEYS = ("base_model", "init")
"""Meta keys naming the starting model, first found wins (a DPO/KTO `reference` is not
necessarily it: a setting)."""
OWN_KEYS = (*BASE_KEYS, "data", "metrics", "card")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def one_line(value) -> str:
    """A value as one Markdown-safe line: newlines and backticks out, at most 300 chars."""
    text = " ".join(str(value).split()).replace("`", "'")
    return text if len(text) <= 300 else text[:297] + "..."


def card_from_meta(meta: dict, method: str | None = None) -> dict:
    """The card fields a trainer's meta JSON holds: the base model (`BASE_KEYS`), `data`,
    `metrics`, a `card` dict of its own (its fields win), and every other scalar or short
    list as a setting."""
    base = next((meta[k] for k in BASE_KEYS if meta.get(k)), None)
    settings = {k: v for k, v in meta.items() if k not in OWN_KEYS
                and (isinstance(v, (str, int, float, bool)) or v is None
                     or (isinstance(v, list) and len(v) <= 8))}
    card = {"base_model": base, "data": meta.get("data"), "metrics": meta.get("metrics"),
            "method": method, "settings": settings}
    card.update({k: v for k, v in (meta.get("card") or {}).items() if v is not None})
    return card


def _front_matter(card: dict) -> list[str]:
    """The Hub's YAML header: the library, and `base_model` where it is a Hub name (a local
    path there would be flagged by the Hub)."""
    lines = ["---", "library_name: transformers", "tags:", "- rlhf"]
    base = card.get("base_model")
    if isinstance(base, str) and HUB_NAME.fullmatch(base) and not Path(base).exists():
        lines.append(f"base_model: {base}")
    return lines + ["---", ""]


def _table(rows: dict) -> list[str]:
    if not rows:
        return [NOT_RECORDED, ""]
    out = ["| key | value |", "| --- | --- |"]
    out += [f"| {one_line(k).replace('|', '/')} | `{one_line(v).replace('|', '/')}` |"
            for k, v in rows.items()]
    return out + [""]


def render_card(card: dict) -> str:
    """A card dict (module docstring) -> the README.md text."""
    method = card.get("method") or NOT_RECORDED
    title = card.get("title") or (f"{one_line(method)} model" if card.get("method")
                                  else "Model")
    data = card.get("data")
    data = [data] if isinstance(data, str) else list(data or [])
    base = card.get("base_model")
    lines = [*_front_matter(card), f"# {one_line(title)}", "",
             "Written by the `rlhf` project. Everything below was recorded by the run that "
             "saved this folder; what it did not record says so.", "",
             f"- **Base model:** {f'`{one_line(base)}`' if base else NOT_RECORDED}",
             f"- **Method:** {one_line(method)}",
             "- **Data:** " + (", ".join(f"`{one_line(d)}`" for d in data) or NOT_RECORDED),
             ""]
    if card.get("model"):
        lines += ["## Model", "", *_table(card["model"])]
    lines += ["## Settings", "", *_table(card.get("settings") or {}),
              METRICS_HEAD.strip(), "", *_table(card.get("metrics") or {})]
    if card.get("usage"):
        lines += ["## Usage", "", card["usage"].strip(), ""]
    return "\n".join(lines)


METRICS_HEAD = "## Held-out metrics\n\n"


def set_metrics(folder: str | Path, metrics: dict | None, write: bool = True,
                keep: bool = False) -> Path | None:
    """Replace the held-out metrics table of `folder`/README.md (written by `render_card`)
    with `metrics` (name: value; numbers, text, booleans and short lists of numbers such as
    a 95% interval; None, other lists and dicts left out), or with `keep` add them to the
    rows already there. Nothing where `write` is false
    (the ranks that do not write) or the folder has no card (written before cards)."""
    path = Path(folder) / CARD_FILE
    if not write or not path.is_file() or METRICS_HEAD not in path.read_text():
        return None
    text = path.read_text()
    start = text.index(METRICS_HEAD) + len(METRICS_HEAD)
    end = text.find("\n## ", start)
    rows = _rows(text[start:end if end >= 0 else len(text)]) if keep else {}
    rows.update({k: v for k, v in (metrics or {}).items() if isinstance(v, (
        int, float, str, bool)) or (isinstance(v, list) and len(v) <= 4 and all(
            isinstance(x, (int, float)) for x in v))})
    table = "\n".join(_table(rows))
    write_atomic(path, text[:start] + table + (text[end:] if end >= 0 else "\n"))
    return path


def _rows(table: str) -> dict:
    """The rows of a table `_table` wrote -> {key: value text}."""
    out = {}
    for line in table.splitlines()[2:]:
        parts = line.split(" | ")
        if len(parts) == 2 and line.startswith("| ") and line.endswith("` |"):
            out[parts[0][2:]] = parts[1][1:-3]
    return out


def held_out(metrics_log: str | Path, prefix: str = "val_") -> dict:
    """The `prefix` figures of the last row of a metrics.jsonl that has any: a stage's
    validation at its last step, i.e. of the weights it saved. {} when there is none."""
    path = Path(metrics_log)
    rows = path.read_text().splitlines() if path.is_file() else []
    for line in reversed(rows):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # (a line cut by a crash)
        found = {k: v for k, v in row.items() if k.startswith(prefix)} if isinstance(
            row, dict) else {}
        if found:
            return found
    return {}


def write_card(folder: str | Path, card: dict) -> Path:
    """Write (or rewrite, e.g. once held-out metrics are known) `folder`/README.md."""
    path = Path(folder) / CARD_FILE
    write_atomic(path, render_card(card))
    return path
