"""rlhf.policy.train and rlhf.prompts: behaviour of the loop on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, STORIES, need_shared, tiny_model
from safetensors.torch import load_file

from rlhf.config import ConfigError, load_config
from rlhf.harness import distributed as dist
from rlhf.policy.config import PolicyTrainConfig
from rlhf.policy.train import global_batch, train
from rlhf.prompts import load_prompts, split_prompts, story_openings

PROMPTS = ["Once upon a time", "One day, a cat", "Tom had a ball", "The sun was up",
           "Lily saw a dog", "A bird sang", "Mom made a cake", "The boy ran"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny random policy with the stories260K tokenizer, as an HF-style folder."""
    need_shared()
    from rlhf.lm.folders import save_model
    from rlhf.lm.tokenizer import Llama2cTokenizer

    folder = tmp_path_factory.mktemp("tiny") / "policy"
    model = tiny_model(seed=0, vocab_size=512, dim=16, hidden_dim=32, n_heads=2, n_kv_heads=1)
    save_model(model, Llama2cTokenizer(STORIES / "tok512.bin"), folder)
    return folder


@pytest.fixture
def prompt_file(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


def even_token_share(gen, texts):
    """A simple known reward: the share of response tokens with an even id."""
    even = (gen.responses % 2 == 0).float() * gen.response_mask
    return even.sum(1) / gen.response_mask.sum(1)


def tiny_cfg(folder, prompts, out, *over):
    base = [f"policy={folder}", f"out_dir={out}", f"prompts.path={prompts}",
            "prompts.batch_prompts=4", "prompts.hold_out_every=0", "prompts.eval_prompts=0",
            "sampling.max_new_tokens=8", "algo.k=4", "algo.lr=0.01", "kl.coef=0.01",
            "sample_every=0", "save_every=0", "runtime.threads=1"]
    return load_config(PolicyTrainConfig, None, base + list(over))


def params(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


# ----------------------------------------------------------------------------- prompts


def test_story_openings_and_files(tmp_path):
    text = ("Once upon a time, there was a cat. It was red.\n\nThe cat ran.\n\n"
            "One day, a boy named Tim saw a dog! He smiled.\n\nOnce upon a time, there was a cat."
            " Again.\n")
    assert story_openings(text) == ["Once upon a time, there was a cat.",
                                    "One day, a boy named Tim saw a dog!"]
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a"}\n\n{"text": "b"}\n')
    assert load_prompts(str(j)) == ["a", "b"]
    t = tmp_path / "p.txt"
    t.write_text("x\n\ny\nz\n")
    assert load_prompts(str(t), n=2) == ["x", "y"]
    assert sorted(load_prompts(str(t), seed=3)) == ["x", "y", "z"]
    assert split_prompts(list("abcdef"), 3) == (list("abde"), list("cf"))
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_default_prompts_are_story_openings():
    need_shared(ROOT.parent / "shared" / "data" / "text" / "tinystories-sample.txt")
    prompts = load_prompts(None)
    assert len(prompts) > 100 and len(set(prompts)) == len(prompts)
    assert all(p[-1] in ".!?" for p in prompts)


# ----------------------------------------------------------------------------- config, data


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="algo.nmae"):
        load_config(PolicyTrainConfig, None, ["algo.nmae=ppo"])
    with pytest.raises(ConfigError, match="algo.name"):
        load_config(PolicyTrainConfig, None, ["algo.name=a2c"])
    with pytest.raises(ConfigError, match="reward.path"):
        load_config(PolicyTrainConfig, None, ["reward.kind=model"])
    with pytest.raises(ConfigError, match="algo.k"):
        load_config(PolicyTrainConfig, None, ["algo.k=1"])
    with pytest.raises(ConfigError, match="kl.estimator"):
        load_config(PolicyTrainConfig, None, ["kl.estimator=k5"])


def test_configs_in_repo_load():
    for name in ("policy_vader.yaml", "policy_rm.yaml"):
        load_config(PolicyTrainConfig, ROOT / "configs" / name)


def test_global_batch_passes_and_shards():
    seen = [i for s in range(3) for i in global_batch(6, s, 2, seed=1)]
    assert sorted(seen) == list(range(6))  # one pass = every prompt once
    assert global_batch(6, 4, 2, 1) == global_batch(6, 4, 2, 1)
    full = global_batch(10, 7, 4, 0)
    halves = [dist.shard(full, dist.DistInfo(rank=r, world_size=2)) for r in (0, 1)]
    assert halves[0] + halves[1] == full


# ----------------------------------------------------------------------------- the loop


def test_reward_on_last_real_token_of_generated_batch():
    """On a real sampled batch (ragged prompts, some responses ending early): the score sits on
    EOS for ended rows, on the last column for truncated ones, and padding gets nothing."""
    from rlhf.lm.config import SamplingConfig
    from rlhf.lm.generation import generate
    from rlhf.policy.advantages import kl_per_token, shape_rewards

    model = tiny_model(seed=5, vocab_size=6)  # EOS (2) is drawn often
    prompts = [[1, 3], [1, 4, 5, 3, 4], [1], [1, 5, 5]] * 4
    g = torch.Generator().manual_seed(0)
    gen = generate(model, prompts, SamplingConfig(max_new_tokens=10), eos_id=2, pad_id=0,
                   bos_id=None, generator=g)
    assert gen.ended.any() and (~gen.ended).any()
    kl = kl_per_token(gen.logprobs, gen.logprobs - 0.1, "k1", gen.response_mask)
    r = shape_rewards(torch.full((16,), 5.0), kl, gen.response_mask, kl_coef=0.0)
    for i in range(16):
        resp = gen.responses[i].tolist()
        where = resp.index(2) if gen.ended[i] else 9
        assert r[i, where] == 5.0 and r[i].abs().sum() == 5.0
        assert gen.response_mask[i, where] == 1 and gen.response_mask[i, where + 1:].sum() == 0


def test_reward_rises_params_change_and_seed_reproduces(tiny_folder, prompt_file, tmp_path):
    cfg = tiny_cfg(tiny_folder, prompt_file, tmp_path / "a", "steps=20", "algo.lr=0.1")
    s = train(cfg, score_fn=even_token_share)
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    first = sum(r["reward"] for r in rows[:5]) / 5
    last = sum(r["reward"] for r in rows[-5:]) / 5
    assert last > first + 0.2, (first, last)
    for key in ("reward", "kl", "kl_penalty", "entropy", "length", "clip_frac", "s_per_step"):
        assert key in rows[-1]
    before, after = params(tiny_folder), params(Path(s["policy"]))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    cfg2 = tiny_cfg(tiny_folder, prompt_file, tmp_path / "b", "steps=20", "algo.lr=0.1")
    s2 = train(cfg2, score_fn=even_token_share)
    again = params(Path(s2["policy"]))
    assert all(torch.equal(after[k], again[k]) for k in after)


@pytest.mark.parametrize("over", [
    ["algo.name=reinforce", "reward.normalize=running", "kl.target=0.5", "kl.estimator=k3"],
    ["algo.name=ppo", "kl.placement=loss", "kl.estimator=k2", "algo.warmup_steps=3",
     "reward.missing_eos_penalty=0.5", "algo.whiten_advantages=true"],
])
def test_exact_resume(tiny_folder, prompt_file, tmp_path, over):
    """Killed after step 2 and resumed == uninterrupted, for every piece of state."""
    full = train(tiny_cfg(tiny_folder, prompt_file, tmp_path / "full", "steps=4", *over),
                 score_fn=even_token_share)
    train(tiny_cfg(tiny_folder, prompt_file, tmp_path / "cut", "steps=2", *over),
          score_fn=even_token_share)
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:  # a row the kill left behind
        f.write(json.dumps({"step": 3, "reward": 123.0}) + "\n")
    resumed = train(tiny_cfg(tiny_folder, prompt_file, tmp_path / "cut", "steps=4", *over),
                    score_fn=even_token_share)
    a, b = params(Path(full["policy"])), params(Path(resumed["policy"]))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["kl_coef"] == resumed["kl_coef"]
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["reward"] != 123.0
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in rows] == [r["reward"] for r in ref]


