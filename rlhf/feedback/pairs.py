"""`rlhf sample-pairs`: fill a queue (`rlhf.feedback.queue`) with items to rate.

Each prompt gets one ask (`PairsConfig.mix`): compare two responses, rank K (`rank_k`), rate
one (on `scale`) or correct one. `ask_counts` turns the weights into counts (each ask's share
of the prompts, rounded by largest remainder, so 20 prompts at compare 0.7, correct 0.3 are
exactly 14 and 6), and `draw_asks` shuffles them over the prompts with the seed: the same
seed, weights and prompts give the same queue. `sample_pairs` then draws the responses from a
policy in one batched call per ask (2, K or 1 per prompt) and records where each came from
(model, checkpoint file, sampling settings, seed, sample index, whether it ended) in
`source_a` / `source_b` / `source_others`. With the default mix (all compare) the draws are
those of earlier versions. `--from-pairs` makes the queue from a file of ready-made pairs
instead. The queue file (`out`) is checked before any sampling, and written atomically
(`rlhf.feedback.queue.write_queue`: a full disk leaves no partial queue and no temporary
file). Prompts are read by the project's one prompt reader (`rlhf.prompts.load_prompts`,
whose docstring states the rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
from collections import Counter
from pathlib import Path

import torch

from rlhf.config import RuntimeConfig, config_from_args, config_parser
from rlhf.feedback.chat import KEY as CHAT
from rlhf.feedback.config import PairsConfig
from rlhf.feedback.datafiles import check_out_file
from rlhf.feedback.items import Item
from rlhf.feedback.queue import items_from_pairs_file, write_queue
from rlhf.feedback.records import ASKS, RecordError
from rlhf.harness.progress import Progress
from rlhf.harness.runtime import setup
from rlhf.lm.config import SamplingConfig
from rlhf.lm.folders import load_model
from rlhf.lm.generation import fit_prompts
from rlhf.lm.sampling import sample
from rlhf.prompts import ChatPrompt, load_prompts


def ask_counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """How many of `n` items ask each thing: n * weight / total, rounded down, and the
    items left over given to the largest remainders (ties: in the order of `weights`)."""
    total = sum(weights.values())
    exact = {ask: n * w / total for ask, w in weights.items()}
    counts = {ask: math.floor(x) for ask, x in exact.items()}
    left = n - sum(counts.values())
    by_remainder = sorted(weights, key=lambda a: -(exact[a] - counts[a]))  # stable
    for ask in by_remainder[:left]:
        counts[ask] += 1
    return counts


def draw_asks(n: int, weights: dict[str, float], seed: int) -> list[str]:
    """The ask of each of `n` prompts: `ask_counts` of each, in an order shuffled by `seed`."""
    asks = [ask for ask, k in ask_counts(n, weights).items() for _ in range(k)]
    random.Random(seed).shuffle(asks)
    return asks


def responses_per_item(ask: str, rank_k: int, rate_k: int = 1) -> int:
    """Responses sampled for a prompt with this ask (`rate_k` rate items share one prompt)."""
    return {"compare": 2, "rank": rank_k, "rate": rate_k, "correct": 1}[ask]


def sample_pairs(model, tokenizer, prompts: list[str], sampling: SamplingConfig,
                 generator: torch.Generator | None = None, source: dict | None = None,
                 runtime: RuntimeConfig | None = None, asks: list[str] | None = None,
                 rank_k: int = 4, scale: dict | None = None, rate_k: int = 1) -> list[Item]:
    """Items for `prompts` in order: `asks[i]` says what prompt i's item asks (default: all
    compare); a prompt asked to rate gives `rate_k` rate items, one per response, so that one
    rater's different ratings of them are pairs. Responses are sampled in one batched call
    per ask, in the order of ASKS; `source` (model, checkpoint...) is recorded for each
    response with the sampling settings, the sample index and whether it ended. `scale` is
    put on rate items (None = thumbs)."""
    asks = asks or ["compare"] * len(prompts)
    if len(asks) != len(prompts) or not set(asks) <= set(ASKS):
        raise ValueError(f"need one ask of {ASKS} per prompt")
    base = {**(source or {}), "sampling": dataclasses.asdict(sampling)}
    drawn: dict[int, tuple[list[str], list[dict]]] = {}
    total = sum(responses_per_item(a, rank_k, rate_k) for a in asks)
    with Progress("sampling", total):  # responses drawn (`sample` reports each batch)
        for ask in ASKS:
            idx = [i for i, a in enumerate(asks) if a == ask]
            if not idx:
                continue
            n = responses_per_item(ask, rank_k, rate_k)
            s = sample(model, tokenizer, [prompts[i] for i in idx], sampling, generator,
                       runtime, n=n)
            for j, i in enumerate(idx):
                rows = range(n * j, n * (j + 1))
                drawn[i] = ([s.responses[r] for r in rows],
                            [{**base, "sample": k, "ended": bool(s.ended[r])}
                             for k, r in enumerate(rows)])
    items = []
    for i, (prompt, ask) in enumerate(zip(prompts, asks)):
        texts, sources = drawn[i]
        if ask == "rate":  # each response its own item, on one prompt
            items += [make_item(prompt, ask, [t], [s], scale) for t, s in zip(texts, sources)]
        else:
            items.append(make_item(prompt, ask, texts, sources, scale))
    return items


def make_item(prompt: str, ask: str, texts: list[str], sources: list[dict],
              scale: dict | None = None) -> Item:
    """One queue item asking `ask` about `texts` (2 to compare, K to rank, 1 otherwise); a
    chat prompt's messages kept in `meta["chat"]` (answers copy it: `rlhf.feedback.chat`)."""
    meta = {CHAT: list(prompt.messages)} if isinstance(prompt, ChatPrompt) else {}
    if ask in ("compare", "rank"):
        return Item(prompt=prompt, a=texts[0], b=texts[1], ask=ask, others=texts[2:],
                    source_a=sources[0], source_b=sources[1], source_others=sources[2:],
                    group=prompt, meta=meta)
    return Item(prompt=prompt, a=texts[0], ask=ask, source_a=sources[0], group=prompt,
                scale=scale if ask == "rate" else None, meta=meta)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf sample-pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="policy folder to sample from")
    p.add_argument("--prompts", help="prompt file (rlhf.prompts reads it)")
    p.add_argument("--out", help="queue file to write")
    p.add_argument("--n-prompts", type=int, help="at most this many prompts (0 = all)")
    p.add_argument("--seed", type=int)
    p.add_argument("--from-pairs", metavar="FILE",
                   help="make the queue from ready-made pairs instead of sampling")
    p.add_argument("--as-gold", action="store_true",
                   help="with --from-pairs: keep the file's labels as gold answers")
    a = config_parser(p.prog, PairsConfig, None, p).parse_intermixed_args(argv)
    flags = {"model": a.model, "prompts": a.prompts, "out": a.out, "n_prompts": a.n_prompts,
             "runtime.seed": a.seed}
    cfg: PairsConfig = config_from_args(
        PairsConfig, a, [f"{k}={v}" for k, v in flags.items() if v is not None])
    try:
        check_out_file(cfg.out, "out")  # before any sampling: not a folder, not under a file
        if a.from_pairs:
            items = items_from_pairs_file(a.from_pairs, as_gold=a.as_gold)
    except RecordError as e:
        print(f"rlhf sample-pairs: error: {e}", file=sys.stderr)
        return 2
    if not a.from_pairs:
        device = setup(cfg.runtime)
        model, tok = load_model(cfg.model)
        model.to(device)
        prompts = load_prompts(cfg.prompts or None, n=cfg.n_prompts or None,
                               column=cfg.prompt_column or None, split=cfg.prompt_split)
        prompts = fit_prompts(prompts, tok, model.args.max_seq_len, cfg.sampling)
        gen = torch.Generator(device=device).manual_seed(cfg.runtime.seed)
        source = {"model": str(cfg.model), "checkpoint": str(Path(cfg.model).resolve()),
                  "seed": cfg.runtime.seed}
        asks = draw_asks(len(prompts), cfg.mix.weights(), cfg.runtime.seed)
        items = sample_pairs(model, tok, prompts, cfg.sampling, gen, source, cfg.runtime,
                             asks, cfg.rank_k, cfg.scale.as_item_scale(), cfg.rate_k)
    write_queue(cfg.out, items)
    kinds = Counter(it.ask for it in items)
    mix = ", ".join(f"{kinds[a]} {a}" for a in ASKS if kinds[a])
    print(f"wrote {len(items)} items to {cfg.out}" + (f" ({mix})" if mix else ""))
    return 0
