"""Conversational rows get the model's chat template (issue 26): a TRL conversational pair, read
from a file or a store, is tokenised as transformers' `apply_chat_template(prompt,
add_generation_prompt=True)` + the reply's own tokens + EOS, the ids the policy is sampled
from; explicit and implicit prompts give the same tokens; the same tokens reach the reward,
DPO, SFT and KTO data; plain-text pairs and tokenizers without a template keep the text rule."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
from conftest import SHARED, need_shared, tiny_model

transformers = pytest.importorskip("transformers")

from test_tokenizers import SPECIALS, bos_tokenizer, gpt2_fast  # noqa: E402

from rlhf.cli import main  # noqa: E402
from rlhf.config import load_config  # noqa: E402
from rlhf.dpo.config import DPOTrainConfig  # noqa: E402
from rlhf.feedback.chat import Conversation, with_conversations  # noqa: E402
from rlhf.feedback.derive import to_pairs  # noqa: E402
from rlhf.feedback.records import Comparison, RecordError  # noqa: E402
from rlhf.feedback.store import ComparisonStore  # noqa: E402
from rlhf.kto.config import KTOTrainConfig  # noqa: E402
from rlhf.kto.data import encode_rows as kto_rows  # noqa: E402
from rlhf.kto.data import split_rows  # noqa: E402
from rlhf.lm.config import SamplingConfig  # noqa: E402
from rlhf.lm.sampling import sample  # noqa: E402
from rlhf.lm.tokenizer import HFTokenizer  # noqa: E402
from rlhf.preferences.data import prepare_data, read_feedback  # noqa: E402
from rlhf.preferences.tokens import encode_pair_side, pack_pairs  # noqa: E402
from rlhf.prompts import ChatPrompt  # noqa: E402
from rlhf.reward.config import RewardTrainConfig  # noqa: E402
from rlhf.sft.data import encode_rows as sft_rows  # noqa: E402
from rlhf.sft.data import read_rows  # noqa: E402

TEMPLATES = SHARED / "data" / "chat_templates"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
# the template's end-of-turn as eos_token (as the instruct models set it), its BOS if any
SETUP = {"chatml": ("<|im_end|>", None), "llama-3-instruct": ("<|eot_id|>", "<|begin_of_text|>"),
         "mistral-instruct": ("</s>", "<s>")}


def user(t):
    return {"role": "user", "content": t}


def bot(t):
    return {"role": "assistant", "content": t}


PROMPTS = [[user("Name a colour."), bot("Blue."), user("Another one, naïve?")],
           [user("Say hi in French.")]]
REPLIES = [("Green, of course!", "No."), ("Bonjour !", "Hello.")]


def explicit_rows():
    return [{"prompt": p, "chosen": [bot(c)], "rejected": [bot(r)]}
            for p, (c, r) in zip(PROMPTS, REPLIES)]


def implicit_rows():
    return [{"chosen": p + [bot(c)], "rejected": p + [bot(r)]}
            for p, (c, r) in zip(PROMPTS, REPLIES)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def chat_tokenizers(tmp_path, name, edit=lambda t: t):
    """(transformers' tokenizer, the project's HFTokenizer) of one folder: the real GPT-2 BPE
    with the chat template `name` from ../shared (`edit`ed)."""
    need_shared(TEMPLATES)
    eos, bos = SETUP[name]
    if bos:
        fast = bos_tokenizer(bos, eos)
    else:
        fast = gpt2_fast()
        fast.add_special_tokens({"additional_special_tokens": SPECIALS, "eos_token": eos})
    fast.chat_template = edit((TEMPLATES / f"{name}.jinja").read_text())
    fast.save_pretrained(tmp_path / name)
    return (transformers.AutoTokenizer.from_pretrained(tmp_path / name),
            HFTokenizer(tmp_path / name))


def expected(ref, prompt, reply) -> list[int]:
    """transformers' ids: the prompt rendered with the generation prompt, then the reply's
    own tokens and EOS."""
    ids = ref.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                  return_dict=False)
    return list(ids) + ref(reply, add_special_tokens=False).input_ids + [ref.eos_token_id]


def pair_config(cls, path, *extra):
    return load_config(cls, None, [f"data.paths=[{path}]", "data.val_fraction=0",
                                   "data.max_len=256", "train.batch_size=1", *extra])


@pytest.mark.parametrize("name", list(SETUP))
def test_pair_tokens_equal_apply_chat_template_plus_the_reply(tmp_path, name):
    ref, tok = chat_tokenizers(tmp_path, name)
    want = [(expected(ref, p, c), expected(ref, p, r)) for p, (c, r) in zip(PROMPTS, REPLIES)]
    got = {}
    for shape, rows in (("explicit", explicit_rows()), ("implicit", implicit_rows())):
        path = write_jsonl(tmp_path / f"{shape}.jsonl", rows)
        for stage in (RewardTrainConfig, DPOTrainConfig):  # both read pairs by prepare_data
            train, val = prepare_data(pair_config(stage, path), tok)
            assert len(val) == 0 and train.truncated == 0
            got[shape, stage] = list(zip(train.chosen, train.rejected))
    assert all(pairs == want for pairs in got.values()), name
    # the prompt ids are the ones the policy is sampled from (rlhf.lm.sampling)
    model = tiny_model(vocab_size=tok.vocab_size, max_seq_len=128)
    s = sample(model, tok, [ChatPrompt(p) for p in PROMPTS], SamplingConfig(greedy=True,
               max_new_tokens=2), None)
    gen = s.batches[0]
    for i, (c, _) in enumerate(want):
        prompt = gen.tokens[i, :gen.prompt_width][gen.mask[i, :gen.prompt_width].bool()]
        assert prompt.tolist() == c[:len(prompt)] and c[len(prompt):-1] == ref(
            REPLIES[i][0], add_special_tokens=False).input_ids
    # a reward batch packs exactly these ids (the shared prompt once)
    packed = pack_pairs([c for c, _ in want], [r for _, r in want], tok.pad_id)
    c, r = want[0]
    p = next(k for k in range(len(c)) if c[k] != r[k])
    assert packed.tokens[0, :len(c) + len(r) - p].tolist() == c + r[p:]


def test_sft_and_kto_rows_get_the_same_tokens(tmp_path):
    name = "chatml"
    ref, tok = chat_tokenizers(tmp_path, name)
    want = [expected(ref, p, c) for p, (c, _) in zip(PROMPTS, REPLIES)]
    prompt_len = [len(ref.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                              return_dict=False)) for p in PROMPTS]
    # SFT: prompt-completion rows (the prompt masked) and whole conversations (all learned)
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": p, "completion": [bot(c)]}
                                              for p, (c, _) in zip(PROMPTS, REPLIES)])
    lm = write_jsonl(tmp_path / "lm.jsonl", [{"messages": p + [bot(c)]}
                                              for p, (c, _) in zip(PROMPTS, REPLIES)])
    text_reply = write_jsonl(tmp_path / "pc_text.jsonl", [{"prompt": p, "completion": c}
                                                          for p, (c, _) in zip(PROMPTS, REPLIES)])
    for path, masked in ((pc, True), (lm, False), (text_reply, True)):
        rows, other = read_rows([str(path)])
        data = sft_rows(rows, tok, 256, completion_only=True)
        assert other == 0 and data.ids == want, path.name
        assert data.masks == [[0] * n * masked + [1] * (len(w) - n * masked)
                              for w, n in zip(want, prompt_len)], path.name
    # KTO: unpaired rows, and a comparison's sides unpaired (context | completion + EOS)
    unpaired = write_jsonl(tmp_path / "kto.jsonl", [
        {"prompt": p, "completion": [bot(c)], "label": True}
        for p, (c, _) in zip(PROMPTS, REPLIES)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", explicit_rows())
    for path, origins in ((unpaired, "rating"), (pairs, "comparison")):
        cfg = load_config(KTOTrainConfig, None, [f"data.paths=[{path}]", "data.val_fraction=0",
                                                 f"data.origins=[{origins}]"])
        train, val = split_rows(cfg.data, 0)
        enc = kto_rows(train, tok, 256)
        got = [c + x for c, x, keep in zip(enc.context, enc.completion, enc.label) if keep]
        assert got == want and [len(c) for c in enc.context][::len(enc) // 2] == prompt_len


def test_conversations_survive_a_store_and_copies(tmp_path):
    ref, tok = chat_tokenizers(tmp_path, "chatml")
    src = write_jsonl(tmp_path / "implicit.jsonl", implicit_rows())
    store = tmp_path / "store.jsonl"
    assert main(["import-pairs", str(src), "--out", str(store)]) == 0
    stored = ComparisonStore(store).load()
    assert [(c.prompt, c.a, c.b) for c in stored][0] == (
        "\n\nUser: Name a colour.\n\nAssistant: Blue.\n\nUser: Another one, naïve?"
        "\n\nAssistant: ", "Green, of course!", "No.")
    assert [c.meta["chat"] for c in stored] == PROMPTS
    back = read_feedback([str(store)])
    assert all(isinstance(c.prompt, Conversation) for c in back)
    assert [c.prompt.messages for c in back] == PROMPTS
    assert [str(c.prompt) for c in back] == [c.prompt for c in stored]  # the text unchanged
    pair = to_pairs(back)[0]
    assert encode_pair_side(tok, pair.prompt, pair.chosen, 256)[0] == expected(
        ref, PROMPTS[0], REPLIES[0][0])
    chat = back[0].prompt
    for twin in (copy.deepcopy(chat), pickle.loads(pickle.dumps(chat))):
        assert (type(twin), str(twin), twin.messages) == (Conversation, str(chat), PROMPTS[0])
    # exported back as the very rows read
    out = tmp_path / "out.jsonl"
    assert main(["export", str(store), "--to", "trl-preference", "--out", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == implicit_rows()


def test_bad_stored_messages_are_one_line_naming_file_and_key(tmp_path):
    c = Comparison(item_id="i", prompt="p", a="x", b="y", label="a",
                   meta={"chat": [{"role": "user"}]})
    with pytest.raises(RecordError, match=r"^s\.jsonl: record .*: meta\.chat: expected a list"):
        with_conversations([c], "s.jsonl")


def test_truncation_keeps_the_templates_bos_and_the_reply(tmp_path):
    """Cut from the left, keeping the BOS a rendered prompt starts with (this copy of the
    Llama 3 template writes a blank line before it: taken out, as Meta's own has none)."""
    ref, tok = chat_tokenizers(tmp_path, "llama-3-instruct", lambda t: t.replace(
        "{% endif %}\n\n{{ bos_token }}", "{% endif %}\n{{ bos_token }}"))
    full = expected(ref, PROMPTS[0], REPLIES[0][0])
    assert full[0] == tok.bos_id and full[1] != tok.bos_id
    chat = Conversation(PROMPTS[0], "t")
    ids, cut = encode_pair_side(tok, chat, REPLIES[0][0], 12)
    assert cut and ids == full[:1] + full[len(full) - 11:] and ids[0] == tok.bos_id
    assert ids[-1] == tok.eos_id == ref.eos_token_id


def test_plain_text_pairs_keep_the_text_rule(tmp_path):
    """Regression guard: a standard pair is [BOS] + ids(prompt + reply) + [EOS] as before."""
    ref, tok = chat_tokenizers(tmp_path, "llama-3-instruct")  # a template: unused for text
    path = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "Q: 2+2=", "chosen": " 4",
                                                  "rejected": " 5"}])
    train, _ = prepare_data(pair_config(RewardTrainConfig, path), tok)
    bos = ref.convert_tokens_to_ids("<|begin_of_text|>")
    assert (train.chosen[0], train.rejected[0]) == tuple(
        [bos] + ref(t, add_special_tokens=False).input_ids + [ref.eos_token_id]
        for t in ("Q: 2+2=4", "Q: 2+2=5"))
    assert not any(isinstance(c.prompt, ChatPrompt) for c in read_feedback([str(path)]))


