"""The encoder's own tokenizer (the `tokenizers` library reading the folder's tokenizer.json),
used as a cross-encoder over (prompt, response).

- Special tokens and segment ids come from the file's own post-processor (BERT:
  [CLS] prompt [SEP] response [SEP], segments 0 then 1; RoBERTa: <s> prompt </s></s>
  response </s>, all segment 0). An empty prompt gives the single-sequence form.
- Special-token text inside prompts or responses ("[SEP]" typed by a user) is tokenised as
  text (`encode_special_tokens`), so only the template's separators are separators; the
  model derives segment ids from the first separator (`segment_ids`).
- Truncation keeps the response: when the pair exceeds `max_len` (special tokens included),
  the prompt loses tokens from its *start* (its end, next to the response, stays); only when
  the prompt is gone is the response cut, keeping its beginning.
- Any truncation or padding settings stored in tokenizer.json are switched off (the caller
  pads; `truncated` is reported, never silently applied).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from rlhf.config import UserError


def _token(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


class EncoderTokenizer:
    def __init__(self, folder: str | Path, pad_id: int = 0):
        folder = Path(folder)
        self.path = folder / "tokenizer.json"
        if not self.path.is_file():
            raise UserError(f"{folder}: no tokenizer.json (the encoder's tokenizer is needed)")
        self.tk = Tokenizer.from_file(str(self.path))
        self.tk.no_truncation()
        self.tk.no_padding()
        self.tk.encode_special_tokens = True
        self.pad_id = pad_id
        self.vocab_size = self.tk.get_vocab_size()
        pair = self.tk.post_process(self.tk.encode("a", add_special_tokens=False),
                                    self.tk.encode("b", add_special_tokens=False))
        self.sep_id = self._sep(folder, pair)
        self.pair_segment = pair.type_ids[-1]
        """Segment id the template gives the second text (1 for BERT, 0 for RoBERTa)."""
        self.bos_id, self.eos_id = pair.ids[0], self.sep_id

    def _sep(self, folder: Path, pair) -> int:
        cfg = folder / "tokenizer_config.json"
        name = _token(json.loads(cfg.read_text()).get("sep_token")) if cfg.is_file() else None
        sid = self.tk.token_to_id(name) if name else None
        if sid is None:  # the template's separator: the first special after the first text
            sid = pair.ids[[i for i, s in enumerate(pair.special_tokens_mask) if s][1]]
        return sid

    def encode_pair(self, prompt: str, response: str, max_len: int) -> tuple[list[int], bool]:
        """Template ids of (prompt, response) within max_len tokens -> (ids, truncated)."""
        r = self.tk.encode(response, add_special_tokens=False)
        p = self.tk.encode(prompt, add_special_tokens=False) if prompt else None
        budget = max_len - self.tk.num_special_tokens_to_add(p is not None)
        if budget < 1:
            raise UserError(f"max_len {max_len}: leaves no room beside the special tokens")
        lp = len(p.ids) if p is not None else 0
        truncated = lp + len(r.ids) > budget
        if truncated:
            if p is not None:
                p.truncate(max(0, budget - len(r.ids)), direction="left")
            if len(r.ids) > budget:
                r.truncate(budget, direction="right")
        enc = self.tk.post_process(p, r) if p is not None else self.tk.post_process(r)
        return list(enc.ids), truncated

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Ids of `text` without the template (for length counts)."""
        return list(self.tk.encode(text, add_special_tokens=False).ids)

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.tk.decode(list(ids), skip_special_tokens=skip_special)


def segment_ids(tokens: torch.Tensor, sep_id: int, pair_segment: int) -> torch.Tensor:
    """Segment ids (B, T) of template rows (B, T): `pair_segment` strictly after each row's
    first separator, 0 up to and including it (BERT's token_type_ids for a pair)."""
    is_sep = (tokens == sep_id).long()
    after = (is_sep.cumsum(-1) - is_sep) > 0  # (B, T)
    return after.long() * pair_segment
