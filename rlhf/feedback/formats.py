"""Preference data sets in and out: importers to `Comparison`s, exporters for other tools.

In (each -> list[Comparison], rater_kind "human", served_because "import", `group` a stable
prompt id so a split never puts one prompt on both sides):
- `read_hh`: Anthropic HH-RLHF transcripts `{"chosen", "rejected"}`; the prompt is the shared
  conversation up to the last "\\n\\nAssistant:", the responses what follows it.
- `read_trl`: TRL preference rows `{"prompt", "chosen", "rejected"}` (explicit prompt) or
  `{"chosen", "rejected"}` (implicit prompt: their longest common prefix, as TRL's
  `extract_prompt`); conversational rows (lists of {"role", "content"}) are rendered as text.
- `read_pandalm`: PandaLM items, three annotators (0 tie, 1, 2): majority vote, ties kept as
  ties, no majority -> "cant_tell"; or one comparison per annotator (`per_annotator=True`).
- `read_finegrained`: FineGrained-RLHF QA feedback, 4 ranked predictions with 6 pairwise votes
  -> 6 pairs per question (0 = no preference -> tie).
- `read_any`: detects which of these a file is (also reads a comparison store).

Rule for a pair whose two sides are the same text (after stripping surrounding whitespace):
it carries no preference, so every importer leaves it out and counts it; `read_any` (and so
`rlhf import-pairs` and training on such a file) prints one line with the count and the first
rows (file:line). A truncated .gz, a byte that is not UTF-8 or a bad row is a `RecordError`
naming the file and line; nothing is written unless the whole file reads (imports are atomic).
Out: `to_trl` (prompt/chosen/rejected dicts; ties dropped), `to_dataset` (a `datasets.Dataset`).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import os
import sys
import zlib
from pathlib import Path

from rlhf.feedback.derive import to_pairs
from rlhf.feedback.records import Comparison, RecordError
from rlhf.feedback.store import ComparisonStore

FORMATS = ("hh", "trl", "pandalm", "finegrained", "store")


def group_id(prefix: str, prompt: str) -> str:
    """A stable prompt id: the same prompt text always lands in the same split."""
    return f"{prefix}:{hashlib.sha1(prompt.encode('utf-8')).hexdigest()[:12]}"


def text(x) -> str:
    """A field as text: some files hold a bare JSON `true` where a response says "True"."""
    if isinstance(x, str):
        return x
    if x is None:
        return ""
    if isinstance(x, (bool, int, float)):
        return str(x)
    raise RecordError(f"expected text, got {type(x).__name__}")


class Imported(list):
    """An importer's comparisons, with `identical`: where the pairs it left out because both
    sides are the same text were (file:line, or file: item i)."""

    def __init__(self):
        super().__init__()
        self.identical: list[str] = []

    def add(self, c: Comparison, where: str) -> None:
        if c.a.strip() == c.b.strip():
            self.identical.append(where)
        else:
            self.append(c)


def report_identical(comps, path) -> int:
    """One stderr line about the identical-sides pairs an importer left out; their count."""
    where = getattr(comps, "identical", [])
    if where:
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        print(f"note: {path}: {len(where)} pairs with identical sides left out (no preference): "
              f"{', '.join(where[:3])}{more}", file=sys.stderr)
    return len(where)


def _imported(dataset: str, prompt, a, b, label: str, index, **kw) -> Comparison:
    meta = {"dataset": dataset, "index": index, **kw.pop("meta", {})}
    prompt, a, b = text(prompt), text(a), text(b)
    return Comparison(item_id=f"{dataset}-{index}", prompt=prompt, a=a, b=b, label=label,
                      rater=kw.pop("rater", dataset), rater_kind="human",
                      served_because="import", shown_at=0.0,
                      group=group_id(dataset, prompt), meta=meta, **kw)


# ----------------------------------------------------------------------------- reading files


def _decode(raw: bytes, p: Path, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw[:e.start].count(b"\n")
        raise RecordError(f"{p}:{line}: not UTF-8 text (byte {raw[e.start]:#04x})") from None


def _bytes(p: Path, first_line_only: bool = False) -> tuple[int, bytes]:
    """The file's bytes (.gz unpacked), or (line number, its first non-blank line); a
    truncated or damaged .gz -> RecordError."""
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    try:
        with (gzip.open if p.suffix == ".gz" else open)(p, "rb") as f:
            if not first_line_only:
                return 1, f.read()
            for n, line in enumerate(f, 1):  # a whole line, however long
                if line.strip():
                    return n, line
            return 1, b""
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise RecordError(f"{p}: truncated or damaged gzip file ({e})") from None


def _read_rows(path: str | os.PathLike) -> list[dict]:
    """JSON list or JSON lines (optionally .gz) -> rows; bad lines raise with file:line."""
    p = Path(path)
    text = _decode(_bytes(p)[1], p)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise RecordError(f"{p}: not valid JSON: {e}") from None
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
        if bad is not None:
            raise RecordError(f"{p}: item {bad} is not a JSON object")
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as e:
                raise RecordError(f"{p}:{n}: not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise RecordError(f"{p}:{n}: expected a JSON object")
            rows.append(row)
    return rows


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise RecordError(f"{where}: missing key(s) {missing}")


# ----------------------------------------------------------------------------- importers

HH_TURN = "\n\nAssistant:"


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Two HH transcripts -> (shared prompt ending in "Assistant:", chosen, rejected reply)."""
    cut = chosen.rfind(HH_TURN)
    if cut < 0:
        raise RecordError('no "\\n\\nAssistant:" turn in the chosen transcript')
    prompt = chosen[:cut + len(HH_TURN)]
    if not rejected.startswith(prompt):  # rare: the transcripts differ before the last turn
        cut = rejected.rfind(HH_TURN)
        if cut < 0:
            raise RecordError('no "\\n\\nAssistant:" turn in the rejected transcript')
        return prompt, chosen[len(prompt):].strip(), rejected[cut + len(HH_TURN):].strip()
    return prompt, chosen[len(prompt):].strip(), rejected[len(prompt):].strip()


