"""Text in, text out: encode prompts, sample continuations, decode. Written once, used by pair
sampling, policy training and evaluation.

The one precision rule: sampling runs under the run's autocast
(`rlhf.harness.runtime.autocast`: bf16 where `runtime.precision` says so, fp32 otherwise),
whoever calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.config import RuntimeConfig
from rlhf.harness.progress import advance
from rlhf.harness.runtime import autocast
from rlhf.lm.config import SamplingConfig
from rlhf.lm.generation import Generation, generate


@dataclass
class Samples:
    """Sampled continuations of a list of prompts (each repeated n times, contiguous)."""

    prompts: list[str]  # (B,) the prompt of each row
    batches: list[Generation]  # the generated batches, in row order
    responses: list[str]  # (B,) each response decoded alone, stripped

    @property
    def ended(self) -> list[bool]:
        """(B,) True where the response ended with EOS within max_new_tokens."""
        return [e for g in self.batches for e in g.ended.tolist()]


def decode_rows(tok, gen: Generation, include_prompt: bool = True) -> list[str]:
    """Decoded text of each row of a batch: prompt + response (or the response alone)."""
    rows = gen.tokens if include_prompt else gen.responses
    masks = gen.mask if include_prompt else gen.response_mask
    return [tok.decode([t for t, m in zip(r, mk) if m]) for r, mk in
            zip(rows.tolist(), masks.tolist())]


@torch.no_grad()
def sample(model, tok, prompts: list[str], sampling: SamplingConfig,
           generator: torch.Generator | None, runtime: RuntimeConfig | None = None, n: int = 1,
           batch_rows: int = 64, stop_early: bool = True) -> Samples:
    """n continuations of each prompt, in batches of `batch_rows` rows (0 = one batch), one
    generator drawn from in row order (so the same seed and batch size give the same texts).
    Each batch's rows are reported to the caller's open `Progress` (`advance`)."""
    device = next(model.parameters()).device
    rows = [p for p in prompts for _ in range(n)]
    step = batch_rows or max(1, len(rows))
    batches, responses = [], []
    for start in range(0, len(rows), step):
        ids = [tok.encode(p, bos=True) for p in rows[start:start + step]]
        with autocast(runtime or RuntimeConfig(), device):
            gen = generate(model, ids, sampling, tok.eos_ids, tok.pad_id, tok.bos_id, generator,
                           stop_early=stop_early)
        batches.append(gen)
        responses += [tok.decode(r).strip() for r in gen.response_lists()]
        advance(len(ids))  # to the caller's open Progress, if any
    return Samples(prompts=rows, batches=batches, responses=responses)
