"""Preference pairs as tokens: the text rule, truncation, right-padding, packing both sides of a
pair into one row, and length-batched passes. Shared by the reward model, DPO and evaluation.

Text to tokens (causal models): `encode_pair_side` tokenises prompt + response as one text, BOS
first and EOS last. A chat prompt (`rlhf.prompts.ChatPrompt`: the policy's chat prompts, and
conversations read from records, `rlhf.feedback.chat.Conversation`) on a tokenizer with a chat
template follows TRL's rule instead (`chat_ids`): the prompt's messages rendered with the
generation prompt, exactly the ids the policy is sampled from (`HFTokenizer.encode`), then the
response's own ids and EOS, so that training text equals sampled text token for token; no BOS
is added (the template writes its own). Without a chat template the prompt's text is used
(a conversation's transcript, "...\\n\\nAssistant: "). Truncation rule (when longer than
`max_len`): keep the first BOS and EOS and the *last* tokens in between, so the prompt is cut
from the left first and the response only when the prompt is gone (its end, which the rater
read last, is always kept). Truncated pairs are counted by the callers, never dropped. An
encoder's tokenizer gives its own pair template (`EncoderTokenizer.encode_pair`): a
conversation's transcript as the first segment, the response as the second.

Packing (`pack_pairs`): [shared prefix | chosen rest | rejected rest | padding], each side
seeing exactly the keys it would alone, so one forward pass scores both sides with the shared
prompt computed once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rlhf.harness.progress import advance
from rlhf.prompts import ChatPrompt


def bos_ids(tok) -> list[int]:
    """The BOS that causal reward and DPO texts start with: [bos_id], none where the tokenizer
    has no BOS (Qwen2.5's bos_token is null)."""
    return [] if tok.bos_id is None else [tok.bos_id]


def chat_ids(tok, prompt: str, response: str) -> tuple[list[int], list[int]] | None:
    """TRL's rule for a chat prompt on a tokenizer with a chat template: (the ids of the
    prompt's messages rendered with the generation prompt, as the policy's prompts are
    encoded; the response's ids + [EOS]). None for a text prompt or a tokenizer without a
    chat template (the text rule applies)."""
    if not (isinstance(prompt, ChatPrompt) and getattr(tok, "chat_template", None)):
        return None
    return tok.encode(prompt, bos=False), tok.encode(str(response), bos=False) + [tok.eos_id]


def encode_pair_side(tok, prompt: str, response: str, max_len: int) -> tuple[list[int], bool]:
    """[BOS] + ids(prompt + response) + [EOS], truncated by the module's rule (no BOS where the
    tokenizer has none, e.g. Qwen2.5's); a chat prompt: `chat_ids` (the template's own BOS
    kept first); an encoder's tokenizer gives its own pair template
    (`EncoderTokenizer.encode_pair`). Returns (ids, truncated)."""
    if hasattr(tok, "encode_pair"):
        return tok.encode_pair(prompt, response, max_len)
    chat = chat_ids(tok, prompt, response)
    if chat is None:
        head, body = bos_ids(tok), tok.encode(prompt + response, bos=False)
    else:
        ids = chat[0] + chat[1][:-1]
        n = 1 if ids[:1] == bos_ids(tok) else 0
        head, body = ids[:n], ids[n:]
    keep = max_len - len(head) - 1
    truncated = len(body) > keep
    if truncated:
        body = body[len(body) - keep:]
    return head + body + [tok.eos_id], truncated


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: -> tokens (B, T), mask (B, T) 1 for real tokens.
    The mask comes from the lengths, never from `tok == pad_id` (pad may equal EOS)."""
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return tokens, mask


class PackedPairs(NamedTuple):
    """Pairs as one row each: [shared prefix | chosen rest | rejected rest | padding]."""

    tokens: torch.Tensor  # (B, T)
    positions: torch.Tensor  # (B, T) rotary positions; the rejected rest restarts after prefix
    attn_mask: torch.Tensor  # (B, 1, T, T) bool: causal, rejected never sees chosen
    read_at: torch.Tensor  # (B, 2) columns of the chosen and rejected last tokens


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two id lists, leaving each at least one own token."""
    n = 0
    for x, y in zip(a[:len(b) - 1], b[:len(a) - 1]):
        if x != y:
            break
        n += 1
    return n


def packed_length(a: list[int], b: list[int]) -> int:
    """Tokens in the packed row of sides a and b (`pack_pairs`)."""
    return len(a) + len(b) - shared_prefix(a, b)


def pack_pairs(chosen: list[list[int]], rejected: list[list[int]], pad_id: int,
               device=None) -> PackedPairs:
    """Both sides of each pair in one row: the common prefix of their ids (BOS + prompt, as
    `encode_pair_side` encoded them), then the rest of chosen, then the rest of rejected,
    right-padded. Each side's tokens get the positions and see exactly the keys they would
    alone (rejected tokens are masked off the chosen ones), so the scores equal two separate
    rows while the prompt is computed once. Same ids in, so truncation is unchanged."""
    rows, pos, seg = [], [], []
    for c, r in zip(chosen, rejected):
        p = shared_prefix(c, r)
        rows.append(c + r[p:])
        pos.append(list(range(len(c))) + list(range(p, len(r))))
        seg.append([0] * p + [1] * (len(c) - p) + [2] * (len(r) - p))
    B, T = len(rows), max(map(len, rows))
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    positions = torch.zeros((B, T), dtype=torch.long)
    segment = torch.full((B, T), 3, dtype=torch.long)  # 0 prefix, 1 chosen, 2 rejected, 3 pad
    for i, (row, ps, sg) in enumerate(zip(rows, pos, seg)):
        tokens[i, :len(row)] = torch.tensor(row)
        positions[i, :len(row)] = torch.tensor(ps)
        segment[i, :len(row)] = torch.tensor(sg)
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T); padding only sees backwards
    cross = (segment[:, :, None] == 2) & (segment[:, None, :] == 1)  # (B, T, T)
    attn_mask = (causal & ~cross).unsqueeze(1)  # (B, 1, T, T)
    ends = torch.tensor([[len(c) - 1, len(row) - 1] for c, row in zip(chosen, rows)])  # (B, 2)
    return PackedPairs(*(t.to(device) for t in (tokens, positions, attn_mask, ends)))


@torch.no_grad()
def by_length(fn, seqs: list[list[int]], pad_id: int, width: int, device,
              batch_size: int = 32) -> torch.Tensor:
    """fn(tokens, mask) -> (b, width) over token lists, batched by similar length (less
    padding), back in the lists' order: (N, width)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty(len(seqs), width)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        tokens, mask = pad_right([seqs[j] for j in idx], pad_id)
        out[idx] = fn(tokens.to(device), mask.to(device)).float().cpu()
        advance(len(idx))  # to the caller's open Progress, if any
    return out
