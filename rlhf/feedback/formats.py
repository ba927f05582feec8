"""Preference data sets and TRL's data sets in: importers to feedback records.

In (rater_kind "human", served_because "import", `group` a stable prompt id so a split never
puts one prompt on both sides):
- `read_hh`: Anthropic HH-RLHF transcripts `{"chosen", "rejected"}`; the prompt is the shared
  conversation up to the last "\\n\\nAssistant:", the responses what follows it.
- `read_trl`: TRL preference rows `{"prompt", "chosen", "rejected"}` (explicit prompt) or
  `{"chosen", "rejected"}` (implicit prompt), standard or conversational -> comparisons;
  `read_trl_kind` reads TRL's other types too: unpaired preference (KTO) -> thumbs ratings,
  prompt-completion and language modelling -> demonstrations (`rlhf.feedback.trl_formats`
  says how, and how a row is kept to be written back as it was).
- `read_pandalm`: PandaLM items, three annotators (0 tie, 1, 2): majority vote, ties kept as
  ties, no majority -> "cant_tell"; or one comparison per annotator (`per_annotator=True`).
- `read_finegrained`: FineGrained-RLHF QA feedback, 4 ranked predictions with 6 pairwise votes
  -> 6 pairs per question (0 = no preference -> tie).
- `read_notes`: notes as `rlhf export --to notes` writes them.
- `read_any`: detects which preference format a file is (also reads a store's comparisons);
  `read_records`: the same for every kind of record.
Every format is read from JSON, JSON lines (.gz), parquet or a `datasets` folder
(`rlhf.feedback.datafiles`).

Rule for a pair whose two sides are the same text (after stripping surrounding whitespace):
it carries no preference, so every importer leaves it out and counts it; `read_any` (and so
`rlhf import-pairs` and training on such a file) prints one line with the count and the first
rows (file:line). A truncated .gz, a byte that is not UTF-8 or a bad row is a `RecordError`
naming the file, the line or row, and the key; nothing is written unless the whole file reads
(imports are atomic).
Out: `to_trl` (prompt/chosen/rejected dicts; ties dropped), `to_dataset` (a `datasets.Dataset`
of comparison records); every kind to TRL's types and notes: `rlhf export`
(`rlhf.feedback.export`).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

from rlhf.feedback import trl_formats
from rlhf.feedback.datafiles import first_row, read_rows
from rlhf.feedback.derive import to_pairs
from rlhf.feedback.records import KINDS, Comparison, Note, RecordError, Unknown
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.trl_formats import (
    common_prefix,  # noqa: F401 (where callers found it)
    group_id,
)

TRL_KINDS = {"trl": "preference", "trl-preference": "preference", "trl-unpaired": "unpaired",
             "trl-prompt-completion": "prompt-completion", "trl-lm": "lm"}
"""`--format` names of TRL's types (`trl` is the preference type, as before)."""
FORMATS = ("hh", "trl", "pandalm", "finegrained", "store", "trl-preference", "trl-unpaired",
           "trl-prompt-completion", "trl-lm", "notes")
NOTE_COLUMNS = ("id", "about", "rater", "text", "prompt")
"""The columns of a notes file (`rlhf export --to notes`)."""


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


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise RecordError(f"{where}: missing key(s) {missing}")


def _imported(dataset: str, prompt, a, b, label: str, index, **kw) -> Comparison:
    meta = {"dataset": dataset, "index": index, **kw.pop("meta", {})}
    prompt, a, b = text(prompt), text(a), text(b)
    return Comparison(item_id=f"{dataset}-{index}", prompt=prompt, a=a, b=b, label=label,
                      rater=kw.pop("rater", dataset), rater_kind="human",
                      served_because="import", shown_at=0.0,
                      group=group_id(dataset, prompt), meta=meta, **kw)


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


def read_hh(path: str | os.PathLike, split: str | None = None) -> list[Comparison]:
    """Anthropic HH-RLHF JSONL(.gz) of {"chosen", "rejected"} transcripts."""
    out = Imported()
    for i, (where, row) in enumerate(read_rows(path, split)):
        _need(row, ("chosen", "rejected"), where)
        try:
            prompt, chosen, rejected = split_hh(row["chosen"], row["rejected"])
        except RecordError as e:
            raise RecordError(f"{where}: {e}") from None
        out.add(_imported("hh", prompt, chosen, rejected, "a", i), where)
    return out


