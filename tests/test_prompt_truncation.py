"""Prompts longer than the context leaves (max_seq_len - max_new_tokens): `left` keeps their
last tokens (BOS first), `drop` leaves them out with a count on stderr, `error` is one line;
never a traceback. Every sampler: `generate`, `rlhf generate`, `rlhf sample-pairs`, policy
training and the loop (the last two read prompts through the same `fit_prompts`)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import STORIES, need_shared, tiny_model

from rlhf.cli import main
from rlhf.config import ConfigError, load_config
from rlhf.lm.config import GenerateConfig, SamplingConfig
from rlhf.lm.generation import PromptTooLong, fit_prompts, generate, keep_tail


class WordTokenizer:
    """BOS (id 1) and one token per word: lengths by hand."""

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return [1] * bos + [3 + len(w) for w in text.split()]


def test_keep_tail_keeps_bos_and_the_last_tokens():
    ids = [1, 10, 11, 12, 13, 14]
    assert keep_tail(ids, 4, bos_id=1) == [1, 12, 13, 14]
    assert keep_tail(ids, 4) == [11, 12, 13, 14]  # no BOS rule: the last 4
    assert keep_tail([7, 10, 11, 12, 13], 3, bos_id=1) == [11, 12, 13]  # no BOS to keep
    assert keep_tail(ids, 6, bos_id=1) == ids and keep_tail(ids, 9, bos_id=1) == ids


def test_fit_prompts_left_drop_error_with_counts(capsys):
    prompts = ["a b", "a b c d e f", "x", "g h i j k"]  # 3, 7, 2, 6 tokens with BOS
    cfg = SamplingConfig(max_new_tokens=2)  # max_seq_len 6 leaves room for 4
    assert fit_prompts(prompts, WordTokenizer(), 6, cfg) == prompts  # left: generate cuts
    err = capsys.readouterr().err
    assert "2 of 4 prompts are longer than the 4 tokens the context leaves" in err
    assert "keep their last tokens (sampling.prompt_truncation=left)" in err
    cfg.prompt_truncation = "drop"
    assert fit_prompts(prompts, WordTokenizer(), 6, cfg) == ["a b", "x"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 4 prompts" in err[0] and "left out" in err[0]
    cfg.prompt_truncation = "error"
    with pytest.raises(PromptTooLong) as e:
        fit_prompts(prompts, WordTokenizer(), 6, cfg)
    assert str(e.value).startswith("prompt 2 has 7 tokens, and max_new_tokens 2 leaves room "
                                   "for 4 in the model's max_seq_len 6: set "
                                   "sampling.prompt_truncation to left")
    assert fit_prompts(["a", "b c"], WordTokenizer(), 6, cfg) == ["a", "b c"]  # all fit
    assert capsys.readouterr().err == ""
    with pytest.raises(PromptTooLong, match="sampling.max_new_tokens: 6 leaves no room"):
        fit_prompts(["a"], WordTokenizer(), 6, SamplingConfig(max_new_tokens=6))


def test_generate_left_truncates_as_the_cut_prompt_would_sample():
    model = tiny_model()  # max_seq_len 64
    long = [1] + [5 + i % 50 for i in range(69)]  # 70 tokens; 8 new leave room for 56
    short = [1, 7, 8, 9]
    cfg = SamplingConfig(max_new_tokens=8, greedy=True)
    gen = generate(model, [long, short], cfg, eos_id=-1, bos_id=1)
    cut = keep_tail(long, 56, bos_id=1)
    assert len(cut) == 56 and cut[0] == 1 and cut[1:] == long[-55:]
    ref = generate(model, [cut, short], cfg, eos_id=-1, bos_id=1)
    assert gen.truncated == 1 and ref.truncated == 0
    assert torch.equal(gen.tokens, ref.tokens) and gen.prompt_width == 56
    for mode in ("error", "drop"):  # drop happens where prompts are read; here: one line
        with pytest.raises(PromptTooLong, match="prompt 1 has 70 tokens"):
            generate(model, [long, short], SamplingConfig(max_new_tokens=8,
                                                          prompt_truncation=mode), eos_id=-1)


def test_a_bad_truncation_setting_names_the_key():
    with pytest.raises(ConfigError, match="sampling.prompt_truncation: must be one of"):
        load_config(GenerateConfig, None, ["sampling.prompt_truncation=right"])


LONG = " ".join(["the cat sat on the mat."] * 120)  # ~1200 tokens for stories260K (512)


def test_rlhf_generate_drops_or_stops_in_one_line(capsys):
    need_shared()
    args = ["generate", "--model", str(STORIES), "--max-new-tokens", "8", "--greedy",
            "--prompt", LONG, "--prompt", "Once upon a time"]
    assert main([*args, "sampling.prompt_truncation=drop"]) == 0
    out, err = capsys.readouterr()
    assert "1 of 2 prompts are longer than the 504 tokens" in err and "left out" in err
    assert out.count("Once upon a time") == 1 and "the mat" not in out
    assert main([*args, "sampling.prompt_truncation=error"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhf generate: error: prompt 1 has ")
    assert main(args) == 0  # left, the default
    assert "keep their last tokens" in capsys.readouterr().err


def test_sample_pairs_drops_the_long_prompt_with_a_count(tmp_path, capsys):
    need_shared()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                               ["Once upon a time", LONG, "One day, a cat"]))
    out = tmp_path / "queue.jsonl"
    assert main(["sample-pairs", "--model", str(STORIES), "--prompts", str(prompts), "--out",
                 str(out), "sampling.max_new_tokens=8", "sampling.prompt_truncation=drop"]) == 0
    err = capsys.readouterr().err
    assert "1 of 3 prompts are longer than the 504 tokens" in err
    items = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(items) == 2 and all("the mat" not in it["prompt"] for it in items)
