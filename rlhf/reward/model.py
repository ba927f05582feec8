"""The reward model: a backbone with a scalar head per ensemble member. Two kinds of backbone:

- causal LM (`rlhf.lm.model.Transformer`): read at the last real token of
  [BOS | prompt | response | EOS]; in training both sides of a pair share one packed row;
- pretrained encoder (`rlhf.lm.encoders`: BERT, RoBERTa, DeBERTa-v2/v3): a cross-encoder over
  the template of its own tokenizer ([CLS] prompt [SEP] response [SEP] and segment ids),
  pooled by `pooling` ('mean' over real tokens, 'cls', or the folder's 'pooler'), truncation
  keeping the response (`rlhf.lm.encoders.tokenizer`); chosen and rejected are two rows.

Text to tokens (causal): `encode_pair_side` tokenises prompt + response as one text, BOS
first and EOS last. Truncation rule (when longer than `max_len`): keep BOS and EOS and the *last*
max_len - 2 tokens in between, so the prompt is cut from the left first and the response only
when the prompt is gone (its end, which the rater read last, is always kept). Truncated pairs
are counted by the callers, never dropped.

Ensemble: E linear heads on one shared backbone (Christiano et al. 2017 use an ensemble of
predictors, each trained on a bootstrap resample of the comparisons). Departure, for speed:
the members share the backbone and differ in their head's initialisation and in their
bootstrap weights (`bootstrap_weights`), so an ensemble costs one forward pass, not E.
Their disagreement, the variance over members of P(a > b), ranks unrated pairs by how
informative a label would be (`rank_pairs`). The price: members that share features disagree
less than independently trained models would (a lower bound on the uncertainty); independent
seeds would cost E times the training time, which the speed targets do not allow.

Saved as an HF-style folder: a causal backbone as the transformers
`<Family>ForSequenceClassification` folder that `rlhf.reward.seqcls` writes (transformers'
logit = the project's score; the heads in reward_head.safetensors), an
encoder via `save_encoder` (the heads as the extra tensor `reward_head.weight` (E, dim));
`reward_model.json` with the normalisation statistics and settings (`backbone`: 'causal' or
'encoder', `pooling`).

The score. Normalised by the training responses' statistics (`set_statistics`): centred,
(mean_e r_e - mean) / std, where the exported folder can carry the constant (encoders;
GPT-2 and GPT-NeoX, whose final LayerNorm bias takes it: `rlhf.reward.seqcls.FOLD_INTO`);
scale-only, mean_e r_e / std, for the RMSNorm families (Llama, Mistral, Qwen2, Qwen3), where
no weight of transformers' class can add a constant, so that transformers' logit is still the
project's score. There `mean` stays a statistic (reward_model.json; `centre` is 0), and the
scores of the training responses average mean / std instead of 0. Nothing downstream needs
the 0: preferences, accuracy, RewardBench, the ensemble's disagreement, RLOO's and PPO's group
baselines, reward whitening and the loop's reward gain and win rate read differences, as they
must for a scorer's uncentred scores too (what sees the level, as it sees a scorer's:
REINFORCE's first step, before its running baseline has a value, and `reward.clip` without
`reward.normalize`). Folders saved before this rule (no `centred` in reward_model.json)
keep their centred score (transformers' logit + their `score_offset`).

Causal folders of the earlier layout (a *ForCausalLM folder with `reward_head.weight` beside
the weights) still load. A sequence-classification folder
written by transformers (no reward_model.json) loads as a one-member reward model read as
transformers reads it, with its own text rule (`rlhf.reward.seqcls`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from rlhf.harness import distributed as dist
from rlhf.lm.encoders.folders import is_encoder_folder, load_encoder, save_encoder
from rlhf.lm.encoders.model import Encoder
from rlhf.lm.encoders.tokenizer import segment_ids
from rlhf.lm.folders import load_model
from rlhf.lm.hf_config import ModelConfigError
from rlhf.lm.lora import has_lora
from rlhf.lm.model import Transformer
from rlhf.preferences.tokens import PackedPairs, by_length, encode_pair_side
from rlhf.reward.adapter import save_seq_cls_adapter
from rlhf.reward.seqcls import (
    FOLD_INTO,
    ExternalRule,
    is_seq_cls_folder,
    load_causal,
    save_seq_cls,
)

POOLINGS = ("mean", "cls", "pooler")
META_FILE = "reward_model.json"
LENGTH_TENSOR = "length_head.weight"


class RewardModel(nn.Module):
    """backbone (Transformer or Encoder) + `head` Linear(dim, E, no bias) + score statistics
    (mean, std). An encoder also needs its tokenizer's separator id and second-segment id
    (`tok`) for segment ids, and a `pooling` (POOLINGS)."""

    def __init__(self, backbone: Transformer | Encoder, n_members: int = 1, seed: int = 0,
                 pooling: str = "mean", tok=None):
        super().__init__()
        self.backbone = backbone
        self.is_encoder = isinstance(backbone, Encoder)
        # no bias: it cancels in every pairwise loss (its gradient is rounding noise, which
        # Adam would scale up to full steps); the offset is set by the statistics instead
        self.head = nn.Linear(backbone.args.dim, n_members, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # each member its own draw; small so initial rewards are ~0
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g)
                                   / backbone.args.dim ** 0.5)
        self.length_head: nn.Linear | None = None  # ODIN's, `add_length_head`
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))
        self.centred = centrable(backbone)
        """Whether the score subtracts `mean` (module docstring: 'The score')."""
        if self.is_encoder:
            if pooling not in POOLINGS or (pooling == "pooler" and backbone.pooler is None):
                raise ValueError(f"pooling {pooling!r}: one of {POOLINGS} ('pooler' needs a "
                                 "folder with pooler.dense)")
            self.pooling, self.sep_id, self.pair_segment = pooling, tok.sep_id, tok.pair_segment
            if backbone.pooler is not None and pooling != "pooler":  # unused: out of DDP
                backbone.pooler.requires_grad_(False)
            self.max_len = backbone.args.max_positions - backbone.args.position_offset
        else:
            if not backbone.args.tie_embeddings:  # the LM head is unused: keep it out of DDP
                backbone.output.weight.requires_grad_(False)
            self.max_len = backbone.args.max_seq_len
        """Token limit per side that texts are truncated to (the one it was trained with)."""

    def add_tie_parameter(self, value: float = 0.0) -> None:
        """Davidson's tie parameter log(nu) (rlhf.preferences.losses.davidson_loss), learned with
        the rest; only a model trained with ties='model' has one."""
        if getattr(self, "log_nu", None) is None:
            self.log_nu = nn.Parameter(torch.tensor(float(value)))

    def add_length_head(self, seed: int = 0) -> None:
        """A second head per member that takes up length (ODIN, Chen et al. 2024: the reward
        fitted to the preferences is quality + length, `rlhf.preferences.losses.odin_losses`
        keeps the quality head uncorrelated with length); every reader (scores, the policy's
        reward, accuracy, export) reads the quality head alone."""
        if self.length_head is None:
            self.length_head = nn.Linear(self.head.in_features, self.n_members, bias=False)
            g, w = torch.Generator().manual_seed(seed + 1), self.length_head.weight
            with torch.no_grad():
                w.copy_(torch.randn(w.shape, generator=g) / self.head.in_features ** 0.5)
            self.length_head.to(self.head.weight.device)

    def add_length_term(self, value: float | list[float] = 0.0) -> None:
        """Per member, the coefficient of response length (per 100 characters) in the
        preferences fitted (`rlhf.preferences.losses.with_length_term`); readers ignore it."""
        if getattr(self, "length_coef", None) is None:
            v = torch.empty(self.n_members).copy_(torch.as_tensor(value).expand(self.n_members))
            self.length_coef = nn.Parameter(v.to(self.head.weight.device))

    @property
    def n_members(self) -> int:
        return self.head.out_features

    @property
    def centre(self) -> torch.Tensor:
        """What the score subtracts before dividing by `std`: `mean`, or 0 (scale-only)."""
        return self.mean if self.centred else torch.zeros_like(self.mean)

    def read(self, h: torch.Tensor, both: bool = False) -> torch.Tensor:
        """The heads on read-out features (B, dim) -> quality scores (B, E), or with `both`
        and a length head [quality | length] (B, 2E)."""
        h = h.to(self.head.weight.dtype)
        if both and self.length_head is not None:
            return torch.cat([self.head(h), self.length_head(h)], -1).float()  # (B, 2E)
        return self.head(h).float()  # (B, E)

    def forward(self, tokens: torch.Tensor | None, mask: torch.Tensor | None = None,
                packed: PackedPairs | None = None,
                pooled: torch.Tensor | None = None, both: bool = False) -> torch.Tensor:
        """Raw scores of every member at each row's last real token: (B, T) -> (B, E).
        These are the quality heads' scores; with `both` and a length head (`add_length_head`)
        the length heads' follow them: (B, 2E), as training reads them.

        A right-padded (or unpadded) batch runs on the causal fast path: under a causal mask a
        real token never sees the padding after it, and its position is its index, so the
        result equals the masked path. Any other padding goes through the masked path.
        With `packed` (from `pack_pairs`; tokens = packed.tokens): scores of all chosen
        sides, then all rejected sides (2B, E), the shared prompt run once per pair.
        An encoder pools its last hidden states over `mask` (any padding side).
        With `pooled` (B, dim) (tokens None): the heads on features already pooled
        (`pooled_features`, a frozen backbone's, computed once)."""
        if pooled is None and self.is_encoder:
            pooled = self.encoder_features(tokens, mask)  # (B, dim)
        if pooled is not None:
            return self.read(pooled, both)  # (B, E) or (B, 2E)
        if packed is not None:
            h = self.backbone.hidden(tokens, positions=packed.positions,
                                     attn_mask=packed.attn_mask)  # (B, T, dim)
            rows = torch.arange(h.shape[0], device=h.device)
            h_last = h[rows.repeat(2), packed.read_at.T.reshape(-1)]  # (2B, dim)
            return self.read(h_last, both)  # (2B, E) or (2B, 2E)
        if mask is None:
            last = torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
        else:
            last = last_index(mask)  # (B,)
            if is_right_padded(mask):
                tokens, mask = tokens[:, :int(last.max()) + 1], None
        h = self.backbone.hidden(tokens, mask)  # (B, T, dim)
        h_last = h[torch.arange(h.shape[0], device=h.device), last]  # (B, dim)
        return self.read(h_last, both)  # (B, E) or (B, 2E)

    def encoder_features(self, tokens: torch.Tensor, mask: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """An encoder's pooled last hidden states, what the heads read: (B, T) -> (B, dim)."""
        mask = torch.ones_like(tokens) if mask is None else mask
        seg = segment_ids(tokens, self.sep_id, self.pair_segment)  # (B, T)
        h = self.backbone.hidden(tokens, mask, seg)  # (B, T, dim)
        return self.backbone.pool(h, mask, self.pooling)  # (B, dim)

    def score(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised ensemble-mean reward (B,): (mean_e r_e - centre) / std."""
        return (self(tokens, mask).mean(-1) - self.centre) / self.std


def centrable(backbone) -> bool:
    """Whether a reward model on this backbone has a centred score (module docstring): an
    encoder, or a causal family whose export folds the constant in (`FOLD_INTO`)."""
    return isinstance(backbone, Encoder) or backbone.args.hf_type in FOLD_INTO


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token: mask (B, T) -> (B,). Works for any padding side."""
    T = mask.shape[1]
    return T - 1 - mask.flip(-1).long().argmax(-1)


def is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row is real tokens then padding (1...1 0...0), starting with a real one."""
    m = mask.bool()
    return bool(m[:, 0].all()) and bool((m[:, 1:] <= m[:, :-1]).all())


# ----------------------------------------------------------------------------- tokens


def _device(rm: nn.Module) -> torch.device:
    return next(rm.parameters()).device


def raw_scores(rm: RewardModel, seqs: list[list[int]], pad_id: int,
               batch_size: int = 32) -> torch.Tensor:
    """Members' raw scores of token lists (N, E), batched by similar length (less padding)."""
    return by_length(rm, seqs, pad_id, rm.n_members, _device(rm), batch_size)


def score_tokens(rm: RewardModel, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised reward of an already tokenised, padded batch (any padding side): (B,).
    For policy samples [prompt | response]: read at each row's last real token."""
    with torch.no_grad():
        return rm.score(tokens, mask)


def score_members(rm: RewardModel, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each member's normalised reward of a padded batch: (B, T) -> (B, E); their mean over
    members is `score_tokens` (the conservative reward and the disagreement signal use it)."""
    with torch.no_grad():
        return (rm(tokens, mask) - rm.centre) / rm.std


def score_texts(rm: RewardModel, tok, prompts: list[str], responses: list[str],
                batch_size: int = 32, max_len: int | None = None) -> torch.Tensor:
    """Normalised reward of each (prompt, response) text: (B,)."""
    max_len = max_len or rm.max_len
    seqs = [encode_pair_side(tok, p, r, max_len)[0] for p, r in zip(prompts, responses)]
    raw = raw_scores(rm, seqs, tok.pad_id, batch_size).mean(-1)  # (B,)
    return (raw - rm.centre.cpu()) / rm.std.cpu()


def disagreement(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Variance over ensemble members of P(a > b) = sigmoid(r_a - r_b) (Christiano et al.
    2017, section 2.2.4): raw scores (B, E) -> (B,). Zero for a single member."""
    return torch.sigmoid(r_a - r_b).var(-1, unbiased=False)


def rank_pairs(rm: RewardModel, tok, items, batch_size: int = 32) -> list[float]:
    """Informativeness of each unrated pair (objects with .prompt, .a, .b): the ensemble's
    disagreement about it, higher = more worth asking a rater about."""
    L = rm.max_len
    a = [encode_pair_side(tok, it.prompt, it.a, L)[0] for it in items]
    b = [encode_pair_side(tok, it.prompt, it.b, L)[0] for it in items]
    r = raw_scores(rm, a + b, tok.pad_id, batch_size)  # (2N, E)
    return disagreement(r[:len(items)], r[len(items):]).tolist()


# ----------------------------------------------------------------------------- files


def save_reward_model(rm: RewardModel, tok, path: str | Path, extra: dict | None = None,
                      write: bool = True) -> Path:
    """Write the reward model as an HF-style folder (see the module docstring); a causal one
    trained with LoRA also as peft's SEQ_CLS adapter in `adapter/` beside `path`
    (`rlhf.reward.adapter`, its base `extra["base_model"]`). FSDP-sharded: every rank calls
    this (the weights are gathered), rank 0 with `write`."""
    if dist.is_sharded(rm):  # back to its shards: after a forward pass the root's parameters
        rm.reshard()  # are views of a transient gathered buffer (read later: a segfault)
    length = rm.length_head
    meta = {"n_members": rm.n_members, "mean": float(rm.mean), "std": float(rm.std),
            "centred": rm.centred,
            "max_len": rm.max_len, "backbone": "encoder" if rm.is_encoder else "causal",
            "read_at": f"pooling {rm.pooling}" if rm.is_encoder else "last real token (EOS)",
            **({"pooling": rm.pooling} if rm.is_encoder else {}),
            **({"tie_log_nu": rm.log_nu.item()} if getattr(rm, "log_nu", None) is not None
               else {}), **({"length_head": True} if length is not None else {}),
            **({"length_coef": rm.length_coef.tolist()} if getattr(rm, "length_coef", None)
               is not None else {}),
            **(extra or {})}
    more = {} if length is None else {LENGTH_TENSOR: length.weight}
    if rm.is_encoder:
        return save_encoder(rm.backbone, tok, path,
                            extra_tensors={"reward_head.weight": rm.head.weight, **more},
                            extra_json={META_FILE: meta}, write=write)
    out = save_seq_cls(rm.backbone, tok, path, rm.head.weight, float(rm.mean),
                       float(rm.std), meta, write, more)
    if has_lora(rm.backbone):  # also peft's SEQ_CLS adapter, beside: `rlhf.reward.adapter`
        save_seq_cls_adapter(rm.backbone, tok, out, Path(path).parent / "adapter",
                             meta.get("base_model"), write)
    return out


def is_reward_model(path: str | Path) -> bool:
    """A folder the project wrote (reward_model.json), or a transformers
    sequence-classification folder."""
    return (Path(path) / META_FILE).is_file() or (is_seq_cls_folder(path)
                                                   and not is_encoder_folder(path))


def read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelConfigError(f"{path}: not readable JSON ({e})") from None


def load_reward_model(path: str | Path, device=None) -> tuple[RewardModel, object]:
    """A folder written by `save_reward_model`, or a transformers sequence-classification
    folder of a native family -> (reward model in eval mode, tokenizer: for the latter an
    `ExternalRule` that encodes as that model was trained)."""
    path = Path(path)
    if not is_reward_model(path):
        raise FileNotFoundError(f"{path}: not a reward model folder (no {META_FILE}, and no "
                                "config.json of a *ForSequenceClassification model)")
    meta = read_meta(path / META_FILE) if (path / META_FILE).is_file() else None
    if meta is not None and meta.get("backbone") == "encoder":
        enc, tok, own, _ = load_encoder(path, extra=("reward_head.weight", LENGTH_TENSOR))
        rm = RewardModel(enc, meta["n_members"], pooling=meta["pooling"], tok=tok)
        head = own["reward_head.weight"]
    else:
        backbone, tok, head, own = load_causal(path, meta)
        meta = meta or {"n_members": 1, "mean": 0.0, "std": 1.0}
        rm = RewardModel(backbone, meta["n_members"])
    if meta.get("length_head"):
        if own.get(LENGTH_TENSOR) is None or own[LENGTH_TENSOR].shape != head.shape:
            raise ModelConfigError(f"{path}: {META_FILE} says length_head, but "
                                   f"{LENGTH_TENSOR} is missing or not {list(head.shape)}")
        rm.add_length_head()
        with torch.no_grad():
            rm.length_head.weight.copy_(own[LENGTH_TENSOR])
    with torch.no_grad():
        rm.head.weight.copy_(head)
        rm.mean.fill_(meta["mean"])
        rm.std.fill_(meta["std"])
    rm.centred = meta.get("centred", True)  # (saved before scale-only scores: centred)
    rm.max_len = meta.get("max_len", rm.max_len)
    if "tie_log_nu" in meta:
        rm.add_tie_parameter(meta["tie_log_nu"])
    if "length_coef" in meta:
        if not (isinstance(c := meta["length_coef"], list) and len(c) == rm.n_members
                and all(isinstance(x, (int, float)) for x in c)):
            raise ModelConfigError(f"{path}: {META_FILE} length_coef: not {rm.n_members} numbers")
        rm.add_length_term(c)
    return rm.to(device or "cpu").eval(), tok


def init_reward_model(path: str | Path, n_members: int, seed: int = 0, pooling: str = "mean",
                      backbone: str = ""):
    """From a previous reward model (heads kept when E matches), else from `backbone` when
    given, else from `path` as a policy or encoder folder (fresh heads) -> (rm, tokenizer).
    A reward model named as `backbone` (e.g. a transformers sequence-classification folder)
    is started from with its heads; a one-member external model's head is copied into each
    of the E members (the starting reward is its score; bootstrap weights separate them)."""
    if not is_reward_model(path) and backbone and is_reward_model(backbone):
        path = backbone
    if is_reward_model(path):
        rm, tok = load_reward_model(path)
        if rm.n_members == n_members:
            return rm.train(), tok
        fresh = RewardModel(rm.backbone, n_members, seed, getattr(rm, "pooling", pooling), tok)
        if rm.n_members == 1 and isinstance(tok, ExternalRule):
            with torch.no_grad():
                fresh.head.weight.copy_(rm.head.weight.expand_as(fresh.head.weight))
        return fresh.train(), tok
    path = backbone or path
    if is_encoder_folder(path):
        enc, tok, _, _ = load_encoder(path)
        return RewardModel(enc, n_members, seed, pooling, tok).train(), tok
    backbone, tok = load_model(path)
    return RewardModel(backbone, n_members, seed).train(), tok


@torch.no_grad()
def set_statistics(rm: RewardModel, seqs: list[list[int]], pad_id: int,
                   batch_size: int = 32) -> tuple[float, float]:
    """Store mean and std of the ensemble-mean raw score over `seqs` (training responses), so
    that `score` has unit std on them, and 0 mean where it is centred (`centrable`; the
    statistics are new, so is the rule: a retrained old folder follows it). -> (mean, std)."""
    r = raw_scores(rm, seqs, pad_id, batch_size).mean(-1)  # (N,)
    mean, std = float(r.mean()), float(r.std()) if len(r) > 1 else 1.0
    rm.centred = centrable(rm.backbone)
    rm.mean.fill_(mean)
    rm.std.fill_(max(std, 1e-6))
    return mean, max(std, 1e-6)


def bootstrap_weights(n: int, n_members: int, seed: int) -> torch.Tensor:
    """Per-pair, per-member weights (n, E): member e's count of each pair in a bootstrap
    resample of the n pairs (n draws with replacement), as Christiano et al. 2017 train each
    predictor on a resample. A single member gets weight 1 everywhere (no resampling)."""
    if n_members == 1:
        return torch.ones(n, 1)
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n, (n_members, n), generator=g)  # (E, n)
    counts = torch.zeros(n_members, n).scatter_add_(1, draws, torch.ones(n_members, n))
    return counts.T.contiguous()  # (n, E)
