"""`rlhf export`: feedback records as TRL's data sets, or their notes, in any of the three
containers (JSON lines, parquet, a `datasets` folder: `rlhf.feedback.datafiles`).

Rows come from the records by `rlhf.feedback.derive`:
- `trl-preference` (prompt, chosen, rejected): comparisons (ties, both bad, can't tell and
  skips left out: TRL has no ties), rankings (their K choose 2 pairs, tied places left out;
  TRL's rows have no weight, so a ranking counts as its K choose 2 pairs), corrections (the
  corrected text over the original; a demonstration gives none), ratings (pairs between
  responses one rater rated differently);
- `trl-unpaired` (prompt, completion, label): ratings (thumbs; on a longer scale above the
  middle true, below it false) and "both bad" comparisons (two false rows);
- `trl-prompt-completion` (prompt, completion): corrections and demonstrations;
- `trl-lm` (text): the same, prompt + completion as one text;
- `notes` (id, about, rater, text, prompt): every note, and each comment of an older store.

A row imported from a TRL file is written back as it was read (messages, implicit prompt,
other columns: `rlhf.feedback.trl_formats`), when the record still says what the row said
and every row written has the same shape; otherwise all rows are written from the records'
texts, standard format with an explicit prompt, and a line says so.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rlhf.feedback.datafiles import check_out_file, check_storable, container, write_rows
from rlhf.feedback.derive import (
    PreferencePair,
    both_bad_rows,
    correction_pair,
    correction_sft,
    ranking_pairs,
    rating_pairs,
    rating_row,
    to_pairs,
)
from rlhf.feedback.formats import FORMATS, NOTE_COLUMNS, counts, read_records
from rlhf.feedback.records import Comparison, Correction, Ranking, Rating, RecordError, notes
from rlhf.feedback.store import StoreWarning
from rlhf.feedback.trl_formats import standard
from rlhf.harness.progress import Progress

TARGETS = {"trl-preference": "preference", "trl-unpaired": "unpaired",
           "trl-prompt-completion": "prompt-completion", "trl-lm": "lm", "notes": "notes"}
"""`--to` names and the TRL type each writes."""
NEEDS = {"preference": "comparisons, rankings, corrections or ratings",
         "unpaired": "ratings or both-bad comparisons", "prompt-completion": "corrections",
         "lm": "corrections", "notes": "notes"}


def _pair_row(p: PreferencePair) -> dict:
    return {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}


def derived(kind: str, records) -> list[tuple[dict, object]]:
    """(standard row, the record it came from; None for pairs of several ratings) for each
    row of TRL type `kind` that `records` give, in the order written."""
    out: list[tuple[dict, object]] = []
    for r in records:
        if kind == "preference":
            pairs = (to_pairs([r], ties="drop") if isinstance(r, Comparison) else
                     ranking_pairs(r, ties="drop") if isinstance(r, Ranking) else
                     correction_pair(r) if isinstance(r, Correction) else [])
            out += [(_pair_row(p), r) for p in pairs]
        elif kind == "unpaired":
            rows = (rating_row(r) if isinstance(r, Rating) else
                    both_bad_rows(r) if isinstance(r, Comparison) else [])
            out += [({"prompt": u.prompt, "completion": u.completion, "label": u.label}, r)
                    for u in rows]
        elif isinstance(r, Correction):
            out += [({"text": s.prompt + s.completion} if kind == "lm" else
                     {"prompt": s.prompt, "completion": s.completion}, r)
                    for s in correction_sft(r)]
    if kind == "preference":
        out += [(_pair_row(p), None) for p in rating_pairs(records)]
    return out


def original(kind: str, row: dict, record) -> dict | None:
    """The row `record` was imported from (its `meta["trl"]`), if it is of type `kind` and
    still says `row`; else None."""
    kept = getattr(record, "meta", {}).get("trl")
    if not (isinstance(kept, dict) and kept.get("type") == kind
            and isinstance(kept.get("row"), dict)):
        return None
    try:
        return kept["row"] if standard(kind, kept["row"]) == row else None
    except RecordError:
        return None


def shape(row: dict) -> tuple:
    """A row's columns and which of them hold messages (rows of one file share one)."""
    return tuple((k, isinstance(v, list)) for k, v in row.items())


def export_rows(kind: str, records) -> tuple[list[dict], str]:
    """The rows of TRL type `kind` (or notes) from `records`, and a note ('' when every
    imported row went back as read, or none was imported)."""
    if kind == "notes":
        return [{k: getattr(n, k) for k in NOTE_COLUMNS} for n in notes(records)], ""
    pairs = derived(kind, records)
    kept = [original(kind, row, r) for row, r in pairs]
    rows = [k if k is not None else row for (row, _), k in zip(pairs, kept)]
    if len({shape(r) for r in rows}) <= 1:
        return rows, ""
    n = sum(k is not None for k in kept)
    return [row for row, _ in pairs], (
        f"the rows differ in shape (conversational or standard, implicit or explicit prompt, "
        f"other columns; {n} of {len(rows)} were read from TRL files): all are written from "
        "the records' texts, standard format with an explicit prompt")


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="feedback stores (or any file `rlhf import-pairs` "
                                              "reads)")
    p.add_argument("--to", required=True, choices=TARGETS, help="what to write")
    p.add_argument("--out", required=True,
                   help="x.jsonl (JSON lines), x.parquet, or a folder (datasets save_to_disk)")
    p.add_argument("--split", help="write a DatasetDict with this one split (a folder); read "
                                   "this split of a source folder")
    p.add_argument("--format", choices=FORMATS, help="of the sources (detected if not given)")
    a = p.parse_args(argv)
    try:
        folder = container(a.out) == "folder"  # checked before any reading
        check_out_file(str(a.out).rstrip("/") or a.out, folder=folder)
        return _export(a)
    except RecordError as e:
        print(f"rlhf export: error: {e}", file=sys.stderr)
        return 2


def _export(a: argparse.Namespace) -> int:
    records = []
    for src in a.sources:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records += read_records(src, a.format, a.split)
        for w in (w for w in caught if issubclass(w.category, StoreWarning)):
            print(f"rlhf export: skipped malformed line: {w.message}", file=sys.stderr)
    with Progress("export", len(records) + 1) as bar:  # each record checked, then the write
        check_storable(records)
        kind = TARGETS[a.to]
        rows, note = export_rows(kind, records)
        if not rows:
            raise RecordError(f"nothing to write: {a.to} rows come from {NEEDS[kind]}, and "
                              f"the sources hold {counts(records)}")
        if note:
            bar.write(f"note: {note}")
        what = write_rows(rows, a.out, a.split)
        bar.update()
    print(f"wrote {len(rows)} {a.to} rows ({what}) from {counts(records)} to {a.out}")
    return 0
