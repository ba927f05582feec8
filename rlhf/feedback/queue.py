"""The queue of items to rate: a JSON-lines file of `Item`s (one per line; each says what it
asks: compare two, rank K, rate one, correct one), written atomically (temporary file, then
rename). A queue can also be made from a file of ready-made pairs: JSONL rows
`{"prompt", "a", "b"}` or any preference format `rlhf.feedback.formats.read_any` knows
(their labels are dropped, or kept as gold)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlhf.feedback.formats import read_any
from rlhf.feedback.items import Item
from rlhf.feedback.records import RecordError


def write_queue(path: str | os.PathLike, items: list[Item]) -> None:
    """Write `items` as JSON lines, atomically (a reader never sees half a queue)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it.to_dict(), ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def read_queue(path: str | os.PathLike) -> list[Item]:
    """Items of a queue file. A malformed line raises RecordError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"queue not found: {p}")
    items, seen = [], set()
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                it = Item.from_dict(json.loads(line))
            except (ValueError, TypeError) as e:
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
    first = p.open(encoding="utf-8", errors="replace").readline() if p.is_file() else ""
    try:
        row = json.loads(first)
    except ValueError:
        row = None
    if isinstance(row, dict) and {"prompt", "a", "b"} <= set(row) and "label" not in row:
        items = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    items.append(Item.from_dict({"served_because": "import", **d}))
                except (ValueError, TypeError) as e:
                    raise RecordError(f"{p}:{n}: {e}") from None
        return items
    return [Item(prompt=c.prompt, a=c.a, b=c.b, source_a=c.source_a, source_b=c.source_b,
                 served_because="gold" if as_gold else "import",
                 gold=c.label if as_gold else None, group=c.group, meta=c.meta)
            for c in read_any(p)]
