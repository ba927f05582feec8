"""Peak memory and step time of a policy step (RLOO) and a DPO step at the SmolLM2-135M shape,
for three ways of training it: full fine-tuning in fp32, LoRA, and LoRA + gradient
checkpointing + the frozen base in bf16 (`rlhf.lm.memory`, `rlhf.lm.lora`).

The model: random weights at SmolLM2-135M's shape, made from a transformers `LlamaConfig`
in-process (hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152, tied
embeddings; 134.5M parameters) and read by the project's own config reader, so nothing is
downloaded. The steps are the project's own code:
- policy: the training half of `rlhf train-policy`'s step on a sampled batch of
  `--prompts` x `--k` rows (prompt `--prompt-len`, response `--new-tokens`): the frozen
  reference's log-probs (no grad), then `rlhf.policy.train.update` (RLOO loss, backward,
  gradient clipping, AdamW). Full: the reference is a second fp32 model, as the stage loads
  it; LoRA: the reference is the policy's base with adapters off (`BaseView`, one copy).
  Sampling is left out: it keeps no gradients and its KV cache is the same in every variant.
- dpo: `rlhf train-dpo`'s step on `--pairs` pairs: both sides' log-probs in one packed
  forward (`rlhf.dpo.pairs.pair_logprobs`), the DPO loss against cached reference log-probs
  (the stage computes those once, before training, so no reference model is held), backward,
  AdamW.
LoRA: rank 16, alpha 32, every linear layer of the blocks (q, k, v, o, gate, up, down).

Memory is the process's peak resident set size (getrusage ru_maxrss) minus its resident size
just before the model is built (torch and the project imported), each configuration in its own
subprocess so peaks do not mix. RSS and not tracemalloc, which sees only Python's allocations
and none of torch's tensors; and not torch's profiler, whose CPU memory events miss the
allocator's and oneDNN's own buffers. The peak includes building the model (in fp32, as a
folder is loaded, then cast where bf16 is asked). Each variant runs with what a stage does
with its settings (`apply_memory`): with checkpointing, glibc's mmap threshold is fixed, so
freed tensors leave the resident size (`rlhf.lm.memory.return_freed_memory`). Time: the
median of the steps after the first (which allocates the optimiser state).

Prints one JSON line: per step and variant peak_mb and s_per_step, the ratios to the full
fp32 run, the goal (LoRA + checkpointing + bf16 at most 0.4x the full run's peak), the CPU,
torch version and the sizes.

    python benchmarks/memory.py [--steps 3] [--threads 1] [--only policy|dpo]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> (LoRA, gradient checkpointing, dtype of the frozen weights)
    "full_fp32": (False, False, "fp32"),
    "lora": (True, False, "fp32"),
    "lora_ckpt_bf16": (True, True, "bf16"),
}
STEPS = ("policy", "dpo")
GOAL = 0.4


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def rss_mb() -> float:
    """The current resident set size (Linux /proc/self/statm), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def smollm2_shape():
    """ModelArgs of SmolLM2-135M, from a transformers LlamaConfig (no download)."""
    from transformers import LlamaConfig

    from rlhf.lm.hf_config import args_from_hf_config

    c = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, hidden_act="silu")
    d = c.to_dict()
    d["architectures"] = ["LlamaForCausalLM"]
    return args_from_hf_config(d, "SmolLM2-135M shape")


def build(variant: str, seed: int = 0):
    """(policy, reference or None) for a variant, as a stage sets them
    up: LoRA applied first (freezing the base), then the memory settings."""
    import torch

    from rlhf.lm.config import LoraConfig
    from rlhf.lm.hf_weights import build_model
    from rlhf.lm.lora import BaseView, apply_lora
    from rlhf.lm.memory import MemoryConfig, apply_memory

    lora, ckpt, dtype = VARIANTS[variant]
    torch.manual_seed(seed)
    policy = build_model(smollm2_shape()).train()
    if lora:
        apply_lora(policy, LoraConfig(rank=16, alpha=32.0, target_modules=["all-linear"]))
    apply_memory(policy, MemoryConfig(gradient_checkpointing=ckpt, dtype=dtype))
    return policy, (BaseView(policy) if lora else None)


