"""Sampling throughput: this project vs Hugging Face `transformers` `generate`, same weights.

Default: 32 TinyStories prompts x 128 new tokens from stories260K (pure sampling, temperature
1, no top-k/top-p, EOS ignored so both produce exactly 128 tokens per row). The weights are
converted to a `LlamaForCausalLM` in-process (identical logits, checked below). Prints one JSON
line: tokens_per_s, hf_tokens_per_s, ratio (ours / HF), ms per token at batch 1 for both;
medians of --repeats runs, alternating the two so machine noise hits both alike.

`--shape stories260k|smollm2-135m|qwen2-0.5b` (`benchmarks/shapes.py`): stories260K's
weights, or random weights in SmolLM2-135M's / Qwen2-0.5B's real shape, saved by `save_model`
and loaded by transformers (`LlamaForCausalLM` / `Qwen2ForCausalLM`); random prompts of 16-32
tokens, left-padded; batch 8 and 32 x 64 new tokens; `--device cuda` runs both there.
One JSON line per batch size, with the CPU, its SIMD flags, the matmul peak measured in the
same run (`shapes.matmul_peak`) and the fraction of it that each side's tokens/s correspond to
(`mfu`, `hf_mfu`; forward FLOPs per token = 2·N + attention over the mean context,
`shapes.forward_flops`). The default run adds the same fields.

    pip install -e ".[bench]"; python benchmarks/generation.py [--threads 1] [--repeats 5]
    python benchmarks/generation.py --shape smollm2-135m --repeats 3
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import shapes  # noqa: E402

from rlhf.lm.config import SamplingConfig  # noqa: E402
from rlhf.lm.folders import load_model, save_model  # noqa: E402
from rlhf.lm.generation import generate  # noqa: E402
from rlhf.prompts import load_prompts  # noqa: E402


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def ours(model, prompts, n_new):
    cfg = SamplingConfig(max_new_tokens=n_new, stop_at_bos=False)
    sync(next(model.parameters()).device)
    t0 = time.perf_counter()
    gen = generate(model, prompts, cfg, eos_id=-1, pad_id=0)
    sync(next(model.parameters()).device)
    dt = time.perf_counter() - t0
    assert int(gen.response_mask.sum()) == len(prompts) * n_new
    return dt


def hf(model, prompts, n_new):
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        att[i, width - len(p):] = 1
    ids, att = ids.to(model.device), att.to(model.device)
    sync(model.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, top_k=0,
                             top_p=1.0, temperature=1.0, max_new_tokens=n_new,
                             min_new_tokens=n_new, pad_token_id=0, eos_token_id=None)
    sync(model.device)
    dt = time.perf_counter() - t0
    assert out.shape[1] == width + n_new
    return dt


def shape_run(a) -> None:
    """A `shapes.SHAPES` model; batch 8 and 32 x 64 new tokens; ours vs HF generate."""
    from transformers import AutoModelForCausalLM

    folder = shapes.start_model(a.shape, Path(tempfile.mkdtemp()))
    model = load_model(folder)[0].eval().to(a.device)
    args = model.args
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval().to(a.device)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(16, 33, (32,), generator=g).tolist()
    prompts = [torch.randint(3, args.vocab_size, (n,), generator=g).tolist() for n in lengths]
    x = torch.tensor([prompts[0]], device=a.device)
    with torch.no_grad():
        max_diff = float((hf_model(x).logits - model(x)).abs().max())
    peak = shapes.matmul_peak(a.threads, device=a.device)
    n, layers, attn_width = shapes.shape_of(args)
    ours(model, prompts[:2], 4)  # warm-up both
    hf(hf_model, prompts[:2], 4)
    n_new = 64
    for batch in (8, 32):
        t_ours, t_hf = [], []
        for _ in range(a.repeats):
            t_ours.append(ours(model, prompts[:batch], n_new))
            t_hf.append(hf(hf_model, prompts[:batch], n_new))
        med = statistics.median
        tps, hf_tps = batch * n_new / med(t_ours), batch * n_new / med(t_hf)
        ctx = sum(lengths[:batch]) / batch + n_new / 2  # mean context per generated token
        fpt = shapes.forward_flops(n, 1, layers, ctx, attn_width)
        print(json.dumps({
            "benchmark": "generation", "shape": a.shape, **shapes.device_info(a.device),
            "device": a.device, "params": args.num_params(),
            "batch": batch, "new_tokens": n_new, "threads": a.threads, "repeats": a.repeats,
            "tokens_per_s": round(tps, 1), "hf_tokens_per_s": round(hf_tps, 1),
            "ratio": round(med(t_hf) / med(t_ours), 2),
            **shapes.efficiency(peak, tps * fpt, hf_tps * fpt, "hf"),
            "max_logit_diff_vs_hf": max_diff, "torch": torch.__version__}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", type=str.lower, choices=list(shapes.SHAPES),
                    help="stories260k or random weights of a real shape (shapes.py)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="--shape only")
    ap.add_argument("--model", default=str(ROOT.parent / "shared/models/stories260K"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if a.shape:
        return shape_run(a)
    model, tok = load_model(a.model)
    folder = Path(tempfile.mkdtemp()) / "hf"
    save_model(model, tok, folder)
    hf_model = LlamaForCausalLM.from_pretrained(folder).eval()
    prompts = [tok.encode(p) for p in load_prompts(None, a.batch, seed=0)]
    x = torch.tensor([prompts[0]])
    with torch.no_grad():
        max_diff = float((hf_model(x).logits - model(x)).abs().max())
    ours(model, prompts[:4], 8)  # warm-up both
    hf(hf_model, prompts[:4], 8)
    t_ours, t_hf, b1_ours, b1_hf = [], [], [], []
    for _ in range(a.repeats):
        t_ours.append(ours(model, prompts, a.new_tokens))
        t_hf.append(hf(hf_model, prompts, a.new_tokens))
        b1_ours.append(ours(model, prompts[:1], a.new_tokens))
        b1_hf.append(hf(hf_model, prompts[:1], a.new_tokens))
    n = a.batch * a.new_tokens
    med = statistics.median
    peak = shapes.matmul_peak(a.threads)
    weights, layers, attn_width = shapes.shape_of(model.args)
    ctx = sum(map(len, prompts)) / len(prompts) + a.new_tokens / 2  # mean context per token
    fpt = shapes.forward_flops(weights, 1, layers, ctx, attn_width)
    row = {
        "benchmark": "generation", "model": Path(a.model).name, **shapes.cpu_info(),
        "batch": a.batch,
        "new_tokens": a.new_tokens, "threads": a.threads, "repeats": a.repeats,
        "tokens_per_s": round(n / med(t_ours), 1), "hf_tokens_per_s": round(n / med(t_hf), 1),
        "ratio": round(med(t_hf) / med(t_ours), 2),
        **shapes.efficiency(peak, n / med(t_ours) * fpt, n / med(t_hf) * fpt, "hf"),
        "ms_per_token_b1": round(1000 * med(b1_ours) / a.new_tokens, 3),
        "hf_ms_per_token_b1": round(1000 * med(b1_hf) / a.new_tokens, 3),
        "ratio_b1": round(med(b1_hf) / med(b1_ours), 2),
        "max_logit_diff_vs_hf": max_diff, "torch": torch.__version__,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
