"""The reward stage: the reward model (causal or encoder backbone, an ensemble of heads), its
folders in and out (transformers sequence-classification export), the frozen-encoder probe,
`rlhf train-reward` and `rlhf eval-reward`, and their typed config. Pair data, packing and the
preference losses are `rlhf.preferences`'; the run's bookkeeping is `rlhf.harness`'.

May import: the top-level modules, `rlhf.harness`, `rlhf.lm`, `rlhf.feedback` and
`rlhf.preferences`.
"""
