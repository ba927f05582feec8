"""The queue of items to rate: a JSON-lines file of `Item`s (one per line; each says what it
asks: compare two, rank K, rate one, correct one), written atomically (temporary file, then
rename). A queue can also be made from a file of ready-made pairs: JSONL rows
`{"prompt", "a", "b"}` or any preference format `rlhf.feedback.formats.read_any` knows
(their labels are dropped, or kept as gold)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlhf.feedback.datafiles import decode, first_row, parse_json, read_rows
from rlhf.feedback.formats import read_any
from rlhf.feedback.items import Item
from rlhf.feedback.records import RecordError
from rlhf.files import write_atomic


def write_queue(path: str | os.PathLike, items: list[Item]) -> None:
    """Write `items` as JSON lines, atomically (a reader never sees half a queue): a
    failure (a full disk) leaves the old queue, or none, and no temporary file, and names
    `path`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, "".join(json.dumps(it.to_dict(), ensure_ascii=False, default=str) + "\n"
                            for it in items))


def read_queue(path: str | os.PathLike) -> list[Item]:
    """Items of a queue file. A malformed line (or a byte that is not UTF-8) raises
    RecordError naming file and line."""
    p = Path(path)
    if p.is_dir():
        raise RecordError(f"{p}: is a folder, not a queue file")
    if not p.is_file():
        raise FileNotFoundError(f"queue not found: {p}")
    items, seen = [], set()
    for n, line in enumerate(decode(p.read_bytes(), p).split("\n"), 1):
        if line.strip():
            d = parse_json(line, f"{p}:{n}")
            try:
                it = Item.from_dict(d)
            except (ValueError, TypeError) as e:  # (a RecordError is a ValueError)
                raise RecordError(f"{p}:{n}: {e}") from None
            if it.id in seen:
                raise RecordError(f"{p}:{n}: duplicate item id {it.id!r}")
            seen.add(it.id)
            items.append(it)
    return items


def items_from_pairs_file(path: str | os.PathLike, as_gold: bool = False) -> list[Item]:
    """A queue from ready-made pairs: JSONL `{"prompt", "a", "b", ...}` rows, or any format
    `rlhf.feedback.formats.read_any` reads (labels dropped, or kept as the gold answer)."""
    p = Path(path)
    row = first_row(p)[1]
    if {"prompt", "a", "b"} <= set(row) and "label" not in row:
        items = []
        for where, d in read_rows(p):
            try:
                items.append(Item.from_dict({"served_because": "import", **d}))
            except (ValueError, TypeError) as e:
                raise RecordError(f"{where}: {e}") from None
        return items
    return [Item(prompt=c.prompt, a=c.a, b=c.b, source_a=c.source_a, source_b=c.source_b,
                 served_because="gold" if as_gold else "import",
                 gold=c.label if as_gold else None, group=c.group, meta=c.meta)
            for c in read_any(p)]
