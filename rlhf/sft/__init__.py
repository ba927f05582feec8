"""Supervised fine-tuning (`rlhf train-sft`): the policy learns to write what people wrote.
Demonstrations (prompt-completion files, TRL's formats), conversations (the model's chat
template applied), plain text, or the corrections in a comparison store become token rows
(`rlhf.sft.data`); the loss is the mean negative log-likelihood of the completion tokens
(`rlhf.sft.losses.sft_loss`); `rlhf.sft.train` is the loop on the shared harness. It is the
initial training phase (before any feedback) and how a policy learns from corrections.

May import: the top-level modules, `rlhf.harness`, `rlhf.lm`, `rlhf.feedback` and
`rlhf.preferences` (its global batches and right-padding). Not `rlhf.reward` or `rlhf.dpo`.
"""
