"""Causal reward models as transformers `*ForSequenceClassification` folders, out and in.

Out (`save_seq_cls`, what `rlhf.reward.model.save_reward_model` writes for a causal backbone):
config.json of `<Family>ForSequenceClassification` (`ARCHS`) with one label (id2label
{"0": "LABEL_0"}, as transformers writes `num_labels=1`); model.safetensors with the
backbone under transformers' base-model prefix (`model.`, `transformer.`, `gpt_neox.`),
no LM head, and `score.weight` (1, dim) = mean_e(head_e) / std. transformers' logit is then
mean_e(head_e . h) / std, the project's score as it is defined for each family
(`rlhf.reward.model`, 'The score'):
- GPT-2 and GPT-NeoX: centred, (mean_e head_e . h - mean) / std = logit + o, o = -mean/std.
  The `score` layer has no bias (nor any config key that adds one), but the final LayerNorm
  has one, b: h = g * n + b, logit = s . h. With b' = b + o s / |s|^2 (`fold_offset`) the
  logit becomes s . h + o: the offset is folded in exactly. The folder holds b'; the heads
  file keeps b (`NORM_BIAS`), which the project puts back on loading, so every member
  scores as before.
- Llama, Mistral, Qwen2 and Qwen3: scale-only, mean_e(head_e . h) / std = the logit. Their
  final RMSNorm has no bias and every unit of h is g_j x_j / rms(x), unchanged when the
  residual x is scaled, so no unit is constant and no weight change makes s . h + o: a
  centred score could not be carried, so the project's score has no constant (the training
  mean stays in reward_model.json as a statistic, `centred` false).
`score_offset` is always what is left to add to the logit: 0 (up to the rounding of b' in
the weights' dtype) in both cases; -mean/std only for an RMSNorm folder saved centred (by an
earlier version, reloaded and saved again without new statistics).

The text. The project reads [BOS] + ids(prompt + response) + [EOS] at the EOS
(`rlhf.preferences.tokens.encode_pair_side`), so the exported tokenizer adds them itself
(`write_reward_tokenizer`): tokenizer.json's post-processor is [BOS] $A [EOS], and
tokenizer_config.json says add_bos_token / add_eos_token (transformers rebuilds the
post-processor from these where they are set), pads on the right, truncates on the left to
`max_len` (the project's truncation: BOS, EOS and the last tokens between them). A plain
`tokenizer(prompt + response)` is then the project's ids. (One text, not a pair: a pair
would get BOS/EOS twice.)

Where transformers reads a row: at the rightmost token whose id != config.pad_token_id (it
ignores the attention mask). The project reads at the EOS it appends, so the folder's
pad_token_id must not be EOS (GPT-2 and llama2.c pad with EOS): `export_pad_id` takes the
tokenizer's pad token where it differs from EOS, else its unk token, else the lowest id that
is no BOS/EOS; tokenizer_config.json gets it as `pad_token`, so AutoTokenizer pads with it.

The ensemble heads `reward_head.weight` (E, dim) are in their own file, reward_head.safetensors
(transformers reads model.safetensors only: no unexpected key), and reward_model.json keeps
the statistics, `score_offset`, `pad_token_id` and the text the model reads (`text`); so the
project reloads every member exactly as before. README.md is the model card
(`rlhf.lm.cards`): base model, data, method, settings and held-out metrics where the caller
recorded them in the meta, and how to score with transformers.

In (`read_seq_cls`): a folder of one of these classes that the project did not write (no
reward_model.json: `save_pretrained` of a transformers model, TRL's RewardTrainer output):
one member, head = score.weight, mean 0, std 1, loaded strictly (num_labels must be 1,
score.weight (1, dim) present, a `score.bias` refused (transformers' class has none and
would drop it), every other tensor used by the backbone). Its text rule (`ExternalRule`) is
the one TRL's RewardTrainer trains such models with (RewardBench scores them so too):
- the tokenizer has a chat template: the template applied to [user: prompt,
  assistant: response] (a chat prompt: its messages, then the response), no generation
  prompt, ids without added special tokens (the template writes them);
- else: the tokenizer's own encoding of prompt + response (BOS as its post-processor adds
  it), then EOS appended unless the ids already end with it (TRL appends `eos_token`);
then trailing pad_token_id tokens are dropped, as transformers skips them when it reads
(under causal attention the state it reads does not see them), so the project reads at the
last remaining token, where transformers reads. Too long: the tokenizer's prefix and the
last tokens are kept (the end, which holds the response, is read). Such a folder, trained
further and saved, keeps its tokenizer files as they came (its users append EOS as TRL
does); the offset is folded all the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlhf.harness.distributed import full_tensor
from rlhf.harness.state import replace_dir, staging_dir
from rlhf.lm.cards import card_from_meta, render_card
from rlhf.lm.folders import (
    load_hf,
    read_config,
    read_safetensors,
    write_generation_config,
    write_json_files,
    write_tokenizer,
)
from rlhf.lm.hf_config import ModelConfigError, hf_config
from rlhf.lm.hf_weights import WeightFiles, to_hf_state_dict
from rlhf.lm.lora import has_lora, merged_state_dict
from rlhf.prompts import ChatPrompt

ARCHS = {"llama": "LlamaForSequenceClassification",
         "mistral": "MistralForSequenceClassification",
         "qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification",
         "gpt2": "GPT2ForSequenceClassification",
         "gpt_neox": "GPTNeoXForSequenceClassification"}
HEADS_FILE = "reward_head.safetensors"
FOLD_INTO = {"gpt2": "transformer.ln_f.bias", "gpt_neox": "gpt_neox.final_layer_norm.bias"}
"""The final LayerNorm bias of the families whose offset is folded in (module docstring)."""
NORM_BIAS = "unfolded_norm.bias"
"""The heads file's copy of the backbone's own final-norm bias (before the fold)."""
PROJECT_TEXT = ("[bos_token_id] (none where it is null) + tokenizer(prompt + response, "
                "add_special_tokens=False).input_ids + [eos_token_id], which this folder's "
                "tokenizer(prompt + response) gives; longer than max_len: BOS, EOS and the "
                "last tokens between them, as its tokenizer(..., truncation=True) cuts")
EXTERNAL_TEXT = ("chat template of [user: prompt, assistant: response] (no generation "
                 "prompt) if the tokenizer has one, else tokenizer(prompt + response) + EOS "
                 "(unless already last); then trailing pad_token_id tokens dropped")


def export_pad_id(tok) -> int:
    """A pad id that is not EOS (see the module docstring): the tokenizer's pad, else unk,
    else the lowest id that is neither BOS nor EOS."""
    ends = {tok.eos_id, *getattr(tok, "eos_ids", [])}
    if tok.pad_id is not None and tok.pad_id not in ends:
        return tok.pad_id
    unk = getattr(tok, "unk_id", None)
    for cand in (unk, *range(len(ends) + 2)):
        if cand is not None and 0 <= cand < tok.vocab_size and cand not in ends | {tok.bos_id}:
            return cand
    raise ModelConfigError("no token id other than BOS/EOS to pad with")  # (a 2-token vocab)


def seq_cls_config(args, tok, pad_id) -> dict:
    """config.json of the family's sequence-classification class with one label."""
    cfg = hf_config(args, tok.bos_id, tok.eos_id, pad_id)
    cfg["architectures"] = [ARCHS[args.hf_type]]
    cfg.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    return cfg


