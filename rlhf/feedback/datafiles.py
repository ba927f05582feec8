"""Files of rows, read and written one way by every importer and exporter: JSON (a list),
JSON lines (either optionally .gz), parquet, `datasets` folders (`save_to_disk`: a `Dataset`,
or a `DatasetDict` of which one split is read), and Hub data set names ("org/name", read by
`rlhf.prompts.load_hub`, the project's one Hub reader: offline, one line at once).

Columns can be renamed as they are read (`columns`: {the file's name: the name read}, e.g.
{"question": "prompt", "good": "chosen", "bad": "rejected"}; `rename_columns`), so a data set
with its own column names reads as the format whose names it maps to; `COLUMN_TARGETS` are the
names a mapping may give.

Reading gives `(where, row)` pairs: `where` names the file and the row ("f.jsonl:3", the
line; "f.json: item 0"; "f.parquet: row 1"; "folder: row 1"), so a row that does not fit is
reported in one line. A truncated .gz, a byte that is not UTF-8, a line that is not a JSON
object, a file that is not parquet, a folder that is not a saved dataset: a `RecordError`
naming it.

Writing (`write_rows`) goes by the name: `x.jsonl` JSON lines, `x.parquet` parquet, anything
else a `save_to_disk` folder (with `split`: a `DatasetDict` of that one split). It is atomic:
a temporary file or folder beside the target, then a rename; a failed write leaves the old
one, and a folder that is not a saved dataset is never replaced.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import zlib
from pathlib import Path

from rlhf.feedback.records import RecordError, as_line
from rlhf.harness.progress import advance
from rlhf.prompts import is_hub_name, load_hub

Row = tuple[str, dict]
"""(where, row): the file and line or row number, and the row."""

COLUMN_TARGETS = ("prompt", "chosen", "rejected", "completion", "label", "text", "messages")
"""Names a column mapping may rename a column to: TRL's column names (preference, unpaired
preference, prompt-completion, language modelling), which the readers here detect."""


def column_errors(columns: dict) -> list[tuple[str, str]]:
    """(key, why) for each entry of a column mapping that is not {column name: one of
    `COLUMN_TARGETS`}, or that gives a target twice; [] when the mapping is good."""
    out, seen = [], {}
    for src, dst in columns.items():
        if not isinstance(dst, str) or dst not in COLUMN_TARGETS:
            out.append((str(src), f"{dst!r} is not a column name the readers know; use one of "
                                  f"{', '.join(COLUMN_TARGETS)}"))
        elif dst in seen:
            out.append((str(src), f"{dst!r} is also the target of {seen[dst]!r}"))
        else:
            seen[dst] = src
    return out


def rename_columns(rows: list[Row], columns: dict | None) -> list[Row]:
    """`rows` with their columns renamed by `columns` ({the file's name: the name read});
    a mapped column missing from the first row, or a target the row already holds under
    its own name (and not renamed away), is a RecordError naming the mapping's key."""
    if not columns or not rows:
        return rows
    bad = column_errors(columns)
    if bad:
        raise RecordError(f"columns.{bad[0][0]}: {bad[0][1]}")
    where, first = rows[0]
    for src, dst in columns.items():
        if src not in first:
            raise RecordError(f"{where}: no column {src!r} to read as {dst!r} (columns "
                              f"mapping; the row's columns: {', '.join(map(str, first))})")
        if dst in first and dst not in columns:
            raise RecordError(f"{where}: columns mapping {src!r} -> {dst!r}: the row already "
                              f"has a {dst!r} column; map it away too, or leave {src!r} out")
    return [(w, {columns.get(k, k): v for k, v in r.items()}) for w, r in rows]


def decode(raw: bytes, p: Path, first_line: int = 1) -> str:
    """`raw` as UTF-8 text, or a RecordError naming the file and the line of the bad byte."""
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


SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate: a row holding one is checked for a lone one."""


def _lone_surrogate(value, key: str = "") -> str | None:
    """The key of the first text in a parsed row holding an unpaired surrogate (JSON can
    escape one, "\\ud800", but no file or store can hold it), or None."""
    todo = [(key, value)]
    while todo:
        k, v = todo.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return k or "a key"
        elif isinstance(v, dict):
            todo += [(f"{k}.{kk}" if k else str(kk), vv) for kk, vv in v.items()]
            todo += [(k or "a key", kk) for kk in v]
        elif isinstance(v, list):
            todo += [(f"{k}[{i}]", vv) for i, vv in enumerate(v)]
    return None


def check_storable(records) -> None:
    """A RecordError naming the first record holding text no file can hold (an unpaired
    surrogate, which a store's JSON can escape), before anything is written. Each record
    checked is reported to the caller's open `Progress`."""
    for n, r in enumerate(records, 1):
        key = _lone_surrogate(as_line(r))
        if key is not None:
            raise RecordError(f"record {n} ({getattr(r, 'id', '?')}): {key}: text that is not "
                              "valid Unicode (an unpaired surrogate)")
        advance()  # to the caller's open Progress, if any


def parse_json(text: str, where: str):
    """`json.loads(text)`, any failure (bad JSON, nesting too deep for the parser, a lone
    surrogate) a RecordError naming `where`."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise RecordError(f"{where}: not valid JSON: {e}") from None
    except RecursionError:
        raise RecordError(f"{where}: not valid JSON: nested too deeply") from None
    if SURROGATE.search(text):
        key = _lone_surrogate(value)
        if key is not None:
            raise RecordError(f"{where}: {key}: text that is not valid Unicode (an unpaired "
                              "surrogate)")
    return value


def read_json_rows(path: str | os.PathLike) -> list[Row]:
    """A JSON list or JSON lines (optionally .gz) -> (where, row); a bad line names file:line."""
    p = Path(path)
    text = decode(_bytes(p)[1], p)
    if text.lstrip().startswith("["):
        rows = parse_json(text, str(p))
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
        if bad is not None:
            raise RecordError(f"{p}: item {bad} is not a JSON object")
        return [(f"{p}: item {i}", r) for i, r in enumerate(rows)]
    out = []
    for n, line in enumerate(text.split("\n"), 1):  # (not splitlines: JSON text may hold
        if line.strip():                              # U+2028 and the like as they are)
            row = parse_json(line, f"{p}:{n}")
            if not isinstance(row, dict):
                raise RecordError(f"{p}:{n}: expected a JSON object")
            out.append((f"{p}:{n}", row))
    return out


def read_parquet_rows(path: str | os.PathLike) -> list[Row]:
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as e:  # pyarrow's own reasons (not parquet, truncated)
        raise RecordError(f"{p}: not a readable parquet file ({e})") from None
    return [(f"{p}: row {i}", r) for i, r in enumerate(rows, 1)]


def load_folder(path: str | os.PathLike, split: str | None = None):
    """A `save_to_disk` folder as a `datasets.Dataset` (of a DatasetDict: `split`, or its only
    split, or "train")."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # not a saved dataset: datasets says why
        raise RecordError(f"{path}: not a saved dataset folder ({type(e).__name__}: "
                          f"{e})") from None
    if isinstance(ds, datasets.DatasetDict):
        name = split or (next(iter(ds)) if len(ds) == 1 else "train")
        if name not in ds:
            raise RecordError(f"{path}: no split {name!r} (has {', '.join(ds)}; choose one "
                              "with --split, or data.split in a config)")
        ds = ds[name]
    return ds


def exists(path: str | os.PathLike) -> bool:
    """Whether `path` names data: an existing file or folder, or a Hub data set name."""
    return Path(path).exists() or is_hub_name(str(path))


def dataset_of(path: str | os.PathLike, split: str | None = None):
    """A `save_to_disk` folder (`load_folder`) or a Hub name (`load_hub`) as a Dataset; None
    for a file."""
    if Path(path).is_dir():
        return load_folder(path, split)
    if is_hub_name(str(path)):
        return load_hub(str(path), split or "train")
    return None


def read_rows(path: str | os.PathLike, split: str | None = None,
              columns: dict | None = None) -> list[Row]:
    """Rows of any of the containers (see the module docstring), columns renamed by
    `columns` (`rename_columns`)."""
    p = Path(path)
    ds = dataset_of(path, split)
    if ds is not None:
        rows = [(f"{path}: row {i}", r) for i, r in enumerate(ds.to_list(), 1)]
    elif p.suffix == ".parquet":
        rows = read_parquet_rows(p)
    else:
        rows = read_json_rows(p)
    return rename_columns(rows, columns)


def first_row(path: str | os.PathLike, split: str | None = None,
              columns: dict | None = None) -> Row:
    """The first row (columns renamed by `columns`), read without reading the rest where the
    container allows (a JSON-lines file: its first non-blank line, however long); an empty
    file -> RecordError."""
    return rename_columns([_first_row(path, split)], columns)[0]


def _first_row(path: str | os.PathLike, split: str | None = None) -> Row:
    p = Path(path)
    ds = dataset_of(path, split)
    if ds is not None:
        if len(ds) == 0:
            raise RecordError(f"{path}: the dataset is empty")
        return f"{path}: row 1", ds[0]
    if p.suffix == ".parquet":
        rows = read_parquet_rows(p)
    else:
        n, line = _bytes(p, first_line_only=True)
        head = decode(line, p, n).strip()
        if not head:
            raise RecordError(f"{p}: the file is empty")
        if not head.startswith("["):
            row = parse_json(head, f"{p}:{n}")
            if not isinstance(row, dict):
                raise RecordError(f"{p}:{n}: expected a JSON object")
            return f"{p}:{n}", row
        rows = read_json_rows(p)
    if not rows:
        raise RecordError(f"{p}: the file is empty")
    return rows[0]


# ----------------------------------------------------------------------------- writing


def container(out: str | os.PathLike) -> str:
    """What `write_rows` writes for this name: "jsonl", "parquet" or "folder"."""
    name = str(out)
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(("/", os.sep)) or Path(name).is_dir() or not Path(name).suffix:
        return "folder"
    raise RecordError(f"{out}: write to x.jsonl, x.parquet or a folder (x/) for "
                      "save_to_disk")


def is_saved_dataset(p: Path) -> bool:
    return any((p / f).is_file() for f in ("dataset_info.json", "dataset_dict.json",
                                           "state.json"))


def check_out_file(out: str | os.PathLike, flag: str = "--out", folder: bool = False) -> Path:
    """`out` as a path a file (or with `folder`, a folder) can be written to, checked before
    any work: no folder where a file goes, no file where a folder above it goes; else a
    RecordError naming `flag` and the path."""
    p = Path(out)
    if p.is_dir() and not folder:
        raise RecordError(f"{flag} {p}: is a folder; give a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RecordError(f"{flag} {p}: {parent} is a file, not a folder")
            break
    return p


def write_rows(rows: list[dict], out: str | os.PathLike, split: str | None = None,
               kind: str | None = None) -> str:
    """Write `rows` to `out` (see the module docstring), atomically; returns the container
    (`kind`, when given, instead of the one the name says). A failure (a full disk) leaves
    no temporary file and names `out`."""
    kind = kind or container(out)
    p = Path(str(out).rstrip("/" + os.sep) or str(out))
    if kind == "folder" and p.exists() and (not p.is_dir() or (
            any(p.iterdir()) and not is_saved_dataset(p))):
        raise RecordError(f"{p}: exists and is not a saved dataset; choose another --out")
    check_out_file(p, folder=kind == "folder")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        if kind == "jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            ds = _dataset(rows)
            if kind == "parquet":
                ds.to_parquet(str(tmp))
            else:
                if split:
                    import datasets

                    ds = datasets.DatasetDict({split: ds})
                ds.save_to_disk(str(tmp))
        _replace(tmp, p)
    except OSError as e:  # ENOSPC names no file: name the one being written
        raise OSError(e.errno, e.strerror or str(e), str(p)) from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
    return kind


def _dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def _replace(tmp: Path, p: Path) -> None:
    """Move the written `tmp` into place; an old folder is moved aside first, then removed."""
    if tmp.is_dir() and p.is_dir():
        old = p.with_name(f".{p.name}.old-{os.getpid()}")
        os.replace(p, old)
        os.replace(tmp, p)
        shutil.rmtree(old)
    else:
        os.replace(tmp, p)
