"""One RLOO step, this project vs TRL's `RLOOTrainer` (benchmark-only extra: pip install .[bench]).

Setup, the same for both: the stories260K policy (and a frozen copy as the KL reference,
beta 0.05), a reward model of the same shape (stories260K backbone + a random scalar head),
16 TinyStories prompts x 4 samples x 64 new tokens (temperature 1, no EOS stop forced),
one AdamW step per batch, CPU, fp32. The reward model's head is random: only time matters.

`--shape smollm2-135m` / `qwen2-0.5b` (`benchmarks/shapes.py`): the policy, reference and
reward backbone get random weights in that model's shape instead (slow on a CPU: give it
`--steps 1 --warmup 0`); `--device cuda` runs both trainers there.

Prints one JSON line: s_per_step (ours), trl_s_per_step, ratio (TRL time / ours), and where our
time goes (`breakdown`: sampling, reward model, reference pass, update). Medians over
`--steps` steps after `--warmup` steps. With the CPU, its SIMD flags, the matmul peak measured
in the same run and each side's MFU: FLOPs per step = for each of the 64 sequences of
T = mean prompt tokens + our mean response length, sampling 2·N·T, the reference pass 2·N·T,
the reward model 2·(N - vocab·dim)·T (no output layer), the update 6·N·T, attention added to
each (`shapes.forward_flops` / `train_flops`); TRL is credited the same FLOPs per step.

    python benchmarks/policy_step.py [--threads 1] [--steps 5] [--warmup 2] [--skip-trl]
        [--shape stories260k|smollm2-135m|qwen2-0.5b] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shapes  # noqa: E402

STORIES = shapes.STORIES
PROMPTS, K, NEW_TOKENS, LR, BETA = 16, 4, 64, 1e-4, 0.05


def make_models(tmp: Path, shape: str = "stories260k") -> tuple[Path, Path]:
    """The policy as an HF-style folder (`shapes.start_model`), and a reward model of the same
    shape and weights + a random scalar head."""
    from rlhf.lm.folders import load_model
    from rlhf.reward.model import RewardModel, save_reward_model

    policy = shapes.start_model(shape, tmp)
    backbone, tok = load_model(policy)
    save_reward_model(RewardModel(backbone, n_members=1, seed=0), tok, tmp / "rm")
    return policy, tmp / "rm"


def step_flops(policy: Path, response_tokens: float) -> float:
    """FLOPs of one step's useful work (the module docstring's count)."""
    from rlhf.lm.folders import load_model
    from rlhf.prompts import load_prompts

    model, tok = load_model(policy)
    n, layers, width = shapes.shape_of(model.args)
    prompts = load_prompts(None)
    t = sum(len(tok.encode(p)) for p in prompts) / len(prompts) + response_tokens
    rm = n - model.args.vocab_size * model.args.dim
    per_sequence = (2 * shapes.forward_flops(n, t, layers, t, width)
                    + shapes.forward_flops(rm, t, layers, t, width)
                    + shapes.train_flops(n, t, layers, t, width))
    return PROMPTS * K * per_sequence


def run_ours(policy: Path, rm: Path, tmp: Path, steps: int, warmup: int, threads: int,
             device: str = "cpu") -> dict:
    from rlhf.config import load_config
    from rlhf.policy.config import PolicyTrainConfig
    from rlhf.policy.train import train

    cfg = load_config(PolicyTrainConfig, None, [
        f"policy={policy}", f"out_dir={tmp / 'ours'}", f"steps={steps + warmup}",
        "reward.kind=model", f"reward.path={rm}", f"kl.coef={BETA}", "algo.name=rloo",
        f"algo.k={K}", f"algo.lr={LR}", f"prompts.batch_prompts={PROMPTS}",
        "prompts.eval_prompts=0", f"sampling.max_new_tokens={NEW_TOKENS}",
        "sampling.stop_at_bos=false", "sample_every=0", "save_every=0",
        f"runtime.threads={threads}", f"runtime.device={device}"])
    train(cfg)
    rows = [json.loads(x) for x in (tmp / "ours" / "metrics.jsonl").read_text().splitlines()]
    rows = rows[warmup:]
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("s_per_step", "s_sample", "s_score", "s_ref", "s_update", "length")}
    return med


def run_trl(policy: Path, tmp: Path, steps: int, warmup: int, threads: int,
            trl_defaults: bool = False, device: str = "cpu") -> float:
    """Median seconds per RLOOTrainer step. fp32 and no gradient checkpointing, as ours,
    unless `trl_defaults` (RLOOConfig's own: bf16 autocast and gradient checkpointing on)."""
    import datasets
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        PreTrainedTokenizerFast,
        TrainerCallback,
    )
    from trl import RLOOConfig, RLOOTrainer

    from rlhf.prompts import load_prompts

    torch.set_num_threads(threads)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(policy / "tokenizer.json"),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<unk>", padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1,
                                                                dtype=torch.float32)
    reward.config.pad_token_id = tok.pad_token_id
    n = PROMPTS * (steps + warmup)
    prompts = (load_prompts(None) * (n // len(load_prompts(None)) + 1))[:n]
    data = datasets.Dataset.from_dict({"prompt": prompts})
    args = RLOOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=PROMPTS * K,
        num_generations=K, max_completion_length=NEW_TOKENS, max_steps=steps + warmup,
        learning_rate=LR, beta=BETA, temperature=1.0, top_p=1.0, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=device == "cpu", seed=0, dataloader_num_workers=0,
        shuffle_dataset=False, gradient_accumulation_steps=1,
        **({} if trl_defaults else {"bf16": False, "gradient_checkpointing": False}))

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, *a, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    trainer = RLOOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tok, reward_processing_classes=tok, callbacks=[timer])
    trainer.train()
    return statistics.median(timer.times[warmup:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--trl-defaults", action="store_true",
                   help="also time TRL with RLOOConfig's defaults (bf16, gradient checkpointing)")
    shapes.add_arguments(p)
    a = p.parse_args(argv)
    if not STORIES.exists():
        print(f"{STORIES} is absent: the shared files belong at ../shared", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        policy, rm = make_models(tmp, a.shape)
        ours = run_ours(policy, rm, tmp, a.steps, a.warmup, a.threads, a.device)
        trl = None if a.skip_trl else run_trl(policy, tmp, a.steps, a.warmup, a.threads,
                                              device=a.device)
        trl_def = run_trl(policy, tmp, a.steps, a.warmup, a.threads, True, a.device) \
            if a.trl_defaults else None
        flops = step_flops(policy, ours["length"])
    peak = shapes.matmul_peak(a.threads, device=a.device)
    out = {"s_per_step": round(ours["s_per_step"], 3),
           "trl_s_per_step": trl and round(trl, 3),
           "ratio": trl and round(trl / ours["s_per_step"], 2),
           "breakdown": {"sample": round(ours["s_sample"], 3),
                         "score_reward_model": round(ours["s_score"], 3),
                         "reference_pass": round(ours["s_ref"], 3),
                         "update": round(ours["s_update"], 3)},
           "trl_defaults_s_per_step": trl_def and round(trl_def, 3),
           "mean_response_tokens": ours["length"], "threads": a.threads,
           "setup": f"{PROMPTS} prompts x {K} samples x {NEW_TOKENS} new tokens, "
                    f"{shapes.label(a.shape)}",
           "model": shapes.label(a.shape), **shapes.device_info(a.device), "device": a.device,
           "step_gflop": round(flops / 1e9, 2),
           **shapes.efficiency(peak, flops / ours["s_per_step"], trl and flops / trl)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
