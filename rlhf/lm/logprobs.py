"""Log-probabilities of tokens under a causal LM: the one home of this computation.

Every log-prob in the project (sampling, the policy update, the KL reference pass, evaluation)
is `logit - logsumexp(logits)` in float32, taken from here, so the cached log-probs that
`generate` records and a fresh forward pass agree to rounding (tested to 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logprob_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[id] for one id per row: logits (..., V), ids (...) -> (...).
    Computed as logit - logsumexp (no full log_softmax tensor is materialised)."""
    picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[:, t+1] | tokens[:, :t+1]) from logits (B, T, V) -> (B, T-1), float32."""
    return logprob_of(logits[:, :-1].float(), tokens[:, 1:])  # (B, T-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution: logits (B, T, V) -> (B, T), in nats."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def response_logprobs(model, gen, temperature: float = 1.0, entropy: str = "none"):
    """log pi(response token) under logits / temperature, from one forward pass of a sampled
    batch `gen` (an `rlhf.lm.generation.Generation`): (B, N), 0 on padding; and the per-token
    entropy (B, N) when `entropy` is "monitor" (no gradient) or "grad" (differentiable, for an
    entropy bonus), else None. The output layer runs only where a response token is
    predicted: positions P-1 .. P+N-2."""
    logits = model(gen.tokens, gen.mask, start=gen.prompt_width - 1)[:, :-1].float()  # (B,N,V)
    if temperature != 1.0:
        logits = logits / temperature
    logp = logprob_of(logits, gen.responses) * gen.response_mask  # (B, N)
    ent = None
    if entropy == "grad":
        ent = entropy_from_logits(logits)
    elif entropy == "monitor":
        with torch.no_grad():
            ent = entropy_from_logits(logits)
    return logp, ent
