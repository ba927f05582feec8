"""Hugging Face `config.json` <-> `ModelArgs`, strictly.

Every key is either understood (implemented, or known not to change the computation: ids,
dropout rates, bookkeeping, generation defaults that older transformers versions wrote into
config.json, and keys that transformers' class for the family does not read, `IGNORED`) or
the load is refused with one line naming the file and the key. Values are type- and
range-checked before anything is allocated (`ModelConfigError`).
Families: llama, mistral, qwen2, qwen3 (options of `rlhf.lm.model`), gpt2, gpt_neox.
Others (Gemma, Phi-3, OLMo-2, ...) are refused by `model_type`, saying why.
"""

from __future__ import annotations

from rlhf.config import UserError
from rlhf.lm.model import ModelArgs


class ModelConfigError(UserError, ValueError):
    """A model folder whose config.json or weights cannot be used as they are."""


# Refused families: what they compute that the native models do not.
REFUSED = {
    "gemma": "embeddings scaled by sqrt(hidden_size), (1 + weight) RMSNorm, GeGLU",
    "gemma2": "logit soft-capping, sandwich norms, alternating sliding layers",
    "gemma3": "q/k norms with (1 + weight), local/global rotary bases, sliding layers",
    "phi3": "fused gate_up_proj and qkv_proj, longrope scaling",
    "phi": "parallel attention/MLP with partial rotary and dense biases",
    "olmo2": "norms after attention and MLP (not before), q/k norms over all heads",
    "olmo": "non-parametric LayerNorm",
    "mixtral": "mixture-of-experts feed-forward",
    "qwen2_moe": "mixture-of-experts feed-forward",
    "qwen3_moe": "mixture-of-experts feed-forward",
    "falcon": "multi-query attention with parallel blocks",
    "gptj": "rotary over interleaved pairs in a parallel block",
    "bloom": "ALiBi position biases",
    "opt": "learned positions offset by 2, ReLU",
}
HINT = ("use a llama, mistral, qwen2, qwen3, gpt2 or gpt_neox model, or run it through "
        "transformers (backend: transformers)")

# Keys that never change the forward computation of a causal LM here.
NEUTRAL = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "_name_or_path", "name_or_path", "initializer_range", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "unk_token_id",
    "attention_dropout", "hidden_dropout", "embd_pdrop", "attn_pdrop", "resid_pdrop",
    "classifier_dropout", "summary_type", "summary_use_proj", "summary_activation",
    "summary_proj_to_labels", "summary_first_dropout", "output_attentions",
    "output_hidden_states", "return_dict", "is_decoder", "is_encoder_decoder", "id2label",
    "label2id", "problem_type", "tokenizer_class", "task_specific_params", "prefix",
    "finetuning_task", "pretraining_tp", "max_window_layers", "use_sliding_window",
    "layer_types", "reorder_and_upcast_attn", "n_ctx", "bias", "use_flash_attn",
    "_attn_implementation_autoset", "chunk_size_feed_forward", "tie_encoder_decoder",
    "add_cross_attention", "scale_attn_by_inverse_layer_idx", "scale_attn_weights",
    "num_labels", "torchscript", "use_bfloat16", "pruned_heads", "cross_attention_hidden_size",
    "attention_probs_dropout_prob", "hidden_dropout_prob",
    # SmolLM2 (nanotron export) flags that transformers does not read either: its Llama
    # computes rotate-half rotary on these weights whatever they say.
    "is_llama_config", "rope_interleaved",
    # bookkeeping of older transformers versions (popped or unused by today's)
    "_commit_hash", "_num_labels", "gradient_checkpointing", "output_past", "tf_legacy_loss",
    "xla_device", "attn_implementation", "_attn_implementation",
    # generation defaults that transformers 4.x wrote into config.json; transformers pops
    # them (GenerationConfig._get_default_generation_params) and the forward never reads them
    "assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids",
    "begin_suppress_tokens", "diversity_penalty", "do_sample", "early_stopping",
    "encoder_no_repeat_ngram_size", "encoder_repetition_penalty", "epsilon_cutoff",
    "eta_cutoff", "exponential_decay_length_penalty", "forced_bos_token_id",
    "forced_eos_token_id", "length_penalty", "max_length", "min_length",
    "no_repeat_ngram_size", "num_assistant_tokens", "num_assistant_tokens_schedule",
    "num_beam_groups", "num_beams", "num_return_sequences", "output_scores",
    "remove_invalid_values", "repetition_penalty", "return_dict_in_generate",
    "suppress_tokens", "target_lookbehind", "temperature", "top_k", "top_p", "typical_p",
}
IGNORED = {
    "gpt2": {"num_key_value_heads"},
    "gpt_neox": {"num_key_value_heads"},
    "mistral": {"attention_bias", "mlp_bias"},
    "qwen2": {"attention_bias", "mlp_bias"},
    "qwen3": {"mlp_bias"},
    "llama": {"sliding_window"},
}
"""Keys another family's class reads that transformers' class for this `model_type` does not
(it keeps them as plain attributes): its computation is the same whatever they say (GPT-2
and GPT-NeoX attend with every head, Mistral has no biases, Qwen2 always q/k/v biases and
no others, Llama attends to the whole context), and so is the native one. A weight that
such a key would need (a bias) is not part of the family: the weight loader refuses it."""
# Keys read, per family (besides NEUTRAL).
READ = {
    "llama": {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps",
              "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings",
              "hidden_act", "head_dim", "attention_bias", "mlp_bias", "sliding_window",
              "partial_rotary_factor"},
    "gpt2": {"n_embd", "n_layer", "n_head", "n_positions", "n_inner", "vocab_size",
             "layer_norm_epsilon", "activation_function", "tie_word_embeddings"},
    "gpt_neox": {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "vocab_size", "max_position_embeddings", "layer_norm_eps", "rotary_pct",
                 "rotary_emb_base", "rope_theta", "rope_scaling", "rope_parameters",
                 "use_parallel_residual", "tie_word_embeddings", "hidden_act", "attention_bias",
                 "partial_rotary_factor"},
}
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
MAX_POSITIONS = 1 << 20


