"""TRL files in the three containers (JSON lines, parquet, a `datasets` folder): a
conversational preference file, an unpaired (KTO) file and a prompt-completion file imported
into a store by `rlhf import-pairs`, exported by `rlhf export`, and read back by `datasets`
equal to the original; a row that does not fit is one line naming file, row and key, and
nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from rlhf.cli import main
from rlhf.feedback.datafiles import read_rows, write_rows
from rlhf.feedback.formats import detect_format, read_any, read_records
from rlhf.feedback.records import Comparison, Correction, Note, Rating, RecordError
from rlhf.feedback.store import ComparisonStore

SYS = {"role": "system", "content": "Answer in one line."}


def user(t):
    return {"role": "user", "content": t}


def bot(t):
    return {"role": "assistant", "content": t}


PREFERENCE = [  # conversational, explicit prompt; turns, spaces and non-ASCII as they come
    {"prompt": [SYS, user("What color is the sky?")], "chosen": [bot("Blue.")],
     "rejected": [bot(" Green, mostly. ")]},
    {"prompt": [user("Hi"), bot("Hello."), user("Say it in French")],
     "chosen": [bot("Bonjour, ça va ?")], "rejected": [bot("Hello.")]},
    {"prompt": [user("2+2?")], "chosen": [bot("4")], "rejected": [bot("22")]}]
UNPAIRED = [  # KTO, standard: a leading space is part of the completion
    {"prompt": "The sky is", "completion": " blue.", "label": True},
    {"prompt": "The sky is", "completion": " green.", "label": False},
    {"prompt": "Water boils at", "completion": " 100 °C at sea level.", "label": True}]
UNPAIRED_CHAT = [{"prompt": [user("Hi")], "completion": [bot("Go away.")], "label": False},
                 {"prompt": [user("Hi")], "completion": [bot("Hello!")], "label": True}]
PROMPT_COMPLETION = [  # conversational
    {"prompt": [SYS, user("Capital of France?")], "completion": [bot("Paris.")]},
    {"prompt": [user("Name a prime")], "completion": [bot("7"), user("another?"), bot("11")]}]
PROMPT_COMPLETION_TEXT = [{"prompt": "Once upon a time", "completion": " there was a fox."},
                          {"prompt": "The end", "completion": "."}]
CASES = {"trl-preference": PREFERENCE, "trl-unpaired": UNPAIRED,
         "trl-unpaired-chat": UNPAIRED_CHAT, "trl-prompt-completion": PROMPT_COMPLETION,
         "trl-prompt-completion-text": PROMPT_COMPLETION_TEXT}
KIND = {"trl-preference": Comparison, "trl-unpaired": Rating,
        "trl-prompt-completion": Correction}
OUT = {"jsonl": "out.jsonl", "parquet": "out.parquet", "folder": "out/"}


def write_original(rows: list[dict], path: Path) -> Path:
    """A file as people have them: JSON lines by hand, parquet and folders by `datasets`."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
    elif path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def load(path: Path, cache: Path) -> datasets.Dataset:
    """Read by `datasets` itself, as a trainer would."""
    if str(path).endswith(".jsonl"):
        return datasets.load_dataset("json", data_files=str(path), split="train",
                                     cache_dir=str(cache))
    if str(path).endswith(".parquet"):
        return datasets.Dataset.from_parquet(str(path), cache_dir=str(cache))
    return datasets.load_from_disk(str(path))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("container", list(OUT))
def test_import_export_read_back_by_datasets_equals_the_original(case, container, tmp_path,
                                                                 capsys):
    to = case.removesuffix("-chat").removesuffix("-text")
    src = write_original(CASES[case], tmp_path / OUT[container].replace("out", "original"))
    store = tmp_path / "store.jsonl"
    assert main(["import-pairs", str(src), "--out", str(store)]) == 0
    assert detect_format(src) == ("trl" if to == "trl-preference" else to)
    records = ComparisonStore(store).answers()
    assert len(records) == len(CASES[case]) and all(isinstance(r, KIND[to]) for r in records)
    capsys.readouterr()
    original = load(src, tmp_path / "cache")
    for where in OUT.values():  # whatever it came in, it goes out in each container
        out = tmp_path / "exports" / where
        assert main(["export", str(store), "--to", to, "--out", str(out)]) == 0
        assert f"wrote {len(CASES[case])} {to} rows" in capsys.readouterr().out
        back = load(out, tmp_path / "cache")
        assert back.column_names == original.column_names
        assert back.features == original.features
        assert back.to_list() == original.to_list()
        if where.endswith("jsonl"):  # the very rows that were read, in order
            assert [r for _, r in read_rows(out)] == [r for _, r in read_rows(src)]


