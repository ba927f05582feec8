"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen
linear layer W (out x in) plus a trained low-rank update, y = x W^T + b + (alpha / r) B A x,
A (r x in) drawn as peft draws it (Kaiming-uniform), B (out x r) zero, so training starts at
the base model exactly.

Why our own layer and not peft: the project's models are its own (`rlhf.lm.model`,
`rlhf.lm.linear`: fused q/k/v and gate/up matrices in our row order, not `nn.Linear` under
transformers), and peft would pull transformers and accelerate into a core install. peft is
the reference the tests compare against (a dev dependency): an adapter saved here is peft's
format (`adapter_config.json` + `adapter_model.safetensors`, peft's key names for the
transformers model of the family) and `PeftModel.from_pretrained` loads it with equal logits.

Fused layers: one of our layers may hold several Hugging Face layers (wqkv = q_proj, k_proj,
v_proj; w13 = gate_proj, up_proj). Each targeted HF layer is one *part* with its own A and B
(as peft keeps them), whose update fills that part's rows of our output; B is stored in our
row order (`rlhf.lm.hf_weights.lora_parts` maps names and rows).

The API (every function takes the model itself, `rlhf.lm.model.Transformer` or a family):

    apply_lora(model, cfg)      adapters on the layers cfg.target_modules names (LoraConfig of
                                rlhf.lm.config), every base parameter frozen; in place, returns it
    with_lora(model, cfg)       a stage's rule: rank 0 -> adapters merged away (full fine-tuning);
                                rank > 0 -> adapters applied, or kept (an adapter folder's)
    has_lora(model)             any LoraLinear in it
    lora_parameters(model)      the adapter parameters (all an optimiser needs)
    adapters_off(model)         context: the model computes as its base (the reference)
    BaseView(model)             a module whose forward is the model's with adapters off: the
                                frozen reference, sharing the policy's base weights (no copy)
    shared_reference(model, reference)  BaseView(model) for a LoRA model when no other
                                reference is named (''), else None: a stage's reference rule
    checkpointed(model)         what a training state saves: Trained(model) with LoRA, else model
    Trained(model)              a module holding only the parameters that train (checkpoints)
    merged_state_dict(model)    state dict with W + (alpha / r) B A (the merged export)
    merge_lora(model)           adapters folded into the weights, plain layers again; in place
    save_adapter(model, folder, base)   adapter_config.json + adapter_model.safetensors
    load_adapter(model, folder)         the inverse onto a model with matching adapters
    read_adapter_config(folder) -> (LoraConfig, base_model_name_or_path)

`rlhf.lm.folders` writes adapter folders with the tokenizer (`save_adapter_folder`) and reads
an adapter folder wherever a model folder is accepted (`load_model`).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from rlhf.config import ConfigError
from rlhf.harness.distributed import full_tensor
from rlhf.lm.config import LoraConfig
from rlhf.lm.hf_config import ModelConfigError
from rlhf.lm.hf_weights import LORA_DEFAULT_TARGETS, LoraPart, lora_parts
from rlhf.lm.linear import Linear, linear
from rlhf.lm.model import Transformer

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's key prefix in adapter_model.safetensors


class LoraLinear(nn.Module):
    """A linear layer (the base's own `weight` and `bias` Parameters, shared, frozen) with one
    LoRA update per part: y = x W^T + b, plus for each part p in its rows [start, stop):
    (alpha / r) B_p A_p dropout(x). Adapters are kept in float32 whatever the base's dtype
    (as peft's autocast_adapter_dtype), their output cast to the base's."""

    def __init__(self, base: nn.Linear, parts: list[LoraPart], rank: int, alpha: float,
                 dropout: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same Parameters: no copy
        self.parts = sorted(parts, key=lambda p: p.start)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        dev = base.weight.device
        self.lora_A = nn.ParameterDict({p.name: nn.Parameter(torch.empty(
            rank, self.in_features, device=dev)) for p in self.parts})
        self.lora_B = nn.ParameterDict({p.name: nn.Parameter(torch.zeros(
            p.stop - p.start, rank, device=dev)) for p in self.parts})
        for a in self.lora_A.values():  # peft's init_lora_weights=True (nn.Linear's own)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.enabled = True

    def delta(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each part's update (..., stop - start) of input x (..., in)."""
        h = self.dropout(x).to(torch.float32)
        return [F.linear(F.linear(h, self.lora_A[p.name]), self.lora_B[p.name]) * self.scale
                for p in self.parts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = linear(x, self.weight, self.bias)  # (..., out)
        if not self.enabled:
            return y
        pieces, at = [], 0
        for p, d in zip(self.parts, self.delta(x)):
            if p.start > at:  # rows no adapter targets (e.g. k of a q/v LoRA)
                pieces.append(y.new_zeros(*y.shape[:-1], p.start - at))
            pieces.append(d.to(y.dtype))
            at = p.stop
        if at < self.out_features:
            pieces.append(y.new_zeros(*y.shape[:-1], self.out_features - at))
        return y + (pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1))

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A placed in each part's rows: (out, in), zero elsewhere, float32."""
        dw = torch.zeros(self.out_features, self.in_features, device=self.weight.device)
        for p in self.parts:
            dw[p.start:p.stop] = self.lora_B[p.name] @ self.lora_A[p.name] * self.scale
        return dw

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.rank}, "
                f"alpha={self.alpha}, parts={[p.name for p in self.parts]}")


def _layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLinear) for m in model.modules())


