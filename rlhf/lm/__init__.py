"""The language model: model families (`model`: Llama and its variants Mistral, Qwen2, Qwen3;
`gpt2`; `gpt_neox`), the strict Hugging Face loader (`hf_config`: config.json checked and
mapped; `hf_weights`: every tensor used or named), the `transformers` fallback (`hf_backend`),
tokenizers with their chat templates, model folders in and out, generation with a KV cache,
the one home of log-probs (`logprobs`), text-in/text-out sampling (`sampling`) and
`rlhf generate`.

May import: the top-level modules (config, prompts) and `rlhf.harness` (runtime,
distributed, state). Nothing else of rlhf.
"""