def test_implicit_prompt_and_split_of_a_dataset_dict_round_trip(tmp_path):
    rows = [{"chosen": [user("Hi"), bot("Hello.")], "rejected": [user("Hi"), bot("No.")]},
            {"chosen": [user("Bye"), bot("See you!")], "rejected": [user("Bye"), bot("...")]}]
    src = tmp_path / "dd"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(src))
    store = tmp_path / "s.jsonl"
    assert main(["import-pairs", str(src), "--out", str(store)]) == 0  # its only split
    assert [c.prompt for c in ComparisonStore(store).load()] == [
        "\n\nUser: Hi\n\nAssistant: ", "\n\nUser: Bye\n\nAssistant: "]
    out = tmp_path / "back"
    assert main(["export", str(store), "--to", "trl-preference", "--out", str(out),
                 "--split", "test"]) == 0
    back = datasets.load_from_disk(str(out))
    assert list(back) == ["test"] and back["test"].to_list() == rows
    both = tmp_path / "both"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                          "test": datasets.Dataset.from_list(rows)}).save_to_disk(str(both))
    assert len(read_any(both)) == 1 and len(read_any(both, split="test")) == 2
    with pytest.raises(RecordError, match=r"no split 'dev' \(has train, test"):
        read_any(both, split="dev")


def test_a_bad_row_is_one_line_naming_file_row_and_key(tmp_path, capsys):
    good = {"prompt": "p", "completion": "c", "label": True}
    jsonl = tmp_path / "kto.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in
                             [good, good, {**good, "label": "yes"}]))
    parquet = write_original([good, {**good, "completion": None}], tmp_path / "kto.parquet")
    folder = write_original([good, {**good, "label": None}], tmp_path / "kto")
    expected = {jsonl: f"{jsonl}:3: label: expected true or false, got 'yes'",
                parquet: f"{parquet}: row 2: completion: expected text or a list of messages",
                folder: f"{folder}: row 2: label: expected true or false, got None"}
    store = tmp_path / "s.jsonl"
    capsys.readouterr()
    for path, line in expected.items():
        assert main(["import-pairs", str(path), "--out", str(store)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"rlhf import-pairs: error: {line}"), err
        assert not store.exists()  # nothing written unless the whole file reads
    jsonl.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "p", "label": True}) + "\n")
    assert main(["import-pairs", str(jsonl), "--out", str(store)]) == 2
    assert f"{jsonl}:2: missing key(s) ['completion']" in capsys.readouterr().err
    assert not store.exists()


def test_export_refuses_what_it_cannot_write_and_writes_nothing(tmp_path, capsys):
    store = tmp_path / "s.jsonl"
    ComparisonStore(store).extend([Comparison(item_id="i", prompt="p", a="x", b="y",
                                              label="a")])
    assert main(["export", str(store), "--to", "trl-preference", "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "write to x.jsonl, x.parquet or a folder" in capsys.readouterr().err
    assert main(["export", str(store), "--to", "trl-unpaired", "--out",
                 str(tmp_path / "u.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "nothing to write: trl-unpaired rows come from ratings or both-bad" in err
    assert "1 comparisons" in err and not (tmp_path / "u.jsonl").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", str(store), "--to", "trl-preference", "--out", str(mine)]) == 2
    assert "exists and is not a saved dataset" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "ds"  # a saved dataset is replaced
    write_rows([{"a": 1}], out)
    assert main(["export", str(store), "--to", "trl-preference", "--out", str(out)]) == 0
    assert datasets.load_from_disk(str(out)).to_list() == [
        {"prompt": "p", "chosen": "x", "rejected": "y"}]


def test_notes_out_and_in_and_other_kinds_are_not_pairs(tmp_path, capsys):
    store = tmp_path / "s.jsonl"
    c = Comparison(item_id="i", prompt="p", a="x", b="y", label="a", rater="ann")
    n = Note(text="x is shorter", about=c.id, item_id="i", prompt="p", rater="ann")
    ComparisonStore(store).extend([c, n, Note(text="more cats please", rater="bo")])
    out = tmp_path / "notes.parquet"
    assert main(["export", str(store), "--to", "notes", "--out", str(out)]) == 0
    rows = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "c")).to_list()
    assert rows[0] == {"id": n.id, "about": c.id, "rater": "ann", "text": "x is shorter",
                       "prompt": "p"}
    assert rows[1]["about"] is None and rows[1]["text"] == "more cats please"
    assert detect_format(out) == "notes"
    back = read_records(out)
    assert [(x.id, x.about, x.text) for x in back] == [(n.id, c.id, "x is shorter"),
                                                       (rows[1]["id"], None, "more cats please")]
    kto = write_original(UNPAIRED, tmp_path / "kto.jsonl")
    with pytest.raises(RecordError, match="trl-unpaired rows are not pairs"):
        read_any(kto)
    assert main(["import-pairs", str(kto), "--to", "trl", "--out", str(tmp_path / "t")]) == 2
    assert "--to trl takes pairs" in capsys.readouterr().err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Once"}\n')
    with pytest.raises(RecordError, match="prompt-only rows carry no feedback"):
        detect_format(prompts)
