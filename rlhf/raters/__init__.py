"""Who gives feedback: the rating session (`Session`: what to show next, recording an answer,
undo, progress), the terminal screen and `rlhf rate`, the web page and `rlhf serve` (on a
growing queue: `web_live`), and simulated raters with the scorers they use as hidden gold
(also the reward of `kind=scorer` policies; `paced`: at a human pace, on the web page).
What a judgement is and how it is kept lives in `rlhf.feedback`.

May import: the top-level modules, `rlhf.lm`, `rlhf.feedback`.
"""
