"""Model folders in and out. No pickled code is ever loaded.

Model folders:
- llama2.c: `<name>.bin` (legacy version-0 checkpoint) + `tok*.bin` (format: ../shared/README.md)
- Hugging Face style: `config.json` + `*.safetensors` + `tokenizer.json`, of the families
  `rlhf.lm.hf_config` lists (Llama, Mistral, Qwen2, Qwen3, GPT-2, GPT-NeoX), loaded strictly.
  `save_model` writes this format (with `generation_config.json`), so a trained policy loads in
  `transformers` with the same logits and token ids.
- peft LoRA adapter: `adapter_config.json` + `adapter_model.safetensors` (`rlhf.lm.lora`), on
  the base model its config names (`base_model_name_or_path`: a folder, absolute or relative
  to the working directory or to the adapter folder, or a Hub name). Loaded as the base with
  its adapters (`load_adapter_folder`); `save_adapter_folder` writes one. `save_model` of a
  LoRA model writes the merged weights (W + (alpha / r) B A): a plain folder.

Written folders are moved into place atomically (`rlhf.harness.state.replace_dir`).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhf.harness.distributed import full_tensor
from rlhf.harness.state import replace_dir, staging_dir
from rlhf.lm.cards import card_from_meta, render_card
from rlhf.lm.hf_backend import HFBackend, load_transformers
from rlhf.lm.hf_config import ModelConfigError, args_from_hf_config, hf_config
from rlhf.lm.hf_weights import load_weights, to_hf_state_dict
from rlhf.lm.lora import (
    adapter_config,
    adapter_state_dict,
    adapters_off,
    apply_lora,
    has_lora,
    is_adapter_folder,
    load_adapter,
    merged_state_dict,
    read_adapter_config,
    save_adapter,
)
from rlhf.lm.model import ModelArgs, Transformer
from rlhf.lm.tokenizer import HFTokenizer, Llama2cTokenizer, llama2c_to_tokenizer_json

SHARED_HINT = (
    "The shared files are expected at ../shared beside the project (see README). "
    "stories260K can be obtained from https://huggingface.co/karpathy/tinyllamas "
    "(stories260K/stories260K.bin and tok512.bin)."
)


# ----------------------------------------------------------------------------- llama2.c


def load_llama2c(path: str | Path) -> tuple[Transformer, Llama2cTokenizer]:
    """A llama2.c checkpoint folder (or .bin file) -> (model in eval mode, tokenizer)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    bins = [path] if path.is_file() else sorted(
        p for p in folder.glob("*.bin") if not p.name.startswith("tok"))
    toks = sorted(folder.glob("tok*.bin"))
    if not bins or not toks:
        raise FileNotFoundError(f"{folder}: no llama2.c checkpoint (*.bin) and tokenizer "
                                f"(tok*.bin) found. {SHARED_HINT}")
    data = bins[0].read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, max_len = struct.unpack_from("<7i", data, 0)
    args = ModelArgs(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=n_kv, vocab_size=abs(vocab), max_seq_len=max_len,
                     tie_embeddings=vocab > 0)
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    kv_dim = dim * n_kv // n_heads
    shapes = [
        ("tok_embeddings", (abs(vocab), dim)), ("rms_att", (n_layers, dim)),
        ("wq", (n_layers, dim, dim)), ("wk", (n_layers, kv_dim, dim)),
        ("wv", (n_layers, kv_dim, dim)), ("wo", (n_layers, dim, dim)),
        ("rms_ffn", (n_layers, dim)), ("w1", (n_layers, hidden, dim)),
        ("w2", (n_layers, dim, hidden)), ("w3", (n_layers, hidden, dim)),
        ("rms_final", (dim,)),
    ]
    needed = sum(int(np.prod(s)) for _, s in shapes)
    if floats.size < needed or min(dim, hidden, n_layers, n_heads, n_kv, max_len) <= 0:
        header = (dim, hidden, n_layers, n_heads, n_kv, vocab, max_len)
        raise ValueError(f"{bins[0]}: not a valid llama2.c checkpoint (header {header}; "
                         f"{floats.size} floats, {needed} needed)")
    arrays, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        arrays[name] = torch.from_numpy(floats[off:off + n].copy()).view(shape)
        off += n
    off += max_len * (dim // n_heads)  # two RoPE tables, recomputed instead
    model = Transformer(args)
    sd = {"tok_embeddings.weight": arrays["tok_embeddings"], "norm.weight": arrays["rms_final"]}
    for i in range(n_layers):
        p = f"layers.{i}."
        sd[p + "attention_norm.weight"] = arrays["rms_att"][i]
        sd[p + "ffn_norm.weight"] = arrays["rms_ffn"][i]
        sd[p + "attention.wqkv.weight"] = torch.cat([arrays[w][i] for w in ("wq", "wk", "wv")])
        sd[p + "attention.wo.weight"] = arrays["wo"][i]
        sd[p + "feed_forward.w13.weight"] = torch.cat([arrays["w1"][i], arrays["w3"][i]])
        sd[p + "feed_forward.w2.weight"] = arrays["w2"][i]
    if vocab < 0:
        sd["output.weight"] = torch.from_numpy(floats[off:off + abs(vocab) * dim].copy()
                                               ).view(abs(vocab), dim)
    else:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd, strict=True)
    return model.eval(), Llama2cTokenizer(toks[0])


