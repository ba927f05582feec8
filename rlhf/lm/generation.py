"""Batched sampling with a KV cache: greedy, temperature, top-k, top-p, stop at EOS.

Prompts of different lengths are left-padded to a common width P, so every row writes its
next key/value into the same cache column; rotary positions count real tokens only, so a
prompt's continuation does not depend on how much padding it received.

Prompts too long for the context (more than max_seq_len - max_new_tokens tokens) follow
`sampling.prompt_truncation`: 'left' keeps their last tokens (after BOS, which stays first:
`keep_tail`, as TRL's keep_end truncation), 'drop' leaves them out where the prompts are read
(`fit_prompts`, with a count on stderr), 'error' stops with one line naming the prompt.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from rlhf.config import UserError
from rlhf.lm.config import SamplingConfig
from rlhf.lm.logprobs import logprob_of
from rlhf.lm.model import Transformer


@dataclass
class Generation:
    """A sampled batch. Sequences are [left padding | prompt | response | right padding]."""

    tokens: torch.Tensor  # (B, P + N) prompt and response token ids (padding = pad id)
    mask: torch.Tensor  # (B, P + N) 1 for real tokens (prompt and response)
    prompt_width: int  # P: the padded prompt width; responses start at column P
    response_mask: torch.Tensor  # (B, N) 1 for response tokens, up to and including EOS
    logprobs: torch.Tensor  # (B, N) log p(token) under logits / temperature (0 on padding)
    ended: torch.Tensor  # (B,) True where the response ended with EOS (or BOS) in time
    truncated: int = 0  # prompts that kept only their last tokens (prompt_truncation 'left')

    @property
    def responses(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_width:]  # (B, N)

    def response_lists(self) -> list[list[int]]:
        """Each response's real token ids (EOS included)."""
        lengths = self.response_mask.sum(1).tolist()
        return [r[:n] for r, n in zip(self.responses.tolist(), lengths)]


class PromptTooLong(UserError, ValueError):
    """A prompt longer than the context leaves room for (`sampling.prompt_truncation`)."""


def prompt_room(max_seq_len: int, cfg: SamplingConfig) -> int:
    """The most prompt tokens that fit before max_new_tokens new ones; none left is a
    PromptTooLong naming sampling.max_new_tokens."""
    room = max_seq_len - cfg.max_new_tokens
    if room < 1:
        raise PromptTooLong(f"sampling.max_new_tokens: {cfg.max_new_tokens} leaves no room for "
                            f"a prompt in the model's max_seq_len {max_seq_len}")
    return room


def keep_tail(ids: list[int], room: int, bos_id: int | None = None) -> list[int]:
    """`ids` cut to its last `room` tokens; a leading BOS stays first (BOS + the last
    room - 1 tokens): the left truncation of a prompt, as TRL's truncation_mode keep_end."""
    if len(ids) <= room:
        return ids
    if bos_id is not None and ids and ids[0] == bos_id and room > 1:
        return ids[:1] + ids[len(ids) - room + 1:]
    return ids[len(ids) - room:]


def too_long(index: int, n_tokens: int, room: int, cfg: SamplingConfig,
             max_seq_len: int) -> PromptTooLong:
    """The one line for prompt `index` (0-based) of `n_tokens` tokens that does not fit."""
    return PromptTooLong(
        f"prompt {index + 1} has {n_tokens} tokens, and max_new_tokens {cfg.max_new_tokens} "
        f"leaves room for {room} in the model's max_seq_len {max_seq_len}: set "
        "sampling.prompt_truncation to left (keep its last tokens) or drop (leave it out), "
        "or lower sampling.max_new_tokens")


