"""The cycle: `rlhf loop` (rounds of sample, rate, train the reward model or not, train the
policy by RL or DPO, evaluate; `cycle` the rounds, `steps` the five steps of both methods,
`models` the models kept in memory between steps, `folder` the run folder and its round
folders, `live` the async mode's page, sampler and cuts), its typed config (which nests each
stage's own config), and `rlhf report` (`live_stats`: the raters' time).

May import: everything below it (the top-level modules, harness, lm, feedback, raters,
preferences, reward, policy, dpo).
"""
