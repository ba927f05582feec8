"""Who gives feedback: the rating session (`Session`: what to show next, recording an answer,
undo, progress), the terminal screen and `rlhf rate`, the web page and `rlhf serve`, and
simulated raters with the scorers they use as hidden gold (also the reward of `kind=scorer`
policies). What a judgement is and how it is kept lives in `rlhf.feedback`.

May import: the top-level modules, `rlhf.lm`, `rlhf.feedback`.
"""
