"""The policy stage: KL estimators, reward shaping and advantages (pure), policy-gradient losses
(pure), the table of algorithms, evaluation on fresh samples, `rlhf train-policy` and its typed
config.

May import: the top-level modules, `rlhf.lm`, `rlhf.feedback` (scorers) and `rlhf.reward`
(a reward model scores the samples).
"""
