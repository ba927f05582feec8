"""Hugging Face weight names and layouts <-> the project's models, strictly.

One table per family (`layout(args)`) lists, for every parameter of our model, the Hugging
Face tensors it is made of and the two conversions (theirs -> ours on load, ours -> theirs on
save), so loading and saving cannot drift apart. Loading (`load_weights`) reads only the
safetensors headers first: the model's parameter count is bounded by the files' before
anything is allocated, and every tensor's shape is checked against the table; then each
tensor is read once. A tensor of the files that no entry uses, or one that is missing, fails
the load with its name (`ModelConfigError`).

Layouts: our attention keeps q, k, v in one fused matrix (all q heads, then k, then v) and
rotates interleaved pairs (2i, 2i+1) (llama2.c / Meta); Hugging Face's Llama family keeps
separate q/k/v and rotates halves (i, i + R/2), so q and k rows (and their biases and Qwen3's
q/k norm weights) are permuted within each head (`rotary_perm`, as convert_llama_weights);
GPT-2 stores Conv1D weights transposed; GPT-NeoX fuses q, k, v per head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from rlhf.lm.gpt2 import GPT2
from rlhf.lm.gpt_neox import GPTNeoX
from rlhf.lm.hf_config import ModelConfigError
from rlhf.lm.model import ModelArgs, Transformer

MODELS = {"llama": Transformer, "gpt2": GPT2, "gpt_neox": GPTNeoX}
# Tensors other parts of the project store beside the weights and read themselves.
EXTRA_TENSORS = ("reward_head.weight", "length_head.weight")  # a reward model's heads
# Constant buffers older checkpoints saved (causal masks, rotary tables): recomputed here.
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias",
                   ".attention.masked_bias", ".rotary_emb.inv_freq")


def build_model(args: ModelArgs) -> Transformer:
    return MODELS[args.family](args)


@dataclass
class Entry:
    ours: str  # our parameter name
    theirs: list[str]  # the Hugging Face tensors it is made of
    load: Callable = lambda ts: ts[0]  # list of theirs -> ours
    save: Callable = lambda t: [t]  # ours -> list of theirs


def rotary_perm(head_dim: int, rotary_dim: int) -> torch.Tensor:
    """Row order within a head: ours[j] = theirs[perm[j]]; pair (2i, 2i+1) <- (i, i + R/2)."""
    half = rotary_dim // 2
    perm = torch.arange(head_dim)
    perm[:rotary_dim] = torch.stack([torch.arange(half), torch.arange(half) + half], 1).flatten()
    return perm


def _rows(t: torch.Tensor, n_heads: int, order: torch.Tensor) -> torch.Tensor:
    """Reorder the rows of each of n_heads heads of t (n_heads * D, ...) or (n_heads * D,)."""
    shape = t.shape
    return t.reshape(n_heads, -1, *shape[1:])[:, order].reshape(shape).contiguous()


def _fused(a: ModelArgs, theirs: list[str]) -> Entry:
    """Our fused wqkv from separate q, k, v (Llama family); q, k rows permuted."""
    perm = rotary_perm(a.head_dim, a.rotary_dim)
    inv = torch.argsort(perm)
    H, Hkv, D = a.n_heads, a.n_kv_heads, a.head_dim

    def load(ts):
        q, k, v = ts
        return torch.cat([_rows(q, H, perm), _rows(k, Hkv, perm), v])

    def save(t):
        q, k, v = t.split([H * D, Hkv * D, Hkv * D])
        return [_rows(q, H, inv), _rows(k, Hkv, inv), v.contiguous()]
    return Entry("", theirs, load, save)


def _pair(theirs: list[str]) -> Entry:
    """Our fused w13 from gate and up."""
    return Entry("", theirs, lambda ts: torch.cat(ts), lambda t: list(t.chunk(2)))


def _llama_layer(a: ModelArgs, i: int) -> list[Entry]:
    p, hp = f"layers.{i}.", f"model.layers.{i}."
    out = [Entry(p + "attention_norm.weight", [hp + "input_layernorm.weight"]),
           Entry(p + "ffn_norm.weight", [hp + "post_attention_layernorm.weight"])]
    kinds = ["weight"] + (["bias"] if a.qkv_bias else [])
    for kind in kinds:
        e = _fused(a, [hp + f"self_attn.{x}_proj.{kind}" for x in "qkv"])
        e.ours = p + f"attention.wqkv.{kind}"
        out.append(e)
    for kind in ["weight"] + (["bias"] if a.o_bias else []):
        out.append(Entry(p + f"attention.wo.{kind}", [hp + f"self_attn.o_proj.{kind}"]))
    if a.qk_norm:
        perm = rotary_perm(a.head_dim, a.rotary_dim)
        inv = torch.argsort(perm)
        for x in "qk":
            out.append(Entry(p + f"attention.{x}_norm.weight", [hp + f"self_attn.{x}_norm.weight"],
                             lambda ts, o=perm: ts[0][o], lambda t, o=inv: [t[o].contiguous()]))
    for kind in ["weight"] + (["bias"] if a.mlp_bias else []):
        e = _pair([hp + f"mlp.gate_proj.{kind}", hp + f"mlp.up_proj.{kind}"])
        e.ours = p + f"feed_forward.w13.{kind}"
        out += [e, Entry(p + f"feed_forward.w2.{kind}", [hp + f"mlp.down_proj.{kind}"])]
    return out


def _t(ours: str, theirs: str) -> Entry:
    """A GPT-2 Conv1D weight: stored (in, out), ours (out, in)."""
    return Entry(ours, [theirs], lambda ts: ts[0].t().contiguous(),
                 lambda t: [t.t().contiguous()])


def _gpt2_layer(a: ModelArgs, i: int) -> list[Entry]:
    p, hp = f"layers.{i}.", f"transformer.h.{i}."
    out = []
    for ours, theirs in (("attention_norm", "ln_1"), ("ffn_norm", "ln_2")):
        out += [Entry(p + f"{ours}.{k}", [hp + f"{theirs}.{k}"]) for k in ("weight", "bias")]
    for ours, theirs in (("attention.wqkv", "attn.c_attn"), ("attention.wo", "attn.c_proj"),
                         ("feed_forward.w1", "mlp.c_fc"), ("feed_forward.w2", "mlp.c_proj")):
        out += [_t(p + ours + ".weight", hp + theirs + ".weight"),
                Entry(p + ours + ".bias", [hp + theirs + ".bias"])]
    return out


def _neox_qkv(a: ModelArgs, kind: str, name: str, ours: str) -> Entry:
    """GPT-NeoX's per-head [q, k, v] rows -> our [all q, all k, all v]; rotary rows permuted."""
    H, D = a.n_heads, a.head_dim
    perm = rotary_perm(D, a.rotary_dim)
    inv = torch.argsort(perm)

    def load(ts):
        t = ts[0].reshape(H, 3, D, *ts[0].shape[1:])
        q, k, v = (t[:, j].reshape(H * D, *ts[0].shape[1:]) for j in range(3))
        return torch.cat([_rows(q, H, perm), _rows(k, H, perm), v])

    def save(t):
        q, k, v = t.split(H * D)
        parts = [_rows(q, H, inv), _rows(k, H, inv), v]
        stacked = torch.stack([x.reshape(H, D, *t.shape[1:]) for x in parts], 1)
        return [stacked.reshape(t.shape).contiguous()]
    return Entry(ours, [name], load, save)


