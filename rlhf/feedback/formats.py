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
Every format is read from JSON or JSON lines (either .gz), parquet, a `datasets` folder (a
DatasetDict's `split`) or a Hub name, its columns renamed by an optional mapping `columns`
(`rlhf.feedback.datafiles`).

Rule for a pair whose two sides are the same text (after stripping surrounding whitespace):
it carries no preference, so every importer leaves it out and counts it; `read_any` (and so
`rlhf import-pairs` and training on such a file) prints one line with the count and the first
rows (file:line). A truncated .gz, a byte that is not UTF-8, a field of the wrong type (a
number or null where text belongs) or a bad row is a `RecordError` naming the file, the line
or row, and the key. `rlhf import-pairs` is `rlhf.feedback.imports`.
Out: `to_trl` (prompt/chosen/rejected dicts; ties dropped), `to_dataset` (a `datasets.Dataset`
of comparison records); every kind to TRL's types and notes: `rlhf export`
(`rlhf.feedback.export`).
"""

from __future__ import annotations

import ast
import json
import os
import sys

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


def json_type(x) -> str:
    """The JSON name of a value's type, for errors ("null", "a list", "a number"...)."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true/false"
    return {str: "text", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(x), type(x).__name__)


def text(x, key: str = "value") -> str:
    """A field as text: some files hold a bare JSON `true` or a number where a response says
    "True"; anything else (null, a list, an object) is a RecordError naming `key`."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, int, float)):
        return str(x)
    raise RecordError(f"{key}: expected text, got {json_type(x)}")


def field(row: dict, key: str, where: str) -> str:
    """`row[key]` as text (`text`), or a RecordError naming the row and the key."""
    try:
        return text(row[key], key)
    except RecordError as e:
        raise RecordError(f"{where}: {e}") from None


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


def _imported(dataset: str, prompt: str, a: str, b: str, label: str, index,
              **kw) -> Comparison:
    meta = {"dataset": dataset, "index": index, **kw.pop("meta", {})}
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


def read_hh(path: str | os.PathLike, split: str | None = None,
            columns: dict | None = None) -> list[Comparison]:
    """Anthropic HH-RLHF JSONL(.gz) of {"chosen", "rejected"} transcripts."""
    out = Imported()
    for i, (where, row) in enumerate(read_rows(path, split, columns)):
        _need(row, ("chosen", "rejected"), where)
        for key in ("chosen", "rejected"):
            if not isinstance(row[key], str):
                raise RecordError(f"{where}: {key}: expected a transcript (text), got "
                                  f"{json_type(row[key])}")
        try:
            prompt, chosen, rejected = split_hh(row["chosen"], row["rejected"])
        except RecordError as e:
            raise RecordError(f"{where}: {e}") from None
        out.add(_imported("hh", prompt, chosen, rejected, "a", i), where)
    return out


def read_trl_kind(kind: str, path_or_rows, name: str = "trl", split: str | None = None,
                  columns: dict | None = None):
    """TRL rows of one type (a file, or a list of dicts) -> records (`trl_formats.record`);
    preference pairs with identical sides are left out and counted (`Imported`)."""
    if isinstance(path_or_rows, (str, os.PathLike)):
        rows = read_rows(path_or_rows, split, columns)
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


def read_trl(path_or_rows, name: str = "trl", split: str | None = None,
             columns: dict | None = None) -> list[Comparison]:
    """TRL preference rows (a file or a list of dicts); the prompt is explicit or implicit."""
    return read_trl_kind("preference", path_or_rows, name, split, columns)


def read_notes(path: str | os.PathLike, split: str | None = None,
               columns: dict | None = None) -> list[Note]:
    """Notes as `rlhf export --to notes` writes them (`NOTE_COLUMNS`); ids and `about` kept."""
    out = []
    for where, row in read_rows(path, split, columns):
        _need(row, ("text",), where)
        try:
            about = row.get("about")
            if about is not None and not isinstance(about, str):
                raise RecordError(f"about: expected an answer id or null, got {about!r}")
            for key in ("text", "prompt", "rater"):
                if row.get(key) is not None and not isinstance(row[key], str):
                    raise RecordError(f"{key}: expected text, got {json_type(row[key])}")
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


def shown(x, width: int = 60) -> str:
    """A value of a file, for an error line: its repr (control characters escaped), cut."""
    r = repr(x)
    return r if len(r) <= width else r[:width - 3] + "..."


def is_vote(v, allowed) -> bool:
    """Whether `v` is a number among `allowed` (JSON true/false is not a vote)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v in allowed


def read_pandalm(path: str | os.PathLike, per_annotator: bool = False,
                 split: str | None = None, columns: dict | None = None) -> list[Comparison]:
    """PandaLM test set: majority of the annotators (or one comparison per annotator)."""
    out = Imported()
    for i, (where, row) in enumerate(read_rows(path, split, columns)):
        _need(row, ("instruction", "response1", "response2"), where)
        keys = sorted(k for k in row if k.startswith("annotator"))
        votes = [row[k] for k in keys]
        if not votes or not all(is_vote(v, PANDALM_LABEL) for v in votes):
            raise RecordError(f"{where}: annotator votes must be 0, 1 or 2, got "
                              f"{shown(votes)}")
        extra = field(row, "input", where) if row.get("input") is not None else ""
        prompt = field(row, "instruction", where) + (f"\n\n{extra}" if extra else "")
        a, b = field(row, "response1", where), field(row, "response2", where)
        idx = row.get("idx", i)
        meta = {"votes": votes, "cmp_key": row.get("cmp_key")}
        if per_annotator:
            for k, v in zip(keys, votes):
                out.add(_imported("pandalm", prompt, a, b, PANDALM_LABEL[v], idx, rater=k,
                                  meta=meta), where)
        else:
            out.add(_imported("pandalm", prompt, a, b, majority(votes), idx, meta=meta), where)
    return out


FINEGRAINED_PAIRS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def finegrained_votes(prefs, where: str) -> list:
    """The 6 pairwise votes of a FineGrained row: a list, or its text ("[1, 0, ...]")."""
    if isinstance(prefs, str) and len(prefs) < 200:
        try:
            prefs = ast.literal_eval(prefs)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    if not (isinstance(prefs, (list, tuple)) and len(prefs) == 6
            and all(is_vote(v, (0, 1, 2)) for v in prefs)):
        raise RecordError(f"{where}: preference must be 6 votes of 0, 1, 2, got "
                          f"{shown(prefs)}")
    return list(prefs)


def read_finegrained(path: str | os.PathLike, split: str | None = None,
                     columns: dict | None = None) -> list[Comparison]:
    """FineGrained-RLHF QA feedback: 4 predictions per question, 6 pairwise votes -> 6 pairs."""
    out = Imported()
    for i, (where, row) in enumerate(read_rows(path, split, columns)):
        _need(row, ("question", "preference"), where)
        prefs = finegrained_votes(row["preference"], where)
        question = field(row, "question", where)
        for (x, y), v in zip(FINEGRAINED_PAIRS, prefs):
            _need(row, (f"prediction {x}", f"prediction {y}"), where)
            out.add(_imported("finegrained", question, field(row, f"prediction {x}", where),
                              field(row, f"prediction {y}", where), PANDALM_LABEL[v],
                              f"{i}-{x}{y}", meta={"responses": [x, y]}),
                    f"{where} ({x} vs {y})")
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


def detect_format(path: str | os.PathLike, split: str | None = None,
                  columns: dict | None = None) -> str:
    """Which importer fits a file, from the keys of its first row (read whole, however long;
    columns renamed by `columns`)."""
    where, row = first_row(path, split, columns)
    fmt = format_of_row(row)
    if fmt is None and set(row) == {"prompt"}:
        raise RecordError(f"{where}: prompt-only rows carry no feedback (use the file as "
                          "prompts: rlhf sample-pairs --prompts FILE)")
    if fmt is None:
        raise RecordError(f"{path}: unknown preference format (first row keys: "
                          f"{sorted(row)})")
    return fmt


def store_file(path: str | os.PathLike) -> ComparisonStore:
    """The store at `path`, which must be a file (a store is one JSON-lines file)."""
    if not os.path.isfile(path):
        raise RecordError(f"{path}: not a store file (a store is one JSON-lines file)")
    return ComparisonStore(path)


def read_any(path: str | os.PathLike, fmt: str | None = None, split: str | None = None,
             columns: dict | None = None) -> list[Comparison]:
    """Read a preference file in any known format (detected unless `fmt` is given), its
    columns renamed by `columns` ({the file's name: the name read})."""
    fmt = fmt or detect_format(path, split, columns)
    if fmt == "store":
        return store_file(path).load()
    readers = {"hh": read_hh, "trl": read_trl, "trl-preference": read_trl,
               "pandalm": read_pandalm, "finegrained": read_finegrained}
    if fmt in FORMATS and fmt not in readers:
        raise RecordError(f"{path}: {fmt} rows are not pairs; `rlhf import-pairs` imports them "
                          "into a store and `rlhf export --to trl-preference` writes the pairs "
                          "they give")
    if fmt not in readers:
        raise RecordError(f"unknown format {fmt!r}; known: {list(FORMATS)}")
    comps = readers[fmt](path, split=split, columns=columns)
    report_identical(comps, path)
    return comps


def read_records(path: str | os.PathLike, fmt: str | None = None, split: str | None = None,
                 per_annotator: bool = False, columns: dict | None = None) -> list:
    """Records of every kind from a store (its live answers; unknown kinds left out) or from
    a file in any format here (detected unless `fmt` is given; columns renamed by
    `columns`)."""
    fmt = fmt or detect_format(path, split, columns)
    if fmt == "store":
        return [a for a in store_file(path).answers() if not isinstance(a, Unknown)]
    if fmt == "notes":
        return read_notes(path, split, columns)
    if fmt in TRL_KINDS and TRL_KINDS[fmt] != "preference":
        return read_trl_kind(TRL_KINDS[fmt], path, split=split, columns=columns)
    if fmt == "pandalm" and per_annotator:
        comps = read_pandalm(path, per_annotator=True, split=split, columns=columns)
        report_identical(comps, path)
        return comps
    return read_any(path, fmt, split, columns)


# ----------------------------------------------------------------------------- exporters


def to_trl(comparisons: list[Comparison]) -> list[dict]:
    """TRL's explicit-prompt preference rows; ties and skips are left out (TRL has no ties)."""
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in to_pairs(comparisons, ties="drop")]


def dataset_rows(comparisons: list[Comparison]) -> list[dict]:
    """One row per comparison, every field (dicts as JSON text): a `datasets.Dataset`'s."""
    rows = []
    for c in comparisons:
        d = c.to_dict()
        for k in ("source_a", "source_b", "meta"):
            d[k] = json.dumps(d[k], ensure_ascii=False)
        rows.append(d)
    return rows


def to_dataset(comparisons: list[Comparison]):
    """A `datasets.Dataset` with one row per comparison (`dataset_rows`)."""
    import datasets

    return datasets.Dataset.from_list(dataset_rows(comparisons))


def counts(records) -> str:
    """'3 comparisons, 2 ratings': how many records of each kind, in order of first sight."""
    n: dict[str, int] = {}
    for r in records:
        n[r.kind] = n.get(r.kind, 0) + 1
    return ", ".join(f"{v} {k}s" for k, v in n.items()) or "0 records"
