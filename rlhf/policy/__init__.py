"""The policy stage: KL estimators, reward shaping and advantages (pure), policy-gradient losses
(pure), the table of algorithms, evaluation on fresh samples, `rlhf train-policy` and its typed
config. The run's bookkeeping is `rlhf.harness`'.

May import: the top-level modules, `rlhf.harness`, `rlhf.lm`, `rlhf.feedback`, `rlhf.raters`
(scorers), `rlhf.preferences` and `rlhf.reward` (a reward model scores the samples).
"""
