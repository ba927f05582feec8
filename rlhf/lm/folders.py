"""Model folders in and out. No pickled code is ever loaded.

Model folders:
- llama2.c: `<name>.bin` (legacy version-0 checkpoint) + `tok*.bin` (format: ../shared/README.md)
- Hugging Face style: `config.json` + `*.safetensors` + `tokenizer.json` (Llama family).
  `save_model` writes this format, so a trained policy can be used by other tools.

Written folders are moved into place atomically (`rlhf.state.replace_dir`).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhf.distributed import full_tensor
from rlhf.lm.model import ModelArgs, Transformer
from rlhf.lm.tokenizer import HFTokenizer, Llama2cTokenizer, llama2c_to_tokenizer_json
from rlhf.state import replace_dir

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


def _permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Interleaved-pair rotary layout -> HF's rotate-half layout (as convert_llama_weights)."""
    d1, d2 = w.shape
    return w.view(n_heads, d1 // n_heads // 2, 2, d2).transpose(1, 2).reshape(d1, d2)


def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    d1, d2 = w.shape
    return w.view(n_heads, 2, d1 // n_heads // 2, d2).transpose(1, 2).reshape(d1, d2)


_HF_NAMES = {
    "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attention.wo": "self_attn.o_proj", "feed_forward.w2": "mlp.down_proj",
}


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameter names and layout -> HF `LlamaForCausalLM` names and layout
    (fused wqkv and w13 split; q and k rows permuted to HF's rotate-half rotary layout)."""
    a = model.args
    sd = {k: full_tensor(v).detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": sd["tok_embeddings.weight"].clone(),
           "model.norm.weight": sd["norm.weight"]}
    if not a.tie_embeddings:
        out["lm_head.weight"] = sd["output.weight"]
    q_rows, kv_rows = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
    for i in range(a.n_layers):
        p, hp = f"layers.{i}.", f"model.layers.{i}."
        for ours, theirs in _HF_NAMES.items():
            out[hp + theirs + ".weight"] = sd[p + ours + ".weight"]
        q, k, v = sd[p + "attention.wqkv.weight"].split([q_rows, kv_rows, kv_rows])
        out[hp + "self_attn.q_proj.weight"] = _permute(q, a.n_heads).contiguous()
        out[hp + "self_attn.k_proj.weight"] = _permute(k, a.n_kv_heads).contiguous()
        out[hp + "self_attn.v_proj.weight"] = v.contiguous()
        gate, up = sd[p + "feed_forward.w13.weight"].chunk(2)
        out[hp + "mlp.gate_proj.weight"] = gate.contiguous()
        out[hp + "mlp.up_proj.weight"] = up.contiguous()
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """HF `LlamaForCausalLM` names and layout -> ours (the inverse of `to_hf_state_dict`)."""
    out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"],
           "norm.weight": sd["model.norm.weight"]}
    out["output.weight"] = (out["tok_embeddings.weight"] if args.tie_embeddings
                            else sd["lm_head.weight"])
    for i in range(args.n_layers):
        p, hp = f"layers.{i}.", f"model.layers.{i}."
        for ours, theirs in _HF_NAMES.items():
            out[p + ours + ".weight"] = sd[hp + theirs + ".weight"]
        q = _unpermute(sd[hp + "self_attn.q_proj.weight"], args.n_heads)
        k = _unpermute(sd[hp + "self_attn.k_proj.weight"], args.n_kv_heads)
        out[p + "attention.wqkv.weight"] = torch.cat([q, k, sd[hp + "self_attn.v_proj.weight"]])
        out[p + "feed_forward.w13.weight"] = torch.cat([sd[hp + "mlp.gate_proj.weight"],
                                                        sd[hp + "mlp.up_proj.weight"]])
    return out


def hf_config(args: ModelArgs, bos_id: int = 1, eos_id: int = 2) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": args.dim, "intermediate_size": args.hidden_dim,
        "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads, "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_seq_len, "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta, "tie_word_embeddings": args.tie_embeddings,
        "hidden_act": "silu", "bos_token_id": bos_id, "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def args_from_hf_config(cfg: dict, where: str) -> ModelArgs:
    if cfg.get("model_type", "llama") not in ("llama", "mistral", "qwen2"):
        raise ValueError(f"{where}: model_type {cfg.get('model_type')!r} is not Llama-family")
    try:
        return ModelArgs(
            dim=cfg["hidden_size"], hidden_dim=cfg["intermediate_size"],
            n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
            n_kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            vocab_size=cfg["vocab_size"], max_seq_len=cfg.get("max_position_embeddings", 2048),
            norm_eps=cfg.get("rms_norm_eps", 1e-5), rope_theta=cfg.get("rope_theta", 10000.0),
            tie_embeddings=cfg.get("tie_word_embeddings", False))
    except KeyError as e:
        raise ValueError(f"{where}: missing key {e.args[0]!r}") from None


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def load_hf(folder: str | Path, hub_ok: bool = True) -> tuple[Transformer, HFTokenizer]:
    """An HF-style Llama folder -> (model in eval mode, tokenizer). A name that is not a local
    folder is fetched with `huggingface_hub` where the user has it (never in tests)."""
    folder = Path(folder)
    if not folder.is_dir() and hub_ok:
        folder = _from_hub(str(folder))
    cfg_path = folder / "config.json"
    args = args_from_hf_config(json.loads(cfg_path.read_text()), str(cfg_path))
    model = Transformer(args)
    sd = read_safetensors(folder)
    sd = {k.removeprefix("policy."): v for k, v in sd.items()}
    model.load_state_dict(from_hf_state_dict(sd, args), strict=True)
    return model.eval(), HFTokenizer(folder)


def _from_hub(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{name}: not a folder, and huggingface_hub is not installed "
                                "to fetch it from the Hub") from None
    return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors"]))


def load_model(path: str | Path):
    """Any supported model folder -> (model, tokenizer)."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        return load_hf(p)
    if p.is_file() or (p.is_dir() and any(p.glob("tok*.bin"))):
        return load_llama2c(p)
    if not p.exists() and "/" in str(path) and not str(path).startswith((".", "/")):
        return load_hf(p)  # "org/name": the Hub, where available
    raise FileNotFoundError(f"{p}: not a model folder (expected config.json + *.safetensors, "
                            f"or a llama2.c *.bin + tok*.bin). {SHARED_HINT}")


def save_model(model: Transformer, tokenizer, folder: str | Path,
               extra_tensors: dict[str, torch.Tensor] | None = None,
               extra_json: dict[str, dict] | None = None, write: bool = True) -> Path:
    """Write an HF-style folder atomically: config.json, model.safetensors, tokenizer.json.

    `extra_tensors` go into model.safetensors beside the weights (e.g. a reward head);
    `extra_json` maps file names to dicts written beside them (e.g. reward statistics).
    An FSDP-sharded model is gathered first: every rank calls this, rank 0 with `write`.
    """
    folder = Path(folder)
    tensors = to_hf_state_dict(model)
    tensors.update({k: full_tensor(v).detach().cpu().contiguous()
                    for k, v in (extra_tensors or {}).items()})
    if not write:
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    cfg = hf_config(model.args, tokenizer.bos_id, tokenizer.eos_id)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    if isinstance(tokenizer, Llama2cTokenizer):
        tj = llama2c_to_tokenizer_json(tokenizer)
        (tmp / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    else:
        shutil.copy(tokenizer.path, tmp / "tokenizer.json")
    (tmp / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "tokenizer_class": "LlamaTokenizerFast"}, indent=2))
    for name, obj in (extra_json or {}).items():
        (tmp / name).write_text(json.dumps(obj, indent=2))
    replace_dir(tmp, folder)
    return folder