def fit_prompts(prompts: list, tok, max_seq_len: int, cfg: SamplingConfig,
                what: str = "prompts") -> list:
    """Apply `cfg.prompt_truncation` to text prompts where they are read, with one stderr line
    counting those too long (tokens as sampling makes them: `tok.encode(p, bos=True)`):
    'left' keeps them all (`generate` cuts them), 'drop' leaves them out, 'error' raises
    PromptTooLong for the first. No prompt too long: the prompts as they are, no line."""
    room = prompt_room(max_seq_len, cfg)
    lengths = [len(tok.encode(p, bos=True)) for p in prompts]
    long = [i for i, n in enumerate(lengths) if n > room]
    if not long:
        return prompts
    mode = cfg.prompt_truncation
    if mode == "error":
        raise too_long(long[0], lengths[long[0]], room, cfg, max_seq_len)
    done = "keep their last tokens" if mode == "left" else "left out"
    print(f"note: {len(long)} of {len(prompts)} {what} are longer than the {room} tokens the "
          f"context leaves (max_seq_len {max_seq_len} - max_new_tokens {cfg.max_new_tokens})"
          f": {done} (sampling.prompt_truncation={mode})", file=sys.stderr)
    if mode == "drop":
        skip = set(long)
        return [p for i, p in enumerate(prompts) if i not in skip]
    return prompts


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (Holtzman et al. 2020) to -inf. (B, V) -> (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop).scatter(-1, order, drop)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_from(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row by inverse CDF: probs (B, V) -> ids (B,). Same distribution as
    torch.multinomial, several times cheaper on CPU for one sample."""
    cdf = probs.cumsum(-1)  # (B, V)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device)
    u = u * cdf[:, -1:]  # guard against the total falling a hair short of 1
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (tokens (B, P), mask (B, P)), left-padded."""
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            tokens[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
    return tokens.to(device), mask.to(device)


def next_tokens(logits: torch.Tensor, cfg: SamplingConfig, banned: list[int],
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step's choice: logits (B, V) -> (the logits it was drawn from, in float32,
    divided by the temperature, `banned` ids at -inf (stop tokens before min_new_tokens);
    the ids (B,)). Greedy takes the argmax; otherwise top-k / top-p filtering, then a draw."""
    logits = logits.float()  # (B, V)
    banned = [i for i in banned if 0 <= i < logits.shape[-1]]
    if banned:  # log-probs are then those of the masked distribution
        logits[:, banned] = float("-inf")
    if not cfg.greedy and cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    if cfg.greedy:
        return logits, logits.argmax(-1)
    return logits, sample_from(filter_logits(logits, cfg.top_k, cfg.top_p).softmax(-1),
                               generator)


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], cfg: SamplingConfig,
             eos_id: int | list[int],
             pad_id: int | None = None, bos_id: int | None = None,
             generator: torch.Generator | None = None, stop_early: bool = True) -> Generation:
    """Sample one continuation per prompt (repeat prompts for several samples).

    1. left-pad the prompts and run them through the model once, filling the KV cache;
    2. each step: pick the next token for every unfinished row, then run only that token.
    A row stops at `eos_id` (an id or a list of ids, e.g. Llama 3's `<|eot_id|>` and
    `<|end_of_text|>`) (and at `bos_id` when `cfg.stop_at_bos`). The loop ends when every
    row has stopped, or, with `stop_early` False, after max_new_tokens steps in any case (an
    FSDP-sharded model: every rank must run the same number of forward passes).
    """
    device = next(model.parameters()).device
    eos = [e for e in ([eos_id] if isinstance(eos_id, int) else eos_id) if e >= 0]
    if pad_id is None:
        pad_id = eos[0] if eos else 0  # eos_id < 0 disables stopping
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    room = prompt_room(model.args.max_seq_len, cfg)
    long = [i for i, p in enumerate(prompts) if len(p) > room]
    if long and cfg.prompt_truncation != "left":  # 'drop' is done where prompts are read
        raise too_long(long[0], len(prompts[long[0]]), room, cfg, model.args.max_seq_len)
    prompts = [keep_tail(p, room, bos_id) for p in prompts]
    prompt_tokens, prompt_mask = left_pad(prompts, pad_id, device)
    B, P = prompt_tokens.shape
    N = cfg.max_new_tokens
    tokens = torch.cat([prompt_tokens, torch.full((B, N), pad_id, device=device)], 1)
    key_mask = torch.cat([prompt_mask, torch.zeros((B, N), dtype=torch.long, device=device)], 1)
    logprobs = torch.zeros((B, N), device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ended = torch.zeros(B, dtype=torch.bool, device=device)
    dtype = model.tok_embeddings.weight.dtype
    if torch.is_autocast_enabled(device.type):  # keys/values arrive in the autocast dtype
        dtype = torch.get_autocast_dtype(device.type)
    cache = model.new_cache(B, P + N, device, dtype)
    positions = prompt_mask.sum(1, keepdim=True)  # (B, 1) next rotary position per row
    logits = model(prompt_tokens, mask=prompt_mask, cache=cache, key_mask=key_mask[:, :P],
                   last_only=True)[:, -1]  # (B, V)
    for t in range(N):
        stops = [*eos, *([bos_id] if bos_id is not None and cfg.stop_at_bos else [])]
        logits, nxt = next_tokens(logits, cfg, stops if t < cfg.min_new_tokens else [],
                                  generator)  # (B, V), (B,)
        logprobs[:, t] = logprob_of(logits, nxt).masked_fill(done, 0.0)
        nxt = nxt.masked_fill(done, pad_id)
        tokens[:, P + t] = nxt
        key_mask[:, P + t] = (~done).long()
        stop = torch.isin(nxt, eos_t)
        if bos_id is not None and cfg.stop_at_bos:
            stop |= nxt == bos_id
        ended |= stop & ~done
        done |= stop
        if t == N - 1 or (stop_early and bool(done.all())):
            break
        logits = model(nxt[:, None], positions=positions, cache=cache,
                       key_mask=key_mask[:, :P + t + 1], last_only=True)[:, -1]
        positions = positions + 1
    response_mask = key_mask[:, P:]
    return Generation(tokens=tokens, mask=key_mask, prompt_width=P, response_mask=response_mask,
                      logprobs=logprobs, ended=ended, truncated=len(long))
