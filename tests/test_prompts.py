"""The one prompt reader: every format users have, chat messages, errors with file:line, and
prompts (multi-line, chat) surviving a write/read round trip."""

import json

import pytest
from conftest import STORIES, need_shared

from rlhf.config import ConfigError, load_config
from rlhf.prompts import ChatPrompt, PromptsError, load_prompts, write_prompts

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nthere"}]


def test_text_file_one_per_line(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("first prompt\n\n  second  \nfirst prompt\n")
    assert load_prompts(str(p)) == ["first prompt", "second"]


def test_jsonl_prompt_text_messages_and_trl_conversational(tmp_path):
    p = tmp_path / "p.jsonl"
    rows = [{"prompt": "a\nmulti-line prompt"}, {"text": "plain"}, {"messages": CHAT},
            {"prompt": CHAT[1:]},  # TRL conversational prompt-only
            {"messages": CHAT + [{"role": "assistant", "content": "Hello."}]}]  # cut at answer
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = load_prompts(str(p))
    assert got[0] == "a\nmulti-line prompt" and got[1] == "plain"
    assert isinstance(got[2], ChatPrompt) and got[2].messages == CHAT
    assert got[3].messages == CHAT[1:]
    assert len(got) == 4  # the last row, cut before the answer, equals row 3: dropped
    assert got[2] == "system: Be brief.\n\nuser: Hi\nthere"


def test_json_array_of_strings_and_objects(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(["one", {"prompt": "two"}, {"messages": CHAT}]))
    got = load_prompts(str(p))
    assert got[:2] == ["one", "two"] and got[2].messages == CHAT


def test_parquet_and_datasets_folder_with_column_and_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"question": "q1", "prompt": "p1"},
                                     {"question": "q2\nline", "prompt": "p2"}])
    ds.to_parquet(str(tmp_path / "p.parquet"))
    assert load_prompts(str(tmp_path / "p.parquet")) == ["p1", "p2"]
    assert load_prompts(str(tmp_path / "p.parquet"), column="question") == ["q1", "q2\nline"]
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(tmp_path / "dd")
    assert load_prompts(str(tmp_path / "dd"), split="test") == ["p2"]
    ds.save_to_disk(tmp_path / "d")
    assert load_prompts(str(tmp_path / "d"), column="question") == ["q1", "q2\nline"]
    with pytest.raises(PromptsError, match="no split 'validation'"):
        load_prompts(str(tmp_path / "dd"), split="validation")


@pytest.mark.parametrize("name, text, message", [
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": 3}\n', "bad.jsonl:2: prompt: expected a"),
    ("bad2.jsonl", '{"prompt": "ok"}\n\n{oops\n', "bad2.jsonl:3: not valid JSON"),
    ("bad.json", '{"prompt": "x"}', "bad.json: expected a JSON array"),
    ("bad3.jsonl", '{"messages": [{"role": "user"}]}\n', "bad3.jsonl:1: messages: expected"),
    ("bad4.json", '[\n"a",\n', "bad4.json:3: not valid JSON"),
])
def test_bad_files_one_line_with_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(PromptsError) as e:
        load_prompts(str(tmp_path / name))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_write_then_load_keeps_multi_line_and_chat_prompts(tmp_path):
    prompts = ["one line", "two\nlines", ChatPrompt(CHAT)]
    write_prompts(tmp_path / "out.jsonl", prompts)
    back = load_prompts(str(tmp_path / "out.jsonl"))
    assert back == prompts and back[2].messages == CHAT


def test_loop_run_folder_keeps_multi_line_and_chat_prompts(tmp_path):
    from rlhf.config import load_config
    from rlhf.loop.config import LoopConfig
    from rlhf.loop.folder import init_run

    src = tmp_path / "p.jsonl"
    prompts = [f"prompt {i}\nsecond line" for i in range(5)] + [ChatPrompt(CHAT)]
    write_prompts(src, prompts)
    cfg = load_config(LoopConfig, None, [f"prompts={src}", "eval.n_prompts=2",
                                         f"out_dir={tmp_path / 'run'}"])
    init_run(cfg, tmp_path / "run")
    train = load_prompts(str(tmp_path / "run" / "prompts_train.jsonl"))
    held = load_prompts(str(tmp_path / "run" / "prompts_eval.jsonl"))
    assert sorted(train + held) == sorted(prompts) and len(held) == 2
    assert any(isinstance(p, ChatPrompt) and p.messages == CHAT for p in train + held)


def test_column_and_split_are_settings_of_every_command(tmp_path, capsys):
    """`prompt_column` / `prompt_split` (policy: `prompts.column` / `prompts.split`) reach the
    one reader from the command line: generate, the loop's prompt split and the policy set-up."""
    datasets = pytest.importorskip("datasets")
    from rlhf.lm.cli import cli as generate_cli
    from rlhf.loop.config import LoopConfig
    from rlhf.loop.folder import init_run
    from rlhf.policy.config import PolicyTrainConfig

    need_shared(STORIES)
    rows = [{"question": f"Once upon a time {i}\nthere was", "prompt": f"p{i}"} for i in range(6)]
    ds = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": ds, "test": ds.select([4, 5])}).save_to_disk(tmp_path / "dd")
    assert generate_cli(["--prompts-file", str(tmp_path / "dd"), "--max-new-tokens", "2",
                         "--greedy", "--json", "prompt_column=question",
                         "prompt_split=test"]) == 0
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert [t.split("\nthere was")[0] for t in texts] == ["Once upon a time 4",
                                                          "Once upon a time 5"]
    cfg = LoopConfig(out_dir=str(tmp_path / "loop"), prompts=str(tmp_path / "dd"),
                     prompt_column="question", prompt_split="train")
    cfg.eval.n_prompts = 2
    init_run(cfg, tmp_path / "loop")
    got = load_prompts(str(tmp_path / "loop" / "prompts_train.jsonl")) + load_prompts(
        str(tmp_path / "loop" / "prompts_eval.jsonl"))
    assert sorted(got) == sorted(r["question"] for r in rows)  # multi-line kept
    pc = load_config(PolicyTrainConfig, None, ["prompts.column=question", "prompts.split=test"])
    assert (pc.prompts.column, pc.prompts.split) == ("question", "test")
    with pytest.raises(ConfigError, match="prompts.split"):
        load_config(PolicyTrainConfig, None, ["prompts.split="])