# ----------------------------------------------------------------------------- HF folders


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelConfigError(f"{path}: not a readable JSON config ({e})") from None


def load_hf(folder: str | Path, hub_ok: bool = True, lm_head: bool = True,
            extra: tuple[str, ...] = ()) -> tuple[Transformer, HFTokenizer]:
    """An HF-style folder of a supported family -> (model in eval mode, tokenizer), strictly
    (`rlhf.lm.hf_config`, `rlhf.lm.hf_weights`). A name that is not a local folder is
    fetched with `huggingface_hub` where the user has it (never in tests). `lm_head` and
    `extra`: as `load_weights` (a sequence-classification folder: no head, `score.weight`)."""
    folder = Path(folder)
    if not folder.is_dir() and hub_ok:
        folder = _from_hub(str(folder))
    where = str(folder / "config.json")
    args = args_from_hf_config(read_config(folder), where)
    model = load_weights(args, folder, where, lm_head, extra)
    tok = HFTokenizer(folder)
    check_special_ids(tok, args.vocab_size, where)
    return model, tok


def check_special_ids(tok, vocab_size: int, where: str) -> None:
    """BOS, EOS and pad ids must index the model's embedding."""
    for name, ids in (("bos", [tok.bos_id]), ("eos", tok.eos_ids), ("pad", [tok.pad_id])):
        for i in ids:
            if i is not None and not 0 <= i < vocab_size:
                raise ModelConfigError(f"{where}: {name} id {i} is outside the vocabulary "
                                       f"(vocab_size {vocab_size}); fix {name}_token_id")


def _from_hub(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{name}: not a folder, and huggingface_hub is not installed "
                                "to fetch it from the Hub") from None
    return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors"]))


BACKENDS = ("native", "transformers")


def load_model(path: str | Path, backend: str = "native"):
    """Any supported model folder -> (model, tokenizer). `backend` "transformers": an HF
    folder of any causal-LM family through `AutoModelForCausalLM` (`rlhf.lm.hf_backend`)."""
    p = Path(path)
    if backend not in BACKENDS:
        raise ModelConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "transformers" and is_adapter_folder(p):
        raise ModelConfigError(f"{p}: a LoRA adapter folder is read by the native backend only "
                               "(backend: native), or merge it first")
    if backend == "transformers":
        if not p.is_dir() and "/" in str(path) and not str(path).startswith((".", "/")):
            p = _from_hub(str(path))
        return load_transformers(p), HFTokenizer(p)
    if p.is_dir() and (p / "config.json").is_file():
        return load_hf(p)
    if p.is_dir() and is_adapter_folder(p):
        return load_adapter_folder(p)
    if p.is_file() or (p.is_dir() and any(p.glob("tok*.bin"))):
        return load_llama2c(p)
    if not p.exists() and "/" in str(path) and not str(path).startswith((".", "/")):
        return load_hf(p)  # "org/name": the Hub, where available
    raise FileNotFoundError(f"{p}: not a model folder (expected config.json + *.safetensors, "
                            f"a llama2.c *.bin + tok*.bin, or a LoRA adapter_config.json + "
                            f"adapter_model.safetensors). {SHARED_HINT}")