def _neox_layer(a: ModelArgs, i: int) -> list[Entry]:
    p, hp = f"layers.{i}.", f"gpt_neox.layers.{i}."
    out = []
    for ours, theirs in (("attention_norm", "input_layernorm"),
                         ("ffn_norm", "post_attention_layernorm"),
                         ("feed_forward.w1", "mlp.dense_h_to_4h"),
                         ("feed_forward.w2", "mlp.dense_4h_to_h")):
        out += [Entry(p + f"{ours}.{k}", [hp + f"{theirs}.{k}"]) for k in ("weight", "bias")]
    for k in ["weight"] + (["bias"] if a.qkv_bias else []):
        out.append(_neox_qkv(a, k, hp + f"attention.query_key_value.{k}",
                             p + f"attention.wqkv.{k}"))
        out.append(Entry(p + f"attention.wo.{k}", [hp + f"attention.dense.{k}"]))
    return out


def layout(a: ModelArgs, lm_head: bool = True) -> list[Entry]:
    """Every parameter of our model and the Hugging Face tensors it comes from; without the
    LM head (`lm_head=False`: a `*ForSequenceClassification` folder has none)."""
    if a.family == "gpt2":
        top = [Entry("tok_embeddings.weight", ["transformer.wte.weight"]),
               Entry("pos_embeddings.weight", ["transformer.wpe.weight"]),
               Entry("norm.weight", ["transformer.ln_f.weight"]),
               Entry("norm.bias", ["transformer.ln_f.bias"])]
        layer, head = _gpt2_layer, "lm_head.weight"
    elif a.family == "gpt_neox":
        top = [Entry("tok_embeddings.weight", ["gpt_neox.embed_in.weight"]),
               Entry("norm.weight", ["gpt_neox.final_layer_norm.weight"]),
               Entry("norm.bias", ["gpt_neox.final_layer_norm.bias"])]
        layer, head = _neox_layer, "embed_out.weight"
    else:
        top = [Entry("tok_embeddings.weight", ["model.embed_tokens.weight"]),
               Entry("norm.weight", ["model.norm.weight"])]
        layer, head = _llama_layer, "lm_head.weight"
    if lm_head and not a.tie_embeddings:
        top.append(Entry("output.weight", [head]))
    return top + [e for i in range(a.n_layers) for e in layer(a, i)]