def test_scorer_reward_writes_samples_and_eval(tiny_folder, tmp_path):
    need_shared(ROOT.parent / "shared" / "data" / "text" / "tinystories-sample.txt")
    cfg = load_config(PolicyTrainConfig, None, [
        f"policy={tiny_folder}", f"out_dir={tmp_path / 'run'}", "steps=2", "sample_every=1",
        "prompts.batch_prompts=2", "prompts.eval_prompts=3", "sampling.max_new_tokens=6",
        "algo.k=2", "reward.scorer=length"])
    s = train(cfg)
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "state", "policy"} <= {p.name for p in run.iterdir()}
    rows = [json.loads(x) for x in (run / "samples" / "step_000002.jsonl").read_text().split("\n")
            if x]
    assert len(rows) == 4 and {"prompt", "response", "reward"} <= set(rows[0])
    assert s["eval_start"]["kl_k3"] == pytest.approx(0.0, abs=1e-5)  # policy == reference
    # the reward is the word count of prompt + response: a whole number, at least the prompt's
    # words; the summary's reward is the mean over the eval samples written to the run folder
    ev = [json.loads(x) for x in (run / "samples" / "eval_end.jsonl").read_text().splitlines()]
    assert len(ev) == 3 * 4  # eval_prompts x eval_samples
    assert all(r["reward"] == int(r["reward"]) >= len(r["prompt"].split()) for r in ev)
    assert s["eval_end"]["reward"] == pytest.approx(sum(r["reward"] for r in ev) / len(ev))