def resolve_targets(args, targets: list[str]) -> list[str]:
    """The HF layer names of `targets` for this family ([] = peft's default; "all-linear" =
    every one); a name the family lacks is a ConfigError naming the key."""
    known = sorted({p.name for parts in lora_parts(args).values() for p in parts})
    if not targets:
        return LORA_DEFAULT_TARGETS.get(args.family, ["q_proj", "v_proj"])
    if "all-linear" in targets:
        return known
    bad = [t for t in targets if t not in known]
    if bad:
        raise ConfigError(f"lora.target_modules: {bad[0]!r} is not a linear layer of a "
                          f"{args.hf_type} model; its layers: {', '.join(known)} (or all-linear)")
    return list(dict.fromkeys(targets))


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Adapters (rank cfg.rank) on every layer cfg.target_modules names; every other parameter
    of `model` frozen. In place (the base Parameters are kept, not copied); returns `model`."""
    if cfg.rank <= 0:
        raise ConfigError("lora.rank: must be > 0 to apply LoRA")
    if not isinstance(model, Transformer):
        raise ConfigError("lora.rank: LoRA applies to the project's own causal models "
                          "(backend: native)")
    names = set(resolve_targets(model.args, cfg.target_modules))
    model.requires_grad_(False)
    for path, parts in lora_parts(model.args).items():
        chosen = [p for p in parts if p.name in names]
        if chosen:
            parent, _, attr = path.rpartition(".")
            owner = model.get_submodule(parent)
            setattr(owner, attr, LoraLinear(getattr(owner, attr), chosen, cfg.rank,
                                            cfg.alpha, cfg.dropout))
    return model


def with_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """A training stage's model: rank 0 -> any adapters (an adapter folder's) merged into the
    weights, all parameters train again; rank > 0 -> adapters applied, or, when the model has them
    already (an adapter folder as `model.init`), kept with their own rank, alpha and targets
    and trained further (dropout from `cfg`); the base frozen either way."""
    if cfg.rank == 0:
        return merge_lora(model).requires_grad_(True) if has_lora(model) else model
    if not has_lora(model):
        return apply_lora(model, cfg)
    model.requires_grad_(False)
    for p in lora_parameters(model):
        p.requires_grad_(True)
    for _, m in _layers(model):
        m.dropout.p = cfg.dropout
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every adapter parameter (A and B of every part of every LoRA layer)."""
    return [p for _, m in _layers(model) for d in (m.lora_A, m.lora_B) for p in d.values()]


