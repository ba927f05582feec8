"""rlhf: learning from human preferences, from the rater's prompt to the fine-tuned policy."""

__version__ = "0.1.0"
