"""rlhf: learning from human preferences, from the rater's prompt to the fine-tuned policy.

The packages follow the pipeline, and each imports only from those before it:

    config, prompts  typed configs and their errors; prompt sets
    harness      what every trainer shares: the run folder, checkpoints, signals, progress,
                 metrics, seeds and devices, torchrun (DDP/FSDP), the optimiser
    lm           models, tokenizers, generation, log-probs, sampling
    feedback     the records of every kind (comparison, ranking, rating, correction, note), the
                 store, queues and sample-pairs, training rows from each kind, formats, stats
    raters       who rates: the rating session, terminal and web page, simulated raters
    preferences  pairs as training data: split, tokens, packing, batches; the preference losses
    reward       the reward model: training, evaluation, export
    policy       policy-gradient fine-tuning against a reward
    dpo          direct preference optimisation (no reward model)
    sft          supervised fine-tuning on demonstrations, corrections, text
    kto          KTO: the policy learns from unpaired thumbs up/down
    loop         the rounds of the whole cycle, and its report
    cli          the `rlhf` command

A new trainer is a package beside reward/dpo: its math as pure functions and one `train(cfg)`
that opens `rlhf.harness.run.training_run` and reads top to bottom. A new rater is a module of
`rlhf.raters` that writes records through `rlhf.feedback.store`.
(tests/test_layout.py checks the order, and that no module imports inside a function to dodge
a cycle.)
"""

__version__ = "0.1.0"