def fold_offset(score: torch.Tensor, bias: torch.Tensor, offset: float
                ) -> tuple[torch.Tensor, float]:
    """Fold a constant into a linear read-out through the bias of the norm before it: the
    logit s . (g * n + b) becomes s . (g * n + b') = logit + offset with the least change,
    b' = b + offset * s / |s|^2. score: (1, dim), bias: (dim,) -> (b' in bias's dtype, what
    is left to add after rounding b' to that dtype: 0 in fp32 up to ~1e-7 * |offset|)."""
    s, b = score.double().reshape(-1), bias.double()
    norm2 = float(s @ s)
    if norm2 == 0.0:  # a zero head: the logit is 0 whatever b is; nothing to fold into
        return bias, offset
    folded = (b + offset * s / norm2).to(bias.dtype)
    return folded, offset - float(s @ (folded.double() - b))


def write_reward_tokenizer(folder: Path, tok, pad_id: int, max_len: int | None) -> None:
    """Make the folder's tokenizer give the project's reward text by itself (module
    docstring): tokenizer.json's post-processor [BOS] $A [EOS] (a ByteLevel step kept before
    it); tokenizer_config.json without add_bos_token / add_eos_token (where set, transformers
    rebuilds the post-processor from them and the special tokens it knows), with the pad
    token, right padding, left truncation at `max_len`."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    t = Tokenizer.from_file(str(path))
    bos, eos = (None if i is None or i < 0 else t.id_to_token(i) for i in (tok.bos_id,
                                                                           tok.eos_id))
    tj = json.loads(path.read_text())  # (a model without EOS, eos_id -1: none added)
    tj["post_processor"] = eos_template(tj.get("post_processor"), bos, tok.bos_id, eos,
                                        tok.eos_id)
    path.write_text(json.dumps(tj, ensure_ascii=False))
    cpath = folder / "tokenizer_config.json"
    cfg = json.loads(cpath.read_text()) if cpath.is_file() else {
        "tokenizer_class": "PreTrainedTokenizerFast"}  # (else AutoTokenizer goes by model_type)
    for key in ("add_bos_token", "add_eos_token"):
        cfg.pop(key, None)
    cfg.update(pad_token=t.id_to_token(pad_id), padding_side="right", truncation_side="left")
    if max_len:
        cfg["model_max_length"] = max_len
    cpath.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def eos_template(old: dict | None, bos: str | None, bos_id: int | None, eos: str | None,
                 eos_id: int) -> dict:
    """tokenizer.json's post-processor [BOS] $A [EOS] (pair: [BOS] $A $B [EOS]), after the
    ByteLevel steps of `old` (they fix offsets only, never ids)."""
    def seq(*names):
        return [{"SpecialToken": {"id": n, "type_id": 0}} if n in (bos, eos) else
                {"Sequence": {"id": n[1:], "type_id": int(n == "$B")}} for n in names if n]

    specials = {n: {"id": n, "ids": [i], "tokens": [n]} for n, i in ((bos, bos_id),
                                                                       (eos, eos_id)) if n}
    template = {"type": "TemplateProcessing", "single": seq(bos, "$A", eos),
                "pair": seq(bos, "$A", "$B", eos), "special_tokens": specials}
    steps = (old or {}).get("processors", [old]) if old else []
    keep = [p for p in steps if isinstance(p, dict) and p.get("type") == "ByteLevel"]
    return {"type": "Sequence", "processors": [*keep, template]} if keep else template


def save_seq_cls(backbone, tok, folder: str | Path, heads: torch.Tensor, mean: float,
                 std: float, meta: dict, write: bool = True,
                 more: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a causal reward model as a sequence-classification folder (module docstring).
    heads: (E, dim); `more`: other head tensors kept beside them in the heads file (a length
    head). FSDP-sharded: every rank calls this (gathered), rank 0 with `write`."""
    folder = Path(folder)
    sd = merged_state_dict(backbone) if has_lora(backbone) else backbone.state_dict()  # LoRA
    sd = {k: full_tensor(v).detach().cpu().contiguous() for k, v in sd.items()}
    heads = full_tensor(heads).detach().cpu().contiguous()
    tensors = to_hf_state_dict(backbone, sd, lm_head=False)
    tensors["score.weight"] = (heads.float().mean(0, keepdim=True) / std).to(heads.dtype)
    if not write:
        return folder
    external = isinstance(tok, ExternalRule)
    pad = tok.read_pad_id if external else export_pad_id(tok)
    more = {k: full_tensor(v).detach().cpu().contiguous() for k, v in (more or {}).items()}
    centred = meta.get("centred", True)
    offset = -mean / std if centred else 0.0
    fold = {"score_offset": offset}
    into = FOLD_INTO.get(backbone.args.hf_type)
    if into is not None and centred:
        more[NORM_BIAS] = tensors[into]
        tensors[into], fold["score_offset"] = fold_offset(tensors["score.weight"],
                                                          tensors[into], offset)
        fold.update(offset_folded_into=into, folded_offset=offset)
    tmp = staging_dir(folder)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    save_file({"reward_head.weight": heads, **more}, str(tmp / HEADS_FILE),
              metadata={"format": "pt"})
    cfg = seq_cls_config(backbone.args, tok, pad)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    write_generation_config(tok, tmp)
    write_tokenizer(tok, tmp)
    if not external:
        write_reward_tokenizer(tmp, tok, pad, meta.get("max_len"))
    meta = {**meta, **fold, "architecture": cfg["architectures"][0],
            "pad_token_id": pad, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
            "text_rule": "external" if external else "project",
            "text": EXTERNAL_TEXT if external else PROJECT_TEXT}
    write_json_files(tmp, {"reward_model.json": meta})
    (tmp / "README.md").write_text(render_card(reward_card(meta, tensors, tok)))
    replace_dir(tmp, folder)
    return folder