def to_hf_state_dict(model: Transformer, sd: dict | None = None,
                     lm_head: bool = True) -> dict[str, torch.Tensor]:
    """Our parameters -> Hugging Face names and layouts (for save_model); `lm_head=False`:
    without the LM head (a sequence-classification folder)."""
    sd = sd if sd is not None else model.state_dict()
    out = {}
    for e in layout(model.args, lm_head):
        out.update(zip(e.theirs, e.save(sd[e.ours])))
    return out


class WeightFiles:
    """The tensors of a folder's *.safetensors files, headers read first, data on demand.
    Gpt-2 files saved from the base model (no `transformer.` prefix) are accepted too."""

    def __init__(self, folder: Path):
        self.files = sorted(folder.glob("*.safetensors"))
        if not self.files:
            raise ModelConfigError(f"{folder}: no *.safetensors weights")
        self.where: dict[str, tuple[Path, str]] = {}
        self.shapes: dict[str, tuple] = {}
        for f in self.files:
            try:
                with safe_open(str(f), "pt") as h:
                    for name in h.keys():
                        key = name.removeprefix("policy.")
                        self.where[key] = (f, name)
                        self.shapes[key] = tuple(h.get_slice(name).get_shape())
            except Exception as e:  # a truncated or foreign file: safetensors says why
                raise ModelConfigError(f"{f}: not a readable safetensors file ({e})") from None

    def alias(self, name: str) -> str:
        if name not in self.where and name.startswith("transformer."):
            bare = name.removeprefix("transformer.")
            return bare if bare in self.where else name
        return name

    def numel(self) -> int:
        n = 0
        for shape in self.shapes.values():
            n += int(torch.tensor(shape, dtype=torch.float64).prod()) if shape else 1
        return n

    def read(self, name: str) -> torch.Tensor:
        f, key = self.where[name]
        with safe_open(str(f), "pt") as h:
            return h.get_tensor(key)


def load_weights(args: ModelArgs, folder: Path, where: str, lm_head: bool = True,
                 extra: tuple[str, ...] = ()) -> Transformer:
    """Strictly load the folder's weights into a new model (see the module docstring).
    `lm_head=False`: the folder has no LM head (a sequence-classification folder: an untied
    `output` is zeros, unused); `extra`: more tensor names the caller reads itself."""
    files = WeightFiles(folder)
    have, need = files.numel(), args.num_params()
    if not lm_head and not args.tie_embeddings:
        need -= args.vocab_size * args.dim
    if need > have + have // 4 + 4096:  # (a few missing tensors: named below)
        raise ModelConfigError(f"{where}: the config describes {need:,} parameters but the "
                               f"weight files hold {have:,} values (check num_hidden_layers, "
                               "hidden_size, vocab_size)")
    entries = layout(args, lm_head)
    with torch.device("meta"):
        meta = build_model(args)
    meta_sd = meta.state_dict()
    for e in entries:
        for name, t in zip(e.theirs, e.save(meta_sd[e.ours])):
            name = files.alias(name)
            if name not in files.shapes:
                raise ModelConfigError(f"{where}: tensor {name} is missing from the weights")
            if files.shapes[name] != tuple(t.shape):
                raise ModelConfigError(f"{where}: tensor {name} has shape "
                                       f"{list(files.shapes[name])}, the config implies "
                                       f"{list(t.shape)}")
    model = build_model(args)
    sd = model.state_dict()
    used = set(n for n in extra if n in files.shapes)
    if not lm_head and not args.tie_embeddings:
        with torch.no_grad():
            model.output.weight.zero_()
    with torch.no_grad():
        for e in entries:
            names = [files.alias(n) for n in e.theirs]
            used.update(names)
            sd[e.ours].copy_(e.load([files.read(n) for n in names]))
    _check_leftovers(args, files, used, model, where)
    return model.eval()


def _check_leftovers(args, files: WeightFiles, used: set, model, where: str) -> None:
    """Every tensor of the files was used, is a known constant buffer, a known extra, or
    (tied models) an lm_head equal to the embedding."""
    for name in files.shapes:
        if name in used or name in EXTRA_TENSORS or name.endswith(BUFFER_SUFFIXES):
            continue
        if args.tie_embeddings and name in ("lm_head.weight", "embed_out.weight"):
            if torch.equal(files.read(name).float(), model.tok_embeddings.weight.float()):
                continue
            raise ModelConfigError(f"{where}: tie_word_embeddings is true but {name} differs "
                                   "from the token embedding")
        raise ModelConfigError(f"{where}: tensor {name} is not used by the native "
                               f"{args.hf_type} model (an unsupported variant?)")