@contextlib.contextmanager
def adapters_off(model: nn.Module):
    """Within it, every LoRA layer of `model` computes as its base layer alone."""
    layers = [m for _, m in _layers(model)]
    before = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, b in zip(layers, before):
            m.enabled = b


class BaseView(nn.Module):
    """The base model under a LoRA model: calling it calls the model with adapters off. The
    model is held, not registered, so this view has no parameters of its own and nothing done
    to it (`.eval()`, `.requires_grad_(False)`, a frozen wrapper) touches the model's state;
    `.to()` moves the model. So a policy and its reference share one copy of the base."""

    def __init__(self, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "model", model)
        self.args = model.args

    def forward(self, *args, **kwargs):
        with adapters_off(self.model):
            return self.model(*args, **kwargs)

    def train(self, mode: bool = True):
        return self

    def requires_grad_(self, requires_grad: bool = True):
        return self

    def to(self, *args, **kwargs):
        self.model.to(*args, **kwargs)
        return self


def shared_reference(policy: nn.Module, reference: str) -> BaseView | None:
    """A stage's frozen reference when it is the policy's own base: `BaseView(policy)` for a
    LoRA policy whose config names no other reference (`reference` ''), else None (the stage
    loads the reference it names: a second copy of the weights)."""
    return BaseView(policy) if has_lora(policy) and not reference else None


class Trained(nn.Module):
    """The parameters of `model` that train (requires_grad), the same Parameter objects under
    their names with '.' as ':' (a module's names cannot hold dots): what a checkpoint of a
    LoRA run holds (its state_dict) and restores in place (load_state_dict)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.register_parameter(name.replace(".", ":"), p)


def checkpointed(model: nn.Module) -> nn.Module:
    """What a training state saves of `model`: with LoRA, only what trains (`Trained`);
    without, the model itself."""
    return Trained(model) if has_lora(model) else model


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """model.state_dict() with each LoRA layer's weight merged, W + (alpha / r) B A (only the
    enabled ones: under `adapters_off`, the base), its adapter entries left out."""
    sd = model.state_dict()
    for name, m in _layers(model):
        for key in [k for k in sd if k.startswith(name + ".lora_")]:
            del sd[key]
        if m.enabled:
            w = sd[name + ".weight"]
            sd[name + ".weight"] = (w.float() + m.delta_weight().detach()).to(w.dtype)
    return sd


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W += (alpha / r) B A) and put plain linear layers
    back, holding the same weight Parameters; in place, returns `model`."""
    for name, m in _layers(model):
        m.weight.copy_((m.weight.float() + m.delta_weight()).to(m.weight.dtype))
        plain = Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        plain.weight, plain.bias = m.weight, m.bias  # (meta: nothing was allocated)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, plain)
    return model


# ----------------------------------------------------------------------------- peft's files


def adapter_config(model: nn.Module, base: str, task_type: str = "CAUSAL_LM",
                   modules_to_save: list[str] | None = None) -> dict:
    """adapter_config.json of `model`'s adapters as peft writes it (LORA, `task_type`;
    `modules_to_save`: modules saved whole beside the adapters, as a SEQ_CLS adapter's score
    head, `rlhf.reward.adapter`)."""
    layers = [m for _, m in _layers(model)]
    if not layers:
        raise ValueError("the model has no LoRA adapters to save")
    first = layers[0]
    targets = sorted({p.name for m in layers for p in m.parts})
    return {"peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base,
            "r": first.rank, "lora_alpha": first.alpha, "lora_dropout": first.dropout.p,
            "target_modules": targets, "bias": "none",
            "fan_in_fan_out": model.args.family == "gpt2",  # GPT-2's Conv1D layers
            "inference_mode": True, "init_lora_weights": True, "modules_to_save": modules_to_save,
            "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
            "layers_to_transform": None, "layers_pattern": None, "revision": None}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """peft's tensors: base_model.model.<HF layer>.lora_A.weight (r, in) and .lora_B.weight
    (out, r), B in the HF layer's row order."""
    out = {}
    for _, m in _layers(model):
        for p in m.parts:
            key = PEFT_PREFIX + p.hf
            a, b = (full_tensor(d[p.name].detach()).cpu() for d in (m.lora_A, m.lora_B))
            out[key + ".lora_A.weight"] = a.contiguous()
            out[key + ".lora_B.weight"] = p.to_theirs(b).contiguous()
    return out