def reward_card(meta: dict, tensors: dict[str, torch.Tensor], tok) -> dict:
    """The model card (`rlhf.lm.cards`) of a causal reward folder: the caller's fields from
    `meta`, the facts of the weights, and how to score with transformers."""
    norm = "mean and std" if meta.get("centred", True) else "std (scale only)"
    card = card_from_meta(meta, f"reward model: {meta.get('n_members', 1)} linear head(s) "
                                f"on the backbone, their mean normalised by the training "
                                f"responses' {norm}")
    card.setdefault("title", "Reward model")
    card["model"] = {"architecture": meta["architecture"],
                     "parameters": sum(t.numel() for t in tensors.values()),
                     "vocabulary": tok.vocab_size, "read at": "the last non-pad token (EOS)"}
    offset = meta["score_offset"]
    add = f" {'+-'[offset < 0]} {abs(offset):.9g}" if abs(offset) > 1e-6 else ""
    text = ("tok(prompt + response, ...) adds BOS and EOS itself, as the project reads them"
            if meta["text_rule"] == "project" else f"the text rule: {meta['text']}")
    card["usage"] = f"""```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained(folder)
rm = AutoModelForSequenceClassification.from_pretrained(folder).eval()
batch = tok([prompt + response], padding=True, truncation=True, return_tensors="pt")
scores = rm(**batch).logits[:, 0]{add}  # = the project's scores
```

{text}.""" + (f""" The score layer of this family has no bias, so the
normalisation's constant ({offset:.9g}, `score_offset` in reward_model.json) is added by hand;
score differences need no offset.""" if add else "" if meta.get("centred", True) else f"""
The score is scale-only (this family's final RMSNorm can carry no constant): the training
responses average {meta['mean'] / meta['std']:.6g}, not 0 (`mean` / `std` in
reward_model.json); score differences are what a preference reads.""")
    return card


