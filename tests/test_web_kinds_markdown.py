"""The guidelines' Markdown as the page's tree of blocks (`rlhf.raters.guidelines.render`):
hand-written expected trees for headings, paragraphs, lists, emphasis, code and links; unsafe
links, raw HTML and control characters end up as inert text."""

from __future__ import annotations

from rlhf.raters.guidelines import render


def test_headings_paragraphs_lists_and_emphasis():
    md = ("# Rating guidelines (Version: 2)\n\n"
          "Pick the **better** response,\nfor a *reader*.\n\n"
          "1. Follow the prompt.\n2. Be `honest`.\n\n"
          "- tie: both are\n  equally good\n- skip\n\n"
          "## Ties\n\nRare.\n")
    assert render(md) == [
        {"t": "h", "level": 1, "c": ["Rating guidelines (Version: 2)"]},
        {"t": "p", "c": ["Pick the ", {"t": "strong", "c": ["better"]}, " response, for a ",
                         {"t": "em", "c": ["reader"]}, "."]},
        {"t": "ol", "start": 1, "c": [
            {"t": "li", "c": ["Follow the prompt."]},
            {"t": "li", "c": ["Be ", {"t": "code", "c": ["honest"]}, "."]}]},
        {"t": "ul", "c": [{"t": "li", "c": ["tie: both are equally good"]},
                          {"t": "li", "c": ["skip"]}]},
        {"t": "h", "level": 2, "c": ["Ties"]},
        {"t": "p", "c": ["Rare."]},
    ]


def test_loose_lists_quotes_code_blocks_rules_and_breaks():
    md = ("3. first\n\n4. second\n\n> quoted *text*\n\n```\nrate(x)\n```\n\n"
          "    indented\n\n---\n\nline  \nbreak\n")
    assert render(md) == [
        {"t": "ol", "start": 3, "c": [{"t": "li", "c": [{"t": "p", "c": ["first"]}]},
                                      {"t": "li", "c": [{"t": "p", "c": ["second"]}]}]},
        {"t": "quote", "c": [{"t": "p", "c": ["quoted ", {"t": "em", "c": ["text"]}]}]},
        {"t": "pre", "c": ["rate(x)\n"]},
        {"t": "pre", "c": ["indented\n"]},
        {"t": "hr", "c": []},
        {"t": "p", "c": ["line", {"t": "br", "c": []}, "break"]},
    ]


def test_only_http_links_keep_an_address_html_and_escapes_are_text():
    md = ("[safe](https://example.org/a?b=1) [plain](http://x.org) [js](javascript:alert(1)) "
          "[rel](/r/other) [data](data:text/html,hi) ![pic](https://x.org/p.png)\n\n"
          "<script>alert(1)</script>\n\n"
          "a <img src=x onerror=alert(1)> b \x1b[2J \u202eevil\n")
    assert render(md) == [
        {"t": "p", "c": [
            {"t": "a", "href": "https://example.org/a?b=1", "c": ["safe"]}, " ",
            {"t": "a", "href": "http://x.org", "c": ["plain"]},
            " [js](javascript:alert(1)) ",  # markdown-it does not make it a link at all
            {"t": "a", "c": ["rel"]}, " [data](data:text/html,hi) pic"]},
        {"t": "p", "c": ["<script>alert(1)</script>"]},
        {"t": "p", "c": ["a <img src=x onerror=alert(1)> b \\x1b[2J \\u202eevil"]},
    ]


def test_empty_guidelines_give_no_blocks():
    assert render("") == [] and render("\n\n") == []
