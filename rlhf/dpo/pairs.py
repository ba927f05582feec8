"""Log-probs of both sides of preference pairs in one forward pass, and the cached reference
pass.

A pair is packed as the reward trainer packs it (`rlhf.preferences.tokens.pack_pairs`):
[shared prefix | chosen rest | rejected rest], the shared prompt run once, each side seeing
exactly the keys it would alone. A side's log-prob here is the sum of log p(token) over the
tokens *after the shared prefix* (EOS included). DPO and IPO only use differences of
log-ratios between the two sides, in which the shared prefix's terms cancel exactly, so this
equals the response-only sum of the papers whatever the prompt/response token boundary
(prompt and response are tokenised as one text; a chat prompt is rendered with the model's
chat template and its reply follows as its own tokens, `rlhf.preferences.tokens.chat_ids`,
so a side is the text the policy samples). The next-token log-probs are
`rlhf.lm.logprobs.token_logprobs` (the one home of log-probs); the only packed-layout detail is
the first rejected token, which is predicted from the prefix's last column, not from the
chosen side's last one.

Reference cache: the reference model's log-probs of every pair (train and validation) are
computed once and stored in the run folder as `reference_logprobs.safetensors` with a
fingerprint of the token ids and the reference path; a cache whose fingerprint differs is
recomputed, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rlhf.harness.progress import advance
from rlhf.lm.logprobs import logprob_of, token_logprobs
from rlhf.preferences.data import EncodedPairs
from rlhf.preferences.tokens import pack_pairs, packed_length, shared_prefix

CACHE_FILE = "reference_logprobs.safetensors"


def pair_logprobs(model, chosen: list[list[int]], rejected: list[list[int]], device,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each side after the shared prefix: (B,), (B,) float64, one forward
    pass of the packed rows (differentiable when grad is enabled)."""
    packed = pack_pairs(chosen, rejected, 0, device)
    logits = model(packed.tokens, positions=packed.positions,
                   attn_mask=packed.attn_mask)  # (B, T, V)
    B, T = packed.tokens.shape
    rows = torch.arange(B, device=device)
    p = torch.tensor([shared_prefix(c, r) for c, r in zip(chosen, rejected)], device=device)
    len_c, len_row = packed.read_at[:, 0] + 1, packed.read_at[:, 1] + 1  # (B,), (B,)
    lp = token_logprobs(logits, packed.tokens)  # (B, T-1): column t-1 predicts token t
    first = logprob_of(logits[rows, p - 1].float(), packed.tokens[rows, len_c])  # (B,)
    col = torch.arange(1, T, device=device).unsqueeze(0)  # (1, T-1) target columns
    lp = torch.where(col == len_c[:, None], first[:, None], lp)  # first rejected token
    in_c = (col >= p[:, None]) & (col < len_c[:, None])  # (B, T-1)
    in_r = (col >= len_c[:, None]) & (col < len_row[:, None])
    lp = lp.double()  # sums of many tokens: float64, so the cache and a fresh pass agree
    return (lp * in_c).sum(-1), (lp * in_r).sum(-1)  # to 1e-5, not to float32's ulp of ~100


@torch.no_grad()
def logprobs_of_pairs(model, data: EncodedPairs, device, batch_size: int = 32
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """`pair_logprobs` of every pair of `data`, batched by similar packed length: (N,), (N,)."""
    lengths = [packed_length(a, b) for a, b in zip(data.chosen, data.rejected)]
    order = sorted(range(len(data)), key=lambda i: lengths[i])
    out_c = torch.empty(len(data), dtype=torch.float64)
    out_r = torch.empty(len(data), dtype=torch.float64)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        c, r = pair_logprobs(model, [data.chosen[i] for i in idx],
                             [data.rejected[i] for i in idx], device)
        out_c[idx], out_r[idx] = c.cpu(), r.cpu()
        advance(len(idx))  # to the caller's open Progress, if any
    return out_c, out_r


def fingerprint(parts: dict[str, EncodedPairs], reference: str, max_len: int) -> str:
    """sha256 of the reference path, the truncation limit and every pair's token ids."""
    h = hashlib.sha256(json.dumps([str(reference), max_len]).encode())
    for name in sorted(parts):
        h.update(name.encode())
        for c, r in zip(parts[name].chosen, parts[name].rejected):
            h.update(json.dumps([c, r]).encode())
    return h.hexdigest()


def reference_logprobs(ref, parts: dict[str, EncodedPairs], folder: Path, reference: str,
                       max_len: int, device, batch_size: int = 32, write: bool = True,
                       ) -> dict[str, torch.Tensor]:
    """The reference log-probs {'<part>.chosen': (N,), '<part>.rejected': (N,)} of every part
    (train, val), read from `folder/CACHE_FILE` when its fingerprint matches, else computed
    once and written there (`write`: rank 0). `ref` may be None when the cache is known to
    be valid (other ranks reading rank 0's file)."""
    path, key = folder / CACHE_FILE, fingerprint(parts, reference, max_len)
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("fingerprint") == key:
                return {k: f.get_tensor(k) for k in f.keys()}
    if ref is None:
        raise FileNotFoundError(f"{path}: no reference log-prob cache for these pairs")
    out = {}
    for name, data in parts.items():
        c, r = logprobs_of_pairs(ref, data, device, batch_size)
        out[f"{name}.chosen"], out[f"{name}.rejected"] = c, r
    if write:
        tmp = path.with_name(path.name + ".tmp")
        save_file(out, str(tmp), metadata={"fingerprint": key, "reference": str(reference)})
        tmp.replace(path)
    return out