def read_hh(path: str | os.PathLike) -> list[Comparison]:
    """Anthropic HH-RLHF JSONL(.gz) of {"chosen", "rejected"} transcripts."""
    out = Imported()
    for i, row in enumerate(_read_rows(path)):
        where = f"{path}:{i + 1}"
        _need(row, ("chosen", "rejected"), where)
        try:
            prompt, chosen, rejected = split_hh(row["chosen"], row["rejected"])
        except RecordError as e:
            raise RecordError(f"{where}: {e}") from None
        out.add(_imported("hh", prompt, chosen, rejected, "a", i), where)
    return out


def _as_text(x) -> str:
    """A TRL field: a string, or a conversation (list of {"role", "content"})."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        return "".join(f"\n\n{m.get('role', 'user').capitalize()}: {m['content']}" for m in x)
    raise RecordError(f"expected text or a list of messages, got {type(x).__name__}")


def common_prefix(a: str, b: str) -> str:
    """Longest common prefix, cut back to a word or turn boundary when the texts diverge."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    prefix = a[:n]
    if n < min(len(a), len(b)) and prefix and not prefix[-1].isspace():
        cut = max(prefix.rfind(" "), prefix.rfind("\n"), prefix.rfind(":"))
        prefix = prefix[:cut + 1] if cut >= 0 else ""
    return prefix


def read_trl(path_or_rows, name: str = "trl") -> list[Comparison]:
    """TRL preference rows (a file or a list of dicts); the prompt is explicit or implicit."""
    rows = _read_rows(path_or_rows) if isinstance(path_or_rows, (str, os.PathLike)) \
        else list(path_or_rows)
    out = Imported()
    for i, row in enumerate(rows):
        where = f"{path_or_rows if isinstance(path_or_rows, (str, os.PathLike)) else 'row'}" \
                f":{i + 1}"
        _need(row, ("chosen", "rejected"), where)
        try:
            chosen, rejected = _as_text(row["chosen"]), _as_text(row["rejected"])
            if "prompt" in row:
                prompt = _as_text(row["prompt"])
            else:
                prompt = common_prefix(chosen, rejected)
                chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
        except RecordError as e:
            raise RecordError(f"{where}: {e}") from None
        out.add(_imported(name, prompt, chosen.strip(), rejected.strip(), "a", i), where)
    return out


PANDALM_LABEL = {0: "tie", 1: "a", 2: "b"}


def majority(votes: list[int]) -> str:
    """PandaLM votes (0 tie, 1, 2) -> label; ties stay ties, no majority -> cant_tell."""
    for v in set(votes):
        if votes.count(v) * 2 > len(votes):
            return PANDALM_LABEL[v]
    return "cant_tell"


def read_pandalm(path: str | os.PathLike, per_annotator: bool = False) -> list[Comparison]:
    """PandaLM test set: majority of the annotators (or one comparison per annotator)."""
    out = Imported()
    for i, row in enumerate(_read_rows(path)):
        where = f"{path}: item {i}"
        _need(row, ("instruction", "response1", "response2"), where)
        keys = sorted(k for k in row if k.startswith("annotator"))
        votes = [row[k] for k in keys]
        if not votes or any(v not in PANDALM_LABEL for v in votes):
            raise RecordError(f"{where}: annotator votes must be 0, 1 or 2, got {votes}")
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        idx = row.get("idx", i)
        meta = {"votes": votes, "cmp_key": row.get("cmp_key")}
        if per_annotator:
            for k, v in zip(keys, votes):
                out.add(_imported("pandalm", prompt, row["response1"], row["response2"],
                                  PANDALM_LABEL[v], idx, rater=k, meta=meta), where)
        else:
            out.add(_imported("pandalm", prompt, row["response1"], row["response2"],
                              majority(votes), idx, meta=meta), where)
    return out


