"""The rating guidelines as formatted text for the page: Markdown parsed (markdown-it-py,
CommonMark, raw HTML off) into a small JSON tree that the page turns into DOM nodes, every
text with `textContent`, never as HTML.

A node is either a string (text, through `feedback.text.visible`) or an object
`{"t": TYPE, "c": [children]}`; TYPE is one of
- blocks: "h" (with "level" 1-6), "p", "ul", "ol" (with "start"), "li", "pre" (a code block:
  one string), "quote", "hr";
- inlines: "em", "strong", "code" (one string), "a", "br".
A link (`"a"`) carries "href" only when it is an absolute http(s) address; any other link
(javascript:, data:, relative) is kept as its text alone. An image is its alt text. Raw HTML in
the file is text. Adjacent strings are joined, so hand-written expected trees stay short.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from rlhf.feedback.text import visible

PARSER = MarkdownIt("commonmark", {"html": False})
"""CommonMark without raw HTML; markdown-it's own link check drops javascript: and the like."""
BLOCKS = {"heading": "h", "paragraph": "p", "bullet_list": "ul", "ordered_list": "ol",
          "list_item": "li", "blockquote": "quote"}
INLINES = {"em": "em", "strong": "strong", "link": "a"}
SAFE_HREF = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)


def render(markdown: str) -> list:
    """Markdown -> the page's tree (a list of block nodes; see the module docstring)."""
    root: dict = {"c": []}
    stack = [root]
    for tok in PARSER.parse(markdown):
        kind = tok.type.rsplit("_", 1)[0]
        if tok.nesting == 1:
            if tok.hidden:  # a tight list's paragraph: its text goes into the item itself
                continue
            node = {"t": BLOCKS.get(kind, "p"), "c": []}
            if kind == "heading":
                node["level"] = int(tok.tag[1:])
            if kind == "ordered_list":
                node["start"] = int(tok.attrGet("start") or 1)
            stack[-1]["c"].append(node)
            stack.append(node)
        elif tok.nesting == -1:
            if not tok.hidden:
                _join(stack.pop()["c"])
        elif tok.type == "inline":
            stack[-1]["c"].extend(_inlines(tok.children or []))
        elif tok.type in ("code_block", "fence"):
            stack[-1]["c"].append({"t": "pre", "c": [visible(tok.content)]})
        elif tok.type == "hr":
            stack[-1]["c"].append({"t": "hr", "c": []})
        elif tok.content:  # anything else (raw HTML is off): its text
            stack[-1]["c"].append({"t": "p", "c": [visible(tok.content)]})
    return _join(root["c"])


def _inlines(tokens) -> list:
    """An inline token stream -> inline nodes."""
    root: dict = {"c": []}
    stack = [root]
    for tok in tokens:
        if tok.nesting == 1:
            node = {"t": INLINES.get(tok.type[:-len("_open")], "em"), "c": []}
            href = str(tok.attrGet("href") or "")
            if node["t"] == "a" and SAFE_HREF.fullmatch(href):
                node["href"] = href
            stack[-1]["c"].append(node)
            stack.append(node)
        elif tok.nesting == -1:
            if len(stack) > 1:
                _join(stack.pop()["c"])
        elif tok.type == "code_inline":
            stack[-1]["c"].append({"t": "code", "c": [visible(tok.content)]})
        elif tok.type == "softbreak":
            stack[-1]["c"].append(" ")
        elif tok.type == "hardbreak":
            stack[-1]["c"].append({"t": "br", "c": []})
        else:  # text, an image's alt text, anything else: as text
            stack[-1]["c"].append(visible(tok.content))
    return _join(root["c"])


def _join(nodes: list) -> list:
    """Join adjacent strings of `nodes` in place (and drop empty ones); returns it."""
    out: list = []
    for n in nodes:
        if isinstance(n, str) and out and isinstance(out[-1], str):
            out[-1] += n
        elif n != "":
            out.append(n)
    nodes[:] = out
    return nodes
