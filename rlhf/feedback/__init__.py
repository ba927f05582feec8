"""What a judgement is and how it is kept (the records): the comparison record, the crash-safe
store, queues of pairs and `rlhf sample-pairs`, the import/export formats of public preference
sets, rater statistics (`rlhf stats`) and their intervals, and `visible` for showing stored
text safely. Who gives the judgements (people at a terminal or a web page, simulated raters)
lives in `rlhf.raters`.

May import: the top-level modules and `rlhf.lm` (pairs are sampled from a policy).
"""
