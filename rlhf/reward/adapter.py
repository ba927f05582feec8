"""A causal reward model trained with LoRA, also as a peft adapter for sequence classification.

`rlhf.reward.model.save_reward_model` writes such a model merged (`rlhf.reward.seqcls`) and,
beside that folder, `adapter/` (`save_seq_cls_adapter`), peft's SEQ_CLS format as peft 0.21
writes it for `<Family>ForSequenceClassification`:
- adapter_config.json: peft_type LORA, task_type "SEQ_CLS", the adapters' r, lora_alpha,
  target_modules (`rlhf.lm.lora.adapter_config`), base_model_name_or_path the causal folder
  the reward model was trained from, and modules_to_save ["classifier", "score"] (what peft
  itself adds for SEQ_CLS), with the final LayerNorm first where the offset is folded;
- adapter_model.safetensors: `base_model.model.<HF layer>.lora_A.weight` / `.lora_B.weight`
  (the keys of the causal adapter: the backbone has the same module paths in both classes),
  `base_model.model.score.weight` (1, dim), and for GPT-2 / GPT-NeoX saved centred
  `base_model.model.transformer.ln_f.{weight,bias}` / `...gpt_neox.final_layer_norm.{...}`.
The score head and the final norm are copied from the merged folder's model.safetensors, so
they are its tensors bit for bit. The folded offset (`rlhf.reward.seqcls.fold_offset`) lives
in the final LayerNorm's bias, a base weight that no adapter changes: peft's modules_to_save
replaces the whole norm with the merged folder's (its weight is the base's, its bias b'), so
the base keeps its own. Llama-family reward models are scale-only: the score head alone.

So `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base,
num_labels=1, pad_token_id=...), adapter)` computes the merged folder's logit up to the
rounding of W + (alpha / r) B A, the project's score plus the merged folder's `score_offset`
(0 but for an RMSNorm folder saved centred by an earlier version). The tokenizer files are
the merged folder's (BOS and EOS added, the pad token that is not EOS), and the model card
gives the pad id to pass.

The base: `meta["base_model"]` (train-reward records model.backbone or model.init), an adapter
folder's own base where it is one (`rlhf.lm.folders.adapter_base`); a Hugging Face folder is
written as its absolute path, a name that is no path as it is (a Hub name). Where no base is
recorded, or it is no Hugging Face folder (a llama2.c checkpoint), the backbone with adapters
off is written beside as `base/` (a causal folder: transformers' class adds a fresh score
head, which the adapter's replaces).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rlhf.harness.state import replace_dir, staging_dir
from rlhf.lm.cards import render_card
from rlhf.lm.folders import adapter_base, save_model
from rlhf.lm.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_PREFIX,
    adapter_config,
    adapter_state_dict,
    adapters_off,
)
from rlhf.lm.model import Transformer

SEQ_CLS_SAVED = ["classifier", "score"]
"""What peft adds to modules_to_save for task_type SEQ_CLS (its heads' names)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def saved_modules(merged: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """-> (modules_to_save, their tensors under peft's keys) of the merged folder `merged`:
    the score head, and the final norm where reward_model.json says the offset is folded
    into its bias (module docstring)."""
    meta = json.loads((merged / "reward_model.json").read_text())
    into = meta.get("offset_folded_into")  # e.g. transformer.ln_f.bias, or absent
    norm = into.rpartition(".")[0] if into else None
    keys = ["score.weight"] + ([f"{norm}.weight", f"{norm}.bias"] if norm else [])
    with safe_open(str(merged / "model.safetensors"), "pt") as h:
        tensors = {PEFT_PREFIX + k: h.get_tensor(k).contiguous() for k in keys}
    return ([norm] if norm else []) + SEQ_CLS_SAVED, tensors


def resolve_base(backbone: Transformer, tok, base: str | None, folder: Path,
                 write: bool) -> str:
    """base_model_name_or_path for the adapter (module docstring: 'The base'); writes
    `base/` beside `folder` where the base is not a Hugging Face folder. Every FSDP rank calls
    this (save_model gathers), rank 0 with `write`."""
    p = Path(adapter_base(base)) if base else None
    if p is not None and p.is_dir() and (p / "config.json").is_file():
        return str(p.resolve())
    if p is not None and not p.exists() and not p.is_absolute():
        return str(base)  # a Hub name
    with adapters_off(backbone):
        save_model(backbone, tok, folder.parent / "base", write=write, card={
            "title": "base model (converted)", **({"base_model": str(base)} if base else {})})
    return str((folder.parent / "base").resolve())


def save_seq_cls_adapter(backbone: Transformer, tok, merged: str | Path, folder: str | Path,
                         base: str | None, write: bool = True) -> Path:
    """The LoRA backbone of the reward model saved merged in `merged` (by `save_seq_cls`) as
    a peft SEQ_CLS adapter folder `folder`, atomically (module docstring). FSDP-sharded:
    every rank calls this (the adapters are gathered), rank 0 with `write`."""
    merged, folder = Path(merged), Path(folder)
    lora = adapter_state_dict(backbone)  # base_model.model.<layer>.lora_{A,B}.weight
    base = resolve_base(backbone, tok, base, folder, write)
    if not write:
        return folder
    modules, whole = saved_modules(merged)
    cfg = adapter_config(backbone, base, task_type="SEQ_CLS", modules_to_save=modules)
    tmp = staging_dir(folder)
    save_file({**lora, **whole}, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2))
    for name in TOKENIZER_FILES:
        if (merged / name).is_file():
            shutil.copy(merged / name, tmp / name)
    pad = json.loads((merged / "config.json").read_text()).get("pad_token_id")
    meta = json.loads((merged / "reward_model.json").read_text())
    offset = meta.get("score_offset", 0.0)
    card = {"title": "LoRA adapter of a reward model (sequence classification)",
            "base_model": base, "data": meta.get("data"),
            "method": "LoRA (Hu et al. 2021) on the reward model's "
            "backbone, peft's SEQ_CLS adapter format; the merged model is the folder beside",
            "settings": {k: cfg[k] for k in ("r", "lora_alpha", "target_modules",
                                             "modules_to_save")},
            "model": {"adapter parameters": sum(t.numel() for t in lora.values()),
                      "pad_token_id": pad},
            "usage": USAGE.format(pad=pad, offset=f"{offset:.9g}")}
    (tmp / "README.md").write_text(render_card(card))
    replace_dir(tmp, folder)
    return folder


USAGE = """```python
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

base = AutoModelForSequenceClassification.from_pretrained(
    base_model_name_or_path, num_labels=1, pad_token_id={pad})  # adapter_config.json's
rm = PeftModel.from_pretrained(base, folder).eval()
tok = AutoTokenizer.from_pretrained(folder)  # the merged folder's tokenizer files
batch = tok([prompt + response], padding=True, truncation=True, return_tensors="pt")
logits = rm(**batch).logits[:, 0]  # = the merged folder's logits
```

The project's score is the logit plus the merged folder's `score_offset` ({offset}). Pass
`pad_token_id={pad}`: transformers reads each row at its last token that is not the pad."""
