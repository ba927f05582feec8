"""The comparison record, the append-only store (malformed lines, undo, two writers at once)
and the queue files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest

from rlhf.feedback.derive import to_pairs
from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.records import Comparison, RecordError
from rlhf.feedback.store import ComparisonStore, StoreWarning


def comp(i: int, rater: str = "ann", label: str = "a", **kw) -> Comparison:
    return Comparison(item_id=f"it{i}", prompt=f"p{i}", a=f"a{i}", b=f"b{i}", label=label,
                      rater=rater, **kw)


def test_label_is_about_a_b_not_sides():
    item = Item("p", "good", "bad", id="x")
    left = Comparison.from_item(item, "a", left="a")
    right = Comparison.from_item(item, "a", left="b")
    assert left.chose_left is True and right.chose_left is False
    assert to_pairs([left])[0].chosen == to_pairs([right])[0].chosen == "good"


def test_schema_checks_name_the_key():
    with pytest.raises(RecordError, match="label"):
        comp(0, label="maybe").check()
    with pytest.raises(RecordError, match="missing key"):
        Comparison.from_dict({"item_id": "x", "prompt": "p", "a": "a", "b": "b"})
    with pytest.raises(RecordError, match="a: expected a string"):
        Item.from_dict({"prompt": "p", "a": 1, "b": "b"})
    # a newer writer's extra keys are kept, not fatal
    assert Item.from_dict({"prompt": "p", "a": "a", "b": "b", "colour": 1}).meta == {
        "extra": {"colour": 1}}


def test_append_load_roundtrip_and_undo(tmp_path):
    store = ComparisonStore(tmp_path / "s.jsonl")
    for i in range(3):
        store.append(comp(i))
    store.append(comp(9, rater="bob"))
    assert [c.item_id for c in store.load()] == ["it0", "it1", "it2", "it9"]
    undone = store.undo_last("ann")
    assert undone.item_id == "it2"
    assert store.answered_item_ids("ann") == {"it0", "it1"}
    assert store.answered_item_ids("bob") == {"it9"}
    assert store.undo_last("carol") is None
    # append-only: the retraction is a new line, nothing was rewritten
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["type"] == "retract"


def test_malformed_lines_reported_by_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    good = json.dumps({"type": "comparison", **comp(0).to_dict()})
    bad_label = json.dumps({"type": "comparison", **comp(1).to_dict(), "label": "??"})
    path.write_text(f"{good}\nnot json\n{bad_label}\n{good[:-5]}")  # torn trailing line
    store = ComparisonStore(path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        comps = store.load()
    assert [c.item_id for c in comps] == ["it0"]
    assert [e.split(": ")[0] for e in store.errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "label" in store.errors[1]
    assert all(issubclass(x.category, StoreWarning) for x in w)
    store.append(comp(5))  # a new answer starts on its own line after the torn one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [c.item_id for c in store.load()] == ["it0", "it5"]


WRITER = textwrap.dedent("""
    import sys
    from rlhf.feedback.records import Comparison
    from rlhf.feedback.store import ComparisonStore
    store, who, n = ComparisonStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        store.append(Comparison(item_id=f"{who}{i}", prompt="p" * 2000, a="a", b="b",
                                label="a", rater=who))
""")


def test_two_writer_processes_lose_nothing_duplicate_nothing(tmp_path):
    path = tmp_path / "s.jsonl"
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who, str(n)])
             for who in ("w1", "w2")]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    store = ComparisonStore(path)
    comps = store.load()
    assert store.errors == []
    ids = [c.item_id for c in comps]
    assert sorted(ids) == sorted(f"{w}{i}" for w in ("w1", "w2") for i in range(n))
    assert len({c.id for c in comps}) == 2 * n


def test_queue_roundtrip_and_errors(tmp_path):
    items = [Item("p", "x", "y", source_a={"model": "m"}), Item("q", "u", "v", gold="b")]
    path = tmp_path / "q.jsonl"
    write_queue(path, items)
    assert read_queue(path) == items
    path.write_text(path.read_text() + '{"prompt": "p", "a": "x"}\n')
    with pytest.raises(RecordError, match=r"q\.jsonl:3: missing key"):
        read_queue(path)
