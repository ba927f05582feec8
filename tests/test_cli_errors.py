"""Every command but `serve` refuses bad arguments and bad files in one line, exit code 2,
no traceback: non-string fields, non-UTF-8 files, empty files, directories where files are
expected, numbers out of range (`serve` is tests/test_web_rating.py's)."""

import json
from pathlib import Path

import pytest
from conftest import STORIES

from rlhf.cli import main

PAIR = {"prompt": "p", "chosen": "x", "rejected": "y"}


def one_error_line(capsys, command: str) -> str:
    """The one stderr line of a failed command (and that there is no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlhf {command}: error: "), err
    return lines[0]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


# ----------------------------------------------------------------------------- import-pairs

NON_STRING_ROWS = [
    # (format, row, what the line must name); None: detected
    (None, {"chosen": 5, "rejected": None}, "chosen"),
    ("hh", {"chosen": 5, "rejected": None}, "chosen"),
    ("hh", {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": ["x"]}, "rejected"),
    ("pandalm", {"instruction": None, "response1": "a", "response2": "b", "annotator1": 1},
     "instruction"),
    ("pandalm", {"instruction": "q", "input": ["x"], "response1": "a", "response2": "b",
                 "annotator1": 1}, "input"),
    ("pandalm", {"instruction": "q", "response1": {}, "response2": "b", "annotator1": 1},
     "response1"),
    ("pandalm", {"instruction": "q", "response1": "a", "response2": "b",
                 "annotator1": [1]}, "annotator"),
    ("finegrained", {"question": "q", "preference": "not a list", "prediction 1": "a"},
     "preference"),
    ("finegrained", {"question": "q", "preference": 7, "prediction 1": "a"}, "preference"),
    ("finegrained", {"question": None, "preference": [1] * 6, **{f"prediction {i}": "x{i}"
                                                                 for i in range(1, 5)}},
     "question"),
    ("notes", {"text": 5, "about": None}, "text"),
    ("notes", {"text": "t", "about": None, "rater": ["x"]}, "rater"),
]


@pytest.mark.parametrize("fmt,row,key", NON_STRING_ROWS)
def test_import_a_non_string_field_is_one_line_naming_file_line_and_key(tmp_path, capsys,
                                                                        fmt, row, key):
    src = write(tmp_path / "in.jsonl", json.dumps(row) + "\n")
    store = tmp_path / "s.jsonl"
    fmt_args = ["--format", fmt] if fmt else []
    assert main(["import-pairs", str(src), *fmt_args, "--out", str(store)]) == 2
    line = one_error_line(capsys, "import-pairs")
    assert f"{src}:1" in line and key in line
    assert not store.exists()


def test_import_an_unpaired_surrogate_is_refused_before_writing(tmp_path, capsys):
    src = write(tmp_path / "in.jsonl", json.dumps(PAIR) + "\n"
                + '{"prompt": "p", "chosen": "\\ud800", "rejected": "y"}\n')
    store = tmp_path / "s.jsonl"
    assert main(["import-pairs", str(src), "--out", str(store)]) == 2
    line = one_error_line(capsys, "import-pairs")
    assert f"{src}:2" in line and "surrogate" in line
    assert not store.exists()


def test_import_from_a_store_with_damaged_lines_says_so(tmp_path, capsys):
    src = write(tmp_path / "old.jsonl", '{"type": "comparison", "oops": 1}\n')
    assert main(["import-pairs", str(src), "--format", "store",
                 "--out", str(tmp_path / "s.jsonl")]) == 0
    err = capsys.readouterr().err
    assert f"{src}:1" in err and "skipped" in err


@pytest.mark.parametrize("to", ["store", "trl", "dataset"])
def test_import_out_must_not_be_a_directory_or_under_a_file(tmp_path, capsys, to):
    src = write(tmp_path / "in.jsonl", json.dumps(PAIR) + "\n")
    (tmp_path / "d").mkdir()
    out = tmp_path / ("d" if to != "dataset" else "in.jsonl")
    assert main(["import-pairs", str(src), "--to", to, "--out", str(out)]) == 2
    line = one_error_line(capsys, "import-pairs")
    assert str(out) in line and "--out" in line


# ----------------------------------------------------------------------------- rate

@pytest.fixture
def queue(tmp_path):
    return write(tmp_path / "q.jsonl", json.dumps({"prompt": "p", "a": "x", "b": "y"}) + "\n")


@pytest.mark.parametrize("flag,value,says", [
    ("--overlap", "0", "--overlap"), ("--overlap", "-3", "--overlap"),
    ("--repeat-rate", "2", "--repeat-rate"), ("--repeat-rate", "-0.1", "--repeat-rate"),
    ("--repeat-rate", "nan", "--repeat-rate"), ("--lease-seconds", "-5", "--lease-seconds"),
    ("--lease-seconds", "0", "--lease-seconds"), ("--lease-seconds", "inf", "--lease-seconds"),
    ("--max-note-chars", "0", "--max-note-chars"),
])
def test_rate_numbers_out_of_range_are_one_line(queue, capsys, flag, value, says):
    assert main(["rate", str(queue), "--rater", "r", "--line", flag, value]) == 2
    assert says in one_error_line(capsys, "rate")


def test_rate_files_that_cannot_be_read_are_one_line(tmp_path, queue, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    bad = write(tmp_path / "bad.jsonl", b'{"prompt": "\xff", "a": "x", "b": "y"}\n')
    empty = write(tmp_path / "empty.jsonl", "")
    guide = write(tmp_path / "g.md", b"Version: 1\n\xfe\n")
    cases = [([str(bad)], f"{bad}:1"), ([str(empty)], f"{empty}"),
             ([str(tmp_path)], str(tmp_path)),
             ([str(queue), "--guidelines", str(guide)], f"{guide}:2"),
             ([str(queue), "--guidelines", str(tmp_path)], str(tmp_path)),
             ([str(queue), "--guidelines", str(tmp_path / "none.md")], "none.md")]
    for args, says in cases:
        assert main(["rate", *args, "--rater", "r", "--line"]) == 2, args
        assert says in one_error_line(capsys, "rate")
    assert not (tmp_path / "q.comparisons.jsonl").exists()


# ----------------------------------------------------------------------------- sample-pairs

def test_sample_pairs_non_utf8_prompts_are_one_line(tmp_path, capsys):
    prompts = write(tmp_path / "p.txt", b"Once upon a time\n\xff\n")
    for cmd in (["sample-pairs", "--model", str(STORIES), "--out", str(tmp_path / "q.jsonl")],
                ["generate", "--model", str(STORIES)]):
        flag = "--prompts" if cmd[0] == "sample-pairs" else "--prompts-file"
        assert main([*cmd, flag, str(prompts)]) == 2
        assert f"{prompts}:2" in one_error_line(capsys, cmd[0])


@pytest.mark.parametrize("out", ["dir", "file/q.jsonl"])
def test_sample_pairs_a_bad_out_is_refused_before_work_and_leaves_no_tmp(tmp_path, capsys,
                                                                          out):
    (tmp_path / "dir").mkdir()
    write(tmp_path / "file", "x")
    src = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "p", "a": "x", "b": "y"}))
    target = tmp_path / out
    assert main(["sample-pairs", "--from-pairs", str(src), "--out", str(target)]) == 2
    assert str(target) in one_error_line(capsys, "sample-pairs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file", "pairs.jsonl"]
    assert not any((tmp_path / "dir").iterdir())


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("command", ["train-reward", "eval-reward", "train-kto", "loop"])
def test_invalid_yaml_is_one_line_with_file_and_line(tmp_path, capsys, command):
    cfg = write(tmp_path / "c.yaml", "out_dir: x\nmodel: [\n  a: b\n")
    assert main([command, str(cfg)]) == 2
    assert f"{cfg}:" in one_error_line(capsys, command)


@pytest.mark.parametrize("command", ["train-reward", "train-dpo", "stats", "report"])
def test_a_directory_or_empty_file_where_a_file_is_expected(tmp_path, capsys, command):
    empty = write(tmp_path / "e.yaml", "")
    for arg in (str(tmp_path), str(empty)):
        assert main([command, arg]) == 2
        one_error_line(capsys, command)


def test_stats_of_an_empty_store_file_is_one_line(tmp_path, capsys):
    assert main(["stats", str(write(tmp_path / "s.jsonl", "\n\n"))]) == 2
    assert "empty" in one_error_line(capsys, "stats")


def test_a_library_error_of_several_lines_is_printed_as_one(monkeypatch, capsys):
    """Some libraries' messages span lines (huggingface_hub's, for a model name it cannot
    fetch) or quote a path with control characters: the error is still one safe line."""
    import rlhf.cli as cli

    def fails(argv):
        raise OSError("Got: ConnectError\nAn error happened\x1b[2J while trying")

    monkeypatch.setitem(cli.COMMANDS, "stats", (fails, ""))
    assert main(["stats", "x"]) == 2
    assert one_error_line(capsys, "stats").endswith(
        "Got: ConnectError An error happened\\x1b[2J while trying")
