"""Property-based fuzzing (Hypothesis) of every parser a user reaches: the import formats
(JSON lines, JSON, .gz, parquet, `datasets` folders; HH, TRL's types, PandaLM, FineGrained,
notes, a store as input), the queue reader, the store reader, and the config loader (YAML
text, `section.key=value` overrides). Whatever the input: a result, or a `UserError` whose
message is one line with no control characters; never another exception. Through the
`rlhf` command: exit code 0 or 2, never a traceback, and what an import wrote reads back.

The default suite runs each property on a few dozen inputs (seconds); the `slow` versions
(`pytest -m slow tests/test_fuzz_parsers.py`) on thousands.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hypothesis", reason="the dev extra's hypothesis fuzzes the parsers")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rlhf.cli import command  # noqa: E402
from rlhf.config import UserError, load_config  # noqa: E402
from rlhf.dpo.config import DPOTrainConfig  # noqa: E402
from rlhf.feedback.config import PairsConfig  # noqa: E402
from rlhf.feedback.formats import FORMATS, read_any, read_records  # noqa: E402
from rlhf.feedback.queue import items_from_pairs_file, read_queue  # noqa: E402
from rlhf.feedback.store import ComparisonStore  # noqa: E402
from rlhf.loop.config import LoopConfig  # noqa: E402
from rlhf.reward.config import RewardTrainConfig  # noqa: E402

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=2000, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

KEYS = ["prompt", "chosen", "rejected", "completion", "label", "text", "messages", "role",
        "content", "about", "id", "rater", "instruction", "input", "response1", "response2",
        "annotator1", "annotator2", "annotator3", "idx", "question", "preference",
        "prediction 1", "prediction 2", "prediction 3", "prediction 4", "type", "a", "b", "ask",
        "others", "scale", "item_id", "schema", "skip", "gold", "meta", "places", "value"]

texts = st.one_of(st.text(max_size=12), st.sampled_from(
    ["\n\nHuman: hi\n\nAssistant: yes", "\ud800", "a\u2028b", "\x1b[31m", "", " ", "user",
     "assistant", "compare", "rank", "rate", "correct", "comparison", "retract", "note", "a",
     "b", "tie", "[1, 0, 2, 1, 1, 0]", "[[[[[["]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(),
                    st.floats(allow_nan=True, allow_infinity=True), texts)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)),
    max_leaves=10)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]) | texts,
                                           "content": texts | values}), max_size=3)
field = st.one_of(texts, texts, values, messages)
shaped = st.one_of(  # rows near each format, so each parser is reached beyond its key checks
    st.fixed_dictionaries({"chosen": field, "rejected": field}, optional={"prompt": field}),
    st.fixed_dictionaries({"prompt": field, "completion": field},
                          optional={"label": st.booleans() | values}),
    st.fixed_dictionaries({"messages": messages | values}),
    st.fixed_dictionaries({"text": field, "about": st.none() | texts},
                          optional={"id": values, "rater": values, "prompt": values}),
    st.fixed_dictionaries({"instruction": field, "response1": field, "response2": field,
                           "annotator1": st.integers(-1, 3) | values},
                          optional={"annotator2": st.integers(0, 2), "input": field,
                                    "idx": values}),
    st.fixed_dictionaries({"question": field, "preference": st.lists(
        st.integers(-1, 3), min_size=5, max_size=7) | values, "prediction 1": field,
        "prediction 2": field, "prediction 3": field, "prediction 4": texts}),
    st.fixed_dictionaries({"type": st.sampled_from(["comparison", "rating", "ranking", "note",
                                                    "correction", "retract", "other"]) | values,
                           "prompt": field, "a": field, "b": field},
                          optional={k: values for k in ("id", "item_id", "label", "rater",
                                                        "choice", "schema", "meta")}),
    st.fixed_dictionaries({"prompt": field, "a": field},
                          optional={"b": field, "ask": texts, "others": values,
                                    "scale": values, "id": values}),
)
rows = st.lists(st.one_of(shaped, shaped, st.dictionaries(st.sampled_from(KEYS), values,
                                                          max_size=6)), min_size=0, max_size=5)
noise = st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"", b"\n", b"\xff\xfe", b"[", b"{", b"null", b"[1, 2]", b'"x"', b"[" * 5000,
     b'{"a": ' * 3000]))


@st.composite
def json_files(draw) -> tuple[str, bytes]:
    """(file name, bytes): rows as JSON lines (some escaped, some not, noise lines among
    them), as a JSON list, gzipped, cut short, or bytes at random."""
    rs = draw(rows)
    how = draw(st.sampled_from(["jsonl", "jsonl", "json", "gz", "cut", "noise"]))
    lines = [json.dumps(r, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
             for r in rs]
    if how == "noise" or draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(noise))
    data = b"\n".join(lines) + b"\n"
    if how == "json":
        return "f.json", json.dumps(rs).encode()
    if how == "gz":
        return "f.jsonl.gz", gzip.compress(data)
    if how == "cut":
        return "f.jsonl", data[:draw(st.integers(0, len(data)))]
    return "f.jsonl", data


def one_line(e: Exception) -> None:
    """A user's error: one line, no control characters that a terminal would act on."""
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg and "\x1b" not in msg, repr(msg)


