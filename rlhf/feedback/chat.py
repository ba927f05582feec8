"""Conversations kept through import and storage, so that every trainer renders them with the
model's chat template exactly as the policy's prompts are rendered (`rlhf.lm.tokenizer`).

A record whose prompt was chat messages (a TRL conversational row, `rlhf.feedback.trl_formats`)
holds, in text, what raters see and what a model without a chat template reads:
- `prompt`: the conversation's transcript up to the assistant's turn,
  "\\n\\nUser: ...\\n\\nAssistant: " (`transcript`), so that prompt + response is the
  transcript of the whole conversation, whichever way the prompt was given (explicit, or
  implicit: the turns chosen and rejected share);
- each response: the assistant turn's content;
- `meta["chat"]`: the prompt's messages (`{"role", "content"}` dicts, as given).

`with_conversations` gives records read back, from a data file or a store, their prompt as a
`Conversation`: a `ChatPrompt` (so the tokenizer renders its messages with the generation
prompt, as for the policy's prompts) whose text is the record's prompt. Every training row
made from the record (a pair, an unpaired row, a demonstration) carries it as its prompt.
"""

from __future__ import annotations

from rlhf.feedback.records import RecordError
from rlhf.prompts import ChatPrompt

KEY = "chat"
"""The `meta` key holding a record's prompt messages."""
ASSISTANT = "\n\nAssistant: "
"""What a conversation's prompt text ends with: the assistant's turn marker."""


class Conversation(ChatPrompt):
    """A chat prompt read from a record: as a string, the record's prompt text (the
    transcript); `.messages`, the messages the chat template is applied to."""

    def __new__(cls, messages: list[dict], text: str):
        obj = str.__new__(cls, text)
        obj.messages = [dict(m) for m in messages]
        return obj

    def __getnewargs__(self):  # copy, deepcopy and pickle rebuild it from both
        return (self.messages, str(self))


def is_chat(x) -> bool:
    """A non-empty list of messages a chat template renders: dicts with a text `role` and a
    text `content`."""
    return isinstance(x, list) and bool(x) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in x)


def turns_text(messages: list[dict]) -> str:
    """Messages as their turns, "\\n\\nUser: ...\\n\\nAssistant: ..." (a missing role: user)."""
    return "".join(f"\n\n{(m.get('role') or 'user').capitalize()}: {m['content']}"
                   for m in messages)


def transcript(messages: list[dict]) -> str:
    """A chat prompt's text: its turns, then the assistant's turn marker (`ASSISTANT`)."""
    return turns_text(messages) + ASSISTANT


def reply(x) -> str | None:
    """A response's text when it is one assistant message (its content) or text; None for
    any other shape (several messages, another role)."""
    if isinstance(x, str):
        return x
    if is_chat(x) and len(x) == 1 and x[0]["role"] == "assistant":
        return x[0]["content"]
    return None


def conversation(record, where: str = "") -> Conversation | None:
    """The record's prompt as a `Conversation` when its `meta` holds the prompt's messages;
    None for a text prompt. Messages that are not a list of {role, content} texts: a
    RecordError naming `where`, the record and the key."""
    meta = getattr(record, "meta", None)
    if not isinstance(meta, dict) or KEY not in meta:
        return None
    messages = meta[KEY]
    if not is_chat(messages):
        at = f"{where}: " if where else ""
        raise RecordError(f"{at}record {record.id}: meta.{KEY}: expected a list of "
                          '{"role": ..., "content": ...} messages with text values')
    return Conversation(messages, record.prompt)


def with_conversations(records, where: str = "") -> list:
    """`records` with each prompt that was a conversation (`meta["chat"]`) as a
    `Conversation` (the record's text, its messages); other records as they are."""
    out = list(records)
    for r in out:
        chat = conversation(r, where)
        if chat is not None and not isinstance(r.prompt, Conversation):
            r.prompt = chat
    return out
