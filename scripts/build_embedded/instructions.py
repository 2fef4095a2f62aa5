"""``instructions``: question/answer pairs parsed from the Python FAQ (Debian ``python3.11-doc``), as Alpaca records."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

from scripts.build_embedded.common import (
    FORBIDDEN_HOSTS,
    SPLITS,
    BuildError,
    apt_download,
    require_tool,
    run,
    split_documents,
)

PYDOC_DEB = "python3.11-doc"
PYDOC_FAQ_DIR = "usr/share/doc/python3.11/html/_sources/faq"
PYDOC_COPYRIGHT = "usr/share/doc/python3.11-doc/copyright"

_RST_UNDERLINE = re.compile(r"^([=\-^~*\"'`#+])\1{2,}\s*$")
_RST_KEEP_CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput"}
_RST_DROP_WITH_BODY = {
    "testsetup",
    "testcleanup",
    "index",
    "toctree",
    "contents",
    "highlight",
    "tabularcolumns",
    "raw",
    "image",
    "figure",
}
_RST_ADMONITIONS = {
    "note": "Note:",
    "seealso": "See also:",
    "warning": "Warning:",
    "tip": "Tip:",
    "important": "Important:",
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "impl-detail": "CPython implementation detail:",
}


def _replace_forbidden_url(url: str) -> str:
    host = re.sub(r"^https?://", "", url).split("/")[0].lower()
    if host not in FORBIDDEN_HOSTS:
        return url
    m = re.search(r"/project/([^/]+)", url)
    return f"the {m.group(1)} package on the Python Package Index" if m else "the Python Package Index"


_CODE_ROLES = {
    "func",
    "meth",
    "class",
    "mod",
    "attr",
    "exc",
    "data",
    "const",
    "obj",
    "keyword",
    "option",
    "envvar",
    "file",
    "samp",
    "program",
    "kbd",
    "menuselection",
    "type",
    "macro",
    "member",
    "opcode",
}


def rst_inline_to_text(s: str) -> str:
    """Unwrap rst inline markup in a paragraph (may span lines)."""

    def role(m: re.Match) -> str:
        name, body = m.group(1).split(":")[-1], m.group(2)
        t = re.match(r"^(.*?)\s*<[^<>]+>$", body, flags=re.S)
        if t and t.group(1):
            body = t.group(1)
        else:
            body = body.lstrip("!")
            if body.startswith("~"):
                body = body[1:].split(".")[-1]
        return f"`{body}`" if name in _CODE_ROLES else body

    # hyperlinks first: `label <url>`_ -> label ; `label`_ -> label (never a role or ``literal``)
    s = re.sub(r"(?<![`:\w])`([^`<]+?)\s*<[^`>]+>`__?(?![\w`])", lambda m: m.group(1).strip(), s, flags=re.S)
    s = re.sub(r"(?<![`:\w])`([^`]+)`__?(?![\w`])", r"\1", s)
    s = re.sub(r":([a-zA-Z][\w:+-]*):`([^`]+)`", role, s)
    s = re.sub(r"``(.+?)``", r"`\1`", s, flags=re.S)
    s = re.sub(r"\s*\[#\w*\]_", "", s)  # footnote references
    s = s.replace("|release|", "3.11").replace("|version|", "3.11")
    s = re.sub(r"https?://[^\s<>`)]+", lambda m: _replace_forbidden_url(m.group(0)), s)
    return s


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_body_to_text(lines: list[str]) -> str:
    """Lightly clean an rst answer: directives resolved, roles/links unwrapped, code kept verbatim."""
    out: list[str] = []
    prose: list[str] = []  # current paragraph; inline markup may span its lines

    def flush() -> None:
        if prose:
            out.extend(rst_inline_to_text("\n".join(prose)).split("\n"))
            prose.clear()

    def keep_block(i: int, indent: int) -> int:
        while i < n and (not lines[i].strip() or _indent_of(lines[i]) > indent):
            out.append(lines[i].rstrip())
            i += 1
        return i

    i = 0
    n = len(lines)
    while i < n:
        line = lines[i].rstrip()
        m = re.match(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$", line)
        if m:
            flush()
            indent, name, arg = len(m.group(1)), m.group(2).lower(), m.group(3).strip()
            i += 1
            while i < n and re.match(r"^\s+:[\w-]+:", lines[i]) and _indent_of(lines[i]) > indent:
                i += 1  # directive options
            if name in _RST_DROP_WITH_BODY:
                while i < n and (not lines[i].strip() or _indent_of(lines[i]) > indent):
                    i += 1
            elif name in _RST_KEEP_CODE_DIRECTIVES:
                i = keep_block(i, indent)
            elif name in _RST_ADMONITIONS:
                out.append(
                    " " * indent + _RST_ADMONITIONS[name] + (" " + rst_inline_to_text(arg) if arg else "")
                )
            elif name != "only" and arg:
                out.append(" " * indent + rst_inline_to_text(arg))
            continue
        if re.match(r"^\s*\.\.(\s|$)", line):  # comment or link target: drop it and its indented body
            flush()
            indent = _indent_of(line)
            i += 1
            while i < n and lines[i].strip() and _indent_of(lines[i]) > indent:
                i += 1
            continue
        if not line.strip():
            flush()
            out.append("")
            i += 1
            continue
        if line.endswith("::"):
            # a paragraph ending in '::' introduces a literal (code) block, kept verbatim
            head = line[:-2].rstrip()
            if head.strip():
                prose.append(head + ":")
            flush()
            i = keep_block(i + 1, _indent_of(line))
            continue
        prose.append(line)
        i += 1
    flush()
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return textwrap.dedent(text).strip()


def parse_faq(text: str, source: str) -> list[dict]:
    lines = text.replace("\r\n", "\n").split("\n")
    headings = []  # (line index of title, title)
    for i in range(len(lines) - 1):
        title, under = lines[i].strip(), lines[i + 1].rstrip()
        if (
            title
            and not lines[i].startswith(" ")
            and _RST_UNDERLINE.match(under)
            and len(under.strip()) >= len(title)
            and not _RST_UNDERLINE.match(title)
        ):
            headings.append((i, title))
    records = []
    for k, (i, title) in enumerate(headings):
        end = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
        body = lines[i + 2 : end]
        # a page title with an overline leaves its overline just before the next heading
        while body and (not body[-1].strip() or _RST_UNDERLINE.match(body[-1].rstrip())):
            body.pop()
        answer = rst_body_to_text(body)
        if len(answer) < 20:
            continue  # section headings ("General Questions") have no answer of their own
        records.append(
            {
                "instruction": rst_inline_to_text(title),
                "input": "",
                "output": answer,
                "_key": f"{source}#{k:03d}",
            }
        )
    return records


def build_instructions(workdir: Path) -> tuple[dict[str, list[dict]], dict, str]:
    deb = apt_download(PYDOC_DEB, workdir / "debian")
    dpkg = require_tool("dpkg-deb", "this step needs Debian's dpkg-deb to unpack the .deb")
    version = run([dpkg, "-f", str(deb), "Version"]).strip()
    extract = workdir / "debian" / f"{PYDOC_DEB}-extracted"
    if extract.exists():
        shutil.rmtree(extract)
    run([dpkg, "-x", str(deb), str(extract)])
    faq_files = sorted((extract / PYDOC_FAQ_DIR).glob("*.rst.txt"))
    if not faq_files:
        raise BuildError(f"no FAQ sources under {PYDOC_FAQ_DIR} in {deb.name}")
    records: list[dict] = []
    for f in faq_files:
        records += parse_faq(f.read_text(encoding="utf-8"), f.name)
    if len(records) < 100:
        raise BuildError(f"parsed only {len(records)} FAQ records from {deb.name}")
    splits = split_documents(records, "_key")
    for s in SPLITS:
        for r in splits[s]:
            r.pop("_key")
    info = {
        "package": f"{PYDOC_DEB} {version}",
        "archive": deb.name,
        "paths": [f"/{PYDOC_FAQ_DIR}/{f.name}" for f in faq_files],
    }
    return splits, info, (extract / PYDOC_COPYRIGHT).read_text(encoding="utf-8")