def write_generation_config(tokenizer, folder: Path) -> None:
    """generation_config.json: the ids `generate` uses here (transformers' generate reads it)."""
    gen = {"bos_token_id": tokenizer.bos_id, "eos_token_id": list(tokenizer.eos_ids),
           "pad_token_id": tokenizer.pad_id}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))


METHODS = {"dpo.json": "DPO (direct preference optimisation)",
           "sft.json": "SFT (supervised fine-tuning)", "kto.json": "KTO (unpaired feedback)",
           "reward_model.json": "reward model"}
"""The method a policy folder's meta file names (its model card's default `method`)."""


def policy_card(model_cfg: dict, extra_json: dict[str, dict] | None, card: dict | None,
                n_params: int) -> dict:
    """The model card (`rlhf.lm.cards`) of a causal LM folder: the caller's `card`, else what
    its meta JSON records (`card_from_meta`), and the facts of the weights."""
    name, meta = next(iter((extra_json or {}).items()), (None, {}))
    out = card_from_meta(meta, METHODS.get(name))
    out.update({k: v for k, v in (card or {}).items() if v is not None})
    out.setdefault("model", {"architecture": (model_cfg.get("architectures") or ["?"])[0],
                             "parameters": n_params,
                             "vocabulary": model_cfg.get("vocab_size")})
    out.setdefault("usage", USAGE)
    return out


