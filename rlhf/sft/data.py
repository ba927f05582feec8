"""Rows for supervised fine-tuning: read, split by group, tokenised, laid out in batches.

Reading (`read_rows`): `*.txt` files are plain text, one row per paragraph (blank lines
between paragraphs); everything else goes through `rlhf.feedback.formats.read_records`
(stores, TRL prompt-completion / language-modelling files as JSONL, JSON, parquet or a
`datasets` folder) and each correction becomes a row (`rlhf.feedback.derive.correction_sft`:
prompt -> corrected text). A TRL row written as chat messages keeps its messages.

Tokens (`encode_row`), TRL SFTTrainer's rule: prompt and prompt + completion are tokenised
separately; the completion's tokens are those after their common prefix. Text: with the
tokenizer's BOS, EOS appended (a departure from TRL for one kind of row: the correction of a
response that was cut off at the sampling limit gets no EOS, so that the policy does not learn
to stop where the sampler cut it: `SFTRow.ends`). Chat rows, where the model has a chat
template: a row whose completion is one assistant answer to chat messages (a prompt given as
messages or as a `ChatPrompt`; or a language-modelling conversation ending in the assistant's
turn, every token of which is learned) follows the pair stages' rule
(`rlhf.preferences.tokens.chat_ids`): the messages before the answer rendered with the
generation prompt, as the policy's prompts are, then the answer's own ids and EOS, so that
the text learned is the text the policy samples, token for token. Other messages (several
assistant turns as the completion, a conversation not ending in the assistant's turn): the
template applied to the prompt with the generation prompt and to the whole conversation
without, no EOS added. Without a template, the conversation's transcript ("\\n\\nUser: ...
\\n\\nAssistant: ...") as text. Rows longer than `max_len` keep their first `max_len` tokens.

Layout (`layout`): a micro-batch's rows right-padded (one per sequence), or packed: rows
placed into sequences of at most `max_len` tokens (first-fit decreasing, `pack_bins`), with
positions restarting at 0 for each row and a block-diagonal causal attention mask, so that
each row's logits are exactly those it gets alone (tests/test_sft.py checks it). The trainer
packs a micro-batch only where that saves a quarter of its padded positions (`pack_width`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from rlhf.feedback import datafiles
from rlhf.feedback.chat import is_chat, with_conversations
from rlhf.feedback.derive import correction_sft
from rlhf.feedback.formats import read_records
from rlhf.feedback.records import Correction
from rlhf.feedback.trl_formats import as_text, group_id, is_conversation
from rlhf.preferences.tokens import chat_ids, pad_right
from rlhf.prompts import ChatPrompt


@dataclass
class SFTRow:
    """A demonstration: `completion` after `prompt` ("" / [] for plain text); text or
    chat messages. `group`: rows of one group go to one split."""

    prompt: str | list
    completion: str | list
    group: str = ""
    ends: bool = True
    """Text rows: EOS follows the completion (False: a beginning, e.g. the correction of a
    response cut off at the sampling limit, which the model should not learn to end)."""


def text_rows(path: Path) -> list[SFTRow]:
    """A plain text file: one row per paragraph (surrounding whitespace stripped)."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
    return [SFTRow("", p, group_id("text", p)) for p in paras if p]


def correction_rows(c: Correction) -> list[SFTRow]:
    """A correction's row; an imported TRL row written as messages keeps its messages."""
    trl = (c.meta or {}).get("trl") or {}
    row = trl.get("row") or {}
    out = []
    for ex in correction_sft(c):
        if is_conversation(row.get("prompt")) and is_conversation(row.get("completion")):
            out.append(SFTRow(row["prompt"], row["completion"], ex.group))
        elif trl.get("type") == "lm" and is_conversation(row.get("messages")):
            out.append(SFTRow([], row["messages"], ex.group))
        else:
            out.append(SFTRow(ex.prompt, ex.completion, ex.group, ex.ends))
    return out


def read_rows(paths: list[str], split: str = "", columns: dict | None = None
              ) -> tuple[list[SFTRow], int]:
    """Rows from every path, in order, and how many records gave none (other kinds); `split`
    of a DatasetDict or Hub set, `columns` renamed (`rlhf.feedback.datafiles`)."""
    rows, other = [], 0
    for p in map(Path, paths):
        if not datafiles.exists(p):
            raise FileNotFoundError(f"data.paths: {p} not found")
        if p.suffix == ".txt":
            rows.extend(text_rows(p))
            continue
        for r in with_conversations(read_records(str(p), split=split or None, columns=columns),
                                    str(p)):
            got = correction_rows(r) if isinstance(r, Correction) else []
            other += not got
            rows.extend(got)
    return rows, other


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def chat_turns(row: SFTRow) -> tuple[list[dict], str, bool] | None:
    """A row whose completion is one assistant answer to chat messages: (the messages before
    the answer, the answer's text, whether those messages are learned too: a
    language-modelling conversation); None for any other row."""
    p, c = row.prompt, row.completion
    if isinstance(p, ChatPrompt) and isinstance(c, str):
        return p.messages, c, False
    if not (isinstance(p, list) and is_chat(c) and c[-1]["role"] == "assistant"):
        return None
    if p and is_chat(p) and len(c) == 1:
        return list(p), c[0]["content"], False
    return (c[:-1], c[-1]["content"], True) if not p and len(c) > 1 else None