def test_reward_model_reward(tiny_folder, prompt_file, tmp_path):
    """reward.kind=model reads a reward-model folder (rlhf.reward.model) and scores tokens."""
    from rlhf.lm.folders import load_model
    from rlhf.reward.model import RewardModel, save_reward_model

    backbone, tok = load_model(tiny_folder)
    save_reward_model(RewardModel(backbone, n_members=2, seed=1), tok, tmp_path / "rm")
    cfg = tiny_cfg(tiny_folder, prompt_file, tmp_path / "run", "steps=2", "reward.kind=model",
                   f"reward.path={tmp_path / 'rm'}", "prompts.eval_prompts=2",
                   "prompts.hold_out_every=4", "prompts.eval_samples=2")
    s = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # step 1's reward is the reward model's score of exactly the batch step 1 sampled: redo it
    from rlhf.lm.sampling import sample
    from rlhf.policy.run import step_generator
    from rlhf.reward.model import load_reward_model, score_tokens

    policy, tok = load_model(tiny_folder)
    train_p, _ = split_prompts(load_prompts(str(prompt_file), seed=0), 4)
    batch = [train_p[i] for i in global_batch(len(train_p), 0, 4, 0)]
    gen = sample(policy, tok, batch, cfg.sampling, step_generator(0, 0, 0, "cpu"), n=4,
                 batch_rows=0).batches[0]
    rm, _ = load_reward_model(tmp_path / "rm")
    expected = score_tokens(rm, gen.tokens, gen.mask)
    assert len(rows) == 2 and rows[0]["reward"] == pytest.approx(float(expected.mean()),
                                                                 abs=1e-5)
    assert rows[0]["reward_std"] == pytest.approx(float(expected.std(unbiased=False)), abs=1e-5)
    assert s["eval_start"]["kl_k1"] == pytest.approx(0.0, abs=1e-5)  # policy == reference


def test_cli_help_and_bad_key(capsys):
    from rlhf.cli import main

    with pytest.raises(SystemExit):
        main(["train-policy", "--help"])
    assert "kl.estimator" in capsys.readouterr().out
    assert main(["train-policy", "algo.nope=1"]) == 2
    assert "algo.nope" in capsys.readouterr().err


def run_policy(over: list[str], processes: int = 1) -> None:
    """`rlhf train-policy` in a subprocess: plain, or under torchrun with `processes` ranks."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
              str(processes)] if processes > 1 else [sys.executable]
    r = subprocess.run([*launch, "-m", "rlhf", "train-policy", *over], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def steps_logged(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_processes_then_resume_with_one(tiny_folder, prompt_file, tmp_path):
    """2-process gloo DDP run, then the same run folder resumed by a single process."""
    over = [f"policy={tiny_folder}", f"out_dir={tmp_path / 'ddp'}", f"prompts.path={prompt_file}",
            "prompts.batch_prompts=4", "prompts.hold_out_every=0", "prompts.eval_prompts=0",
            "sampling.max_new_tokens=8", "algo.k=2", "save_every=1", "runtime.device=cpu"]
    run_policy(["steps=2", *over], processes=2)
    state = json.loads((tmp_path / "ddp" / "state" / "state.json").read_text())["meta"]
    assert state["world_size"] == 2 and state["global_prompts_seen"] == 8
    run_policy(["steps=3", *over])
    assert steps_logged(tmp_path / "ddp") == [1, 2, 3]


def test_bf16_autocast_learns_and_sampling_matches_training(tiny_folder, prompt_file, tmp_path):
    """runtime.precision=bf16 (autocast; 'auto' picks it on CUDA GPUs with bf16): sampling, the
    reference pass and the update all run under it, so step 1's KL to the (identical)
    reference is ~0 and the reward still rises."""
    cfg = tiny_cfg(tiny_folder, prompt_file, tmp_path / "bf16", "steps=20", "algo.lr=0.1",
                   "runtime.precision=bf16")
    train(cfg, score_fn=even_token_share)
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert abs(rows[0]["kl"]) < 0.05, rows[0]["kl"]
    first = sum(r["reward"] for r in rows[:5]) / 5
    last = sum(r["reward"] for r in rows[-5:]) / 5
    assert last > first + 0.2, (first, last)


def test_fsdp_two_processes_then_resume_with_one(tiny_folder, prompt_file, tmp_path):
    """runtime.parallel=fsdp on 2 processes (policy and reference sharded, sampling without
    early stop so the ranks' collective forward passes match), then one process resumes."""
    over = [f"policy={tiny_folder}", f"out_dir={tmp_path / 'fsdp'}", f"prompts.path={prompt_file}",
            "prompts.batch_prompts=4", "prompts.hold_out_every=2", "prompts.eval_prompts=2",
            "prompts.eval_samples=1", "sampling.max_new_tokens=8", "algo.k=2", "save_every=1",
            "runtime.device=cpu", "reward.scorer=length"]
    run_policy(["steps=2", "runtime.parallel=fsdp", *over], processes=2)
    state = json.loads((tmp_path / "fsdp" / "state" / "state.json").read_text())["meta"]
    assert state["world_size"] == 2 and state["global_prompts_seen"] == 8 and state["sharded"]
    saved = params(tmp_path / "fsdp" / "policy")  # whole tensors, gathered from the shards
    assert saved.keys() == params(tiny_folder).keys()
    assert all(saved[k].shape == v.shape for k, v in params(tiny_folder).items())
    run_policy(["steps=3", *over])
    assert steps_logged(tmp_path / "fsdp") == [1, 2, 3]