def reads_or_one_line(fn, *args):
    """fn(*args); a UserError is fine if one line; anything else fails the property."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args)
    except UserError as e:
        one_line(e)
        return None


def run(argv: list[str]) -> tuple[int, str]:
    """`rlhf ...` in this process: (exit code, stderr). An unexpected exception propagates
    (`command` turns only expected ones into a line), failing the property."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _ = command(argv)
    return code, err.getvalue()


def check_file(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        for fmt in (None, *FORMATS):
            reads_or_one_line(read_records, p, fmt)
        reads_or_one_line(read_any, p)
        reads_or_one_line(read_queue, p)
        reads_or_one_line(items_from_pairs_file, p)
        store = ComparisonStore(p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.answers()  # the store reader never fails: a bad line is reported
        assert all("\n" not in e for e in store.errors)
        check_commands(p, Path(d))


def check_commands(p: Path, d: Path) -> None:
    """import-pairs and stats on the file: 0 or 2 and one error line; an import reads back."""
    out = d / "out.jsonl"
    code, err = run(["import-pairs", str(p), "--out", str(out)])
    assert code in (0, 2) and "Traceback" not in err
    errors = [x for x in err.splitlines() if ": error: " in x]
    assert len(errors) == (code == 2), err
    if code == 0:
        back = ComparisonStore(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back.answers()
        assert back.errors == []  # every line an import writes reads back
        code, err = run(["export", str(out), "--to", "trl-preference",
                         "--out", str(d / "x.jsonl")])
        assert code in (0, 2) and "Traceback" not in err
    code, err = run(["stats", str(p)])
    assert code in (0, 2) and "Traceback" not in err


@FAST
@given(json_files())
def test_json_files_read_or_fail_in_one_line(f):
    check_file(*f)


@pytest.mark.slow
@SLOW
@given(json_files())
def test_json_files_read_or_fail_in_one_line_thousands(f):
    check_file(*f)


def table_rows(rs: list[dict]):
    """Rows as parquet can hold them (one type per column), or None."""
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(rs) if rs else None
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None


def check_table(rs: list[dict], folder: bool) -> None:
    import pyarrow.parquet as pq

    table = table_rows(rs)
    assume(table is not None)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ("ds" if folder else "f.parquet")
        try:
            if folder:
                import datasets

                datasets.Dataset(table).save_to_disk(str(p))
            else:
                pq.write_table(table, p)
        except Exception:  # a table the writer itself cannot write is no input of ours
            assume(False)
        for fmt in (None, *FORMATS):
            reads_or_one_line(read_records, p, fmt)
        reads_or_one_line(items_from_pairs_file, p)
        check_commands(p, Path(d))


@FAST
@given(rows)
def test_parquet_files_read_or_fail_in_one_line(rs):
    check_table(rs, folder=False)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(rows)
def test_datasets_folders_read_or_fail_in_one_line(rs):
    check_table(rs, folder=True)


@pytest.mark.slow
@SLOW
@given(rows, st.booleans())
def test_parquet_and_folders_thousands(rs, folder):
    check_table(rs, folder)


# ----------------------------------------------------------------------------- configs

CONFIGS = [RewardTrainConfig, DPOTrainConfig, PairsConfig, LoopConfig]


def dotted_keys(cls, prefix: str = "") -> list[str]:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += [prefix + f.name] + dotted_keys(hints[f.name], prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
    return out


KEYS_OF = {cls: dotted_keys(cls) for cls in CONFIGS}
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.sampled_from(["1e-3", "-1", "0", "nan", ".inf", "true", "[", "{a: 1}"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3), max_leaves=6)


@st.composite
def config_texts(draw, cls) -> str:
    """YAML text: real keys (and a few unknown ones) with values of any type, nested as the
    dots say; or YAML-looking text at random."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(alphabet=st.sampled_from(list("ab:-[]{}#&*!|>'\"%@`, \n\t1.")),
                            max_size=40))
    data: dict = {}
    for key in draw(st.lists(st.sampled_from(KEYS_OF[cls]) | st.text(max_size=5), max_size=6)):
        node, parts = data, key.split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {}) if isinstance(node.get(k, {}), dict) else {}
        node[parts[-1]] = draw(yaml_values)
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans()))


@st.composite
def overrides(draw, cls) -> list[str]:
    keys = st.sampled_from(KEYS_OF[cls]) | st.text(max_size=6)
    vals = st.text(max_size=10) | st.sampled_from(["[", "]", "{", "a: b", "1e-3", "- x", "!!x",
                                                   "&a *a", "[1, [2]]", "null", "'"])
    return draw(st.lists(st.builds(lambda k, v, eq: f"{k}{eq}{v}", keys, vals,
                                   st.sampled_from(["=", "=", ""])), max_size=4))


def check_config(cls, text: str, over: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        reads_or_one_line(load_config, cls, p, over)
        reads_or_one_line(load_config, cls, None, over)


@FAST
@given(st.data())
def test_configs_load_or_fail_in_one_line(data):
    cls = data.draw(st.sampled_from(CONFIGS))
    check_config(cls, data.draw(config_texts(cls)), data.draw(overrides(cls)))


@pytest.mark.slow
@SLOW
@given(st.data())
def test_configs_load_or_fail_in_one_line_thousands(data):
    cls = data.draw(st.sampled_from(CONFIGS))
    check_config(cls, data.draw(config_texts(cls)), data.draw(overrides(cls)))
