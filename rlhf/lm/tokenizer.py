"""Tokenizers behind one small interface: `encode(text, bos) -> ids`, `decode(ids) -> text`.

- `Llama2cTokenizer` reads llama2.c's `tok*.bin` (SentencePiece BPE with byte fallback) and
  encodes exactly as llama2.c's `encode()` does: a leading space, one piece per character,
  then merges by highest score.
- `HFTokenizer` wraps a Hugging Face `tokenizer.json` with the `tokenizers` library, with the
  BOS / EOS / pad choices and the chat template its authors configured (Jinja2, sandboxed,
  as transformers renders it: imported only where a chat template is used).
`llama2c_to_tokenizer_json` writes the llama2.c vocabulary as an equivalent `tokenizer.json`,
so that a saved model folder is usable by Hugging Face tools.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from rlhf.config import UserError
from rlhf.prompts import ChatPrompt


class Llama2cTokenizer:
    unk_id, bos_id, eos_id = 0, 1, 2
    eos_ids = [2]
    chat_template = None

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = self.path.read_bytes()
        (self.max_token_length,) = struct.unpack_from("<i", data, 0)
        off = 4
        self.pieces: list[bytes] = []
        self.scores: list[float] = []
        while off < len(data):
            score, n = struct.unpack_from("<fi", data, off)
            off += 8
            self.pieces.append(data[off:off + n])
            self.scores.append(score)
            off += n
        self.vocab_size = len(self.pieces)
        self.pad_id = self.eos_id
        self.lookup = {p: i for i, p in enumerate(self.pieces)}
        self._encode_word = lru_cache(maxsize=65536)(self._encode_word_uncached)

    def _encode_word_uncached(self, text: str) -> tuple[int, ...]:
        ids: list[int] = []
        for ch in text:
            b = ch.encode("utf-8")
            if b in self.lookup:
                ids.append(self.lookup[b])
            else:
                ids.extend(x + 3 for x in b)  # byte fallback: <0xNN> is id NN + 3
        while len(ids) > 1:  # merge the best-scoring adjacent pair, as llama2.c does
            best, best_i, best_id = -1e10, -1, -1
            for i in range(len(ids) - 1):
                j = self.lookup.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i, best_id = self.scores[j], i, j
            if best_i < 0:
                break
            ids[best_i:best_i + 2] = [best_id]
        return tuple(ids)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        if isinstance(text, ChatPrompt):
            raise TokenizerError(f"{self.path}: chat prompts (messages) need a model whose "
                                 "tokenizer_config.json has a chat template; llama2.c has none")
        ids = [self.bos_id] if bos else []
        if text:
            # llama2.c treats the whole text as one word with a dummy leading space; splitting
            # at spaces first (each chunk keeping its leading space) gives the same merges for
            # this vocabulary, whose pieces never span a space followed by more text, and lets
            # us cache words. Checked against the unsplit encoder in tests.
            text = " " + text
            start = 0
            for i in range(1, len(text) + 1):
                if i == len(text) or text[i] == " ":
                    ids.extend(self._encode_word(text[start:i]))
                    start = i
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_unsplit(self, text: str, bos: bool = True) -> list[int]:
        """The reference encoder (llama2.c `encode` verbatim, no word cache)."""
        ids = [self.bos_id] if bos else []
        return ids + (list(self._encode_word_uncached(" " + text)) if text else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        out = bytearray()
        prev = None
        for t in ids:
            t = int(t)
            if t in (self.bos_id, self.eos_id, self.unk_id):
                if not skip_special:
                    out += self.pieces[t]
                prev = t
                continue
            piece = self.pieces[t]
            if (prev is None or prev == self.bos_id) and piece.startswith(b" "):
                piece = piece[1:]  # the first piece after BOS drops its leading space
            if piece.startswith(b"<0x") and piece.endswith(b">") and len(piece) == 6:
                piece = bytes([int(piece[3:5], 16)])
            out += piece
            prev = t
        return out.decode("utf-8", errors="replace")


class TokenizerError(UserError, ValueError):
    """A tokenizer folder or chat template that cannot be used as it is."""


class HFTokenizer:
    """A `tokenizer.json` read by the `tokenizers` library (no `transformers` needed), set up
    as its authors set it up:

    - BOS: prompts get the special tokens the tokenizer's own post-processor puts before the
      text (Llama: `<s>` / `<|begin_of_text|>`; GPT-2, Qwen, SmolLM2: none), overridden by
      `add_bos_token` in tokenizer_config.json where it is set; never a second BOS when the
      text already starts with it (a rendered chat template).
    - EOS: `eos_ids`, the list generation stops at, from generation_config.json (as
      transformers' `generate`), else config.json, else the tokenizer's eos_token; `eos_id` is
      the tokenizer's own eos_token (appended where a sequence must end, e.g. reward scoring).
    - pad: the tokenizer's pad_token, else pad_token_id; EOS only where the model has none.
    - chat: the Jinja chat template of tokenizer_config.json (or chat_template.jinja),
      rendered as transformers' `apply_chat_template` renders it (`render_chat`).
    """

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.path = self.folder / "tokenizer.json"
        if not self.path.is_file():
            raise TokenizerError(f"{self.path}: missing (the model folder needs a tokenizer.json)")
        self.tok = Tokenizer.from_file(str(self.path))
        self.vocab_size = self.tok.get_vocab_size()
        cfg, tcfg = _read_json(self.folder / "config.json"), _read_json(
            self.folder / "tokenizer_config.json")
        gcfg = _read_json(self.folder / "generation_config.json")
        self.special = {k: _content(tcfg.get(k)) for k in
                        ("bos_token", "eos_token", "unk_token", "pad_token")}
        self.special = {k: v for k, v in self.special.items() if v is not None}
        self.bos_id = self._id("bos_token", gcfg.get("bos_token_id", cfg.get("bos_token_id")))
        eos = gcfg.get("eos_token_id", cfg.get("eos_token_id"))
        own_eos = self._id("eos_token", None)
        self.eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos])
                        if e is not None] or ([own_eos] if own_eos is not None else [])
        self.eos_id = own_eos if own_eos is not None else (self.eos_ids or [-1])[0]
        pad = self._id("pad_token", gcfg.get("pad_token_id", cfg.get("pad_token_id")))
        self.pad_id = pad if pad is not None else max(self.eos_id, 0)  # a filler: masks decide
        self.unk_id = self._id("unk_token", 0)
        self.prefix = self._prefix(tcfg.get("add_bos_token"))
        self.chat_template = _chat_template(self.folder, tcfg)

    def _id(self, name: str, given):
        """The id of a special token named in tokenizer_config.json, else `given`."""
        token = self.special.get(name)
        if token is not None and self.tok.token_to_id(token) is not None:
            return self.tok.token_to_id(token)
        if isinstance(given, list):
            given = given[0] if given else None
        return None if given is None else int(given)

    def _prefix(self, add_bos) -> list[int]:
        """The special ids the post-processor puts before a text (`add_bos_token` decides
        about BOS where tokenizer_config.json sets it)."""
        enc = self.tok.encode("a", add_special_tokens=True)
        prefix = []
        for i, special in zip(enc.ids, enc.special_tokens_mask):
            if not special:
                break
            prefix.append(i)
        if add_bos is False:
            prefix = [i for i in prefix if i != self.bos_id]
        elif add_bos is True and self.bos_id is not None and self.bos_id not in prefix:
            prefix = [self.bos_id] + prefix
        return prefix

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of text; `bos`: with the tokenizer's own prefix (see the class docstring).
        A `ChatPrompt`: the ids of its rendered chat template with the generation prompt, as
        transformers' `apply_chat_template(..., add_generation_prompt=True)` gives them."""
        if isinstance(text, ChatPrompt):
            ids = self.tok.encode(self.render_chat(text.messages), add_special_tokens=False).ids
            return ids + ([self.eos_id] if eos else [])
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if bos and ids[:len(self.prefix)] != self.prefix:
            ids = self.prefix + ids
        return ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat template applied to messages ({"role", "content"} dicts), as transformers'
        `apply_chat_template(tokenize=False)`; its ids are `encode(text, bos=False)`."""
        if not self.chat_template:
            raise TokenizerError(f"{self.folder}: chat prompts (messages) need a chat template, "
                                 "and tokenizer_config.json has none")
        return render_template(self.chat_template, messages, add_generation_prompt,
                               self.special, str(self.folder))


def _content(token):
    return token.get("content") if isinstance(token, dict) else token


def _chat_template(folder: Path, tcfg: dict) -> str | None:
    t = tcfg.get("chat_template")
    if isinstance(t, list):  # named templates: the default one
        t = next((x.get("template") for x in t if x.get("name") == "default"), None)
    if t is None and (folder / "chat_template.jinja").is_file():
        t = (folder / "chat_template.jinja").read_text()
    return t if isinstance(t, str) else None


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_template(template: str, messages: list[dict], add_generation_prompt: bool,
                    special: dict, where: str) -> str:
    """Render a chat template in a sandbox, with the variables transformers passes (the special
    tokens, `messages`, `add_generation_prompt`); a template error is one line."""
    import jinja2

    try:
        return _compile(template).render(messages=messages,
                                         add_generation_prompt=add_generation_prompt, **special)
    except jinja2.exceptions.TemplateError as e:
        raise TokenizerError(f"{where}: chat template: {e}") from None


def _read_json(p: Path) -> dict:
    try:
        obj = json.loads(p.read_text()) if p.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{p}: not valid JSON ({e})") from None
    return obj if isinstance(obj, dict) else {}


def llama2c_to_tokenizer_json(tok: Llama2cTokenizer) -> dict:
    """The llama2.c vocabulary as a Hugging Face `tokenizer.json` (SentencePiece-BPE layout,
    as `transformers`' LlamaConverter writes it): merges ranked by the merged piece's score."""
    names = []
    for i, p in enumerate(tok.pieces):
        if i in (0, 1, 2):
            names.append(["<unk>", "<s>", "</s>"][i])
        elif p.startswith(b"<0x") and len(p) == 6:
            names.append(p.decode())
        else:
            names.append(p.decode("utf-8", errors="replace").replace(" ", "\u2581"))
    vocab = {n: i for i, n in enumerate(names)}
    merges = []
    for i, name in enumerate(names):
        if i < 3 + 256 or len(name) < 2:
            continue
        for cut in range(1, len(name)):
            a, b = name[:cut], name[cut:]
            if a in vocab and b in vocab:
                merges.append((tok.scores[i], vocab[a], vocab[b], a, b))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    specials = [{"id": i, "content": names[i], "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": True} for i in range(3)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": specials,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1],
                                                      "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for _, _, _, a, b in merges]},
    }