def encode_row(tok, row: SFTRow, max_len: int, completion_only: bool
               ) -> tuple[list[int], list[int], bool]:
    """-> (ids, labels mask, truncated) by the module's rule."""
    chat = chat_turns(row) if getattr(tok, "chat_template", None) else None
    if chat is not None:
        context, answer, learned = chat
        prompt_ids, completion = chat_ids(tok, ChatPrompt(context), answer)
        ids = prompt_ids + (completion if row.ends else completion[:-1])
        prompt_ids = [] if learned else prompt_ids
    elif isinstance(row.completion, list) and getattr(tok, "chat_template", None):
        prompt_ids = (tok.encode(tok.render_chat(row.prompt, True), bos=False)
                      if row.prompt else [])
        ids = tok.encode(tok.render_chat(list(row.prompt) + list(row.completion), False),
                         bos=False)
    else:
        prompt, completion = as_text(row.prompt), as_text(row.completion)
        prompt_ids = tok.encode(prompt, bos=True) if prompt else []
        ids = tok.encode(prompt + completion, bos=True)
        if row.ends and ids[-1:] != [tok.eos_id]:
            ids = ids + [tok.eos_id]
    n = common_prefix_length(prompt_ids, ids) if completion_only and prompt_ids else 0
    mask = [0] * n + [1] * (len(ids) - n)
    return ids[:max_len], mask[:max_len], len(ids) > max_len


@dataclass
class SFTData:
    """Tokenised rows: ids and labels masks (`rlhf.sft.losses`), how many were truncated."""

    ids: list[list[int]] = field(default_factory=list)
    masks: list[list[int]] = field(default_factory=list)
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def targets(self, idx: list[int]) -> int:
        """Trained tokens of rows `idx` (the first token of a row is never a target)."""
        return sum(sum(self.masks[i][1:]) for i in idx)


def encode_rows(rows: list[SFTRow], tok, max_len: int, completion_only: bool) -> SFTData:
    out = SFTData()
    for r in rows:
        ids, mask, cut = encode_row(tok, r, max_len, completion_only)
        out.ids.append(ids)
        out.masks.append(mask)
        out.truncated += cut
    return out


class Batch(NamedTuple):
    """Model inputs of a micro-batch and the targets: `labels_mask` (B, T)."""

    tokens: torch.Tensor  # (B, T)
    labels_mask: torch.Tensor  # (B, T)
    mask: torch.Tensor | None  # (B, T) real tokens (padded layout) or None
    positions: torch.Tensor | None  # (B, T) (packed layout) or None
    attn_mask: torch.Tensor | None  # (B, 1, T, T) bool (packed layout) or None

    def to(self, device) -> Batch:
        return Batch(*(None if x is None else x.to(device) for x in self))

    def inputs(self) -> dict:
        """Keyword arguments of the model's forward. Padded layout: none, the plain causal
        mask (SDPA's fast kernel): right padding comes after every real token of its row, so
        each real token gets the same logits as under the padding mask."""
        if self.attn_mask is None:
            return {}
        return {"positions": self.positions, "attn_mask": self.attn_mask}


def pack_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices into `lengths`, grouped so that each group's lengths sum
    to at most `capacity` (a longer item alone); deterministic (ties by index)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        k = next((b for b, r in enumerate(room) if r >= lengths[i]), None)
        if k is None:
            bins.append([i])
            room.append(capacity - lengths[i])
        else:
            bins[k].append(i)
            room[k] -= lengths[i]
    return bins


def pack_width(lengths: list[int], capacity: int) -> int:
    """The `pack_to` for a micro-batch of rows of `lengths`: `capacity` when packing them
    (`pack_bins`) needs at most 3/4 of the token positions that right-padding them does, else
    0 (padded). A packed sequence needs an explicit block-diagonal mask (SDPA's slower
    kernel) and is longer (attention grows with its square), so a small saving of padding does
    not pay: batches grouped by length train faster padded (benchmarks/sft_training.py)."""
    bins = pack_bins(lengths, capacity)
    longest = max(sum(lengths[i] for i in b) for b in bins)
    return capacity if 4 * len(bins) * longest <= 3 * len(lengths) * max(lengths) else 0


def packed(ids: list[list[int]], masks: list[list[int]], bins: list[list[int]],
           pad_id: int) -> Batch:
    """Rows placed one after another in each bin's sequence: positions restart at 0 per row,
    each token attends to the earlier tokens of its own row only, each row's first token is
    no target; padding attends to itself (no empty softmax row) and is no target."""
    T = max(sum(len(ids[i]) for i in b) for b in bins)
    B = len(bins)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.zeros((B, T), dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)  # row number within the bin; -1 padding
    for r, b in enumerate(bins):
        at = 0
        for k, i in enumerate(b):
            n = len(ids[i])
            tokens[r, at:at + n] = torch.tensor(ids[i])
            labels[r, at + 1:at + n] = torch.tensor(masks[i][1:], dtype=torch.long)
            pos[r, at:at + n] = torch.arange(n)
            seg[r, at:at + n] = k
            at += n
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    attn = (same & causal) | torch.eye(T, dtype=torch.bool)
    return Batch(tokens, labels, None, pos, attn.unsqueeze(1))


def layout(data: SFTData, idx: list[int], pad_id: int, pack_to: int = 0) -> Batch:
    """Rows `idx` as one micro-batch: packed into sequences of at most `pack_to` tokens, or
    right-padded one per sequence (`pack_to` 0)."""
    ids, masks = [data.ids[i] for i in idx], [data.masks[i] for i in idx]
    if pack_to:
        return packed(ids, masks, pack_bins([len(x) for x in ids], pack_to), pad_id)
    tokens, mask = pad_right(ids, pad_id)
    labels = torch.zeros_like(tokens)
    for r, m in enumerate(masks):
        labels[r, 1:len(m)] = torch.tensor(m[1:], dtype=torch.long)
    return Batch(tokens, labels, mask, None, None)
