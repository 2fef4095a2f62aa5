"""``code``: a deterministic ~1.5 MB selection of the running interpreter's standard library, split by file."""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from scripts.build_embedded.common import forbidden_host_in, split_documents

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


def build_code(workdir: Path) -> tuple[dict[str, list[dict]], dict, str]:
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
            if forbidden_host_in(text):
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
    return splits, info, (stdlib / "LICENSE.txt").read_text(encoding="utf-8")  # the PSF licence
