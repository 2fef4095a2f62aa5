"""The corpus and tokenizer shipped inside archlab (see PROVENANCE.md; rebuilt by python -m scripts.build_embedded)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

EMBEDDED_DIR = Path(__file__).parent
CORPORA = ("shakespeare", "wiki", "code", "instructions")
TOKENIZER_FILE = EMBEDDED_DIR / "tokenizer.json"


def read_split(corpus: str, split: str) -> list[dict]:
    """Records of one split: {'text': ...} documents, or alpaca records for 'instructions'."""
    folder = EMBEDDED_DIR / corpus
    txt = folder / f"{split}.txt.gz"
    if txt.exists():
        return [{"text": gzip.decompress(txt.read_bytes()).decode("utf-8")}]
    path = folder / f"{split}.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def available_splits(corpus: str) -> list[str]:
    return sorted(p.name.split(".")[0] for p in (EMBEDDED_DIR / corpus).glob("*.gz"))
