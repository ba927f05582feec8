"""Human (and simulated) feedback: the comparison record, the crash-safe store, queues of pairs
and `rlhf sample-pairs`, the rating session with its terminal screen and `rlhf rate`,
simulated raters and the scorers they use as hidden gold, rater statistics, and the
import/export formats of public preference sets.

May import: the top-level modules and `rlhf.lm` (pairs are sampled from a policy).
"""