# ----------------------------------------------------------------------------- in


def is_seq_cls_folder(path: str | Path) -> bool:
    """config.json names a `*ForSequenceClassification` class."""
    p = Path(path) / "config.json"
    try:
        archs = json.loads(p.read_text()).get("architectures") if p.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    return isinstance(archs, list) and any(
        str(a).endswith("ForSequenceClassification") for a in archs)


def read_seq_cls(path: str | Path):
    """A sequence-classification folder of a native family, strictly -> (backbone, tokenizer,
    score.weight (1, dim), config pad_token_id or None). Refusals are one line
    (`ModelConfigError`)."""
    path = Path(path)
    where = str(path / "config.json")
    cfg = read_config(path)
    arch = (cfg.get("architectures") or [""])[0]
    if arch not in ARCHS.values():
        raise ModelConfigError(f"{where}: {arch} is not a supported reward model class "
                               f"(supported: {', '.join(ARCHS.values())})")
    n_labels = cfg.get("num_labels", len(cfg.get("id2label") or {}) or 2)
    if n_labels != 1:
        raise ModelConfigError(f"{where}: num_labels is {n_labels}; a reward model has one "
                               "output (num_labels 1): this is a classifier, not a reward model")
    files = WeightFiles(path)
    if "score.bias" in files.shapes:
        raise ModelConfigError(f"{where}: tensor score.bias: {arch} has no bias in its score "
                               "layer (transformers would drop it); remove it or fold it in")
    if "score.weight" not in files.shapes:
        raise ModelConfigError(f"{where}: tensor score.weight (the reward head) is missing "
                               "from the weights")
    backbone, tok = load_hf(path, hub_ok=False, lm_head=False,
                            extra=("score.weight", "reward_head.weight", NORM_BIAS))
    if files.shapes["score.weight"] != (1, backbone.args.dim):
        raise ModelConfigError(f"{where}: tensor score.weight has shape "
                               f"{list(files.shapes['score.weight'])}, expected "
                               f"[1, {backbone.args.dim}]")
    return backbone, tok, files.read("score.weight").float(), cfg.get("pad_token_id")