def test_without_a_template_the_transcript_is_the_text(tmp_path, stories):
    """A tokenizer without a chat template (llama2.c's): the conversation's transcript,
    "...\\n\\nAssistant: " + the reply, the same for explicit and implicit prompts."""
    _, tok = stories
    text = "\n\nUser: Say hi in French.\n\nAssistant: Bonjour !"
    for shape, rows in (("explicit", explicit_rows()), ("implicit", implicit_rows())):
        path = write_jsonl(tmp_path / f"{shape}.jsonl", rows)
        train, _ = prepare_data(pair_config(RewardTrainConfig, path), tok)
        assert train.chosen[1] == [tok.bos_id] + tok.encode(text, bos=False) + [tok.eos_id]


def test_an_encoder_reads_the_transcript_and_the_reply_as_its_two_segments(tmp_path):
    """An encoder's tokenizer has no chat template: the transcript is its first segment and
    the reply its second, as BERT's tokenizer pairs them."""
    need_shared(MINILM)
    from rlhf.lm.encoders.tokenizer import EncoderTokenizer

    tok = EncoderTokenizer(MINILM)
    path = write_jsonl(tmp_path / "pairs.jsonl", explicit_rows())
    pairs = to_pairs(read_feedback([str(path)]))
    ref = transformers.AutoTokenizer.from_pretrained(MINILM)
    for pair, (reply, _) in zip(pairs, REPLIES):
        assert isinstance(pair.prompt, Conversation) and pair.prompt.endswith("Assistant: ")
        assert encode_pair_side(tok, pair.prompt, pair.chosen, 128)[0] == ref(
            str(pair.prompt), reply).input_ids


