"""The language model: model families, tokenizers, model folders in and out, generation with a
KV cache, the one home of log-probs (`logprobs`), text-in/text-out sampling (`sampling`) and
`rlhf generate`.

May import: the top-level modules (config, runtime, distributed, state). Nothing else of rlhf.
"""
