"""TRL's dataset types as feedback records (https://huggingface.co/docs/trl/dataset_formats):
- preference, `{"prompt", "chosen", "rejected"}` or `{"chosen", "rejected"}` (implicit
  prompt) -> a Comparison, label "a" (a = chosen);
- unpaired preference (KTO), `{"prompt", "completion", "label"}` -> a Rating on the thumbs
  scale (label true -> 1, false -> 0);
- prompt-completion, `{"prompt", "completion"}` -> a Correction of an empty response: a
  written demonstration (an SFT example; `derive.correction_pair` gives it no pair);
- language modelling, `{"text"}` or `{"messages"}` -> the same with an empty prompt: the
  whole text is learned, as TRL's SFT learns it (its group is the text's, not the prompt's).

Each text column is standard (a string) or conversational (a list of {"role", "content"}
messages). A record holds text. A conversational prompt whose responses are each one assistant
message (or text) is a chat prompt (`rlhf.feedback.chat`): the record's prompt is its
transcript up to the assistant's turn, "\\n\\nUser: ...\\n\\nAssistant: " (what
`rlhf.feedback.text.turns` reads back), each response the assistant turn's content, and
`meta["chat"]` keeps the prompt's messages, so that training renders them with the model's
chat template as the policy's prompts are. Other conversational columns (several messages as
a response, a language-modelling conversation) become their turns as text; the prompt +
completion of a conversational row is then the text of the whole conversation. An implicit
prompt is the shared start of chosen and rejected: their shared leading messages, or for text
their longest common prefix cut back to a word (as TRL's `extract_prompt`). Preference
responses (text or content) are stripped of surrounding whitespace (as the other preference
importers do); the other types keep text as written (TRL joins prompt + completion as they
are).

`standard(kind, row)` is the row as its record says it: standard columns only, explicit
prompt, texts as the record holds them. What that cannot give back (messages, an implicit
prompt, stripped spaces, other columns or their order) is kept: when `standard(kind, row)` is
not the row, the row as read goes to the record's `meta["trl"]` (`{"type", "row"}`), and
`rlhf.feedback.export` writes it back as it was: a file imported and exported is the file
that was read.

Every imported record: rater = the format's name ("trl"), rater kind "human", served_because
"import", item id "trl-<row index>", `group` a stable id of the prompt, so that a split never
puts one prompt on both sides.
"""

from __future__ import annotations

import hashlib

from rlhf.feedback.chat import KEY, is_chat, reply, transcript, turns_text
from rlhf.feedback.records import THUMBS, Comparison, Correction, Rating, RecordError

KINDS = ("preference", "unpaired", "prompt-completion", "lm")
"""TRL's dataset types that carry feedback (prompt-only rows carry none)."""
COLUMNS = {"preference": ("prompt", "chosen", "rejected"),
           "unpaired": ("prompt", "completion", "label"),
           "prompt-completion": ("prompt", "completion"), "lm": ("text",)}
"""Each type's standard columns (explicit prompt)."""


def group_id(prefix: str, prompt: str) -> str:
    """A stable prompt id: the same prompt text always lands in the same split."""
    return f"{prefix}:{hashlib.sha1(prompt.encode('utf-8')).hexdigest()[:12]}"


def kind_of_row(row: dict) -> str | None:
    """Which TRL type a row is, from its keys (None: not one that carries feedback)."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"prompt", "completion", "label"} <= keys:
        return "unpaired"
    if {"prompt", "completion"} <= keys:
        return "prompt-completion"
    if "messages" in keys or "text" in keys:
        return "lm"
    return None


def is_conversation(x) -> bool:
    """A list of messages: dicts with a text `content` (and a `role`)."""
    return isinstance(x, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                       for m in x)


def as_text(x, key: str = "") -> str:
    """A column's value as text: a string as it is; messages as their turns
    ("\\n\\nUser: ...\\n\\nAssistant: ...")."""
    if isinstance(x, str):
        return x
    if is_conversation(x):
        return turns_text(x)
    where = f"{key}: " if key else ""
    raise RecordError(f"{where}expected text or a list of messages ({{role, content}}), got "
                      f"{type(x).__name__}")


def common_prefix(a: str, b: str) -> str:
    """Longest common prefix, cut back to a word or turn boundary when the texts diverge."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    prefix = a[:n]
    if n < min(len(a), len(b)) and prefix and not prefix[-1].isspace():
        cut = max(prefix.rfind(" "), prefix.rfind("\n"), prefix.rfind(":"))
        prefix = prefix[:cut + 1] if cut >= 0 else ""
    return prefix


