"""Direct preference optimisation: the policy learns from comparisons without a reward model
(DPO, Rafailov et al. 2023; IPO, Azar et al. 2023). Packed-pair log-probs and the cached
reference pass, the implicit reward beta * log(pi / pi_ref) (scored where a reward model is
read), `rlhf train-dpo` and its typed config, and its plots. The losses themselves are
`rlhf.preferences.losses.dpo_loss` / `ipo_loss`, beside the Bradley-Terry loss they reuse.

May import: the top-level modules, `rlhf.harness`, `rlhf.lm`, `rlhf.feedback` and
`rlhf.preferences` (pair data, packing, losses, pair metrics). Not `rlhf.reward`.
"""
