"""Active selection (`selection: disagreement`; Christiano et al. 2017): of the candidate pairs
sampled, the ones the reward-model ensemble disagrees on most are asked
(`rlhf.reward.model.rank_pairs` scores them). One rule for both loop modes: a lock-step
round's sample step (`rlhf.loop.steps.sample_step`, by the previous round's reward model) and
the async sampler's refill (`rlhf.loop.live`, by the newest round's)."""

from __future__ import annotations

from rlhf.feedback.items import Item
from rlhf.reward.model import rank_pairs


def most_disputed(items: list[Item], n: int, rm, tok) -> list[Item]:
    """The `n` items of `items` (pairs to compare) that the ensemble `rm` disagrees on most,
    the most disputed first; each marked `served_because='active'` with its score in
    `meta['disagreement']`."""
    scores = rank_pairs(rm, tok, items)
    order = sorted(range(len(items)), key=lambda i: -scores[i])[:n]
    chosen = [items[i] for i in order]
    for i, it in zip(order, chosen):
        it.served_because, it.meta["disagreement"] = "active", scores[i]
    return chosen
