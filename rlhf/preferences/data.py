"""Answers -> training pairs for every pair-trained stage (reward model, DPO): read stores and
imported files (comparisons, rankings, corrections, ratings), convert to pairs by the rules of
`rlhf.feedback.derive` (each pair keeps its weight: 1 / (K choose 2) for a K-ranking's pairs),
split *by prompt* (no prompt on both sides), tokenise with the truncation rule of
`rlhf.preferences.tokens.encode_pair_side`, and cut the epochs into global batches
(`PairBatches`: the batch of step s is a pure function of the seed and s)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from rlhf.config import ConfigError
from rlhf.feedback import datafiles
from rlhf.feedback.chat import with_conversations
from rlhf.feedback.derive import PreferencePair, training_data
from rlhf.feedback.formats import read_any, read_records
from rlhf.feedback.records import Comparison
from rlhf.preferences.losses import margins_from_strengths
from rlhf.preferences.tokens import encode_pair_side, packed_length


def _read_all(paths: list[str], reader, **how) -> list:
    """`reader(path, **how)` of each path, in order; a missing path names `data.paths` (a
    Hub name, `org/name`, is read from the Hub: `rlhf.feedback.datafiles`)."""
    out = []
    for p in paths:
        if not datafiles.exists(p):
            raise FileNotFoundError(f"data.paths: {p} not found")
        out.extend(with_conversations(reader(p, **how), p))  # chat prompts: messages
    return out


def read_comparisons(paths: list[str]):
    """Comparisons from stores and imported files, in order (`rlhf.feedback.formats.read_any`)."""
    return _read_all(paths, read_any)


def read_feedback(paths: list[str], split: str = "", columns: dict | None = None) -> list:
    """Answers of every kind from stores and data files, in order
    (`rlhf.feedback.formats.read_records`; `split` of a DatasetDict or Hub set, `columns`
    renamed); from a store holding only comparisons, exactly the comparisons
    `read_comparisons` reads."""
    return _read_all(paths, read_records, split=split or None, columns=columns)


def split_by_group(pairs: list[PreferencePair], val_fraction: float, seed: int
                   ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out round(val_fraction * groups) whole prompt groups (seeded shuffle of the sorted
    group ids): no prompt is in both splits."""
    groups = sorted({p.group for p in pairs})
    g = torch.Generator().manual_seed(seed)
    order = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    n_val = round(val_fraction * len(groups)) if val_fraction > 0 else 0
    val_groups = set(order[:n_val])
    return ([p for p in pairs if p.group not in val_groups],
            [p for p in pairs if p.group in val_groups])


@dataclass
class EncodedPairs:
    chosen: list[list[int]]
    rejected: list[list[int]]
    target: torch.Tensor  # (N,)
    margin: torch.Tensor  # (N,)
    len_chosen: list[int]  # characters, for the length rule
    len_rejected: list[int]
    truncated: int  # pairs with at least one side truncated
    features: torch.Tensor | None = None  # (N, 2, dim) a frozen encoder's (rlhf.reward.probe)
    weight: torch.Tensor | None = None  # (N,) PreferencePair.weight; None -> all 1
    group: list[str] | None = None  # (N,) PreferencePair.group: the bootstrap's unit

    def __post_init__(self):
        if self.weight is None:
            self.weight = torch.ones(len(self.chosen))

    def __len__(self) -> int:
        return len(self.chosen)

    def lengths(self) -> list[int]:
        """Tokens of each pair's packed row (shared prompt once), what a batch computes."""
        return [packed_length(a, b) for a, b in zip(self.chosen, self.rejected)]


def encode_pairs(pairs: list[PreferencePair], tok, max_len: int, margin: bool) -> EncodedPairs:
    c = [encode_pair_side(tok, p.prompt, p.chosen, max_len) for p in pairs]
    r = [encode_pair_side(tok, p.prompt, p.rejected, max_len) for p in pairs]
    targets = [p.target for p in pairs]
    m = (margins_from_strengths([p.strength for p in pairs], targets) if margin
         else torch.zeros(len(pairs)))
    return EncodedPairs([x[0] for x in c], [x[0] for x in r],
                        torch.tensor(targets, dtype=torch.float32), m,
                        [len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs],
                        sum(a[1] or b[1] for a, b in zip(c, r)),
                        weight=torch.tensor([p.weight for p in pairs], dtype=torch.float32),
                        group=[p.group for p in pairs])


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool, window: int = 64) -> list[list[int]]:
    """The global batches (pair indices) of one epoch, a pure function of its arguments.
    Shuffle; drop the last incomplete batch (other pairs are dropped next epoch); with
    group_by_length, sort each run of `window` batches by length before cutting, then
    shuffle the batch order (so long and short batches alternate at random)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(lengths) // batch_size * batch_size
    perm = torch.randperm(len(lengths), generator=g).tolist()[:n]
    if group_by_length:
        span = batch_size * window
        perm = [i for s in range(0, n, span)
                for i in sorted(perm[s:s + span], key=lambda j: (lengths[j], j))]
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


PAIR_KINDS = ("comparison", "ranking", "correction", "rating")
"""The kinds of answer that give pairs (`PreferencePair.origin`), `data.kinds`' values."""


