"""`rlhf generate`: sample from a model folder (llama2.c or HF-style)."""

from __future__ import annotations

import argparse
import json
import time

import torch

from rlhf.config import config_from_args, config_parser
from rlhf.harness.runtime import setup
from rlhf.lm.config import GenerateConfig, SamplingConfig
from rlhf.lm.folders import load_model
from rlhf.lm.generation import fit_prompts, generate
from rlhf.prompts import load_prompts


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf generate", description=__doc__)
    p.add_argument("--model", help="model folder (llama2.c or HF-style)")
    p.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    p.add_argument("--prompts-file", help="file or dataset of prompts (chat messages too)")
    p.add_argument("--n", type=int, help="samples per prompt")
    p.add_argument("--greedy", action="store_true", help="argmax decoding")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true", help="one JSON object per sample")
    a = config_parser(p.prog, GenerateConfig, None, p).parse_intermixed_args(argv)
    over = []
    flags = {"model": a.model, "prompts_file": a.prompts_file, "n": a.n,
             "sampling.max_new_tokens": a.max_new_tokens,
             "sampling.temperature": a.temperature, "sampling.top_k": a.top_k,
             "sampling.top_p": a.top_p, "runtime.seed": a.seed, "runtime.threads": a.threads}
    over += [f"{k}={v}" for k, v in flags.items() if v is not None]
    if a.greedy:
        over.append("sampling.greedy=true")
    cfg: GenerateConfig = config_from_args(GenerateConfig, a, over)
    if a.prompt:
        cfg.prompts = a.prompt
    elif cfg.prompts_file:
        cfg.prompts = load_prompts(cfg.prompts_file, column=cfg.prompt_column or None,
                                   split=cfg.prompt_split)
    device = setup(cfg.runtime)
    model, tok = load_model(cfg.model, cfg.backend)
    model.to(device)
    cfg.prompts = fit_prompts(cfg.prompts, tok, model.args.max_seq_len, cfg.sampling)
    ids = [tok.encode(p) for p in cfg.prompts for _ in range(cfg.n)]
    gen_rng = torch.Generator(device=device).manual_seed(cfg.runtime.seed)
    t0 = time.time()
    gen = generate(model, ids, cfg.sampling, tok.eos_ids, tok.pad_id, tok.bos_id, gen_rng)
    dt = time.time() - t0
    for prompt, resp, lp in zip(ids, gen.response_lists(), gen.logprobs.sum(1).tolist()):
        text = tok.decode(prompt + resp)
        if a.json:
            print(json.dumps({"text": text, "new_tokens": len(resp), "logprob": lp}))
        else:
            print(text + "\n")
    n_tok = int(gen.response_mask.sum())
    print(f"[{n_tok} tokens in {dt:.2f}s, {n_tok / max(dt, 1e-9):.0f} tokens/s]",
          file=__import__("sys").stderr)
    return 0


__all__ = ["cli", "SamplingConfig"]