USAGE = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
ids = tok("Once upon a time", return_tensors="pt").input_ids
print(tok.decode(model.generate(ids, max_new_tokens=20)[0], skip_special_tokens=True))
```"""


def _save_transformers(model, tokenizer, folder: Path, extra_json, write: bool,
                       card: dict | None = None) -> Path:
    """A transformers-backend model: its own save_pretrained of the gathered weights (under
    FSDP every rank takes part in the gathering), then our tokenizer files."""
    sd = {k: full_tensor(v).detach().cpu().contiguous() for k, v in model.hf.state_dict().items()}
    if not write:
        return folder
    tmp = staging_dir(folder)
    model.hf.save_pretrained(tmp, state_dict=sd)
    write_generation_config(tokenizer, tmp)
    write_tokenizer(tokenizer, tmp)
    write_json_files(tmp, extra_json)
    (tmp / "README.md").write_text(render_card(policy_card(
        read_config(tmp), extra_json, card, sum(v.numel() for v in sd.values()))))
    replace_dir(tmp, folder)
    return folder


def write_json_files(folder: Path, files: dict[str, dict] | None) -> None:
    """Each {file name: object} as an indented JSON file in `folder` (a model folder's extras,
    e.g. reward statistics)."""
    for name, obj in (files or {}).items():
        (folder / name).write_text(json.dumps(obj, indent=2))


def write_tokenizer(tokenizer, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json: a llama2.c vocabulary converted (BOS added by
    its post-processor, as the project adds it), an HF tokenizer's own files copied."""
    if isinstance(tokenizer, Llama2cTokenizer):
        tj = llama2c_to_tokenizer_json(tokenizer)
        (folder / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
             "add_bos_token": True, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
        return
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer.folder / name).is_file():
            shutil.copy(tokenizer.folder / name, folder / name)


def save_model(model: Transformer, tokenizer, folder: str | Path,
               extra_tensors: dict[str, torch.Tensor] | None = None,
               extra_json: dict[str, dict] | None = None, write: bool = True,
               card: dict | None = None) -> Path:
    """Write an HF-style folder atomically: config.json, model.safetensors, tokenizer.json,
    README.md (the model card, `policy_card`: `card` is the caller's summary, see
    `rlhf.lm.cards`).

    `extra_tensors` go into model.safetensors beside the weights (e.g. a reward head);
    `extra_json` maps file names to dicts written beside them (e.g. reward statistics).
    An FSDP-sharded model is gathered first: every rank calls this, rank 0 with `write`.
    A model with LoRA adapters is written merged (`rlhf.lm.lora.merged_state_dict`; under
    `adapters_off`: its base).
    """
    folder = Path(folder)
    if isinstance(model, HFBackend):
        return _save_transformers(model, tokenizer, folder, extra_json, write, card)
    sd = merged_state_dict(model) if has_lora(model) else model.state_dict()  # W + s B A
    sd = {k: full_tensor(v).detach().cpu().contiguous() for k, v in sd.items()}
    tensors = to_hf_state_dict(model, sd)
    tensors.update({k: full_tensor(v).detach().cpu().contiguous()
                    for k, v in (extra_tensors or {}).items()})
    if not write:
        return folder
    tmp = staging_dir(folder)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    cfg = hf_config(model.args, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    write_generation_config(tokenizer, tmp)
    write_tokenizer(tokenizer, tmp)
    write_json_files(tmp, extra_json)
    (tmp / "README.md").write_text(render_card(policy_card(
        cfg, extra_json, card, sum(v.numel() for v in tensors.values()))))
    replace_dir(tmp, folder)
    return folder


# ----------------------------------------------------------------------------- LoRA adapters


def base_path(base: str, folder: Path) -> Path:
    """Where an adapter's base_model_name_or_path points: a path as given (absolute, or
    relative to the working directory), else relative to the adapter folder, else the name
    itself (a Hub name, fetched where huggingface_hub is)."""
    p = Path(base)
    if p.exists() or p.is_absolute():
        return p
    return folder / p if (folder / p).exists() else p


def load_adapter_folder(folder: str | Path) -> tuple[Transformer, object]:
    """A peft LoRA adapter folder -> (its base model with the adapters on, in eval mode;
    the tokenizer: the folder's own tokenizer.json where it has one, else the base's)."""
    folder = Path(folder)
    cfg, base = read_adapter_config(folder)
    where = base_path(base, folder)
    if (where / "adapter_config.json").is_file() and not (where / "config.json").is_file():
        raise ModelConfigError(f"{folder}: its base {base} is itself an adapter folder; "
                               "merge that one first")
    model, tok = load_model(where)
    apply_lora(model, cfg)
    load_adapter(model, folder)
    if (folder / "tokenizer.json").is_file():
        tok = HFTokenizer(folder)
        check_special_ids(tok, model.args.vocab_size, str(folder / "tokenizer.json"))
    return model.eval(), tok


def adapter_base(init: str) -> str:
    """The base model of an adapter trained from `init`: init's own base when init is an
    adapter folder (its training continued), else init itself."""
    if is_adapter_folder(init) and not (Path(init) / "config.json").is_file():
        base = read_adapter_config(init)[1]
        return str(base_path(base, Path(init)))
    return init


def save_adapter_folder(model: Transformer, tokenizer, folder: str | Path, init: str,
                        extra_json: dict[str, dict] | None = None, write: bool = True) -> Path:
    """The adapters of a LoRA model as a peft adapter folder, atomically: adapter_config.json
    (base_model_name_or_path: the absolute path of the base folder, or its Hub name),
    adapter_model.safetensors, the tokenizer, `extra_json` and a model card. A base that is
    not a Hugging Face folder (a llama2.c checkpoint) is written beside as `base/` (the
    adapters off), so peft and transformers can load it."""
    folder = Path(folder)
    base = adapter_base(init)
    p = Path(base)
    if p.is_dir() and (p / "config.json").is_file():
        base = str(p.resolve())
    elif p.exists():  # llama2.c: transformers cannot read it; write the base beside
        with adapters_off(model):
            save_model(model, tokenizer, folder.parent / "base", write=write, card={
                "title": "base model (converted)", "base_model": str(p.resolve())})
        base = str((folder.parent / "base").resolve())
    if not write:
        return folder
    tmp = staging_dir(folder)
    save_adapter(model, tmp, base)
    write_tokenizer(tokenizer, tmp)
    write_json_files(tmp, extra_json)
    cfg = adapter_config(model, base)
    card = {"title": "LoRA adapter", "base_model": base, "method": "LoRA (Hu et al. 2021), "
            "peft's adapter format", "settings": {k: cfg[k] for k in (
                "r", "lora_alpha", "lora_dropout", "target_modules")},
            "model": {"adapter parameters": sum(
                t.numel() for t in adapter_state_dict(model).values())},
            "usage": ADAPTER_USAGE}
    (tmp / "README.md").write_text(render_card(policy_card({}, extra_json, card, 0)))
    replace_dir(tmp, folder)
    return folder


ADAPTER_USAGE = """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained(base_model_name_or_path)  # adapter_config.json's
model = PeftModel.from_pretrained(base, folder)
tok = AutoTokenizer.from_pretrained(folder)
```"""
