"""The queue of pairs to rate, and `rlhf sample-pairs`, which fills it from a policy.

A queue is a JSON-lines file of `Item`s (one per line), written atomically (temporary file,
then rename). `sample_pairs` draws two responses per prompt and records where each came from
(model, checkpoint file, sampling settings, seed) in `source_a` / `source_b`. A queue can
also be made from a file of ready-made pairs: JSONL rows `{"prompt", "a", "b"}` or any
preference format `rlhf.formats.read_any` knows (their labels are dropped, or kept as gold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf.comparisons import Item, RecordError
from rlhf.config import ConfigError, RuntimeConfig, SamplingConfig, load_config, require

if TYPE_CHECKING:
    import torch


@dataclass
class PairsConfig:
    """`rlhf sample-pairs`: two responses per prompt into a queue to rate."""

    model: str = "../shared/models/stories260K"
    """Policy folder (llama2.c or HF-style) to sample from."""
    prompts: str = "../shared/data/text/tinystories-sample.txt"
    """Prompt file: .txt (one per line; see first_sentence) or .jsonl with a "prompt" key."""
    out: str = "queue.jsonl"
    """Queue file to write (JSON lines of items)."""
    n_prompts: int = 20
    """Use at most this many prompts (0 = all)."""
    first_sentence: bool = True
    """For .txt prompts: keep only each line's first sentence (a story opening)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=96))
    """How both responses are drawn."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.n_prompts >= 0, "n_prompts", "must be >= 0")
        require(bool(self.out), "out", "must name a file")


# ----------------------------------------------------------------------------- queue files


def write_queue(path: str | os.PathLike, items: list[Item]) -> None:
    """Write `items` as JSON lines, atomically (a reader never sees half a queue)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it.to_dict(), ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def read_queue(path: str | os.PathLike) -> list[Item]:
    """Items of a queue file. A malformed line raises RecordError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"queue not found: {p}")
    items, seen = [], set()
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                it = Item.from_dict(json.loads(line))
            except (ValueError, TypeError) as e:
                raise RecordError(f"{p}:{n}: {e}") from None
            if it.id in seen:
                raise RecordError(f"{p}:{n}: duplicate item id {it.id!r}")
            seen.add(it.id)
            items.append(it)
    return items


def read_prompts(path: str | os.PathLike, first_sentence: bool = True, limit: int = 0):
    """Prompts from .txt (one per non-empty line) or .jsonl ({"prompt": ...}), de-duplicated."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file not found: {p}")
    out: list[str] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                text = json.loads(line)["prompt"]
            except (ValueError, KeyError, TypeError) as e:
                raise RecordError(f"{p}:{n}: expected {{\"prompt\": ...}}: {e}") from None
        else:
            text = line.strip()
            if first_sentence:
                text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
        if text not in out:
            out.append(text)
        if limit and len(out) >= limit:
            break
    return out


def items_from_pairs_file(path: str | os.PathLike, as_gold: bool = False) -> list[Item]:
    """A queue from ready-made pairs: JSONL `{"prompt", "a", "b", ...}` rows, or any format
    `rlhf.formats.read_any` reads (labels dropped, or kept as the gold answer)."""
    p = Path(path)
    first = p.open(encoding="utf-8", errors="replace").readline() if p.is_file() else ""
    try:
        row = json.loads(first)
    except ValueError:
        row = None
    if isinstance(row, dict) and {"prompt", "a", "b"} <= set(row) and "label" not in row:
        items = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    items.append(Item.from_dict({"served_because": "import", **d}))
                except (ValueError, TypeError) as e:
                    raise RecordError(f"{p}:{n}: {e}") from None
        return items
    from rlhf.formats import read_any

    return [Item(prompt=c.prompt, a=c.a, b=c.b, source_a=c.source_a, source_b=c.source_b,
                 served_because="gold" if as_gold else "import",
                 gold=c.label if as_gold else None, group=c.group, meta=c.meta)
            for c in read_any(p)]


# ----------------------------------------------------------------------------- sampling


def sample_pairs(model, tokenizer, prompts: list[str], sampling: SamplingConfig,
                 generator: torch.Generator | None = None, source: dict | None = None,
                 batch_size: int = 32) -> list[Item]:
    """Two sampled responses per prompt -> items; `source` (model, checkpoint...) is recorded
    in source_a / source_b together with the sampling settings and the sample index."""
    from rlhf.generation import generate  # torch is loaded only when sampling

    base = {**(source or {}), "sampling": dataclasses.asdict(sampling)}
    items = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        ids = [tokenizer.encode(p, bos=True) for p in chunk for _ in range(2)]
        gen = generate(model, ids, sampling, tokenizer.eos_id, tokenizer.pad_id,
                       tokenizer.bos_id, generator)
        texts = [tokenizer.decode(r).strip() for r in gen.response_lists()]
        ended = gen.ended.tolist()
        for i, prompt in enumerate(chunk):
            srcs = [{**base, "sample": k, "ended": bool(ended[2 * i + k])} for k in (0, 1)]
            items.append(Item(prompt=prompt, a=texts[2 * i], b=texts[2 * i + 1],
                              source_a=srcs[0], source_b=srcs[1], group=prompt))
    return items


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf sample-pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of PairsConfig keys")
    p.add_argument("--model", help="policy folder to sample from")
    p.add_argument("--prompts", help="prompt file (.txt or .jsonl)")
    p.add_argument("--out", help="queue file to write")
    p.add_argument("--n-prompts", type=int, help="at most this many prompts (0 = all)")
    p.add_argument("--seed", type=int)
    p.add_argument("--from-pairs", metavar="FILE",
                   help="make the queue from ready-made pairs instead of sampling")
    p.add_argument("--as-gold", action="store_true",
                   help="with --from-pairs: keep the file's labels as gold answers")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    a = p.parse_args(argv)
    over = list(a.overrides)
    flags = {"model": a.model, "prompts": a.prompts, "out": a.out, "n_prompts": a.n_prompts,
             "runtime.seed": a.seed}
    over += [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg: PairsConfig = load_config(PairsConfig, a.config, over)
    if a.from_pairs:
        try:
            items = items_from_pairs_file(a.from_pairs, as_gold=a.as_gold)
        except RecordError as e:
            print(f"rlhf sample-pairs: error: {e}", file=sys.stderr)
            return 2
    else:
        import torch

        from rlhf.checkpoint import load_model
        from rlhf.runtime import setup

        device = setup(cfg.runtime)
        model, tok = load_model(cfg.model)
        model.to(device)
        prompts = read_prompts(cfg.prompts, cfg.first_sentence, cfg.n_prompts)
        if not prompts:
            raise ConfigError(f"prompts: no prompts in {cfg.prompts}")
        gen = torch.Generator(device=device).manual_seed(cfg.runtime.seed)
        source = {"model": str(cfg.model), "checkpoint": str(Path(cfg.model).resolve()),
                  "seed": cfg.runtime.seed}
        items = sample_pairs(model, tok, prompts, cfg.sampling, gen, source)
    write_queue(cfg.out, items)
    print(f"wrote {len(items)} pairs to {cfg.out}")
    return 0