def load_causal(path: Path, meta: dict | None):
    """-> (backbone, tokenizer, heads (E, dim), the heads file's other tensors) of a causal
    reward folder: written by `save_seq_cls` (score.weight checked against the heads), the
    earlier *ForCausalLM layout, or (meta None) a transformers sequence-classification folder:
    one member, score.weight."""
    if not is_seq_cls_folder(path):
        backbone, tok = load_hf(path, hub_ok=False)
        return backbone, tok, read_safetensors(path)["reward_head.weight"], {}
    backbone, tok, score, pad = read_seq_cls(path)
    if meta is None:
        return backbone, ExternalRule(tok, pad), score, {}
    own = load_file(str(path / HEADS_FILE)) if (path / HEADS_FILE).is_file() else {}
    heads = own.pop("reward_head.weight", None)
    if heads is None or heads.shape != (meta["n_members"], backbone.args.dim):
        raise ModelConfigError(f"{path / HEADS_FILE}: reward_head.weight is missing or not "
                               f"[{meta['n_members']}, {backbone.args.dim}]")
    expect = (heads.float().mean(0, keepdim=True) / meta["std"]).to(heads.dtype).float()
    if (expect - score).abs().max() > 1e-6 * (1 + float(score.abs().max())):
        raise ModelConfigError(f"{path}: score.weight differs from the ensemble heads' mean / "
                               f"std (changed outside the project?); to use score.weight, "
                               f"remove reward_model.json and reward_head.safetensors")
    if meta.get("offset_folded_into"):  # the backbone's own final-norm bias, before the fold
        bias = own.pop(NORM_BIAS, None)
        if bias is None or bias.shape != backbone.norm.bias.shape:
            raise ModelConfigError(f"{path / HEADS_FILE}: {NORM_BIAS} is missing or not "
                                   f"[{backbone.args.dim}] (reward_model.json says the offset "
                                   f"is folded into {meta['offset_folded_into']})")
        with torch.no_grad():
            backbone.norm.bias.copy_(bias)
    return (backbone, ExternalRule(tok, pad) if meta.get("text_rule") == "external" else tok,
            heads, own)


class ExternalRule:
    """The tokenizer of a reward model trained outside the project, with its text rule
    (`encode_pair`, module docstring); every other attribute is the wrapped tokenizer's."""

    def __init__(self, tok, read_pad_id: int | None):
        self.tok, self.read_pad_id = tok, read_pad_id

    def __getattr__(self, name):
        if name == "tok":  # (not yet set: no recursion)
            raise AttributeError(name)
        return getattr(self.tok, name)

    def pair_ids(self, prompt, response: str) -> list[int]:
        """The ids of (prompt, response) before trailing pads are dropped and truncation."""
        tok = self.tok
        if tok.chat_template:
            msgs = (list(prompt.messages) if isinstance(prompt, ChatPrompt)
                    else [{"role": "user", "content": str(prompt)}])
            text = tok.render_chat(msgs + [{"role": "assistant", "content": response}],
                                   add_generation_prompt=False)
            return tok.encode(text, bos=False)
        ids = tok.encode(str(prompt) + response, bos=True)
        if tok.eos_id is not None and tok.eos_id >= 0 and ids[-1:] != [tok.eos_id]:
            ids.append(tok.eos_id)
        return ids

    def encode_pair(self, prompt, response: str, max_len: int) -> tuple[list[int], bool]:
        """-> (ids, truncated): `pair_ids`, trailing pad ids dropped, at most max_len."""
        ids = self.pair_ids(prompt, response)
        while len(ids) > 1 and ids[-1] == self.read_pad_id:
            ids.pop()
        truncated = len(ids) > max_len
        if truncated:
            prefix = getattr(self.tok, "prefix", [])
            keep = len(prefix) if ids[:len(prefix)] == prefix and len(prefix) < max_len else 0
            ids = ids[:keep] + ids[len(ids) - (max_len - keep):]
        return ids, truncated
