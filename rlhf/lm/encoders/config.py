"""The typed architecture of an encoder folder (`config.json` -> `EncoderArgs`), strict: every
key that changes the computation is honoured or refused with one line naming it; keys that do
not change it (bookkeeping, task heads, generation settings) are listed and ignored; any other
key is refused, so a config this reader does not understand never loads silently."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import UserError

FAMILIES = ("bert", "roberta", "deberta-v2")
"""model_type values read here (DeBERTa-v3 folders say 'deberta-v2')."""

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

IGNORED = {
    "_name_or_path", "architectures", "transformers_version", "initializer_range",
    "gradient_checkpointing", "use_cache", "id2label", "label2id", "num_labels", "problem_type",
    "torch_dtype", "dtype", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
    "classifier_dropout", "output_past", "return_dict", "output_hidden_states",
    "output_attentions", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params",
    "chunk_size_feed_forward", "tie_word_embeddings", "is_encoder_decoder", "pruned_heads",
    "torchscript", "model_type", "pooler_dropout", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    "decoder_start_token_id",
    "max_length", "min_length", "num_beams", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "early_stopping",
    "bad_words_ids", "num_return_sequences", "use_bfloat16", "tf_legacy_loss", "vocab_type",
    "legacy",
}
"""Keys that change nothing an encoder computes here (HF bookkeeping, task-head and generation
settings; `legacy` picks DeBERTa's masked-LM head; `pooler_dropout` is only active in
training and the pooler is applied without it)."""


@dataclass
class EncoderArgs:
    family: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_dim: int
    max_positions: int
    type_vocab_size: int
    pad_id: int
    eps: float
    act: str
    dropout: float = 0.0
    attn_dropout: float = 0.0
    position_offset: int = 0
    """RoBERTa numbers positions from pad_id + 1."""
    embedding_size: int = 0
    """DeBERTa: embedding width before `embed_proj` (0 = dim)."""
    absolute_positions: bool = True
    """Add learned absolute position embeddings to the input (DeBERTa: position_biased_input)."""
    relative: bool = False
    """DeBERTa disentangled attention."""
    pos_att_type: list[str] = field(default_factory=list)
    position_buckets: int = -1
    max_relative_positions: int = -1
    share_att_key: bool = False
    norm_rel_ebd: bool = False
    pooler_act: str = "tanh"

    @property
    def span(self) -> int:
        """Relative positions each side (DeBERTa's att_span)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions


def refuse(where: str, key: str, msg: str):
    raise UserError(f"{where}: {key}: {msg}")


def _check_common(c: dict, where: str) -> None:
    act = c.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        refuse(where, "hidden_act", f"{act!r} is not one of {', '.join(ACTIVATIONS)}")
    for key, ok in (("is_decoder", False), ("add_cross_attention", False)):
        if c.get(key, ok) != ok:
            refuse(where, key, "decoders and cross-attention are not encoders; not supported")
    if c.get("position_embedding_type", "absolute") != "absolute":
        refuse(where, "position_embedding_type",
               f"{c['position_embedding_type']!r}: only 'absolute' is implemented")
    if c["hidden_size"] % c["num_attention_heads"]:
        refuse(where, "num_attention_heads", "must divide hidden_size")


BERT_KEYS = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "hidden_act", "hidden_dropout_prob",
             "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
             "layer_norm_eps", "pad_token_id", "position_embedding_type", "is_decoder",
             "add_cross_attention"}
DEBERTA_KEYS = BERT_KEYS - {"position_embedding_type"} | {
    "relative_attention", "pos_att_type", "position_buckets", "max_relative_positions",
    "share_att_key", "norm_rel_ebd", "position_biased_input", "embedding_size",
    "pooler_hidden_size", "pooler_hidden_act", "attention_head_size", "conv_kernel_size",
    "conv_act", "conv_groups"}


def args_from_config(c: dict, where: str) -> EncoderArgs:
    """config.json (a dict) -> EncoderArgs; UserError naming `where` and the key otherwise."""
    family = c.get("model_type")
    if family not in FAMILIES:
        refuse(where, "model_type", f"{family!r} is not one of {', '.join(FAMILIES)}")
    known = DEBERTA_KEYS if family == "deberta-v2" else BERT_KEYS
    for key in c:
        if key not in known and key not in IGNORED:
            refuse(where, key, "not understood by this reader (it may change the computation); "
                   "refusing rather than ignoring it")
    _check_common(c, where)
    h, nh = c["hidden_size"], c["num_attention_heads"]
    args = EncoderArgs(
        family=family, vocab_size=c["vocab_size"], dim=h, n_layers=c["num_hidden_layers"],
        n_heads=nh, head_dim=h // nh, hidden_dim=c["intermediate_size"],
        max_positions=c["max_position_embeddings"], type_vocab_size=c.get("type_vocab_size", 2),
        pad_id=c.get("pad_token_id", 1 if family == "roberta" else 0),
        eps=c.get("layer_norm_eps", 1e-12),
        act=c.get("hidden_act", "gelu"), dropout=c.get("hidden_dropout_prob", 0.1),
        attn_dropout=c.get("attention_probs_dropout_prob", 0.1))
    if family == "roberta":
        args.position_offset = args.pad_id + 1
    if family == "deberta-v2":
        _deberta_args(c, args, where)
    return args


def _deberta_args(c: dict, args: EncoderArgs, where: str) -> None:
    if c.get("conv_kernel_size", 0) > 0:
        refuse(where, "conv_kernel_size", "DeBERTa's convolution layer is not implemented")
    if c.get("attention_head_size", args.head_dim) != args.head_dim:
        refuse(where, "attention_head_size", "must be hidden_size / num_attention_heads")
    if c.get("pooler_hidden_size", args.dim) != args.dim:
        refuse(where, "pooler_hidden_size", "must equal hidden_size")
    pat = c.get("pos_att_type") or []
    pat = [x.strip() for x in pat.lower().split("|")] if isinstance(pat, str) else list(pat)
    if any(x not in ("c2p", "p2c") for x in pat):
        refuse(where, "pos_att_type", f"{pat}: only c2p and p2c are implemented")
    norm = [x.strip() for x in str(c.get("norm_rel_ebd", "none")).lower().split("|")]
    if any(x not in ("none", "layer_norm") for x in norm):
        refuse(where, "norm_rel_ebd", f"{norm}: only none and layer_norm are implemented")
    act = c.get("pooler_hidden_act", "gelu")
    if act not in ACTIVATIONS + ("tanh",):
        refuse(where, "pooler_hidden_act", f"{act!r} is not supported")
    args.type_vocab_size = c.get("type_vocab_size", 0)
    args.embedding_size = c.get("embedding_size", args.dim)
    args.absolute_positions = c.get("position_biased_input", True)
    args.relative = c.get("relative_attention", False)
    args.pos_att_type = pat
    args.position_buckets = c.get("position_buckets", -1)
    mrp = c.get("max_relative_positions", -1)
    args.max_relative_positions = mrp if mrp >= 1 else args.max_positions
    args.share_att_key = c.get("share_att_key", False)
    args.norm_rel_ebd = "layer_norm" in norm
    args.pooler_act = act
    args.eps = c.get("layer_norm_eps", 1e-7)
