"""One command-line convention: every command that takes a config reads it positionally or as
`--config PATH`, the same file with the same overrides giving the same result; both at once
is one error line. And a prompt file that does not exist is "not found", not a Hub name."""

from __future__ import annotations

import pytest
import yaml
from conftest import STORIES, need_shared

from rlhf.cli import COMMANDS, main

# command -> the key naming the model it loads first (its config's own spelling)
MODEL_KEY = {"generate": "model", "sample-pairs": "model", "eval-reward": "model",
             "train-sft": "model.init", "train-reward": "model.init", "train-dpo": "model.init",
             "train-kto": "model.init", "train-policy": "policy", "loop": "policy"}


def nested(key: str, value) -> dict:
    """{'model': {'init': value}} from 'model.init'."""
    head, _, rest = key.partition(".")
    return {head: nested(rest, value) if rest else value}


def run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def takes_config(name: str, capsys) -> bool:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    return "--config PATH" in capsys.readouterr().out


def test_the_commands_that_take_a_config_are_the_ones_checked(capsys):
    assert {n for n in COMMANDS if takes_config(n, capsys)} == set(MODEL_KEY)


@pytest.mark.parametrize("name", sorted(MODEL_KEY))
def test_positional_and_flag_config_give_the_same_result(name, tmp_path, capsys):
    """The YAML names a model folder that is not there: the command reads the file and stops
    at loading that model, one line naming it, whichever way the file was given."""
    key = MODEL_KEY[name]
    cfg = {"out_dir": str(tmp_path / "run"), "runtime": {"threads": 1},
           **nested(key, str(tmp_path / "model-from-yaml"))}
    if name in ("sample-pairs",):
        cfg = {"out": str(tmp_path / "queue.jsonl"), **cfg}
        del cfg["out_dir"]
    if name in ("generate", "eval-reward"):
        del cfg["out_dir"]
    if name == "eval-reward":
        cfg["data"] = [str(tmp_path / "pairs.jsonl")]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    positional = run([name, str(path)], capsys)
    flag = run([name, "--config", str(path)], capsys)
    assert positional == flag
    errors = [x for x in positional[1].splitlines() if x.startswith(f"rlhf {name}: error: ")]
    assert positional[0] == 2 and len(errors) == 1 and "model-from-yaml" in errors[0], positional
    # overrides after the config, or around the flag: applied alike
    other = f"{key}={tmp_path / 'model-from-override'}"
    results = {run([name, str(path), other], capsys), run([name, "--config", str(path), other],
                                                          capsys),
               run([name, other, "--config", str(path)], capsys)}
    assert len(results) == 1
    code, err = results.pop()
    assert code == 2 and "model-from-override" in err and "model-from-yaml" not in err
    # both at once: one line saying so, before any work
    code, err = run([name, str(path), "--config", str(path)], capsys)
    assert code == 2 and "given twice" in err and len(err.strip().splitlines()) == 1


def test_a_missing_prompt_file_is_not_found_not_a_hub_name(tmp_path, capsys, monkeypatch):
    import rlhf.prompts as prompts

    def no_hub(*a, **k):  # the Hub must not be asked
        raise AssertionError("asked the Hub")

    monkeypatch.setattr(prompts, "read_dataset", no_hub)
    monkeypatch.chdir(tmp_path)
    for name in ("d/missing.txt", "d/missing.jsonl.gz", "./missing", "/no/such/prompts.json"):
        with pytest.raises(FileNotFoundError, match="prompt file not found"):
            prompts.load_prompts(name)
    called = []
    monkeypatch.setattr(prompts, "read_dataset", lambda name, *a: called.append(name) or ["p"])
    assert prompts.load_prompts("teknium/OpenHermes-2.5") == ["p"]  # a Hub name with a dot
    assert called == ["teknium/OpenHermes-2.5"]


def test_sample_pairs_says_the_prompt_file_is_not_found(tmp_path, capsys, monkeypatch):
    need_shared()
    import rlhf.prompts as prompts

    monkeypatch.setattr(prompts, "read_dataset", lambda *a: pytest.fail("asked the Hub"))
    code, err = run(["sample-pairs", "--model", str(STORIES), "--prompts", "d/missing.txt",
                     "--out", str(tmp_path / "q.jsonl")], capsys)
    assert code == 2
    assert err == "rlhf sample-pairs: error: prompt file not found: d/missing.txt\n"
