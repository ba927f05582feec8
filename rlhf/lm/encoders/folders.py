"""Encoder folders in and out: `config.json` + `*.safetensors` + `tokenizer.json` as Hugging
Face writes them (BertModel / RobertaModel / DebertaV2Model, with or without the task prefix
'bert.' / 'roberta.' / 'deberta.').

Strict: every tensor of the file is loaded into the model, except (a) a pretraining head
(names under cls., lm_head., lm_predictions., mask_predictions.), which a reward model does
not use and which is reported in `Loaded.unused`, (b) the `position_ids` buffer (checked to be
0..n-1), and (c) DeBERTa-v3's `position_embeddings` when `position_biased_input` is false
(transformers ignores it too). Any other tensor, or a missing one, is refused with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file

from rlhf.config import UserError
from rlhf.harness.distributed import full_tensor
from rlhf.harness.state import replace_dir, staging_dir
from rlhf.lm.cards import card_from_meta, render_card
from rlhf.lm.encoders.config import FAMILIES, args_from_config
from rlhf.lm.encoders.model import Encoder, hf_names
from rlhf.lm.encoders.tokenizer import EncoderTokenizer
from rlhf.lm.folders import read_safetensors, write_json_files

PREFIXES = ("bert.", "roberta.", "deberta.")
HEADS = ("cls.", "lm_head.", "lm_predictions.", "mask_predictions.")


class Loaded(NamedTuple):
    encoder: Encoder
    tokenizer: EncoderTokenizer
    extra: dict[str, torch.Tensor]  # tensors named in `extra` (e.g. a reward head)
    unused: list[str]  # pretraining-head tensors left out


def is_encoder_folder(path: str | Path) -> bool:
    p = Path(path) / "config.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("model_type") in FAMILIES
    except (json.JSONDecodeError, AttributeError):
        return False


def load_encoder(path: str | Path, extra: tuple[str, ...] = ()) -> Loaded:
    """An encoder folder -> (Encoder in fp32, its tokenizer, the `extra` tensors, unused)."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    args = args_from_config(cfg, str(path / "config.json"))
    sd = read_safetensors(path)
    own = {k: sd.pop(k) for k in extra if k in sd}
    sd = {next((k[len(q):] for q in PREFIXES if k.startswith(q)), k): v for k, v in sd.items()}
    unused = sorted(k for k in sd if k.startswith(HEADS))
    pos_ids = sd.pop("embeddings.position_ids", None)
    if pos_ids is not None and not torch.equal(pos_ids.reshape(-1).long(),
                                               torch.arange(pos_ids.numel())):
        raise UserError(f"{path}: embeddings.position_ids is not 0..n-1; not supported")
    if args.family == "deberta-v2" and not args.absolute_positions:
        sd.pop("embeddings.position_embeddings.weight", None)
    names = hf_names(args, has_pooler="pooler.dense.weight" in sd)
    model = Encoder(args, pooler="pooler.dense.weight" in sd)
    left = set(sd) - set(names.values()) - set(unused)
    if left:
        raise UserError(f"{path}: tensors this encoder does not use: {', '.join(sorted(left)[:5])}"
                        f"{' ...' if len(left) > 5 else ''}")
    missing = [t for t in names.values() if t not in sd]
    if missing:
        raise UserError(f"{path}: missing tensors: {', '.join(missing[:5])}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ours, theirs in names.items():
            if params[ours].shape != sd[theirs].shape:
                raise UserError(f"{path}: {theirs} has shape {tuple(sd[theirs].shape)}, config "
                                f"says {tuple(params[ours].shape)}")
            params[ours].copy_(sd[theirs].float())
    model.hf_config = cfg
    return Loaded(model, EncoderTokenizer(path, args.pad_id), own, unused)


def save_encoder(model: Encoder, tok: EncoderTokenizer, folder: str | Path,
                 extra_tensors: dict[str, torch.Tensor] | None = None,
                 extra_json: dict[str, dict] | None = None, write: bool = True,
                 card: dict | None = None) -> Path:
    """Write the encoder as an HF folder (BertModel-style names, no prefix) atomically, with
    `extra_tensors` beside the weights, `extra_json` files beside them and README.md
    (`encoder_card`). FSDP: every rank calls this (weights gathered), rank 0 with `write`.

    Not a transformers `*ForSequenceClassification` folder: those classes read the [CLS]
    state through their own head (BERT: tanh pooler, then a linear layer; RoBERTa: dense,
    tanh, linear; DeBERTa-v2: ContextPooler, then linear), which matches the project's
    reward only for BERT/RoBERTa with pooling 'pooler' and DeBERTa with 'cls'; the default
    'mean' pooling has no such class. The encoder loads in `AutoModel` as it is."""
    folder = Path(folder)
    params = dict(model.named_parameters())
    tensors = {theirs: full_tensor(params[ours]).detach().cpu().float().contiguous()
               for ours, theirs in hf_names(model.args, model.pooler is not None).items()}
    tensors.update({k: full_tensor(v).detach().cpu().contiguous()
                    for k, v in (extra_tensors or {}).items()})
    if not write:
        return folder
    tmp = staging_dir(folder)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(model.hf_config, indent=2))
    shutil.copy(tok.path, tmp / "tokenizer.json")
    src_cfg = tok.path.parent / "tokenizer_config.json"
    if src_cfg.is_file():
        (tmp / "tokenizer_config.json").write_text(src_cfg.read_text())
    write_json_files(tmp, extra_json)
    (tmp / "README.md").write_text(render_card(encoder_card(
        model.hf_config, extra_json, card, sum(t.numel() for t in tensors.values()))))
    replace_dir(tmp, folder)
    return folder


def encoder_card(hf_config: dict, extra_json: dict[str, dict] | None, card: dict | None,
                 n_params: int) -> dict:
    """The model card (`rlhf.lm.cards`) of an encoder folder: the caller's `card`, else its
    meta JSON's fields (`card_from_meta`), and the facts of the weights."""
    meta = next(iter((extra_json or {}).values()), {})
    pooling = meta.get("pooling")
    out = card_from_meta(meta, f"reward model: linear head(s) on the encoder's {pooling} "
                               "pooling" if pooling else None)
    out.update({k: v for k, v in (card or {}).items() if v is not None})
    if pooling:
        out.setdefault("title", "Reward model")
    out.setdefault("model", {"architecture": (hf_config.get("architectures") or
                                              [hf_config.get("model_type")])[0],
                             "parameters": n_params,
                             "vocabulary": hf_config.get("vocab_size")})
    if pooling:
        out.setdefault("usage", "Score with the project: `rlhf.reward.model.load_reward_model("
                                "folder)`. The encoder reads the tokenizer's pair template "
                                "(prompt, response); the heads are `reward_head.weight` "
                                f"(members x hidden) on the {pooling} pooling; the score is "
                                "(their mean - `mean`) / `std` of reward_model.json.")
    return out