def policy_batch(args, vocab: int):
    """A sampled batch as `generate` returns it (left-padded prompts, responses of several
    lengths, their sampling log-probs), and the sequence advantages."""
    import torch

    from rlhf.lm.generation import Generation

    g = torch.Generator().manual_seed(1)
    B, P, N = args.prompts * args.k, args.prompt_len, args.new_tokens
    tokens = torch.randint(1, vocab, (B, P + N), generator=g)
    mask = torch.ones(B, P + N, dtype=torch.long)
    mask[::2, :P // 4] = 0  # left padding
    lengths = torch.randint(N // 2, N + 1, (B,), generator=g)
    response_mask = (torch.arange(N)[None] < lengths[:, None]).long()
    mask[:, P:] = response_mask
    gen = Generation(tokens=tokens, mask=mask, prompt_width=P, response_mask=response_mask,
                     logprobs=-4 * torch.rand(B, N, generator=g) * response_mask,
                     ended=lengths < N)
    return gen, torch.randn(B, generator=g)


def policy_steps(args, variant: str) -> list[float]:
    import copy

    import torch

    from rlhf.config import load_config
    from rlhf.harness.optim import make_optimizer
    from rlhf.lm.logprobs import response_logprobs
    from rlhf.policy.config import PolicyTrainConfig
    from rlhf.policy.train import update

    cfg = load_config(PolicyTrainConfig, None, [
        "algo.name=rloo", f"algo.k={args.k}", f"prompts.batch_prompts={args.prompts}",
        "kl.coef=0.05", "algo.lr=1e-5"])
    policy, ref = build(variant)
    if ref is None:  # full fine-tuning: the stage loads a second, frozen copy
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    gen, adv = policy_batch(args, policy.args.vocab_size)
    opt = make_optimizer(policy, cfg.algo.lr, 0.0, cfg.algo.betas)
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            ref_logp, _ = response_logprobs(ref, gen)  # (B, N)
        update(cfg, policy, opt, gen, adv, ref_logp, 0.05, cfg.algo.lr, step)
        times.append(time.perf_counter() - t0)
    return times


def dpo_pairs(args, vocab: int):
    """`--pairs` pairs of token lists: a shared prompt, then two different responses."""
    import torch

    g = torch.Generator().manual_seed(2)

    def ids(n):
        return torch.randint(1, vocab, (n,), generator=g).tolist()

    pairs = []
    for _ in range(args.pairs):
        prompt = ids(args.prompt_len)
        pairs.append((prompt + ids(args.new_tokens), prompt + ids(args.new_tokens - 3)))
    return [c for c, _ in pairs], [r for _, r in pairs]


def dpo_steps(args, variant: str) -> list[float]:
    import torch

    from rlhf.dpo.pairs import pair_logprobs
    from rlhf.harness.optim import clip_gradients, make_optimizer
    from rlhf.lm.lora import adapters_off
    from rlhf.preferences.losses import dpo_loss

    policy, _ = build(variant)
    chosen, rejected = dpo_pairs(args, policy.args.vocab_size)
    with torch.no_grad(), adapters_off(policy):  # the cached reference pass, before training
        ref_c, ref_r = pair_logprobs(policy, chosen, rejected, "cpu")
    opt = make_optimizer(policy, 5e-6, 0.0, (0.9, 0.95))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        pc, pr = pair_logprobs(policy, chosen, rejected, "cpu")  # (B,), (B,)
        loss = dpo_loss(pc - ref_c, pr - ref_r, 0.1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(policy, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def child(args) -> None:
    """One configuration in this process: its peak RSS over the start's, and its step times."""
    import torch

    import rlhf.dpo.pairs  # noqa: F401  (everything imported before the baseline)
    import rlhf.lm.lora  # noqa: F401
    import rlhf.policy.train  # noqa: F401

    torch.set_num_threads(args.threads)
    smollm2_shape()
    start = rss_mb()
    times = (policy_steps if args.child[0] == "policy" else dpo_steps)(args, args.child[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(json.dumps({"peak_mb": round(peak - start, 1), "start_mb": round(start, 1),
                      "s_per_step": round(statistics.median(times[1:] or times), 3),
                      "s_first_step": round(times[0], 3)}))


def run_child(step: str, variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", step, variant, "--steps", str(args.steps),
           "--threads", str(args.threads), "--prompts", str(args.prompts), "--k", str(args.k),
           "--pairs", str(args.pairs), "--prompt-len", str(args.prompt_len),
           "--new-tokens", str(args.new_tokens)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": tail[0]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="steps per configuration (>= 2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=2, help="policy: prompts per step")
    ap.add_argument("--k", type=int, default=4, help="policy: samples per prompt")
    ap.add_argument("--pairs", type=int, default=4, help="dpo: pairs per step")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--only", choices=STEPS, default=None)
    ap.add_argument("--child", nargs=2, metavar=("STEP", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        child(args)
        return
    import torch

    out: dict = {"cpu": cpu_name(), "torch": torch.__version__, "threads": args.threads,
                 "shape": "SmolLM2-135M (random weights)", "measure": "peak RSS - RSS before "
                 "the model, MiB; one subprocess per configuration",
                 "sizes": {"policy_rows": args.prompts * args.k, "pairs": args.pairs,
                           "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                           "steps": args.steps}}
    for step in ([args.only] if args.only else STEPS):
        res = {v: run_child(step, v, args) for v in VARIANTS}
        full = res["full_fp32"]
        for v, r in res.items():
            if "error" not in r and "error" not in full and v != "full_fp32":
                r["peak_ratio"] = round(r["peak_mb"] / full["peak_mb"], 3)
                r["time_ratio"] = round(r["s_per_step"] / full["s_per_step"], 3)
        best = res["lora_ckpt_bf16"].get("peak_ratio")
        res["goal_met"] = best is not None and best <= GOAL
        out[step] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
