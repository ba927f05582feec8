"""Tokenizers behind one small interface: `encode(text, bos) -> ids`, `decode(ids) -> text`.

- `Llama2cTokenizer` reads llama2.c's `tok*.bin` (SentencePiece BPE with byte fallback) and
  encodes exactly as llama2.c's `encode()` does: a leading space, one piece per character,
  then merges by highest score.
- `HFTokenizer` wraps a Hugging Face `tokenizer.json` with the `tokenizers` library.
`llama2c_to_tokenizer_json` writes the llama2.c vocabulary as an equivalent `tokenizer.json`,
so that a saved model folder is usable by Hugging Face tools.
"""

from __future__ import annotations

import json
import struct
from functools import lru_cache
from pathlib import Path


class Llama2cTokenizer:
    unk_id, bos_id, eos_id = 0, 1, 2

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


class HFTokenizer:
    """A `tokenizer.json` read by the `tokenizers` library (no `transformers` needed)."""

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.path = folder / "tokenizer.json"
        self.tok = Tokenizer.from_file(str(self.path))
        self.vocab_size = self.tok.get_vocab_size()
        cfg = _read_json(folder / "config.json")
        tcfg = _read_json(folder / "tokenizer_config.json")
        self.bos_id = _special_id(self.tok, cfg.get("bos_token_id"), tcfg.get("bos_token"), 1)
        self.eos_id = _special_id(self.tok, cfg.get("eos_token_id"), tcfg.get("eos_token"), 2)
        pad = _special_id(self.tok, cfg.get("pad_token_id"), tcfg.get("pad_token"), None)
        self.pad_id = self.eos_id if pad is None else pad
        self.unk_id = 0

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _special_id(tok, given, token, default):
    if isinstance(given, list):
        given = given[0] if given else None
    if given is not None:
        return int(given)
    if isinstance(token, dict):
        token = token.get("content")
    if isinstance(token, str) and tok.token_to_id(token) is not None:
        return tok.token_to_id(token)
    return default


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
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for _, _, _, a, b in merges]},
    }
