"""Preference pairs as training data, below every stage that learns from them (reward models,
DPO, and the next ones): reading comparisons into pairs, the split by prompt, tokenisation with
the shared prompt, packing of chosen and rejected into one row, length-batched global batches
(`data`, `tokens`); the preference losses as pure functions (`losses`: Bradley-Terry with ties
and margins, Davidson's tie model, DPO, IPO); what a scorer of pairs gets right (`metrics`),
with 95% intervals by the bootstrap over prompts (`bootstrap`) and what it learned beyond
length (`length`); and the shared config sections (`config`).

May import: the top-level modules, `rlhf.harness`, `rlhf.feedback` (the records).
"""
