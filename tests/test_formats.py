"""Importers on the real shared preference files, TRL rows, exporters, the import-pairs CLI,
and queues made by sample-pairs (from the stories260K policy, or from ready-made pairs)."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
import torch
from conftest import PREFS, STORIES, TEXT, need_shared

from rlhf.feedback.derive import to_pairs
from rlhf.feedback.formats import (
    common_prefix,
    detect_format,
    majority,
    read_any,
    read_finegrained,
    read_hh,
    read_pandalm,
    read_trl,
    split_hh,
    to_dataset,
    to_trl,
)
from rlhf.feedback.pairs import sample_pairs
from rlhf.feedback.queue import items_from_pairs_file, read_queue
from rlhf.feedback.records import RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.lm.config import SamplingConfig
from rlhf.prompts import load_prompts

HH = PREFS / "hh-rlhf-harmless-base-test.jsonl.gz"
PANDALM = PREFS / "pandalm-testset-v1.json"
FINEGRAINED = PREFS / "finegrained-qa-feedback-dev.json"


def test_hh_real_file():
    need_shared(HH)
    comps = read_hh(HH)
    assert len(comps) == 2312 and detect_format(HH) == "hh"
    c = comps[0]
    assert c.prompt.startswith("\n\nHuman: what are some pranks") and c.prompt.endswith(
        "Assistant:")
    assert c.a.startswith("No, sorry!") and c.label == "a" and c.rater_kind == "human"
    assert all(c.group.startswith("hh:") for c in comps)
    assert len(to_pairs(comps)) == 2312


def test_split_hh_by_hand():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: A pun."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: No."
    prompt, c, r = split_hh(chosen, rejected)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant:"
    assert (c, r) == ("A pun.", "No.")


def test_pandalm_real_file_majority_and_ties():
    need_shared(PANDALM)
    comps = read_pandalm(PANDALM)
    assert len(comps) == 999 and detect_format(PANDALM) == "pandalm"
    counts = Counter(c.label for c in comps)
    assert counts == {"b": 472, "a": 422, "tie": 105}
    assert len(read_pandalm(PANDALM, per_annotator=True)) == 2997
    assert len(to_pairs(comps, ties="drop")) == 894
    # prompts repeat across items: the same instruction+input shares one group
    assert len({c.group for c in comps}) < len(comps)


def test_majority_by_hand():
    assert majority([1, 1, 2]) == "a" and majority([2, 0, 2]) == "b"
    assert majority([0, 0, 1]) == "tie" and majority([0, 1, 2]) == "cant_tell"


def test_finegrained_real_file_expands_rankings_to_pairs():
    need_shared(FINEGRAINED)
    comps = read_finegrained(FINEGRAINED)
    assert len(comps) == 3000 and detect_format(FINEGRAINED) == "finegrained"
    assert Counter(c.label for c in comps) == {"a": 1577, "b": 1039, "tie": 384}
    first = json.loads(FINEGRAINED.read_text())[0]
    votes = first["preference"]
    for c, (x, y), v in zip(comps[:6], [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)], votes):
        assert c.a == first[f"prediction {x}"] and c.b == first[f"prediction {y}"]
        assert c.label == {0: "tie", 1: "a", 2: "b"}[v]
    assert len({c.group for c in comps[:6]}) == 1


def test_trl_explicit_and_implicit_prompt():
    rows = [{"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"},
            {"chosen": "The sky is blue.", "rejected": "The sky is green."},
            {"prompt": [{"role": "user", "content": "hi"}],
             "chosen": [{"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}]}]
    comps = read_trl(rows)
    assert (comps[0].prompt, comps[0].a, comps[0].b) == ("Q: 2+2?", "4", "5")
    assert (comps[1].prompt, comps[1].a, comps[1].b) == ("The sky is ", "blue.", "green.")
    assert comps[2].prompt == "\n\nUser: hi\n\nAssistant: " and comps[2].b == "go away"
    assert common_prefix("abc def", "abc dxx") == "abc "
    assert to_trl(comps)[0] == {"prompt": "Q: 2+2?", "chosen": "4", "rejected": "5"}


def test_exports_and_roundtrip_through_trl_file(tmp_path):
    comps = read_trl([{"prompt": "p", "chosen": "good", "rejected": "bad"}] * 3)
    ds = to_dataset(comps)
    assert len(ds) == 3 and ds[0]["label"] == "a" and json.loads(ds[0]["meta"])["index"] == 0
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in to_trl(comps)))
    assert detect_format(path) == "trl"
    assert [(c.prompt, c.a, c.b) for c in read_any(path)] == [("p", "good", "bad")] * 3


def test_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": "a"}\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: missing key"):
        read_trl(path)
    path.write_text('{"chosen": "a", "rejected": "b"}\n{oops\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: not valid JSON"):
        read_trl(path)
    gz = tmp_path / "hh.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"chosen": "no turns", "rejected": "x"}) + "\n")
    with pytest.raises(RecordError, match=r"hh\.jsonl\.gz:1: no .*Assistant"):
        read_hh(gz)


def test_import_pairs_cli_into_store(tmp_path, capsys):
    need_shared(PANDALM)
    from rlhf.cli import main

    out = tmp_path / "s.jsonl"
    assert main(["import-pairs", str(PANDALM), "--out", str(out)]) == 0
    assert "imported 999 comparisons (pandalm)" in capsys.readouterr().out
    assert len(ComparisonStore(out).load()) == 999
    assert detect_format(out) == "store" and len(read_any(out)) == 999


def test_queue_from_ready_made_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "a": "x", "b": "y"}) + "\n")
    items = items_from_pairs_file(path)
    assert (items[0].prompt, items[0].served_because) == ("p", "import")
    trl = tmp_path / "trl.jsonl"
    trl.write_text(json.dumps({"prompt": "p", "chosen": "x", "rejected": "y"}) + "\n")
    gold = items_from_pairs_file(trl, as_gold=True)
    assert (gold[0].gold, gold[0].served_because) == ("a", "gold")
    from rlhf.cli import main

    out = tmp_path / "q.jsonl"
    assert main(["sample-pairs", "--from-pairs", str(trl), "--as-gold", "--out", str(out)]) == 0
    assert read_queue(out)[0].gold == "a"


def test_sample_pairs_from_stories260k(stories, tmp_path):
    need_shared(TEXT)
    model, tok = stories
    prompts = load_prompts(str(TEXT), n=3)
    assert len(prompts) == 3 and all(p.endswith((".", "!", "?", '"')) for p in prompts)
    cfg = SamplingConfig(max_new_tokens=24)
    items = sample_pairs(model, tok, prompts, cfg, torch.Generator().manual_seed(0),
                         {"model": "stories260K"})
    assert [it.prompt for it in items] == prompts
    assert all(it.a and it.b and it.a != it.b for it in items)
    assert items[0].source_a["sampling"]["max_new_tokens"] == 24
    assert (items[0].source_a["sample"], items[0].source_b["sample"]) == (0, 1)
    from rlhf.cli import main

    out = tmp_path / "q.jsonl"
    assert main(["sample-pairs", "--model", str(STORIES), "--prompts", str(TEXT), "--out",
                 str(out), "--n-prompts", "2", "sampling.max_new_tokens=16"]) == 0
    queue = read_queue(out)
    assert len(queue) == 2 and queue[0].source_a["model"] == str(STORIES)


def test_import_pairs_cli_to_trl_and_bad_file(tmp_path, capsys):
    from rlhf.cli import main

    src = tmp_path / "pairs.json"
    src.write_text(json.dumps([{"instruction": "i", "input": "", "response1": "x",
                                "response2": "y", "annotator1": 2, "annotator2": 0,
                                "annotator3": 2}]))
    out = tmp_path / "new" / "trl.jsonl"  # its folder does not exist yet
    assert main(["import-pairs", str(src), "--out", str(out), "--to", "trl"]) == 0
    assert json.loads(out.read_text()) == {"prompt": "i", "chosen": "y", "rejected": "x"}
    src.write_text('{"what": 1}\n')
    assert main(["import-pairs", str(src), "--out", str(out)]) == 2
    assert "unknown preference format" in capsys.readouterr().err