def read_trl_kind(kind: str, path_or_rows, name: str = "trl", split: str | None = None):
    """TRL rows of one type (a file, or a list of dicts) -> records (`trl_formats.record`);
    preference pairs with identical sides are left out and counted (`Imported`)."""
    if isinstance(path_or_rows, (str, os.PathLike)):
        rows = read_rows(path_or_rows, split)
    else:
        rows = [(f"row:{i}", r) for i, r in enumerate(path_or_rows, 1)]
    out = Imported()
    for i, (where, row) in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise RecordError("expected an object")
            r = trl_formats.record(kind, row, i, name)
        except RecordError as e:
            raise RecordError(f"{where}: {e}") from None
        if kind == "preference":
            out.add(r, where)
        else:
            out.append(r)
    return out


def read_trl(path_or_rows, name: str = "trl", split: str | None = None) -> list[Comparison]:
    """TRL preference rows (a file or a list of dicts); the prompt is explicit or implicit."""
    return read_trl_kind("preference", path_or_rows, name, split)


def read_notes(path: str | os.PathLike, split: str | None = None) -> list[Note]:
    """Notes as `rlhf export --to notes` writes them (`NOTE_COLUMNS`); ids and `about` kept."""
    out = []
    for where, row in read_rows(path, split):
        _need(row, ("text",), where)
        try:
            about = row.get("about")
            if about is not None and not isinstance(about, str):
                raise RecordError(f"about: expected an answer id or null, got {about!r}")
            n = Note(text=row["text"], about=about, prompt=row.get("prompt") or "",
                     rater=row.get("rater") or "anonymous", served_because="import",
                     shown_at=0.0, **({"id": str(row["id"])} if row.get("id") else {}))
            n.check()
        except RecordError as e:
            raise RecordError(f"{where}: {e}") from None
        out.append(n)
    return out


PANDALM_LABEL = {0: "tie", 1: "a", 2: "b"}


def majority(votes: list[int]) -> str:
    """PandaLM votes (0 tie, 1, 2) -> label; ties stay ties, no majority -> cant_tell."""
    for v in set(votes):
        if votes.count(v) * 2 > len(votes):
            return PANDALM_LABEL[v]
    return "cant_tell"


def read_pandalm(path: str | os.PathLike, per_annotator: bool = False,
                 split: str | None = None) -> list[Comparison]:
    """PandaLM test set: majority of the annotators (or one comparison per annotator)."""
    out = Imported()
    for i, (where, row) in enumerate(read_rows(path, split)):
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


def read_finegrained(path: str | os.PathLike, split: str | None = None) -> list[Comparison]:
    """FineGrained-RLHF QA feedback: 4 predictions per question, 6 pairwise votes -> 6 pairs."""
    out = Imported()
    for i, (where, row) in enumerate(read_rows(path, split)):
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


def format_of_row(row: dict) -> str | None:
    """Which format a file is, from the keys of its first row (None: none known)."""
    keys = set(row)
    if row.get("type") in (*KINDS, "retract"):
        return "store"
    if "response1" in keys and any(k.startswith("annotator") for k in keys):
        return "pandalm"
    if "prediction 1" in keys and "preference" in keys:
        return "finegrained"
    if {"text", "about"} <= keys:
        return "notes"
    kind = trl_formats.kind_of_row(row)
    if kind == "preference":
        if "prompt" not in keys and isinstance(row["chosen"], str) and HH_TURN in row["chosen"]:
            return "hh"
        return "trl"
    return {v: k for k, v in TRL_KINDS.items() if k != "trl"}.get(kind)


def detect_format(path: str | os.PathLike, split: str | None = None) -> str:
    """Which importer fits a file, from the keys of its first row (read whole, however long)."""
    where, row = first_row(path, split)
    fmt = format_of_row(row)
    if fmt is None and set(row) == {"prompt"}:
        raise RecordError(f"{where}: prompt-only rows carry no feedback (use the file as "
                          "prompts: rlhf sample-pairs --prompts FILE)")
    if fmt is None:
        raise RecordError(f"{path}: unknown preference format (first row keys: "
                          f"{sorted(row)})")
    return fmt


