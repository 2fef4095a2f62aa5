"""Every data file shipped in archlab/data/embedded has a licence entry, a licence text beside it, and a
line in PROVENANCE.md; none is under a copyleft licence that an Apache-2.0 package cannot carry."""

from __future__ import annotations

import json

from archlab.data.embedded import EMBEDDED_DIR

METADATA = {"manifest.json", "licenses.json", "PROVENANCE.md", "__init__.py"}


def _shipped_data_files() -> list[str]:
    return sorted(str(p.relative_to(EMBEDDED_DIR)) for p in EMBEDDED_DIR.rglob("*")
                  if p.is_file() and p.name not in METADATA and not p.name.startswith("LICENSE")
                  and "__pycache__" not in p.parts)


def test_every_shipped_data_file_has_a_licence_entry_and_text():
    licences = json.loads((EMBEDDED_DIR / "licenses.json").read_text())["files"]
    provenance = (EMBEDDED_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    files = _shipped_data_files()
    assert "multilingual/lunyu_zh.jsonl.gz" in files and len(files) == 20  # 12 corpus, tokenizer, 5 eval sets, GPT-2 BPE (2)
    missing = [f for f in files if f not in licences]
    assert not missing, f"shipped without a licence entry in licenses.json: {missing}"
    for path, entry in licences.items():
        assert (EMBEDDED_DIR / path).exists(), f"licenses.json lists {path}, which is not shipped"
        assert "GPL" not in entry["licence"], f"{path}: {entry['licence']} cannot ship in an Apache-2.0 package"
        if entry["licence_file"] is not None:
            assert (EMBEDDED_DIR / entry["licence_file"]).stat().st_size > 500, entry["licence_file"]
        else:
            assert entry["licence"] == "Apache-2.0"  # only archlab's own build outputs carry no source licence
        assert f"| `{path}` | {entry['licence']} |" in provenance


def test_quran_json_is_stated_under_its_stricter_licence():
    licences = json.loads((EMBEDDED_DIR / "licenses.json").read_text())["files"]
    entry = licences["multilingual/quran_en.jsonl.gz"]
    assert entry["licence"] == "CC-BY-SA-4.0"
    assert "Attribution-ShareAlike 4.0" in (EMBEDDED_DIR / entry["licence_file"]).read_text()
