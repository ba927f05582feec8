"""The reward stage: preference losses (pure), the reward model, comparison data as training
pairs, `rlhf train-reward` and `rlhf eval-reward`, and their typed config.

May import: the top-level modules, `rlhf.lm` and `rlhf.feedback`.
"""