# ----------------------------------------------------------------------------- LoRA names


@dataclass
class LoraPart:
    """One Hugging Face linear layer inside one of ours, for LoRA (`rlhf.lm.lora`): its peft
    target name (`name`, e.g. q_proj) and module path (`hf`), the rows [start, stop) of our
    layer's output it makes, and how its LoRA B (rows, r) is reordered into our row order
    (`to_ours`) and back (`to_theirs`). A (r, in) needs no reordering: inputs keep HF's order."""

    name: str
    hf: str
    start: int
    stop: int
    to_ours: Callable = lambda b: b
    to_theirs: Callable = lambda b: b


def _llama_lora(a: ModelArgs, i: int) -> dict[str, list[LoraPart]]:
    p, hp = f"layers.{i}.", f"model.layers.{i}."
    H, Hkv, D, f = a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_dim
    perm = rotary_perm(D, a.rotary_dim)
    inv = torch.argsort(perm)

    def heads(n):  # q or k rows: rotary pairs reordered within each of n heads
        return {"to_ours": lambda b: _rows(b, n, perm), "to_theirs": lambda b: _rows(b, n, inv)}
    qkv = [LoraPart("q_proj", hp + "self_attn.q_proj", 0, H * D, **heads(H)),
           LoraPart("k_proj", hp + "self_attn.k_proj", H * D, (H + Hkv) * D, **heads(Hkv)),
           LoraPart("v_proj", hp + "self_attn.v_proj", (H + Hkv) * D, (H + 2 * Hkv) * D)]
    return {p + "attention.wqkv": qkv,
            p + "attention.wo": [LoraPart("o_proj", hp + "self_attn.o_proj", 0, a.dim)],
            p + "feed_forward.w13": [LoraPart("gate_proj", hp + "mlp.gate_proj", 0, f),
                                     LoraPart("up_proj", hp + "mlp.up_proj", f, 2 * f)],
            p + "feed_forward.w2": [LoraPart("down_proj", hp + "mlp.down_proj", 0, a.dim)]}


def _gpt2_lora(a: ModelArgs, i: int) -> dict[str, list[LoraPart]]:
    p, hp = f"layers.{i}.", f"transformer.h.{i}."
    qkv = (a.n_heads + 2 * a.n_kv_heads) * a.head_dim
    return {p + "attention.wqkv": [LoraPart("c_attn", hp + "attn.c_attn", 0, qkv)],
            p + "attention.wo": [LoraPart("c_proj", hp + "attn.c_proj", 0, a.dim)],
            p + "feed_forward.w1": [LoraPart("c_fc", hp + "mlp.c_fc", 0, a.hidden_dim)],
            p + "feed_forward.w2": [LoraPart("c_proj", hp + "mlp.c_proj", 0, a.dim)]}


def _neox_lora(a: ModelArgs, i: int) -> dict[str, list[LoraPart]]:
    p, hp = f"layers.{i}.", f"gpt_neox.layers.{i}."
    e = _neox_qkv(a, "weight", hp + "attention.query_key_value", p + "attention.wqkv.weight")
    qkv = LoraPart("query_key_value", hp + "attention.query_key_value", 0,
                   3 * a.n_heads * a.head_dim,
                   lambda b: e.load([b]), lambda b: e.save(b)[0])
    return {p + "attention.wqkv": [qkv],
            p + "attention.wo": [LoraPart("dense", hp + "attention.dense", 0, a.dim)],
            p + "feed_forward.w1": [LoraPart("dense_h_to_4h", hp + "mlp.dense_h_to_4h", 0,
                                             a.hidden_dim)],
            p + "feed_forward.w2": [LoraPart("dense_4h_to_h", hp + "mlp.dense_4h_to_h", 0,
                                             a.dim)]}


LORA_DEFAULT_TARGETS = {"gpt2": ["c_attn"], "gpt_neox": ["query_key_value"]}
"""peft's default target modules per family (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES
_MAPPING); every Llama-family model: q_proj, v_proj."""


def lora_parts(a: ModelArgs) -> dict[str, list[LoraPart]]:
    """Our linear layers (module paths) -> the Hugging Face layers each is made of, for every
    layer LoRA can target (the output layer is not one: `rlhf.lm.lora`)."""
    per_layer = {"gpt2": _gpt2_lora, "gpt_neox": _neox_lora}.get(a.family, _llama_lora)
    return {k: v for i in range(a.n_layers) for k, v in per_layer(a, i).items()}
