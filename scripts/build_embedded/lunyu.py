"""``lunyu_zh``: the Analects of Confucius (论语, simplified Chinese prose) from the npm package chinese-poetry.

Replaces the earlier ``fortunes_zh`` slice, whose Debian source is GPL-3.0+: the classical text is in the
public domain and the package that transcribes it is MIT-licensed, which an Apache-2.0 package can ship.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from scripts.build_embedded.common import BuildError, npm_pack

CHINESE_POETRY_NPM_PIN = "chinese-poetry@2.0.1"
LUNYU_MEMBER = "package/dist/lunyu/lunyu.json"


def parse_lunyu(chapters: list[dict]) -> list[dict]:
    """[{chapter, paragraphs: [...]}, ...] -> one record per paragraph, in book order."""
    records = []
    for chapter in chapters:
        for k, text in enumerate(chapter["paragraphs"]):
            if text.strip():
                records.append({"chapter": chapter["chapter"], "paragraph": k + 1, "text": text.strip()})
    return records


def build_lunyu(workdir: Path) -> tuple[list[dict], dict, str]:
    """The whole book, one record per paragraph; (records, info, licence text)."""
    archive = npm_pack(CHINESE_POETRY_NPM_PIN, workdir / "npm")
    with tarfile.open(archive) as tf:
        chapters = json.loads(tf.extractfile(LUNYU_MEMBER).read().decode("utf-8"))
        licence = tf.extractfile("package/LICENSE").read().decode("utf-8")
    if "MIT License" not in licence:
        raise BuildError(f"{archive.name}: LICENSE is no longer MIT; review the stated licence")
    records = parse_lunyu(chapters)
    if len(chapters) != 20 or len(records) < 400:
        raise BuildError(f"expected the 20 books of the Analects in {LUNYU_MEMBER}, got {len(chapters)}")
    return records, {"package": CHINESE_POETRY_NPM_PIN, "archive": archive.name, "member": LUNYU_MEMBER[8:],
                     "chapters": len(chapters), "paragraphs": len(records)}, licence
