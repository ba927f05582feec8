"""The supervised fine-tuning loss, as pure functions of logits, tokens and a mask.

`labels_mask` (B, T) is aligned with `tokens`: 1 where the token is a training target (a
completion token; every token of plain text), 0 for prompt tokens, padding, and the first
token of every packed row (which no earlier token of its own row predicts). Position t's
logits predict token t + 1, so the mask is read from column 1 on: the loss is

    sum_{b, t >= 1} mask[b, t] * -log p(tokens[b, t] | tokens[b, :t])  /  n_tokens

with `n_tokens` the number of trained tokens (of the micro-batch by default; the trainer passes
the global batch's, so every token of a step weighs the same however the batch is cut into
micro-batches and processes: TRL's SFTTrainer's `num_items_in_batch` normalisation).
"""

from __future__ import annotations

import torch

from rlhf.lm.logprobs import token_logprobs


def token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """-log p of each next token: logits (B, T, V), tokens (B, T) -> (B, T - 1), float32;
    column t is token t + 1's."""
    return -token_logprobs(logits, tokens)


def sft_loss(logits: torch.Tensor, tokens: torch.Tensor, labels_mask: torch.Tensor,
             n_tokens: float | torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood of the masked tokens (module docstring): the sum over
    targets divided by `n_tokens` (None: the targets here; a batch without any gives 0)."""
    m = labels_mask[:, 1:].float()
    total = (token_nll(logits, tokens) * m).sum()
    n = m.sum() if n_tokens is None else torch.as_tensor(n_tokens, dtype=torch.float32)
    return total / n.clamp(min=1)


def token_hits(logits: torch.Tensor, tokens: torch.Tensor, labels_mask: torch.Tensor
               ) -> torch.Tensor:
    """How many masked targets are the argmax of their logits (greedy token accuracy's
    numerator), a 0-d float tensor."""
    hit = logits[:, :-1].argmax(-1) == tokens[:, 1:]
    return (hit.float() * labels_mask[:, 1:].float()).sum()