FINEGRAINED_PAIRS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def read_finegrained(path: str | os.PathLike) -> list[Comparison]:
    """FineGrained-RLHF QA feedback: 4 predictions per question, 6 pairwise votes -> 6 pairs."""
    out = Imported()
    for i, row in enumerate(_read_rows(path)):
        where = f"{path}: item {i}"
        _need(row, ("question", "preference"), where)
        prefs = row["preference"]
        if isinstance(prefs, str):
            prefs = ast.literal_eval(prefs)
        if len(prefs) != 6 or any(v not in (0, 1, 2) for v in prefs):
            raise RecordError(f"{where}: preference must be 6 votes of 0, 1, 2, got {prefs}")
        for (x, y), v in zip(FINEGRAINED_PAIRS, prefs):
            _need(row, (f"prediction {x}", f"prediction {y}"), where)
            out.add(_imported("finegrained", row["question"], row[f"prediction {x}"],
                              row[f"prediction {y}"], PANDALM_LABEL[v], f"{i}-{x}{y}",
                              meta={"responses": [x, y]}), f"{where} ({x} vs {y})")
    return out


def detect_format(path: str | os.PathLike) -> str:
    """Which importer fits a file, from the keys of its first row (read whole, however long)."""
    p = Path(path)
    n, line = _bytes(p, first_line_only=True)
    head = _decode(line, p, n).strip()
    if not head:
        raise RecordError(f"{p}: the file is empty")
    if head.startswith("["):
        rows = _read_rows(p)
        if not rows:
            raise RecordError(f"{p}: the JSON list is empty")
        row = rows[0]
    else:
        try:
            row = json.loads(head)
        except ValueError as e:
            raise RecordError(f"{p}:{n}: not valid JSON: {e}") from None
        if not isinstance(row, dict):
            raise RecordError(f"{p}:{n}: expected a JSON object")
    keys = set(row)
    if row.get("type") in ("comparison", "retract"):
        return "store"
    if "response1" in keys and any(k.startswith("annotator") for k in keys):
        return "pandalm"
    if "prediction 1" in keys and "preference" in keys:
        return "finegrained"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and isinstance(row["chosen"], str) and HH_TURN in row["chosen"]:
            return "hh"
        return "trl"
    raise RecordError(f"{p}: unknown preference format (first row keys: {sorted(keys)})")


def read_any(path: str | os.PathLike, fmt: str | None = None) -> list[Comparison]:
    """Read a preference file in any known format (detected unless `fmt` is given)."""
    fmt = fmt or detect_format(path)
    if fmt == "store":

        return ComparisonStore(path).load()
    readers = {"hh": read_hh, "trl": read_trl, "pandalm": read_pandalm,
               "finegrained": read_finegrained}
    if fmt not in readers:
        raise RecordError(f"unknown format {fmt!r}; known: {list(FORMATS)}")
    comps = readers[fmt](path)
    report_identical(comps, path)
    return comps


# ----------------------------------------------------------------------------- exporters


def to_trl(comparisons: list[Comparison]) -> list[dict]:
    """TRL's explicit-prompt preference rows; ties and skips are left out (TRL has no ties)."""
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in to_pairs(comparisons, ties="drop")]


def to_dataset(comparisons: list[Comparison]):
    """A `datasets.Dataset` with one row per comparison (every field; dicts as JSON text)."""
    import datasets

    rows = []
    for c in comparisons:
        d = c.to_dict()
        for k in ("source_a", "source_b", "meta"):
            d[k] = json.dumps(d[k], ensure_ascii=False)
        rows.append(d)
    return datasets.Dataset.from_list(rows)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf import-pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="preference data file (.json, .jsonl, .jsonl.gz)")
    p.add_argument("--format", choices=FORMATS, help="detected from the file if not given")
    p.add_argument("--out", required=True, help="where to write (see --to)")
    p.add_argument("--to", choices=("store", "trl", "dataset"), default="store",
                   help="store: append to a comparison store (default); trl: write TRL "
                        "prompt/chosen/rejected JSONL; dataset: datasets.Dataset.save_to_disk")
    p.add_argument("--per-annotator", action="store_true",
                   help="pandalm: one comparison per annotator instead of the majority")
    a = p.parse_args(argv)
    try:
        return _import(a)
    except RecordError as e:
        print(f"rlhf import-pairs: error: {e}", file=sys.stderr)
        return 2


def _import(a: argparse.Namespace) -> int:
    fmt = a.format or detect_format(a.file)
    if fmt == "pandalm" and a.per_annotator:
        comps = read_pandalm(a.file, per_annotator=True)
        report_identical(comps, a.file)
    else:
        comps = read_any(a.file, fmt)
    labels = {k: sum(c.label == k for c in comps) for k in sorted({c.label for c in comps})}
    if a.to == "trl":
        rows = to_trl(comps)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                               encoding="utf-8")
        print(f"wrote {len(rows)} TRL rows ({fmt}; ties and skips left out) to {a.out}")
    elif a.to == "dataset":
        to_dataset(comps).save_to_disk(a.out)
        print(f"saved a datasets.Dataset of {len(comps)} comparisons ({fmt}) to {a.out}")
    else:
        ComparisonStore(a.out).extend(comps)
        print(f"imported {len(comps)} comparisons ({fmt}) into {a.out}: {labels}")
    return 0