def read_any(path: str | os.PathLike, fmt: str | None = None,
             split: str | None = None) -> list[Comparison]:
    """Read a preference file in any known format (detected unless `fmt` is given)."""
    fmt = fmt or detect_format(path, split)
    if fmt == "store":
        return ComparisonStore(path).load()
    readers = {"hh": read_hh, "trl": read_trl, "trl-preference": read_trl,
               "pandalm": read_pandalm, "finegrained": read_finegrained}
    if fmt in FORMATS and fmt not in readers:
        raise RecordError(f"{path}: {fmt} rows are not pairs; `rlhf import-pairs` imports them "
                          "into a store and `rlhf export --to trl-preference` writes the pairs "
                          "they give")
    if fmt not in readers:
        raise RecordError(f"unknown format {fmt!r}; known: {list(FORMATS)}")
    comps = readers[fmt](path, split=split)
    report_identical(comps, path)
    return comps


def read_records(path: str | os.PathLike, fmt: str | None = None, split: str | None = None,
                 per_annotator: bool = False) -> list:
    """Records of every kind from a store (its live answers; unknown kinds left out) or from
    a file in any format here (detected unless `fmt` is given)."""
    fmt = fmt or detect_format(path, split)
    if fmt == "store":
        return [a for a in ComparisonStore(path).answers() if not isinstance(a, Unknown)]
    if fmt == "notes":
        return read_notes(path, split)
    if fmt in TRL_KINDS and TRL_KINDS[fmt] != "preference":
        return read_trl_kind(TRL_KINDS[fmt], path, split=split)
    if fmt == "pandalm" and per_annotator:
        comps = read_pandalm(path, per_annotator=True, split=split)
        report_identical(comps, path)
        return comps
    return read_any(path, fmt, split)


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
    p.add_argument("file", help="data file (.json, .jsonl, .jsonl.gz, .parquet) or a "
                                "datasets save_to_disk folder")
    p.add_argument("--format", choices=FORMATS, help="detected from the file if not given")
    p.add_argument("--split", help="of a datasets folder holding a DatasetDict (default: its "
                                   "only split, or train)")
    p.add_argument("--out", required=True, help="where to write (see --to)")
    p.add_argument("--to", choices=("store", "trl", "dataset"), default="store",
                   help="store: append to a feedback store (default); trl: write TRL "
                        "prompt/chosen/rejected JSONL; dataset: datasets.Dataset.save_to_disk "
                        "(trl and dataset take pairs; `rlhf export` writes every kind)")
    p.add_argument("--per-annotator", action="store_true",
                   help="pandalm: one comparison per annotator instead of the majority")
    a = p.parse_args(argv)
    try:
        return _import(a)
    except RecordError as e:
        print(f"rlhf import-pairs: error: {e}", file=sys.stderr)
        return 2


def counts(records) -> str:
    """'3 comparisons, 2 ratings': how many records of each kind, in order of first sight."""
    n: dict[str, int] = {}
    for r in records:
        n[r.kind] = n.get(r.kind, 0) + 1
    return ", ".join(f"{v} {k}s" for k, v in n.items()) or "0 records"


def _import(a: argparse.Namespace) -> int:
    fmt = a.format or detect_format(a.file, a.split)
    records = read_records(a.file, fmt, a.split, a.per_annotator)
    comps = [r for r in records if isinstance(r, Comparison)]
    if a.to != "store" and len(comps) != len(records):
        raise RecordError(f"{a.file}: --to {a.to} takes pairs, and this {fmt} file holds "
                          f"{counts(records)}; import it into a store (--to store), then "
                          "`rlhf export` it")
    if a.to == "trl":
        rows = to_trl(comps)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                               encoding="utf-8")
        print(f"wrote {len(rows)} TRL rows ({fmt}; ties and skips left out) to {a.out}")
    elif a.to == "dataset":
        to_dataset(comps).save_to_disk(a.out)
        print(f"saved a datasets.Dataset of {len(comps)} comparisons ({fmt}) to {a.out}")
    elif len(comps) == len(records):
        labels = {k: sum(c.label == k for c in comps) for k in sorted({c.label for c in comps})}
        ComparisonStore(a.out).extend(comps)
        print(f"imported {len(comps)} comparisons ({fmt}) into {a.out}: {labels}")
    else:
        ComparisonStore(a.out).extend(records)
        print(f"imported {counts(records)} ({fmt}) into {a.out}")
    return 0
