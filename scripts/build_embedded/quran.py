"""``quran_{en,zh,ar}``: the same verses in English, Chinese and Arabic from the npm package quran-json."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

from scripts.build_embedded.common import SEED, BuildError, npm_pack

QURAN_NPM_PIN = "quran-json@3.1.2"
QURAN_LANGS = {"en": "quran_en.json", "zh": "quran_zh.json", "ar": "quran.json"}
QURAN_MIN_ENGLISH_BYTES = 40_000


def build_quran(workdir: Path) -> tuple[dict[str, list[dict]], dict, str]:
    """Whole chapters, the same verses in every language; (records by language, info, licence text).

    The package's ``LICENSE.txt`` is CC BY-SA 4.0 while its metadata says CC-BY-4.0: the stricter
    (share-alike) licence is the one stated and shipped.
    """
    archive = npm_pack(QURAN_NPM_PIN, workdir / "npm")
    with tarfile.open(archive) as tf:
        books = {lang: json.loads(tf.extractfile(f"package/dist/{name}").read().decode("utf-8"))
                 for lang, name in QURAN_LANGS.items()}
        licence = tf.extractfile("package/LICENSE.txt").read().decode("utf-8")
    if "Attribution-ShareAlike 4.0" not in licence:
        raise BuildError(f"{archive.name}: LICENSE.txt is no longer CC BY-SA 4.0; review the stated licence")
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
                 "verses": len(out["en"])}, licence