class Reader:
    """Typed access to one config dict; every failure names the file and the key."""

    def __init__(self, cfg: dict, where: str):
        self.cfg, self.where = cfg, where

    def fail(self, key: str, msg: str):
        raise ModelConfigError(f"{self.where}: {key}: {msg}")

    def int(self, key, default=None, low=1, high=1 << 31):
        v = self.cfg.get(key)
        v = default if v is None else v
        if v is None:
            self.fail(key, "missing (a positive integer is required)")
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            self.fail(key, f"expected an integer in [{low}, {high}], got {v!r}")
        return v

    def float(self, key, default=None, low=0.0):
        v = self.cfg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > low:
            self.fail(key, f"expected a number > {low}, got {v!r}")
        return float(v)

    def bool(self, key, default):
        v = self.cfg.get(key, default)
        if not isinstance(v, bool):
            self.fail(key, f"expected true or false, got {v!r}")
        return v

    def choice(self, key, default, allowed):
        v = self.cfg.get(key, default)
        if v not in allowed:
            self.fail(key, f"{v!r} is not implemented natively (supported: "
                           f"{', '.join(map(str, allowed))}); {HINT}")
        return v


def args_from_hf_config(cfg: dict, where: str) -> ModelArgs:
    """A config.json dict -> ModelArgs, or ModelConfigError naming the key."""
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"{where}: expected a JSON object")
    mt = cfg.get("model_type", "llama")
    if mt in REFUSED:
        raise ModelConfigError(f"{where}: model_type {mt!r} is not implemented natively "
                               f"({REFUSED[mt]}); {HINT}")
    family = "llama" if mt in LLAMA_LIKE else mt
    if family not in READ:
        raise ModelConfigError(f"{where}: model_type {mt!r} is not supported; {HINT}")
    for key in cfg:
        if key not in NEUTRAL and key not in READ[family] | IGNORED.get(mt, set()):
            raise ModelConfigError(f"{where}: {key}: not understood by the native {mt} model "
                                   f"(it may change the computation); remove it if it does "
                                   f"not, or {HINT}")
    r = Reader(cfg, where)
    args = {"llama": _llama, "gpt2": _gpt2, "gpt_neox": _neox}[family](r, mt)
    _check_shapes(r, args)
    return args


def _rope(r: Reader, base_default: float) -> tuple[float, tuple, float]:
    """(theta, scaling, partial_rotary_factor) from `rope_parameters` (transformers >= 5) or
    the older top-level `rope_theta` / `rope_scaling`."""
    params = r.cfg.get("rope_parameters") or r.cfg.get("rope_scaling") or {}
    if not isinstance(params, dict):
        r.fail("rope_parameters", f"expected an object, got {params!r}")
    p = Reader(params, f"{r.where}: rope_parameters")
    theta = p.float("rope_theta", r.cfg.get("rope_theta", base_default))
    kind = params.get("rope_type", params.get("type", "default"))
    p.choice("rope_type", kind, ("default", "linear", "llama3"))
    for key in params:
        if key not in ("rope_type", "type", "rope_theta", "factor", "partial_rotary_factor",
                       "low_freq_factor", "high_freq_factor",
                       "original_max_position_embeddings"):
            p.fail(key, f"not understood for rope_type {kind!r}; {HINT}")
    scaling: tuple = ()
    if kind == "linear":
        scaling = ("linear", p.float("factor"))
    elif kind == "llama3":
        scaling = ("llama3", p.float("factor"), p.float("low_freq_factor"),
                   p.float("high_freq_factor"),
                   float(p.int("original_max_position_embeddings", high=MAX_POSITIONS)))
        if scaling[3] <= scaling[2]:
            p.fail("high_freq_factor", "must be greater than low_freq_factor")
    partial = p.float("partial_rotary_factor", r.cfg.get("partial_rotary_factor", 1.0))
    if partial > 1.0:
        p.fail("partial_rotary_factor", f"must be in (0, 1], got {partial}")
    return theta, scaling, partial


