"""Sampling throughput: this project vs Hugging Face `transformers` `generate`, same weights.

32 TinyStories prompts x 128 new tokens from stories260K (pure sampling, temperature 1, no
top-k/top-p, EOS ignored so both produce exactly 128 tokens per row). The weights are converted
to a `LlamaForCausalLM` in-process (identical logits, checked below). Prints one JSON line:
tokens_per_s, hf_tokens_per_s, ratio (ours / HF), ms per token at batch 1 for both; medians
of --repeats runs, alternating the two so machine noise hits both alike.

    pip install -e ".[bench]"; python benchmarks/generation.py [--threads 1] [--repeats 5]
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

from rlhf.lm.config import SamplingConfig  # noqa: E402
from rlhf.lm.folders import load_model, save_model  # noqa: E402
from rlhf.lm.generation import generate  # noqa: E402
from rlhf.prompts import load_prompts  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
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
        "benchmark": "generation", "model": Path(a.model).name, "batch": a.batch,
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
