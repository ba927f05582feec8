"""Causal reward models as transformers `*ForSequenceClassification` folders, out and in.

Out (`save_seq_cls`, what `rlhf.reward.model.save_reward_model` writes for a causal backbone):
config.json of `<Family>ForSequenceClassification` (`ARCHS`) with one label (id2label
{"0": "LABEL_0"}, as transformers writes `num_labels=1`); model.safetensors with the
backbone under transformers' base-model prefix (`model.`, `transformer.`, `gpt_neox.`),
no LM head, and `score.weight` (1, dim) = mean_e(head_e) / std. transformers' logit is then
mean_e(head_e . h) / std, and

    project score = (mean_e head_e . h - mean) / std = logit + score_offset,
    score_offset  = -mean / std   (reward_model.json).

The `score` layer of these six families has no bias, so the constant cannot be inside
transformers' output; pairwise differences (all a Bradley-Terry preference, a pairwise loss
or RewardBench's accuracy sees) are equal without it. An exact fold into the weights exists
only where the final norm has a bias (GPT-2 and GPT-NeoX LayerNorm), not for the RMSNorm
families, so none is made.

Where transformers reads a row: at the rightmost token whose id != config.pad_token_id (it
ignores the attention mask). The project reads at the EOS it appends, so the folder's
pad_token_id must not be EOS (GPT-2 and llama2.c pad with EOS): `export_pad_id` takes the
tokenizer's pad token where it differs from EOS, else its unk token, else the lowest id that
is no BOS/EOS; tokenizer_config.json gets it as `pad_token`, so AutoTokenizer pads with it.

The ensemble heads `reward_head.weight` (E, dim) are in their own file, reward_head.safetensors
(transformers reads model.safetensors only: no unexpected key), and reward_model.json keeps
the statistics, `score_offset`, `pad_token_id` and the text the model reads (`text`); so the
project reloads every member exactly as before.

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
last tokens are kept (the end, which holds the response, is read).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlhf.harness.distributed import full_tensor
from rlhf.harness.state import replace_dir, staging_dir
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
from rlhf.prompts import ChatPrompt

ARCHS = {"llama": "LlamaForSequenceClassification",
         "mistral": "MistralForSequenceClassification",
         "qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification",
         "gpt2": "GPT2ForSequenceClassification",
         "gpt_neox": "GPTNeoXForSequenceClassification"}
HEADS_FILE = "reward_head.safetensors"
PROJECT_TEXT = ("[bos_token_id] (none where it is null) + tokenizer(prompt + response, "
                "add_special_tokens=False).input_ids + [eos_token_id]; longer than max_len: "
                "BOS, EOS and the last tokens between them")
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


def _set_pad_token(folder: Path, pad_id: int) -> None:
    """tokenizer_config.json's pad_token = the token of pad_id (AutoTokenizer pads with it)."""
    from tokenizers import Tokenizer

    token = Tokenizer.from_file(str(folder / "tokenizer.json")).id_to_token(pad_id)
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {
        "tokenizer_class": "PreTrainedTokenizerFast"}  # (else AutoTokenizer goes by model_type)
    cfg["pad_token"] = token
    path.write_text(json.dumps(cfg, indent=2))


def save_seq_cls(backbone, tok, folder: str | Path, heads: torch.Tensor, mean: float,
                 std: float, meta: dict, write: bool = True) -> Path:
    """Write a causal reward model as a sequence-classification folder (module docstring).
    heads: (E, dim). FSDP-sharded: every rank calls this (gathered), rank 0 with `write`."""
    folder = Path(folder)
    sd = {k: full_tensor(v).detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    heads = full_tensor(heads).detach().cpu().contiguous()
    tensors = to_hf_state_dict(backbone, sd, lm_head=False)
    tensors["score.weight"] = (heads.float().mean(0, keepdim=True) / std).to(heads.dtype)
    if not write:
        return folder
    external = isinstance(tok, ExternalRule)
    pad = tok.read_pad_id if external else export_pad_id(tok)
    tmp = staging_dir(folder)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    save_file({"reward_head.weight": heads}, str(tmp / HEADS_FILE), metadata={"format": "pt"})
    cfg = seq_cls_config(backbone.args, tok, pad)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    write_generation_config(tok, tmp)
    write_tokenizer(tok, tmp)
    if not external:
        _set_pad_token(tmp, pad)
    meta = {**meta, "score_offset": -mean / std, "architecture": cfg["architectures"][0],
            "pad_token_id": pad, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
            "text_rule": "external" if external else "project",
            "text": EXTERNAL_TEXT if external else PROJECT_TEXT}
    write_json_files(tmp, {"reward_model.json": meta})
    replace_dir(tmp, folder)
    return folder


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
                            extra=("score.weight", "reward_head.weight"))
    if files.shapes["score.weight"] != (1, backbone.args.dim):
        raise ModelConfigError(f"{where}: tensor score.weight has shape "
                               f"{list(files.shapes['score.weight'])}, expected "
                               f"[1, {backbone.args.dim}]")
    return backbone, tok, files.read("score.weight").float(), cfg.get("pad_token_id")


def load_causal(path: Path, meta: dict | None):
    """-> (backbone, tokenizer, heads (E, dim)) of a causal reward folder: written by
    `save_seq_cls` (score.weight checked against the heads), the earlier *ForCausalLM layout,
    or (meta None) a transformers sequence-classification folder: one member, score.weight."""
    if not is_seq_cls_folder(path):
        backbone, tok = load_hf(path, hub_ok=False)
        return backbone, tok, read_safetensors(path)["reward_head.weight"]
    backbone, tok, score, pad = read_seq_cls(path)
    if meta is None:
        return backbone, ExternalRule(tok, pad), score
    heads = load_file(str(path / HEADS_FILE)).get("reward_head.weight") if (
        path / HEADS_FILE).is_file() else None
    if heads is None or heads.shape != (meta["n_members"], backbone.args.dim):
        raise ModelConfigError(f"{path / HEADS_FILE}: reward_head.weight is missing or not "
                               f"[{meta['n_members']}, {backbone.args.dim}]")
    expect = (heads.float().mean(0, keepdim=True) / meta["std"]).to(heads.dtype).float()
    if (expect - score).abs().max() > 1e-6 * (1 + float(score.abs().max())):
        raise ModelConfigError(f"{path}: score.weight differs from the ensemble heads' mean / "
                               f"std (changed outside the project?); to use score.weight, "
                               f"remove reward_model.json and reward_head.safetensors")
    return backbone, ExternalRule(tok, pad) if meta.get("text_rule") == "external" else tok, heads


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
