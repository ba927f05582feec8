"""Sampling throughput: this project vs Hugging Face `transformers` `generate`, same weights.

Default: 32 TinyStories prompts x 128 new tokens from stories260K (pure sampling, temperature
1, no top-k/top-p, EOS ignored so both produce exactly 128 tokens per row). The weights are
converted to a `LlamaForCausalLM` in-process (identical logits, checked below). Prints one JSON
line: tokens_per_s, hf_tokens_per_s, ratio (ours / HF), ms per token at batch 1 for both;
medians of --repeats runs, alternating the two so machine noise hits both alike.

`--shape smollm2-135m`: random weights in SmolLM2-135M's real shape (30 layers, hidden 576,
9 heads, 3 KV heads, intermediate 1536, vocab 49152, tied), saved by `save_model` and loaded
by transformers; random prompts of 16-32 tokens, left-padded; batch 8 and 32 x 64 new tokens.
One JSON line per batch size, with the fraction of this machine's measured matmul FLOP/s
(`benchmarks/matmul_flops.py`) that the tokens/s correspond to (`flops_per_token`).

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

from matmul_flops import cpu_name, measure  # noqa: E402

from rlhf.lm.config import SamplingConfig  # noqa: E402
from rlhf.lm.folders import load_model, save_model  # noqa: E402
from rlhf.lm.generation import generate  # noqa: E402
from rlhf.lm.model import ModelArgs, Transformer, flops_per_token  # noqa: E402
from rlhf.lm.tokenizer import Llama2cTokenizer  # noqa: E402
from rlhf.prompts import load_prompts  # noqa: E402

SHAPES = {"smollm2-135m": dict(dim=576, hidden_dim=1536, n_layers=30, n_heads=9, n_kv_heads=3,
                               vocab_size=49152, max_seq_len=2048, norm_eps=1e-5,
                               rope_theta=100000.0, tie_embeddings=True)}


def ours(model, prompts, n_new):
    cfg = SamplingConfig(max_new_tokens=n_new, stop_at_bos=False)
    t0 = time.perf_counter()
    gen = generate(model, prompts, cfg, eos_id=-1, pad_id=0)
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
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, top_k=0,
                             top_p=1.0, temperature=1.0, max_new_tokens=n_new,
                             min_new_tokens=n_new, pad_token_id=0, eos_token_id=None)
    dt = time.perf_counter() - t0
    assert out.shape[1] == width + n_new
    return dt


def shape_run(a) -> None:
    """Random weights of a real shape; batch 8 and 32 x 64 new tokens; ours vs HF generate."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    args = ModelArgs(**SHAPES[a.shape])
    model = Transformer(args).eval()
    folder = Path(tempfile.mkdtemp()) / "hf"
    save_model(model, Llama2cTokenizer(ROOT.parent / "shared/models/stories260K/tok512.bin"),
               folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(16, 33, (32,), generator=g).tolist()
    prompts = [torch.randint(3, args.vocab_size, (n,), generator=g).tolist() for n in lengths]
    x = torch.tensor([prompts[0]])
    with torch.no_grad():
        max_diff = float((hf_model(x).logits - model(x)).abs().max())
    peak = measure(a.threads, 1024)
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
        fpt = flops_per_token(args, int(ctx))
        print(json.dumps({
            "benchmark": "generation", "shape": a.shape, "cpu": cpu_name(),
            "params": args.num_params(),
            "batch": batch, "new_tokens": n_new, "threads": a.threads, "repeats": a.repeats,
            "tokens_per_s": round(tps, 1), "hf_tokens_per_s": round(hf_tps, 1),
            "ratio": round(med(t_hf) / med(t_ours), 2),
            "matmul_gflops": round(peak / 1e9, 1),
            "fraction_of_matmul_flops": round(tps * fpt / peak, 3),
            "hf_fraction_of_matmul_flops": round(hf_tps * fpt / peak, 3),
            "max_logit_diff_vs_hf": max_diff, "torch": torch.__version__}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", choices=sorted(SHAPES), help="random weights of a real shape")
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
    row = {
        "benchmark": "generation", "model": Path(a.model).name, "cpu": cpu_name(),
        "batch": a.batch,
        "new_tokens": a.new_tokens, "threads": a.threads, "repeats": a.repeats,
        "tokens_per_s": round(n / med(t_ours), 1), "hf_tokens_per_s": round(n / med(t_hf), 1),
        "ratio": round(med(t_hf) / med(t_ours), 2),
        "ms_per_token_b1": round(1000 * med(b1_ours) / a.new_tokens, 3),
        "hf_ms_per_token_b1": round(1000 * med(b1_hf) / a.new_tokens, 3),
        "ratio_b1": round(med(b1_hf) / med(b1_ours), 2),
        "max_logit_diff_vs_hf": max_diff, "torch": torch.__version__,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
