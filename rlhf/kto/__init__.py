"""KTO: the policy learns from completions judged desirable or undesirable one at a time
(thumbs up/down, ratings above/below the middle of their scale, "both bad" comparisons), with
no pairs and no reward model (Ethayarajh et al. 2024). Unpaired rows as tokens, completion
log-probs, `rlhf train-kto` and its typed config. The loss itself is
`rlhf.preferences.losses.kto_loss`, beside the DPO losses.

May import: the top-level modules, `rlhf.harness`, `rlhf.lm`, `rlhf.feedback`,
`rlhf.preferences` (split, batches, losses). Not `rlhf.reward` or `rlhf.dpo`.
"""
