"""Pretrained bidirectional encoders (BERT, RoBERTa, DeBERTa-v2/v3) read natively from Hugging
Face folders, for reward models that read (prompt, response) as a cross-encoder: the typed
architecture (`config`), the modules (`model`: BERT/RoBERTa; `deberta`: disentangled attention),
the backbone's own tokenizer with its special tokens and segment ids (`tokenizer`), and folders
in and out (`folders`).

May import: the top-level modules and `rlhf.lm.folders` (safetensors reading). Nothing else.
"""
