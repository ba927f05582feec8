"""Tokenizers as their authors set them up, against `transformers`: BOS only where the
post-processor or `add_bos_token` adds it, EOS lists from generation_config.json, a pad
distinct from EOS, and chat templates (every one in ../shared/data/chat_templates/) giving
exactly `apply_chat_template`'s ids."""

import json

import pytest
import torch
from conftest import SHARED, need_shared

transformers = pytest.importorskip("transformers")

from rlhf.lm.tokenizer import HFTokenizer, TokenizerError  # noqa: E402
from rlhf.prompts import ChatPrompt  # noqa: E402

GPT2_BPE = SHARED / "models" / "gpt2-tokenizer"
TEMPLATES = SHARED / "data" / "chat_templates"
SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", "<|begin_of_text|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|im_start|>", "<|im_end|>",
            "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<|user|>", "<|assistant|>",
            "<|system|>", "<|end|>", "[INST]", "[/INST]"]
TEXTS = ["Hello world!", "  two  spaces and a tab\tand\nnew lines\n\n", "naïve café 😀 ½",
         "<|im_start|>user\nhi<|im_end|>", "don't stop 1234567 3.14"]


def gpt2_fast(**kw):
    """The real GPT-2 byte-level BPE as a transformers fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer

    need_shared(GPT2_BPE)
    bpe = ByteLevelBPETokenizer(str(GPT2_BPE / "vocab.json"), str(GPT2_BPE / "merges.txt"))
    bpe.add_special_tokens(["<|endoftext|>"])
    kw = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
          "unk_token": "<|endoftext|>", **kw}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **kw)


def bos_tokenizer(bos="<s>", eos="</s>"):
    """A GPT-2 BPE whose post-processor prepends BOS, as Llama tokenizers do."""
    from tokenizers import processors

    fast = gpt2_fast(bos_token=bos, eos_token=eos, unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    bos_id = fast.convert_tokens_to_ids(bos)
    fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)])
    return fast


def test_gpt2_bpe_no_bos_and_equal_ids(tmp_path):
    fast = gpt2_fast()
    fast.save_pretrained(tmp_path)
    ours = HFTokenizer(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.encode("Hello world!") == [15496, 995, 0]
    for text in TEXTS:
        assert ours.encode(text) == ref(text).input_ids
        assert ours.decode(ours.encode(text)) == text
    assert ours.eos_ids == [50256] and ours.bos_id == 50256


def test_bos_where_the_post_processor_adds_it_and_add_bos_token_overrides(tmp_path):
    fast = bos_tokenizer()
    fast.save_pretrained(tmp_path / "on")
    ours, ref = HFTokenizer(tmp_path / "on"), transformers.AutoTokenizer.from_pretrained(
        tmp_path / "on")
    for text in TEXTS:
        assert ours.encode(text) == ref(text).input_ids
        assert ours.encode(text)[0] == ours.bos_id == fast.convert_tokens_to_ids("<s>")
    assert ours.encode("<s> Hi")[:2] != [ours.bos_id] * 2  # never a doubled BOS
    fast.save_pretrained(tmp_path / "off")
    cfg_path = tmp_path / "off" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["add_bos_token"] = False
    cfg_path.write_text(json.dumps(cfg))
    off = HFTokenizer(tmp_path / "off")
    assert off.encode("Hello world!") == [15496, 995, 0]


def test_eos_list_from_generation_config_and_distinct_pad(tmp_path):
    fast = bos_tokenizer("<|begin_of_text|>", "<|eot_id|>")
    fast.add_special_tokens({"pad_token": "<pad>"})
    fast.save_pretrained(tmp_path)
    eot, eos2 = fast.convert_tokens_to_ids("<|eot_id|>"), fast.convert_tokens_to_ids("</s>")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos2, eot]}))
    tok = HFTokenizer(tmp_path)
    assert tok.eos_ids == [eos2, eot] and tok.eos_id == eot
    assert tok.pad_id == fast.convert_tokens_to_ids("<pad>") and tok.pad_id not in tok.eos_ids


def test_generation_stops_at_every_eos_of_the_list():
    from conftest import tiny_model

    from rlhf.lm.config import SamplingConfig
    from rlhf.lm.generation import generate

    model = tiny_model()
    with torch.no_grad():
        first = generate(model, [[1, 5]], SamplingConfig(greedy=True, max_new_tokens=6), -1)
    t1 = first.responses[0, 0].item()
    other = next(t for t in range(64) if t not in first.responses[0].tolist())
    gen = generate(model, [[1, 5]], SamplingConfig(greedy=True, max_new_tokens=6), [other, t1])
    assert gen.response_lists()[0] == [t1] and bool(gen.ended[0])  # the list's second id
    assert not bool(first.ended[0])


CONVERSATIONS = {
    "system": [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Name a colour.\nJust one."},
               {"role": "assistant", "content": "Blue."},
               {"role": "user", "content": "Another?"}],
    "no-system": [{"role": "user", "content": "Hi there"},
                  {"role": "assistant", "content": "Hello! How can I help?"},
                  {"role": "user", "content": "Tell me a joke."}],
}


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", ["chatml", "gemma-it", "llama-2-chat", "llama-3-instruct",
                                  "mistral-instruct", "phi-3", "qwen2.5-instruct", "zephyr"])
def test_chat_template_ids_equal_apply_chat_template(tmp_path, name, conversation):
    need_shared(TEMPLATES)
    fast = bos_tokenizer()
    fast.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
    fast.save_pretrained(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = HFTokenizer(tmp_path)
    messages = CONVERSATIONS[conversation]
    try:
        want = ref.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=False)
    except Exception:  # the template refuses it (e.g. no system role): so must we
        with pytest.raises(TokenizerError, match="chat template"):
            ours.encode(ChatPrompt(messages))
        return
    assert ours.encode(ChatPrompt(messages)) == list(want)
    assert ours.render_chat(messages) == ref.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False)


def test_chat_prompt_without_template_is_one_line(tmp_path):
    gpt2_fast().save_pretrained(tmp_path)
    with pytest.raises(TokenizerError, match="need a chat template"):
        HFTokenizer(tmp_path).encode(ChatPrompt([{"role": "user", "content": "hi"}]))


def test_a_template_that_raises_gives_one_line(tmp_path):
    need_shared(TEMPLATES)
    fast = bos_tokenizer()
    fast.chat_template = (TEMPLATES / "llama-2-chat.jinja").read_text()
    fast.save_pretrained(tmp_path)
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception) as ref_err:
        transformers.AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(bad)
    with pytest.raises(TokenizerError, match="chat template: ") as e:
        HFTokenizer(tmp_path).encode(ChatPrompt(bad))
    assert str(ref_err.value) in str(e.value) and "\n" not in str(e.value)


def test_saved_policy_folder_tokenizes_the_same_in_transformers(stories, tmp_path):
    """The llama2.c vocabulary, written as tokenizer.json by save_model: transformers gives
    the project's ids, BOS included, and generation_config.json names the same ids."""
    from conftest import TEXT

    from rlhf.lm.folders import save_model

    model, tok = stories
    folder = save_model(model, tok, tmp_path / "policy")
    ref = transformers.AutoTokenizer.from_pretrained(folder)
    need_shared(TEXT)
    for line in [ln for ln in TEXT.read_text().splitlines() if ln.strip()][:40]:
        assert ref(line).input_ids == tok.encode(line) == HFTokenizer(folder).encode(line)
    gen = json.loads((folder / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (1, [2])
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    x = torch.tensor([tok.encode("Once upon a time")])
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() <= 1e-4


def test_rlhf_generate_applies_the_chat_template_to_a_messages_file(tmp_path, capsys):
    """`rlhf generate --prompts-file chats.jsonl`: the prompt ids are apply_chat_template's."""
    from test_families import hf_folder

    from rlhf.cli import main

    _, folder = hf_folder(tmp_path, "qwen2")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                                unk_token="w0")
    fast.chat_template = "{% for m in messages %}w1 {{ m['content'] }} w2 {% endfor %}" \
                         "{% if add_generation_prompt %}w3{% endif %}"
    fast.save_pretrained(folder)
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "w7 w8"}]}) + "\n")
    capsys.readouterr()
    assert main(["generate", "--model", str(folder), "--prompts-file", str(chats), "--greedy",
                 "--max-new-tokens", "3", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert row["text"].startswith("w1 w7 w8 w2 w3") and row["new_tokens"] == 3