def shared_turns(a: list, b: list) -> int:
    """How many leading messages two conversations share (TRL's extract_prompt)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def sides(row: dict) -> tuple:
    """(prompt, chosen, rejected) of a preference row as given; an implicit prompt split off:
    the conversations' shared leading messages, or the texts' common prefix."""
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" in row:
        return row["prompt"], chosen, rejected
    if is_conversation(chosen) and is_conversation(rejected):
        n = shared_turns(chosen, rejected)
        return chosen[:n], chosen[n:], rejected[n:]
    c, r = as_text(chosen, "chosen"), as_text(rejected, "rejected")
    prompt = common_prefix(c, r)
    return prompt, c[len(prompt):], r[len(prompt):]


def chat_prompt(prompt, responses) -> list | None:
    """The prompt's messages when the row is a chat exchange (the prompt chat messages, each
    response one assistant message or text: `rlhf.feedback.chat`); else None."""
    return prompt if is_chat(prompt) and all(reply(x) is not None for x in responses) else None


def chat_messages(kind: str, row: dict) -> list | None:
    """The prompt messages of a row of type `kind` that is a chat exchange, else None."""
    if kind == "preference":
        prompt, *responses = sides(row)
    elif kind in ("unpaired", "prompt-completion"):
        prompt, responses = row["prompt"], [row["completion"]]
    else:
        return None
    return chat_prompt(prompt, responses)


def preference(row: dict) -> dict:
    """A preference row -> {"prompt", "chosen", "rejected"} as text (see the module doc)."""
    prompt, chosen, rejected = sides(row)
    if chat_prompt(prompt, (chosen, rejected)) is not None:
        prompt, chosen, rejected = transcript(prompt), reply(chosen), reply(rejected)
    out = {"prompt": as_text(prompt, "prompt")}
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        out[key] = value.strip() if isinstance(value, str) else as_text(value, key)
    return out


def _prompt_and(row: dict, key: str) -> tuple[str, str]:
    """(prompt, row[key]) as text: a chat exchange's transcript and the assistant's content."""
    prompt, completion = row["prompt"], row[key]
    if chat_prompt(prompt, (completion,)) is not None:
        prompt, completion = transcript(prompt), reply(completion)
    return as_text(prompt, "prompt"), as_text(completion, key)


def unpaired(row: dict) -> dict:
    label = row["label"]
    if not isinstance(label, bool):
        raise RecordError(f"label: expected true or false, got {label!r}")
    prompt, completion = _prompt_and(row, "completion")
    return {"prompt": prompt, "completion": completion, "label": label}


def prompt_completion(row: dict) -> dict:
    prompt, completion = _prompt_and(row, "completion")
    if not completion.strip():
        raise RecordError("completion: empty (a demonstration needs text)")
    return {"prompt": prompt, "completion": completion}


def language_modelling(row: dict) -> dict:
    key = "messages" if "messages" in row else "text"
    text = as_text(row[key], key)
    if not text.strip():
        raise RecordError(f"{key}: empty (nothing to learn)")
    return {"text": text}


STANDARD = {"preference": preference, "unpaired": unpaired,
            "prompt-completion": prompt_completion, "lm": language_modelling}


def standard(kind: str, row: dict) -> dict:
    """The row as its record says it (see the module docstring); a row that does not fit
    -> RecordError naming the key."""
    need = ("chosen", "rejected") if kind == "preference" else \
        ("messages",) if kind == "lm" and "text" not in row else COLUMNS[kind]
    missing = [k for k in need if k not in row]
    if missing:
        raise RecordError(f"missing key(s) {missing}")
    return STANDARD[kind](row)


def record(kind: str, row: dict, index: int, name: str = "trl"):
    """A TRL row of type `kind` -> its record (Comparison, Rating or Correction); the row is
    kept in `meta["trl"]` when `standard` does not give it back. RecordError names the key."""
    std = standard(kind, row)
    meta = {"dataset": name, "index": index}
    if list(std.items()) != list(row.items()):  # (column order too)
        meta["trl"] = {"type": kind, "row": row}
    chat = chat_messages(kind, row)
    if chat is not None:  # the prompt's messages, for the chat template (rlhf.feedback.chat)
        meta[KEY] = [dict(m) for m in chat]
    if kind == "lm":
        prompt, group = "", group_id(name, std["text"])
    else:
        prompt, group = std["prompt"], group_id(name, std["prompt"])
    common = dict(item_id=f"{name}-{index}", prompt=prompt, rater=name, rater_kind="human",
                  served_because="import", shown_at=0.0, group=group, meta=meta)
    if kind == "preference":
        r = Comparison(a=std["chosen"], b=std["rejected"], label="a", **common)
    elif kind == "unpaired":
        r = Rating(response=std["completion"], value=int(std["label"]), scale=THUMBS["name"],
                   low=THUMBS["low"], high=THUMBS["high"], anchors=dict(THUMBS["anchors"]),
                   **common)
    else:
        r = Correction(response="", corrected=std["text" if kind == "lm" else "completion"],
                       **common)
    r.check()
    return r
