"""Text the evals are built from: held-out embedded documents, sentences, and the embedded eval sets."""

from __future__ import annotations

import gzip
import json
import re
from functools import lru_cache
from typing import Literal

from archlab.data import embedded
from archlab.errors import ArchlabError, did_you_mean

HELD_OUT = ("test", "validation")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")


def embedded_corpus_name(corpus: str) -> str:
    """``corpus`` if it names an embedded corpus (``'wiki'`` or ``'embedded:wiki'``); a pydantic field check."""
    name = corpus.removeprefix("embedded:")
    if name not in embedded.CORPORA:
        raise ValueError(f"unknown embedded corpus '{corpus}'{did_you_mean(name, embedded.CORPORA)}; known: "
                         f"{', '.join(embedded.CORPORA)}")
    return corpus


def corpus_documents(corpus: str, splits: tuple[str, ...] = HELD_OUT) -> list[str]:
    """Documents of an embedded corpus (``'wiki'`` or ``'embedded:wiki'``), held-out splits first."""
    try:
        name = embedded_corpus_name(corpus).removeprefix("embedded:")
    except ValueError as exc:
        raise ArchlabError(str(exc)) from None
    docs = []
    for split in splits:
        for record in embedded.read_split(name, split):
            text = record.get("text") or f"{record.get('instruction', '')}\n\n{record.get('output', '')}"
            docs.append(text)
    return docs


def sentences(text: str, min_chars: int = 20) -> list[str]:
    """Sentences of prose (split after . ! ? before a capital); blank-line paragraphs never merge."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        out += [s.strip() for s in _SENTENCE_END.split(flat) if len(s.strip()) >= min_chars]
    return out


@lru_cache(maxsize=16)
def corpus_sentences(corpus: str) -> tuple[str, ...]:
    """All held-out sentences of a corpus, in document order (a fixed haystack / cloze source)."""
    return tuple(s for doc in corpus_documents(corpus) for s in sentences(doc))


def read_eval_set(folder: str, name: str) -> list[dict]:
    """Records of an embedded eval set such as ``('mmlu', 'dev')`` or ``('multilingual', 'quran_en')``."""
    path = embedded.EMBEDDED_DIR / folder / f"{name}.jsonl.gz"
    if not path.exists():
        raise ArchlabError(f"embedded eval set {folder}/{name} is missing ({path}); rebuild it with "
                           f"python -m scripts.build_embedded")
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines() if line]


Slice = Literal["quran_en", "quran_zh", "quran_ar", "lunyu_zh", "wiki", "code"]
LANGUAGE = {"quran_en": "English", "quran_zh": "Chinese", "quran_ar": "Arabic", "lunyu_zh": "Chinese",
            "wiki": "English", "code": "Python"}


def slice_text(name: str) -> str:
    if name in ("wiki", "code"):
        return "\n\n".join(corpus_documents(name, ("test",)))
    return "\n".join(r["text"] for r in read_eval_set("multilingual", name))