def _llama(r: Reader, mt: str) -> ModelArgs:
    r.choice("hidden_act", "silu", ("silu",))
    heads = r.int("num_attention_heads", high=1 << 16)
    dim = r.int("hidden_size", high=1 << 20)
    if r.cfg.get("head_dim") is None:
        if dim % heads:
            r.fail("num_attention_heads", f"{heads} does not divide hidden_size {dim}")
        head_dim = dim // heads
    else:
        head_dim = r.int("head_dim", high=1 << 16)
    theta, scaling, partial = _rope(r, 10000.0)
    if partial != 1.0:
        r.fail("partial_rotary_factor", f"{mt} rotates whole heads; {partial} is not supported")
    window = (r.cfg.get("sliding_window") if mt == "mistral" else
              _qwen_window(r) if mt in ("qwen2", "qwen3") else None)  # (llama: full context)
    attn_bias = r.bool("attention_bias", False) if mt in ("llama", "qwen3") else False
    return ModelArgs(
        dim=dim, hidden_dim=r.int("intermediate_size", high=1 << 22),
        n_layers=r.int("num_hidden_layers", high=1 << 12), n_heads=heads,
        n_kv_heads=r.int("num_key_value_heads", heads, high=1 << 16),
        vocab_size=r.int("vocab_size", high=1 << 24),
        max_seq_len=r.int("max_position_embeddings", 2048, high=MAX_POSITIONS),
        norm_eps=r.float("rms_norm_eps", 1e-6), rope_theta=theta,
        tie_embeddings=r.bool("tie_word_embeddings", False), family="llama", hf_type=mt,
        head_dim=head_dim, rope_scaling=scaling,
        qkv_bias=attn_bias or mt == "qwen2", o_bias=attn_bias,
        mlp_bias=r.bool("mlp_bias", False) if mt == "llama" else False,
        qk_norm=mt == "qwen3",
        sliding_window=0 if window is None else r.int("sliding_window", window))


def _qwen_window(r: Reader):
    """Qwen2/3: the window applies to layers >= max_window_layers when use_sliding_window;
    all or none is implemented, a mix is refused."""
    if not r.bool("use_sliding_window", False):
        return None  # (transformers then sets sliding_window to None, whatever layer_types say)
    types = r.cfg.get("layer_types")
    if types is None:
        first = r.int("max_window_layers", 28, low=0)
        types = ["sliding_attention" if i >= first else "full_attention"
                 for i in range(r.int("num_hidden_layers", high=1 << 12))]
    if not isinstance(types, list) or not set(types) <= {"full_attention", "sliding_attention"}:
        r.fail("layer_types", f"expected full_attention / sliding_attention, got {types!r}")
    if len(set(types)) > 1:
        r.fail("layer_types", "a mix of sliding and full attention layers is not implemented "
                              f"natively; {HINT}")
    return r.cfg.get("sliding_window") if types and types[0] == "sliding_attention" else None


def _gpt2(r: Reader, mt: str) -> ModelArgs:
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False)):
        if r.cfg.get(key, ok) != ok:
            r.fail(key, f"only {str(ok).lower()} is implemented natively; {HINT}")
    act = r.choice("activation_function", "gelu_new", ("gelu_new", "gelu_pytorch_tanh", "gelu"))
    dim, heads = r.int("n_embd", high=1 << 20), r.int("n_head", high=1 << 16)
    if dim % heads:
        r.fail("n_head", f"{heads} does not divide n_embd {dim}")
    return ModelArgs(
        dim=dim, hidden_dim=r.int("n_inner", 4 * dim, high=1 << 22),
        n_layers=r.int("n_layer", high=1 << 12), n_heads=heads, n_kv_heads=heads,
        vocab_size=r.int("vocab_size", high=1 << 24),
        max_seq_len=r.int("n_positions", 1024, high=MAX_POSITIONS),
        norm_eps=r.float("layer_norm_epsilon", 1e-5),
        tie_embeddings=r.bool("tie_word_embeddings", True), family="gpt2", hf_type="gpt2",
        qkv_bias=True, o_bias=True, mlp_bias=True,
        act="gelu" if act == "gelu" else "gelu_new")