def test_the_policy_prompt_and_a_reward_row_agree_token_for_token(tmp_path):
    """A policy sample [prompt | response | EOS] is the reward model's row for that text
    when the response's ids are its own tokenisation (what a decode and re-encode gives)."""
    _, tok = chat_tokenizers(tmp_path, "chatml")
    model = tiny_model(vocab_size=tok.vocab_size, max_seq_len=128)
    prompt = ChatPrompt(PROMPTS[1])
    gen = sample(model, tok, [prompt], SamplingConfig(greedy=True, max_new_tokens=3),
                 None).batches[0]
    p_ids = tok.encode(prompt, bos=True)
    reply = "Bonjour, ça va ?"
    sampled = p_ids + tok.encode(reply, bos=False) + [tok.eos_id]  # as if the policy wrote it
    assert gen.tokens[0, gen.prompt_width - len(p_ids):gen.prompt_width].tolist() == p_ids
    assert encode_pair_side(tok, prompt, reply, 256) == (sampled, False)
    assert torch.equal(gen.mask[0, :gen.prompt_width].sum(), torch.tensor(len(p_ids)))


def test_sampled_chat_prompts_reach_the_queue_and_the_store_with_their_messages(tmp_path):
    """A queue item sampled from a chat prompt is written (a ChatPrompt copies), keeps the
    messages in `meta["chat"]`, and its answer trains on the chat template's ids."""
    from rlhf.feedback.pairs import make_item
    from rlhf.feedback.queue import read_queue, write_queue

    ref, tok = chat_tokenizers(tmp_path, "chatml")
    prompt = ChatPrompt(PROMPTS[0])
    assert copy.deepcopy(prompt).messages == PROMPTS[0]
    write_queue(tmp_path / "q.jsonl", [make_item(prompt, "compare", list(REPLIES[0]),
                                                 [{}, {}])])
    item = read_queue(tmp_path / "q.jsonl")[0]
    assert item.prompt == str(prompt) and item.meta["chat"] == PROMPTS[0]
    store = ComparisonStore(tmp_path / "s.jsonl")
    store.append(Comparison.from_item(item, "a", rater="ann"))
    pair = to_pairs(read_feedback([str(store.path)]))[0]
    assert encode_pair_side(tok, pair.prompt, pair.chosen, 256)[0] == expected(
        ref, PROMPTS[0], REPLIES[0][0])