def training_pairs(records, ties: str, cant_tell: str = "drop",
                   kinds=PAIR_KINDS) -> list[PreferencePair]:
    """Answers -> pairs as the data config says, by `rlhf.feedback.derive.training_data`'s
    rules, keeping the pairs of the answer kinds in `kinds`: comparisons' "can't tell"
    dropped unless `cant_tell` is 'tie'; ties (comparisons' tie and both_bad, rankings' tied
    places) as 1/2 targets ('half' and 'model': the tie model reads target 1/2 as a tie) or
    dropped. Comparisons come first, in order, so comparisons alone give what they gave."""
    if cant_tell == "drop":
        records = [r for r in records
                   if not (isinstance(r, Comparison) and r.label == "cant_tell")]
    pairs = training_data(records, ties="drop" if ties == "drop" else "half").pairs
    return [p for p in pairs if p.origin in kinds]


class PairBatches:
    """The global batch (pair indices) of each step: epoch e's `epoch_batches`, step s being
    batch s mod per_epoch of epoch s // per_epoch; one epoch's order is kept at a time."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool):
        self.lengths, self.batch_size = lengths, batch_size
        self.seed, self.group_by_length = seed, group_by_length
        self.per_epoch = len(lengths) // batch_size
        self.epoch, self.order = -1, []

    def __call__(self, step: int) -> list[int]:
        epoch = step // self.per_epoch
        if epoch != self.epoch:
            self.epoch, self.order = epoch, epoch_batches(
                self.lengths, self.batch_size, self.seed, epoch, self.group_by_length)
        return self.order[step % self.per_epoch]


def evaluation_pairs(paths: list[str], split: str, val_fraction: float, seed: int,
                     ties: str = "half", cant_tell: str = "drop", kinds=PAIR_KINDS,
                     data_split: str = "", columns: dict | None = None
                     ) -> list[PreferencePair]:
    """The pairs `rlhf eval-reward` reads from `paths` (`data_split` of a DatasetDict or Hub
    set, `columns` renamed): 'all', or the 'val' / 'train' side of the split a pair-trained
    stage makes with the same `val_fraction`, `seed`, ties, cant_tell and kinds
    (`split_pairs`: the same pairs, the same prompts held out)."""
    pairs = training_pairs(read_feedback(paths, data_split, columns), ties, cant_tell, kinds)
    if split == "all":
        return pairs
    train, val = split_by_group(pairs, val_fraction, seed)
    return val if split == "val" else train


def split_pairs(d, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Read and convert the files of data section `d` (`PairDataConfig`) and split by prompt:
    the (train, validation) pairs a pair-trained stage with `runtime.seed` = `seed` uses."""
    records = read_feedback(d.paths, d.split, d.columns)
    pairs = training_pairs(records, d.ties, d.cant_tell, d.kinds)
    if not pairs:
        held = Counter(getattr(r, "kind", "?") for r in records)
        raise ConfigError(f"data.paths: {', '.join(map(str, d.paths))} give no training pairs "
                          f"of data.kinds {list(d.kinds)} (they hold {dict(held) or 'nothing'}"
                          "); thumbs and unpaired rows train with `rlhf train-kto`, "
                          "demonstrations with `rlhf train-sft`")
    if d.max_pairs:
        pairs = pairs[:d.max_pairs]
    train_p, val_p = split_by_group(pairs, d.val_fraction, seed)
    if d.select_fraction:  # the held-out prompts unseen; validate inside the training
        train_p, val_p = split_by_group(train_p, d.select_fraction, seed + 1)
    return train_p, val_p


def prepare_data(cfg, tok) -> tuple[EncodedPairs, EncodedPairs]:
    """Read, convert, split by prompt and tokenise: (train, validation). `cfg`: a pair-trained
    stage's config (reward model, DPO): its `data` section (`PairDataConfig`),
    `train.batch_size`, `loss.margin` (strengths become margins, else 0) and `runtime.seed`."""
    d = cfg.data
    train_p, val_p = split_pairs(d, cfg.runtime.seed)
    if len(train_p) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is more than the "
                          f"{len(train_p)} training pairs")
    enc = [encode_pairs(p, tok, d.max_len, cfg.loss.margin) for p in (train_p, val_p)]
    return enc[0], enc[1]