def _neox(r: Reader, mt: str) -> ModelArgs:
    r.choice("hidden_act", "gelu", ("gelu",))
    dim, heads = r.int("hidden_size", high=1 << 20), r.int("num_attention_heads", high=1 << 16)
    if dim % heads:
        r.fail("num_attention_heads", f"{heads} does not divide hidden_size {dim}")
    cfg = dict(r.cfg)
    cfg.setdefault("partial_rotary_factor", cfg.get("rotary_pct", 0.25))
    cfg.setdefault("rope_theta", cfg.get("rotary_emb_base", 10000.0))
    theta, scaling, partial = _rope(Reader(cfg, r.where), 10000.0)
    bias = r.bool("attention_bias", True)
    rotary = int(dim // heads * partial)
    if rotary <= 0 or rotary % 2:
        r.fail("rotary_pct", f"gives {rotary} rotated dims per head; an even number > 0 is "
                             "needed")
    return ModelArgs(
        dim=dim, hidden_dim=r.int("intermediate_size", high=1 << 22),
        n_layers=r.int("num_hidden_layers", high=1 << 12), n_heads=heads, n_kv_heads=heads,
        vocab_size=r.int("vocab_size", high=1 << 24),
        max_seq_len=r.int("max_position_embeddings", 2048, high=MAX_POSITIONS),
        norm_eps=r.float("layer_norm_eps", 1e-5), rope_theta=theta, rope_scaling=scaling,
        rotary_dim=rotary,
        tie_embeddings=r.bool("tie_word_embeddings", False), family="gpt_neox",
        hf_type="gpt_neox", qkv_bias=bias, o_bias=bias, mlp_bias=True,
        parallel_residual=r.bool("use_parallel_residual", True), act="gelu")


def _check_shapes(r: Reader, a: ModelArgs) -> None:
    if a.n_heads % a.n_kv_heads:
        r.fail("num_key_value_heads", f"{a.n_kv_heads} does not divide the {a.n_heads} "
                                      "attention heads")
    if a.family != "gpt2" and (a.rotary_dim % 2 or a.rotary_dim <= 0):  # GPT-2: no rotary
        r.fail("partial_rotary_factor", f"gives {a.rotary_dim} rotated dims per head; an "
                                        "even number > 0 is needed")


def hf_config(args: ModelArgs, bos_id: int | None = 1, eos_id=2, pad_id=None) -> dict:
    """ModelArgs -> a config.json that transformers loads into the same computation."""
    mt = args.hf_type
    common = {"model_type": mt, "vocab_size": args.vocab_size, "bos_token_id": bos_id,
              "eos_token_id": eos_id, "pad_token_id": pad_id,
              "tie_word_embeddings": args.tie_embeddings, "torch_dtype": "float32"}
    if args.family == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], **common, "n_embd": args.dim,
                "n_layer": args.n_layers, "n_head": args.n_heads, "n_inner": args.hidden_dim,
                "n_positions": args.max_seq_len, "layer_norm_epsilon": args.norm_eps,
                "activation_function": args.act}
    rope = {"rope_type": args.rope_scaling[0] if args.rope_scaling else "default",
            "rope_theta": args.rope_theta}
    if args.rope_scaling:
        names = ("factor", "low_freq_factor", "high_freq_factor",
                 "original_max_position_embeddings")
        rope.update(zip(names, args.rope_scaling[1:]))
        if "original_max_position_embeddings" in rope:
            rope["original_max_position_embeddings"] = int(rope[
                "original_max_position_embeddings"])
    if args.rotary_dim != args.head_dim:
        rope["partial_rotary_factor"] = args.rotary_dim / args.head_dim
    shape = {"hidden_size": args.dim, "intermediate_size": args.hidden_dim,
             "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
             "max_position_embeddings": args.max_seq_len, "rope_parameters": rope}
    if args.family == "gpt_neox":
        return {"architectures": ["GPTNeoXForCausalLM"], **common, **shape,
                "layer_norm_eps": args.norm_eps, "hidden_act": "gelu",
                "attention_bias": args.qkv_bias,
                "use_parallel_residual": args.parallel_residual}
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[mt]
    out = {"architectures": [arch], **common, **shape, "num_key_value_heads": args.n_kv_heads,
           "head_dim": args.head_dim, "rms_norm_eps": args.norm_eps, "hidden_act": "silu"}
    if mt in ("llama", "qwen3"):
        out["attention_bias"] = args.qkv_bias
    if mt == "llama":
        out["mlp_bias"] = args.mlp_bias
    if mt == "mistral":
        out["sliding_window"] = args.sliding_window or None
    if mt in ("qwen2", "qwen3"):
        out.update(use_sliding_window=bool(args.sliding_window), max_window_layers=0,
                   sliding_window=args.sliding_window or None)
    return out
