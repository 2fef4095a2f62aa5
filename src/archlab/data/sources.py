"""Where records come from: the embedded corpus, local files, or the Hugging Face hub.

Every loader returns ``{split: [record, ...]}``; splits the source does not have are made later by a
seeded document shuffle (see ``archlab.data.build``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from archlab.data import embedded
from archlab.data.config import DataConfig
from archlab.errors import ArchlabError, did_you_mean, first_line
from archlab.files import jsonl_problem
from archlab.offline import datasets_offline_unless_reachable

Records = list[dict[str, Any]]
LOCAL_SUFFIXES = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_records(cfg: DataConfig) -> dict[str, Records]:
    if cfg.source.startswith("embedded:"):
        return _embedded(cfg.source.removeprefix("embedded:"))
    path = Path(cfg.source).expanduser()
    if path.exists():
        return _local(path, cfg)
    if cfg.source.startswith((".", "/", "~")) or Path(cfg.source).suffix in LOCAL_SUFFIXES:
        raise ArchlabError(f"data file not found: {cfg.source} (check data.source)")
    return _hub(cfg)


def _embedded(corpus: str) -> dict[str, Records]:
    if corpus not in embedded.CORPORA:
        raise ArchlabError(
            f"unknown embedded corpus '{corpus}'{did_you_mean(corpus, embedded.CORPORA)}; "
            f"known: {', '.join(embedded.CORPORA)}"
        )
    splits = embedded.available_splits(corpus)
    if not splits:
        raise ArchlabError(f"embedded corpus '{corpus}' has no files; rebuild with python -m scripts.build_embedded")
    return {split: embedded.read_split(corpus, split) for split in splits}


def _local(path: Path, cfg: DataConfig) -> dict[str, Records]:
    """A file, or a folder of files; files named train/validation/test.* become those splits."""
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ArchlabError(f"no .txt/.json/.jsonl/.parquet/.csv files under {path}")
    by_split: dict[str, Records] = {}
    for file in files:
        split = file.stem if file.stem in ("train", "validation", "test") else "train"
        by_split.setdefault(split, []).extend(_read_file(file, cfg))
    return by_split


def _read_file(file: Path, cfg: DataConfig) -> Records:
    kind = LOCAL_SUFFIXES.get(file.suffix)
    if kind is None:
        raise ArchlabError(f"{file}: unsupported file type '{file.suffix}' (use {', '.join(LOCAL_SUFFIXES)})")
    if kind == "text":
        return [{cfg.text_field: file.read_text(encoding="utf-8")}]
    import datasets

    verbosity, bars = datasets.utils.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its parse error is in our one line, not logged too
    datasets.utils.disable_progress_bars()  # nor a "Generating train split" bar left after the error line
    try:
        ds = datasets.load_dataset(kind, data_files=str(file), split="train")
    except Exception as exc:  # datasets raises many types for malformed files
        cause = jsonl_problem(file, objects=True) if file.suffix == ".jsonl" else None
        if cause is None:
            root = _root_cause(exc)
            cause = f"{type(root).__name__}: {first_line(root)}"
        raise ArchlabError(f"{file}: could not be read as {kind} ({cause})") from None
    finally:
        datasets.utils.logging.set_verbosity(verbosity)
        if not bars:
            datasets.utils.enable_progress_bars()
    return [dict(row) for row in ds]


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: datasets wraps a parse error (the line that names the bad row) in its own."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)) is not None \
            and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _hub(cfg: DataConfig) -> dict[str, Records]:
    import datasets

    try:
        with datasets_offline_unless_reachable():
            dsd = datasets.load_dataset(cfg.source, cfg.name)
    except Exception as exc:  # offline, missing, gated: all end here
        raise ArchlabError(
            f"dataset '{cfg.source}' could not be loaded from the Hugging Face hub ({type(exc).__name__}); if this "
            f"machine is offline, download it elsewhere and pass data.source=/path/to/files (.jsonl/.parquet/.txt), "
            f"or use data.source=embedded:shakespeare"
        ) from None
    if cfg.format == "tokenized":  # pre-grouped blocks (seed 001): only input_ids is read, so the labels and
        # attention_mask columns such datasets carry are not turned into Python lists (3x the memory)
        dsd = {split: ds.select_columns(["input_ids"]) if "input_ids" in ds.column_names else ds
               for split, ds in dsd.items()}
    return {str(split): [dict(row) for row in ds] for split, ds in dsd.items()}
