"""Queues that ask for every kind: the mix's counts by hand, a seeded draw of which prompt gets
which ask, `sample_pairs` from a tiny in-process model (K responses per rank item, provenance
of each, the scale on rate items, today's pairs unchanged by default), the config's checks,
and `rlhf sample-pairs` then `rlhf rate --simulated` over the mixed queue."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import STORIES, need_shared, tiny_model

from rlhf.config import ConfigError, load_config
from rlhf.feedback.config import PairsConfig, ScaleConfig
from rlhf.feedback.pairs import ask_counts, draw_asks, sample_pairs
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.records import THUMBS
from rlhf.feedback.store import ComparisonStore
from rlhf.lm.config import SamplingConfig
from rlhf.lm.sampling import sample

PROMPTS = [f"Once upon a time, {name} saw a" for name in
           ("Tom", "Lily", "Sam", "Ben", "Mia", "Max", "Sue", "Tim", "Ann", "Bob")]
LIKERT = {"name": "likert7", "low": 1, "high": 7,
          "anchors": {"1": "very bad", "4": "neither", "7": "very good"}}


def test_ask_counts_by_hand():
    assert ask_counts(20, {"compare": 0.7, "rank": 0, "rate": 0, "correct": 0.3}) == \
        {"compare": 14, "rank": 0, "rate": 0, "correct": 6}
    # 10 * 1/4 = 2.5 each: the two left over go to the first asks (equal remainders)
    assert ask_counts(10, {"compare": 1, "rank": 1, "rate": 1, "correct": 1}) == \
        {"compare": 3, "rank": 3, "rate": 2, "correct": 2}
    # 7 * (0.5, 0.2, 0.3) = 3.5, 1.4, 2.1: floors 3, 1, 2 and the one left to compare (.5)
    assert ask_counts(7, {"compare": 0.5, "rank": 0.2, "rate": 0.3}) == \
        {"compare": 4, "rank": 1, "rate": 2}
    assert ask_counts(0, {"compare": 1}) == {"compare": 0}


def test_the_draw_is_seeded_and_exact():
    weights = {"compare": 0.5, "rank": 0.2, "rate": 0.15, "correct": 0.15}
    asks = draw_asks(40, weights, seed=3)
    assert Counter(asks) == {"compare": 20, "rank": 8, "rate": 6, "correct": 6}
    assert draw_asks(40, weights, seed=3) == asks
    assert draw_asks(40, weights, seed=4) != asks
    assert draw_asks(5, {"compare": 1, "rank": 0, "rate": 0, "correct": 0}, 9) == \
        ["compare"] * 5


@pytest.fixture(scope="module")
def tiny():
    """A tiny random policy with the stories260K tokenizer (in-process)."""
    need_shared()
    from rlhf.lm.tokenizer import Llama2cTokenizer

    model = tiny_model(seed=0, vocab_size=512, dim=16, hidden_dim=32, n_heads=2, n_kv_heads=1)
    return model, Llama2cTokenizer(STORIES / "tok512.bin")


def test_a_mixed_queue_from_sample_pairs(tiny, tmp_path):
    model, tok = tiny
    cfg = SamplingConfig(max_new_tokens=8)
    asks = draw_asks(len(PROMPTS), {"compare": 0.4, "rank": 0.2, "rate": 0.2, "correct": 0.2},
                     seed=0)
    items = sample_pairs(model, tok, PROMPTS, cfg, torch.Generator().manual_seed(0),
                         {"model": "tiny"}, asks=asks, rank_k=4, scale=LIKERT)
    assert [it.prompt for it in items] == PROMPTS and [it.ask for it in items] == asks
    assert Counter(asks) == {"compare": 4, "rank": 2, "rate": 2, "correct": 2}
    for it in items:
        k = {"compare": 2, "rank": 4, "rate": 1, "correct": 1}[it.ask]
        assert len(it.responses) == len(it.sources) == k
        assert [s["sample"] for s in it.sources] == list(range(k))
        assert all(s["model"] == "tiny" and s["sampling"]["max_new_tokens"] == 8
                   and isinstance(s["ended"], bool) for s in it.sources)
        assert it.scale == (LIKERT if it.ask == "rate" else None)
        assert it.group == it.prompt
    write_queue(tmp_path / "q.jsonl", items)
    assert [it.to_dict() for it in read_queue(tmp_path / "q.jsonl")] == \
        [it.to_dict() for it in items]
    again = sample_pairs(model, tok, PROMPTS, cfg, torch.Generator().manual_seed(0),
                         {"model": "tiny"}, asks=asks, rank_k=4, scale=LIKERT)
    assert [it.responses for it in again] == [it.responses for it in items]


def test_rate_k_rates_several_responses_of_one_prompt_as_items(tiny):
    """rate_k=3: a prompt asked to rate gives 3 items (one response each, one prompt and
    group), the responses of one batched draw of 3; one rater's different ratings of them are
    pairs for the reward model."""
    model, tok = tiny
    cfg = SamplingConfig(max_new_tokens=8)
    asks = ["rate", "compare", "rate"]
    items = sample_pairs(model, tok, PROMPTS[:3], cfg, torch.Generator().manual_seed(2),
                         asks=asks, rate_k=3)
    assert [(it.prompt, it.ask) for it in items] == [(PROMPTS[0], "rate")] * 3 + [
        (PROMPTS[1], "compare")] + [(PROMPTS[2], "rate")] * 3
    g = torch.Generator().manual_seed(2)
    sample(model, tok, [PROMPTS[1]], cfg, g, n=2)  # the compare draw comes first (ASKS order)
    s = sample(model, tok, [PROMPTS[0], PROMPTS[2]], cfg, g, n=3)
    assert [it.a for it in items if it.ask == "rate"] == s.responses
    assert [it.source_a["sample"] for it in items if it.ask == "rate"] == [0, 1, 2, 0, 1, 2]
    assert len({it.id for it in items}) == 7 and {it.group for it in items[:3]} == {PROMPTS[0]}
    with pytest.raises(ConfigError, match="rate_k"):
        load_config(PairsConfig, None, ["rate_k=0"])


def test_the_default_is_todays_pairs(tiny):
    """All compare: one batched draw of two responses per prompt, as before."""
    model, tok = tiny
    cfg = SamplingConfig(max_new_tokens=8)
    items = sample_pairs(model, tok, PROMPTS[:4], cfg, torch.Generator().manual_seed(1))
    s = sample(model, tok, PROMPTS[:4], cfg, torch.Generator().manual_seed(1), n=2)
    assert [(it.a, it.b) for it in items] == list(zip(s.responses[::2], s.responses[1::2]))
    assert {it.ask for it in items} == {"compare"}


def test_the_config_rejects_impossible_values_by_key():
    cfg = load_config(PairsConfig)
    assert cfg.mix.weights() == {"compare": 1.0, "rank": 0.0, "rate": 0.0, "correct": 0.0}
    assert cfg.scale.as_item_scale() is None and THUMBS["anchors"] == {"0": "bad", "1": "good"}
    bad = {"rank_k=2": "rank_k", "rank_k=10": "rank_k", "mix.rank=-1": "mix.rank",
           "scale.high=0": "scale.high", "scale.high=2": "scale.low",
           "scale.anchors=[a]": "scale.anchors"}
    for override, key in bad.items():
        with pytest.raises(ConfigError, match=f"^{key}: "):
            load_config(PairsConfig, None, [override])
    with pytest.raises(ConfigError, match="^mix.compare: at least one"):
        load_config(PairsConfig, None, ["mix.compare=0"])
    with pytest.raises(ConfigError, match="^scale.high: a scale has at most 11 points"):
        load_config(PairsConfig, None, ["scale.name=wide", "scale.high=20"])
    likert = ScaleConfig("likert7", 1, 7, ["very bad", "", "", "neither", "", "", "very good"])
    assert likert.as_item_scale() == LIKERT
    assert ScaleConfig(anchors=["down", "up"]).as_item_scale() == \
        {"name": "thumbs", "low": 0, "high": 1, "anchors": {"0": "down", "1": "up"}}


def test_sample_pairs_cli_then_a_simulated_rater_over_the_mix(tiny, tmp_path, capsys):
    from rlhf.cli import main
    from rlhf.lm.folders import save_model

    model, tok = tiny
    folder = tmp_path / "policy"
    save_model(model, tok, folder)
    queue = tmp_path / "q.jsonl"
    args = ["sample-pairs", "--model", str(folder), "--out", str(queue), "--prompts",
            str(tmp_path / "prompts.txt"), "--n-prompts", "8", "sampling.max_new_tokens=8",
            "mix.compare=0.5", "mix.rank=0.25", "mix.correct=0.25", "rank_k=3"]
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    assert main(args) == 0
    assert "wrote 8 items" in capsys.readouterr().out
    items = read_queue(queue)
    assert Counter(it.ask for it in items) == {"compare": 4, "rank": 2, "correct": 2}
    assert all(len(it.responses) == 3 for it in items if it.ask == "rank")
    assert main(["rate", str(queue), "--simulated", "vader", "--repeat-rate", "0"]) == 0
    answers = ComparisonStore(tmp_path / "q.comparisons.jsonl").answers()
    kind = {"compare": "comparison", "rank": "ranking", "correct": "correction"}
    assert sorted((a.item_id, a.kind) for a in answers) == \
        sorted((it.id, kind[it.ask]) for it in items)
