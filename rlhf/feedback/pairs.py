"""`rlhf sample-pairs`: fill a queue (`rlhf.feedback.queue`) with pairs to rate.

`sample_pairs` draws two responses per prompt from a policy and records where each came from
(model, checkpoint file, sampling settings, seed) in `source_a` / `source_b`; `--from-pairs`
makes the queue from a file of ready-made pairs instead. Prompts are read by the project's
one prompt reader (`rlhf.prompts.load_prompts`, whose docstring states the rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from rlhf.config import RuntimeConfig, load_config
from rlhf.feedback.config import PairsConfig
from rlhf.feedback.queue import items_from_pairs_file, write_queue
from rlhf.feedback.records import Item, RecordError
from rlhf.harness.runtime import setup
from rlhf.lm.config import SamplingConfig
from rlhf.lm.folders import load_model
from rlhf.lm.sampling import sample
from rlhf.prompts import load_prompts


def sample_pairs(model, tokenizer, prompts: list[str], sampling: SamplingConfig,
                 generator: torch.Generator | None = None, source: dict | None = None,
                 runtime: RuntimeConfig | None = None) -> list[Item]:
    """Two sampled responses per prompt -> items; `source` (model, checkpoint...) is recorded
    in source_a / source_b together with the sampling settings and the sample index."""
    base = {**(source or {}), "sampling": dataclasses.asdict(sampling)}
    s = sample(model, tokenizer, prompts, sampling, generator, runtime, n=2)
    texts, ended = s.responses, s.ended
    items = []
    for i, prompt in enumerate(prompts):
        srcs = [{**base, "sample": k, "ended": bool(ended[2 * i + k])} for k in (0, 1)]
        items.append(Item(prompt=prompt, a=texts[2 * i], b=texts[2 * i + 1],
                          source_a=srcs[0], source_b=srcs[1], group=prompt))
    return items


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf sample-pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of PairsConfig keys")
    p.add_argument("--model", help="policy folder to sample from")
    p.add_argument("--prompts", help="prompt file (rlhf.prompts reads it)")
    p.add_argument("--out", help="queue file to write")
    p.add_argument("--n-prompts", type=int, help="at most this many prompts (0 = all)")
    p.add_argument("--seed", type=int)
    p.add_argument("--from-pairs", metavar="FILE",
                   help="make the queue from ready-made pairs instead of sampling")
    p.add_argument("--as-gold", action="store_true",
                   help="with --from-pairs: keep the file's labels as gold answers")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    a = p.parse_args(argv)
    flags = {"model": a.model, "prompts": a.prompts, "out": a.out, "n_prompts": a.n_prompts,
             "runtime.seed": a.seed}
    over = [*a.overrides, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    cfg: PairsConfig = load_config(PairsConfig, a.config, over)
    if a.from_pairs:
        try:
            items = items_from_pairs_file(a.from_pairs, as_gold=a.as_gold)
        except RecordError as e:
            print(f"rlhf sample-pairs: error: {e}", file=sys.stderr)
            return 2
    else:
        device = setup(cfg.runtime)
        model, tok = load_model(cfg.model)
        model.to(device)
        prompts = load_prompts(cfg.prompts or None, n=cfg.n_prompts or None,
                               column=cfg.prompt_column or None, split=cfg.prompt_split)
        gen = torch.Generator(device=device).manual_seed(cfg.runtime.seed)
        source = {"model": str(cfg.model), "checkpoint": str(Path(cfg.model).resolve()),
                  "seed": cfg.runtime.seed}
        items = sample_pairs(model, tok, prompts, cfg.sampling, gen, source, cfg.runtime)
    write_queue(cfg.out, items)
    print(f"wrote {len(items)} pairs to {cfg.out}")
    return 0
