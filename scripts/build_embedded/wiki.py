"""``wiki``: English Wikipedia articles from the gensim wheel's test data, markup stripped (stdlib only)."""

from __future__ import annotations

import bz2
import fnmatch
import html
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from scripts.build_embedded.common import BuildError, pip_download, spdx_licence_text, split_documents

GENSIM_PIN = "gensim==4.3.3"
GENSIM_WIKI_GLOB = "gensim/test/test_data/enwiki-*-shortened*.bz2"
# the article text is Wikipedia's (CC BY-SA 3.0 at the time of the dump), not the wheel's (LGPL code)
CC_BY_SA_3 = "CC-BY-SA-3.0"


_WIKI_DROP_SECTIONS = {
    "see also",
    "references",
    "external links",
    "further reading",
    "notes",
    "bibliography",
    "sources",
    "citations",
    "footnotes",
    "notes and references",
    "works cited",
    "general references",
    "primary sources",
    "secondary sources",
}
_WIKI_DROP_TAGS = ("ref", "gallery", "timeline", "score", "imagemap", "syntaxhighlight", "source", "graph")
_WIKI_LINK_DROP_NS = ("file:", "image:", "category:", "media:", "wikipedia:", "wp:", "template:", "help:")


def _remove_balanced(text: str, open_tok: str, close_tok: str, replace) -> str:
    """Replace balanced ``open_tok ... close_tok`` spans (innermost first) via ``replace(inner)``."""
    stack: list[int] = []  # indexes into buf where an open span starts
    i = 0
    n = len(text)
    buf: list[str] = []
    while i < n:
        if text.startswith(open_tok, i):
            stack.append(len(buf))
            buf.append(open_tok)
            i += len(open_tok)
        elif stack and text.startswith(close_tok, i):
            start = stack.pop()
            inner = "".join(buf[start + 1 :])
            del buf[start:]
            buf.append(replace(inner))
            i += len(close_tok)
        else:
            buf.append(text[i])
            i += 1
    return "".join(buf)


def _wiki_template(inner: str) -> str:
    parts = [p.strip() for p in inner.split("|")]
    name = parts[0].strip().lower().replace("_", " ")
    args = [p for p in parts[1:] if "=" not in p]
    if name in ("convert", "cvt") and len(args) >= 2:
        return f"{args[0]} {args[1]}"
    if (name.startswith("lang-") or name == "transl") and args:
        return args[-1]
    if name == "lang" and len(args) >= 2:
        return args[1]
    if (
        name in ("nowrap", "nobr", "small", "smaller", "big", "nowiki", "math", "mvar", "var", "em", "strong")
        and args
    ):
        return args[0]
    if name in ("ndash", "snd", "spaced ndash"):
        return " – "
    if name in ("=", "equals"):
        return "="
    if name in ("mdash",):
        return "—"
    if name in ("nbsp",):
        return " "
    return ""


def _wiki_link(inner: str) -> str:
    target, _, label = inner.partition("|")
    t = target.strip().lower()
    if t.startswith(_WIKI_LINK_DROP_NS) or re.match(r"^[a-z]{2,3}(-[a-z]+)?:", t):
        return ""  # files, categories, interlanguage links
    if label:
        return label.split("|")[-1]
    return target.lstrip(":").split("#")[0] if not target.startswith("#") else target[1:]


def wiki_to_text(markup: str) -> str:
    """Strip MediaWiki markup to readable plain text (stdlib only, deterministic)."""
    s = markup
    s = re.sub(r"<!--.*?-->", "", s, flags=re.S)
    for tag in _WIKI_DROP_TAGS:
        s = re.sub(rf"<{tag}\b[^>]*/>", "", s, flags=re.I)
        s = re.sub(rf"<{tag}\b[^>]*>.*?</{tag}\s*>", "", s, flags=re.I | re.S)
    s = re.sub(r"<math\b[^>]*>(.*?)</math\s*>", r"\1", s, flags=re.I | re.S)
    s = re.sub(r"<br\s*/?>", "\n", s, flags=re.I)
    s = _remove_balanced(s, "{{", "}}", _wiki_template)
    s = _remove_balanced(s, "{|", "|}", lambda inner: "")  # tables
    s = _remove_balanced(s, "[[", "]]", _wiki_link)
    s = re.sub(r"\[\[(?:file|image):[^\n]*", "", s, flags=re.I)  # unbalanced file captions
    # external links: [url label] -> label, bare [url] -> nothing
    s = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", s)
    s = re.sub(r"\[(?:https?:)?//[^\s\]]*\]", "", s)
    s = re.sub(r"https?://\S+", "", s)
    s = re.sub(r"</?[a-zA-Z][^<>]*>", "", s)  # remaining html tags, keep content
    s = re.sub(r"'{2,5}", "", s)
    s = re.sub(r"__[A-Z]+__", "", s)
    s = html.unescape(s).replace("\xa0", " ").replace("\u200b", "")

    lines_out: list[str] = []
    skipping_level = 0
    for raw in s.split("\n"):
        line = raw.rstrip()
        h = re.fullmatch(r"(={2,6})\s*(.*?)\s*\1", line.strip())
        if h:
            level = len(h.group(1))
            title = h.group(2).strip()
            if skipping_level and level > skipping_level:
                continue
            skipping_level = 0
            if title.lower() in _WIKI_DROP_SECTIONS or not title:
                skipping_level = level
                continue
            lines_out += ["", title, ""]
            continue
        if skipping_level:
            continue
        stripped = line.strip()
        if stripped in ("|}", "|-", "{|") or stripped.startswith(("|", "!")):
            continue
        m = re.match(r"^([*#:;]+)\s*(.*)$", stripped)
        if m:
            body = m.group(2).strip()
            if not body:
                continue
            line = ("- " if m.group(1)[-1] in "*#" else "") + body
        line = re.sub(r"[ \t]{2,}", " ", line).strip()
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "( )" left by removed templates
        line = re.sub(r" +([,.;:])", r"\1", line)
        lines_out.append(line)
    text = "\n".join(lines_out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text + "\n"


def build_wiki(workdir: Path) -> tuple[dict[str, list[dict]], dict, str]:
    wheel = pip_download(
        GENSIM_PIN,
        workdir / "pypi",
        "gensim-4.3.3-cp311-*.whl",
        extra=[
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_17_x86_64",
        ],
    )
    docs = []
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, GENSIM_WIKI_GLOB))
        if not members:
            raise BuildError(f"{wheel.name} has no member matching {GENSIM_WIKI_GLOB}")
        for member in members:
            root = ET.fromstring(bz2.decompress(zf.read(member)))
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            for page in root.iter(f"{ns}page"):
                if page.find(f"{ns}redirect") is not None or page.findtext(f"{ns}ns") != "0":
                    continue
                title = page.findtext(f"{ns}title")
                markup = page.findtext(f"{ns}revision/{ns}text") or ""
                text = wiki_to_text(markup)
                if len(text) < 200:
                    continue
                docs.append({"title": title, "text": text})
    if len(docs) < 90:
        raise BuildError(f"expected ~105 articles in {wheel.name}, got {len(docs)}")
    splits = split_documents(docs, "title")
    info = {"package": GENSIM_PIN, "archive": wheel.name, "members": members}
    return splits, info, spdx_licence_text(CC_BY_SA_3, workdir)
