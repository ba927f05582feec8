"""What a judgement is and how it is kept (the records): every kind of answer (comparison,
ranking, rating, correction, note; `records`) and the questions that ask for them (`items`),
the crash-safe store, queues and `rlhf sample-pairs`, the training rows each kind gives
(`derive`), the formats of public preference sets and TRL's data sets in and out (`formats`,
`trl_formats`, `datafiles`, `export`), rater statistics and agreement (`rlhf stats`), and
`visible` for showing stored text safely. Who gives the judgements (people at a terminal or a
web page, simulated raters) lives in `rlhf.raters`.

May import: the top-level modules and `rlhf.lm` (pairs are sampled from a policy).
"""
