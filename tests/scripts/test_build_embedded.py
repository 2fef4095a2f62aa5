"""Parsers of the embedded-data builder (scripts/build_embedded) on small hand-written inputs."""

from __future__ import annotations

import pytest
from scripts.build_embedded.common import BuildError, forbidden_host_in, gzip_bytes, split_documents
from scripts.build_embedded.instructions import parse_faq, rst_body_to_text, rst_inline_to_text
from scripts.build_embedded.lunyu import parse_lunyu
from scripts.build_embedded.mmlu import parse_mmlu_cot_prompts
from scripts.build_embedded.wiki import wiki_to_text

WIKI = """'''Anarchism''' is a [[political philosophy]] that holds [[state (polity)|states]] to be
undesirable.<ref>Some citation</ref> It was {{convert|12|km}} long.{{citation needed}}
[[File:Flag.svg|thumb|A flag]]
{| class="wikitable"
| a || b
|}
== History ==
* First point with [http://example.com an external link]
# Second point &amp; more
== See also ==
* [[Libertarianism]]
=== Sub of see also ===
dropped too
== Legacy ==
Kept.<!-- hidden comment -->
[[Category:Political philosophy]]
"""


def test_wiki_markup_becomes_plain_text():
    text = wiki_to_text(WIKI)
    assert text.startswith("Anarchism is a political philosophy that holds states to be\nundesirable.")
    assert "It was 12 km long." in text
    for gone in ("citation", "ref", "thumb", "wikitable", "http", "Libertarianism", "dropped too", "Category",
                 "hidden", "'''", "[[", "{{"):
        assert gone not in text, gone
    assert "\nHistory\n" in text and "- First point with an external link" in text
    assert "- Second point & more" in text and "\nLegacy\n\nKept." in text
    assert text.endswith("Kept.\n")


RST = """General Questions
=================

What is Python?
---------------

Python is an interpreted language.  See :func:`print` and ``len`` or the
`tutorial <https://docs.python.org/3/tutorial/>`_.

.. note::
   Really interpreted.

Example::

    >>> print(1)
    1

.. index:: dropped

Why is it slow?
---------------

It is not always slow; this answer is long enough to keep.
"""


def test_rst_faq_becomes_question_answer_records():
    records = parse_faq(RST, "general.rst.txt")
    assert [r["instruction"] for r in records] == ["What is Python?", "Why is it slow?"]  # no bare section title
    answer = records[0]["output"]
    assert answer.startswith("Python is an interpreted language.  See `print` and `len` or the\ntutorial.")
    assert "Note:\n   Really interpreted." in answer
    assert "    >>> print(1)\n    1" in answer  # code blocks keep their indentation
    assert "index" not in answer and "dropped" not in answer
    assert records[0]["input"] == "" and records[1]["_key"] == "general.rst.txt#002"


def test_rst_inline_roles_and_links_are_unwrapped():
    assert rst_inline_to_text(":meth:`str.join` and ``x``") == "`str.join` and `x`"
    assert rst_inline_to_text("see `the docs <https://docs.python.org/>`_") == "see the docs"
    assert rst_body_to_text(["First line", "  continued", "", "Second"]).startswith("First line")


def test_mmlu_blocks_keep_the_header_apart_from_the_question():
    prompts = {"high_school_physics": "The following are multiple choice questions about physics.\n\n"
               "Q: What is 2+2?\n(A) 3 (B) 4 (C) 5\nA: Let's think step by step. The answer is (B).\n\n"
               "Q: Which falls faster in vacuum?\n(A) a feather (B) a stone (C) neither\nA: The answer is (C)."}
    first, second = parse_mmlu_cot_prompts(prompts)
    assert first["description"] == "The following are questions (with answers) about high school physics.\n\n"
    assert first["context"] == "Question: What is 2+2?\nAnswer:"
    assert first["choices"] == ["3", "4", "5"] and first["gold"] == 1 and second["gold"] == 2
    with pytest.raises(BuildError, match="cannot parse"):
        parse_mmlu_cot_prompts({"x": "header\n\nQ: no options here\nA: nothing"})


def test_lunyu_paragraphs_keep_book_order():
    records = parse_lunyu([{"chapter": "学而篇", "paragraphs": ["子曰：学而时习之。", " "]},
                           {"chapter": "为政篇", "paragraphs": ["子曰：为政以德。"]}])
    assert [(r["chapter"], r["paragraph"]) for r in records] == [("学而篇", 1), ("为政篇", 1)]


def test_split_is_seeded_by_document_and_disjoint():
    docs = [{"key": f"d{i:02d}", "text": "x" * (i + 1)} for i in range(40)]
    a, b = split_documents(docs, "key"), split_documents(list(reversed(docs)), "key")
    assert a == b and len(a["validation"]) == len(a["test"]) == 2 and len(a["train"]) == 36
    keys = [{d["key"] for d in a[s]} for s in ("train", "validation", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_outputs_are_reproducible_and_name_no_registry_host():
    assert gzip_bytes(b"same bytes") == gzip_bytes(b"same bytes")
    assert forbidden_host_in("see " + ".".join(("pypi", "org")) + "/project/x") is not None
    assert forbidden_host_in("plain text") is None