def save_adapter(model: nn.Module, folder: str | Path, base: str) -> Path:
    """adapter_config.json + adapter_model.safetensors of `model`'s adapters into `folder`
    (created); `base`: the base model's folder or Hub name (base_model_name_or_path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(adapter_config(model, base), indent=2))
    return folder


UNSUPPORTED = ("use_dora", "use_rslora", "modules_to_save", "layers_to_transform",
               "rank_pattern", "alpha_pattern", "lora_bias")
"""adapter_config.json keys this layer does not implement: refused when set (non-empty)."""


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_adapter_config(folder: str | Path) -> tuple[LoraConfig, str]:
    """(the LoraConfig, base_model_name_or_path) of a peft LoRA adapter folder; what this
    layer cannot reproduce (DoRA, rsLoRA, per-layer ranks, extra trained modules) is refused
    with the key, so a loaded adapter never computes something else than in peft."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        doc = json.loads(path.read_text())
        rank, alpha = int(doc["r"]), float(doc["lora_alpha"])
        targets, base = doc["target_modules"], doc["base_model_name_or_path"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ModelConfigError(f"{path}: not a readable LoRA adapter config "
                               f"({type(e).__name__}: {e})") from None
    if doc.get("peft_type", "LORA") != "LORA":
        raise ModelConfigError(f"{path}: peft_type {doc.get('peft_type')!r}: only LORA "
                               "adapters are read")
    for key in UNSUPPORTED:
        if doc.get(key):
            raise ModelConfigError(f"{path}: {key} = {doc[key]!r} is not supported here")
    if doc.get("bias", "none") != "none":
        raise ModelConfigError(f"{path}: bias = {doc['bias']!r}: only 'none' is supported")
    if not isinstance(base, str) or not base:
        raise ModelConfigError(f"{path}: base_model_name_or_path must name the base model")
    if isinstance(targets, str):
        raise ModelConfigError(f"{path}: target_modules as a regular expression is not "
                               "supported; list the layer names")
    cfg = LoraConfig(rank=rank, alpha=alpha, dropout=float(doc.get("lora_dropout", 0.0)),
                     target_modules=list(targets))
    return cfg, base


@torch.no_grad()
def load_adapter(model: nn.Module, folder: str | Path) -> nn.Module:
    """adapter_model.safetensors of `folder` into `model`'s adapters (applied with the
    folder's config), strictly: every tensor used, every shape checked."""
    file = Path(folder) / ADAPTER_WEIGHTS
    if not file.is_file():
        raise ModelConfigError(f"{folder}: no {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}")
    try:
        with safe_open(str(file), "pt") as h:
            tensors = {k.replace(".default.", "."): h.get_tensor(k) for k in h.keys()}
    except Exception as e:  # a truncated or foreign file: safetensors says why
        raise ModelConfigError(f"{file}: not a readable safetensors file ({e})") from None
    used = set()
    for _, m in _layers(model):
        for p in m.parts:
            for which, param, conv in (("lora_A", m.lora_A[p.name], lambda t: t),
                                       ("lora_B", m.lora_B[p.name], p.to_ours)):
                key = f"{PEFT_PREFIX}{p.hf}.{which}.weight"
                if key not in tensors:
                    raise ModelConfigError(f"{file}: tensor {key} is missing")
                t = conv(tensors[key].float())
                if tuple(t.shape) != tuple(param.shape):
                    raise ModelConfigError(f"{file}: tensor {key} has shape "
                                           f"{list(tensors[key].shape)}, the config implies "
                                           f"{list(param.shape)}")
                param.copy_(t)
                used.add(key)
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelConfigError(f"{file}: tensor {extra[0]} is not an adapter of the model's "
                               f"layers ({len(extra)} unused)")
    return model
