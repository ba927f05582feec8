"""Unpaired rows (KTO) as training data: answers -> rows judged desirable or undesirable
(`rlhf.feedback.derive`: ratings, "both bad" comparisons, and, when asked, clear comparisons
unpaired), split *by prompt*, tokenised as [BOS | prompt | completion | EOS]; each row's
completion log-prob, and the mismatched pairs of a batch from which KTO estimates its
reference point.

Tokens: prompt + completion are tokenised as one text (as the pair stages do); the completion
starts where the prompt's own tokens and the whole text's first differ (TRL's
`common_prefix_length` rule: a token merging across the boundary belongs to the completion).
A chat prompt on a tokenizer with a chat template (`rlhf.preferences.tokens.chat_ids`, as for
the pair stages): context = the messages rendered with the generation prompt (the ids the
policy is sampled from, its BOS the template's), completion = the completion's own ids + EOS.
Truncation (longer than `max_len`): the prompt loses its start first, then the completion;
BOS and the completion's end (EOS included) are always kept, and one context token at least.

Log-probs: a batch is laid out right-padded, each row [context | completion | padding] from
position 0, so the model runs its plain causal attention (padding after a row's tokens changes
none of them: SDPA's fast causal kernel, no mask; a left-padded layout needs an explicit mask
and is several times slower on a CPU); each completion token's log-prob is
`rlhf.lm.logprobs.token_logprobs`'s (the one home of that computation), and a row's log-prob is
their sum, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.config import ConfigError
from rlhf.feedback.derive import UnpairedRow, training_data
from rlhf.lm.logprobs import token_logprobs
from rlhf.preferences.data import read_feedback, split_by_group
from rlhf.preferences.tokens import bos_ids, chat_ids


def unpaired_rows(records, origins) -> list[UnpairedRow]:
    """Answers -> unpaired rows of the kinds in `origins` ('rating', 'both_bad', and
    'comparison': a clear comparison's preferred response desirable, the other undesirable,
    as TRL's `unpair_preference_dataset`). Ratings and "both bad" first, in order."""
    data = training_data(records, ties="drop")
    rows = [r for r in data.unpaired if r.origin in origins]
    if "comparison" in origins:
        for p in data.pairs:
            if p.origin == "comparison" and p.target == 1.0:
                rows += [UnpairedRow(p.prompt, p.chosen, True, p.group, "comparison"),
                         UnpairedRow(p.prompt, p.rejected, False, p.group, "comparison")]
    return rows


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two id lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_row(tok, prompt: str, completion: str, max_len: int
               ) -> tuple[list[int], list[int], bool]:
    """(context ids, completion ids, truncated) by the module's rule: context = [BOS] + the
    prompt's tokens, completion = the rest of ids(prompt + completion) + [EOS]; a chat prompt:
    `chat_ids`."""
    chat = chat_ids(tok, prompt, completion)
    if chat is not None:
        ctx, comp = chat
        bos = ctx[:1] if ctx[:1] == bos_ids(tok) else []
    else:
        bos = bos_ids(tok)
        p = tok.encode(prompt, bos=False)
        whole = tok.encode(prompt + completion, bos=False)
        cut = common_prefix(p, whole)
        ctx, comp = bos + whole[:cut], whole[cut:] + [tok.eos_id]
    if not ctx:  # no BOS and an empty prompt: the first token is context
        ctx, comp = comp[:1], comp[1:] or [tok.eos_id]
    truncated = len(ctx) + len(comp) > max_len
    if truncated:
        comp = comp[-(max_len - 1):]
        body, n = ctx[len(bos):], max_len - len(comp) - len(bos)  # n >= 0; >= 1 without BOS
        ctx = bos + body[len(body) - n:]
    return ctx, comp, truncated


@dataclass
class EncodedRows:
    context: list[list[int]]
    completion: list[list[int]]
    label: torch.Tensor  # (N,) bool: desirable
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.context)

    def lengths(self) -> list[int]:
        return [len(c) + len(r) for c, r in zip(self.context, self.completion)]


def encode_rows(rows: list[UnpairedRow], tok, max_len: int) -> EncodedRows:
    enc = [encode_row(tok, r.prompt, r.completion, max_len) for r in rows]
    return EncodedRows([e[0] for e in enc], [e[1] for e in enc],
                       torch.tensor([r.label for r in rows], dtype=torch.bool),
                       sum(e[2] for e in enc))


def split_rows(d, seed: int) -> tuple[list[UnpairedRow], list[UnpairedRow]]:
    """The (train, validation) rows of data section `d` (`KTODataConfig`), split by prompt
    with `seed`."""
    rows = unpaired_rows(read_feedback(d.paths, d.split, d.columns), d.origins)
    if d.max_rows:
        rows = rows[:d.max_rows]
    if not rows:
        raise ConfigError(f"data.paths: no desirable or undesirable rows of the kinds "
                          f"{', '.join(d.origins)} in {', '.join(d.paths)}")
    return split_by_group(rows, d.val_fraction, seed)


def prepare_rows(cfg, tok) -> tuple[EncodedRows, EncodedRows]:
    """Read, convert, split by prompt and tokenise: (train, validation). `cfg`: a
    `KTOTrainConfig`."""
    d = cfg.data
    train, val = split_rows(d, cfg.runtime.seed)
    if len(train) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is more than the "
                          f"{len(train)} training rows")
    return encode_rows(train, tok, d.max_len), encode_rows(val, tok, d.max_len)


def mismatched(n: int) -> list[int]:
    """The completion each row of a batch of n is paired with for the reference point: row i
    gets row i - 1's (row 0 the last's), TRL's rotation; a row never gets its own (n >= 2)."""
    return [(i - 1) % n for i in range(n)]


def right_padded(context: list[list[int]], completion: list[list[int]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [context | completion | padding (id 0)]: (tokens (B, T), targets (B, T - 1)), the
    targets 1 in the columns of `token_logprobs` that score a completion token (column t
    scores token t + 1)."""
    T = max(len(c) + len(r) for c, r in zip(context, completion))
    tokens = torch.zeros((len(context), T), dtype=torch.long)
    targets = torch.zeros((len(context), T - 1))
    for i, (c, r) in enumerate(zip(context, completion)):
        tokens[i, :len(c) + len(r)] = torch.tensor(c + r)
        targets[i, len(c) - 1:len(c) + len(r) - 1] = 1
    return tokens, targets


def completion_logprobs(model, context: list[list[int]], completion: list[list[int]], device
                        ) -> torch.Tensor:
    """log pi(completion | context) of each row, summed over its tokens (EOS included):
    (B,) float64, differentiable when grad is enabled. One forward pass."""
    tokens, targets = (x.to(device) for x in right_padded(context, completion))
    start = min(map(len, context)) - 1  # the output layer runs from the first target on
    logits = model(tokens, start=start)  # (B, T - start, V)
    logp = token_logprobs(logits, tokens[:, start:]) * targets[:, start:]  # (B, T - 1 - start)
    return logp.double().sum(-1)
