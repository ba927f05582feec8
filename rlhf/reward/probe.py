"""A linear probe on a frozen encoder (`model.train_backbone: false`): the heads are the only
weights that learn, so the backbone's pooled features of every training side are computed
once, in eval mode (no dropout), and the heads train on them for as many epochs as wanted at
the cost of a linear model. The same steps, losses and optimiser as fine-tuning
(`rlhf.reward.train.micro_batch_loss` reads `EncodedPairs.features` instead of running the
backbone); the scores equal the model's own on the same tokens in eval mode.
This is the set-up of a logistic-regression probe on frozen sentence features (Bradley-Terry
on a linear reward is logistic regression on the feature difference); Kumar et al. 2022
("Fine-Tuning can Distort Pretrained Features") find such probes more robust than
fine-tuning when data are few.
"""

from __future__ import annotations

import torch

from rlhf.preferences.data import EncodedPairs
from rlhf.preferences.tokens import by_length
from rlhf.reward.model import RewardModel


@torch.no_grad()
def pooled_features(rm: RewardModel, seqs: list[list[int]], pad_id: int,
                    batch_size: int = 32) -> torch.Tensor:
    """An encoder's pooled features of token lists (N, dim), in eval mode (no dropout),
    batched by similar length (less padding; pooling ignores padding)."""
    was_training = rm.training
    rm.eval()
    out = by_length(rm.encoder_features, seqs, pad_id, rm.backbone.args.dim,
                    rm.head.weight.device, batch_size)
    rm.train(was_training)
    return out


def cache_features(rm: RewardModel, data: EncodedPairs, pad_id: int,
                   batch_size: int = 32) -> EncodedPairs:
    """Store both sides' pooled features in `data.features` (N, 2, dim): [:, 0] chosen,
    [:, 1] rejected. Only for a frozen encoder (they would go stale as the backbone learns)."""
    if not rm.is_encoder or any(p.requires_grad for p in rm.backbone.parameters()):
        raise ValueError("cached features need a frozen encoder backbone")
    n = len(data)
    f = pooled_features(rm, data.chosen + data.rejected, pad_id, batch_size)  # (2N, dim)
    data.features = torch.stack([f[:n], f[n:]], 1)  # (N, 2, dim)
    return data
