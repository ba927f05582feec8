"""rlhf: learning from human preferences, from the rater's prompt to the fine-tuned policy.

The packages follow the pipeline, and each imports only from those before it:

    config, runtime, prompts, optim, progress, distributed, state, runfolder   shared (top)
    lm        models, tokenizers, generation, log-probs, sampling
    feedback  pairs to rate, the rating session, the comparison store, simulated raters
    reward    the reward model: losses, data, training, evaluation
    policy    policy-gradient fine-tuning against a reward
    dpo       direct preference optimisation (no reward model)
    loop      the rounds of the whole cycle, and its report
    cli       the `rlhf` command

(tests/test_layout.py checks the order, and that no module imports inside a function to dodge
a cycle.)
"""

__version__ = "0.1.0"
