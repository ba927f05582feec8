"""`rlhf import-pairs FILE --out OUT`: a data set in any format `rlhf.feedback.formats` reads,
into a feedback store (default), a TRL preference JSON-lines file, or a `datasets` folder.

All or nothing: the whole file is read and checked first (a bad row is one line naming the
file, the line or row, and the key); then the records go into the store in one write
(`ComparisonStore.extend_all_or_none`), so a full disk leaves the store exactly as it was and
says that none of the records was imported (run the command again once there is room). A TRL
file or a `datasets` folder is written beside its target and renamed into place
(`rlhf.feedback.datafiles.write_rows`): a failure leaves the old one, or none, and no
temporary file. `--out` is checked before any work (a folder where a file goes is refused).
A store given as the input (`--format store`) is read as stores are: a damaged line is
reported, one line each, and left out.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rlhf.feedback.datafiles import check_out_file, check_storable, column_errors, write_rows
from rlhf.feedback.formats import (
    FORMATS,
    counts,
    dataset_rows,
    detect_format,
    read_records,
    to_trl,
)
from rlhf.feedback.records import Comparison, RecordError
from rlhf.feedback.store import ComparisonStore, StoreWarning
from rlhf.harness.progress import Progress

PROG = "rlhf import-pairs"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="data file (.json, .jsonl, .jsonl.gz, .parquet), a "
                                "datasets save_to_disk folder or a Hub name (org/name)")
    p.add_argument("--format", choices=FORMATS, help="detected from the file if not given")
    p.add_argument("--split", help="of a datasets folder holding a DatasetDict or a Hub set "
                                   "(default: its only split, or train)")
    p.add_argument("--out", required=True, help="where to write (see --to)")
    p.add_argument("--to", choices=("store", "trl", "dataset"), default="store",
                   help="store: append to a feedback store (default); trl: write TRL "
                        "prompt/chosen/rejected JSONL; dataset: datasets.Dataset.save_to_disk "
                        "(trl and dataset take pairs; `rlhf export` writes every kind)")
    p.add_argument("--per-annotator", action="store_true",
                   help="pandalm: one comparison per annotator instead of the majority")
    p.add_argument("--column", action="append", default=[], metavar="THEIRS=OURS",
                   help="rename a column as it is read, e.g. --column question=prompt "
                        "(repeat for each; names read: prompt, chosen, rejected, completion, "
                        "label, text, messages)")
    return p


def column_map(items: list[str]) -> dict[str, str]:
    """--column THEIRS=OURS items -> {theirs: ours}; a bad item or name is a RecordError."""
    out = {}
    for item in items:
        src, eq, dst = item.partition("=")
        if not eq or not src or not dst:
            raise RecordError(f"--column {item!r}: expected THEIRS=OURS, e.g. question=prompt")
        out[src] = dst
    for key, why in column_errors(out):
        raise RecordError(f"--column {key}: {why}")
    return out


def cli(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    try:
        check_out_file(a.out, folder=a.to == "dataset")
        return _import(a)
    except RecordError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def read(a: argparse.Namespace) -> tuple[str, list]:
    """(format, records) of the input; a store's damaged lines reported, one line each."""
    columns = column_map(a.column)
    fmt = a.format or detect_format(a.file, a.split, columns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        records = read_records(a.file, fmt, a.split, a.per_annotator, columns)
    for w in caught:
        if issubclass(w.category, StoreWarning):
            print(f"{PROG}: skipped malformed line: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return fmt, records


def _import(a: argparse.Namespace) -> int:
    fmt, records = read(a)
    stored = 2 if a.to == "store" else 1  # each record checked (then stored), then the write
    with Progress("import-pairs", stored * len(records) + 1) as bar:
        done = _store(a, fmt, records)
        bar.update()
    print(done)
    return 0


def _store(a: argparse.Namespace, fmt: str, records: list) -> str:
    """Check the records and write them where `--to` says; what was done, in a line."""
    check_storable(records)
    comps = [r for r in records if isinstance(r, Comparison)]
    if a.to != "store" and len(comps) != len(records):
        raise RecordError(f"{a.file}: --to {a.to} takes pairs, and this {fmt} file holds "
                          f"{counts(records)}; import it into a store (--to store), then "
                          "`rlhf export` it")
    if a.to == "trl":
        rows = to_trl(comps)
        write_rows(rows, a.out, kind="jsonl")
        return f"wrote {len(rows)} TRL rows ({fmt}; ties and skips left out) to {a.out}"
    if a.to == "dataset":
        write_rows(dataset_rows(comps), a.out, kind="folder")
        return f"saved a datasets.Dataset of {len(comps)} comparisons ({fmt}) to {a.out}"
    ComparisonStore(a.out).extend_all_or_none(records)
    if len(comps) == len(records):
        labels = {k: sum(c.label == k for c in comps) for k in sorted({c.label for c in comps})}
        return f"imported {len(comps)} comparisons ({fmt}) into {a.out}: {labels}"
    return f"imported {counts(records)} ({fmt}) into {a.out}"
