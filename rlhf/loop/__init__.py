"""The cycle: `rlhf loop` (rounds of sample, rate, train reward, train policy, evaluate), its
typed config (which nests each stage's own config), and `rlhf report`.

May import: everything below it (the top-level modules, lm, feedback, reward, policy).
"""
