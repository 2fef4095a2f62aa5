"""The bottom layer of everything archlab writes: slugs, paths that stay under their root, atomic writes."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

from archlab.errors import ArchlabError

SLUG_RULE = "letters, digits, '.', '_' and '-', starting and ending with a letter or digit"
_SLUG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def slug(text: str, limit: int = 80, fallback: str = "run") -> str:
    """``text`` as a file name: runs of other characters become '_', no leading/trailing '.', '_' or '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._-")
    return cleaned[:limit].strip("._-") or fallback


def is_slug(text: str) -> bool:
    return bool(_SLUG.fullmatch(text))


def inside(root: Path | str, *parts: str | Path) -> Path:
    """``root / parts``, refused unless it resolves (symlinks followed) to a path under ``root``."""
    root = Path(root)
    path = root.joinpath(*parts)
    resolved, resolved_root = path.resolve(), root.resolve()
    if not resolved.is_relative_to(resolved_root) or (parts and resolved == resolved_root):
        raise ArchlabError(f"refusing to write {path}: it is not inside {root} (names must be {SLUG_RULE})")
    return path


def atomic_write(path: Path, data: str | bytes | Callable[[Path], None]) -> None:
    """Write ``path`` all at once: readers see the old file or the new one, never half of it.

    ``data`` is text, bytes, or a function that writes a given temporary path (e.g. ``torch.save``). On
    failure the temporary file is removed, so a full disk leaves no empty or partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def jsonl_problem(path: Path, objects: bool = False, cut_tail: bool = False) -> str | None:
    """Where a JSON-lines file first fails to parse, as "line N ..." (None when every line parses).

    ``objects``: every line must be a JSON object. ``cut_tail``: a last line without its newline that does not
    parse is what a kill mid-append leaves (readers skip it), not damage.
    """
    import json

    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return f"line {number} is not UTF-8 text ({exc.reason} at byte {exc.start} of the line)"
        except json.JSONDecodeError as exc:
            if cut_tail and number == len(lines):
                return None
            return f"line {number} is not JSON: {exc.msg} at column {exc.colno}"
        if objects and not isinstance(value, dict):
            return f"line {number} is JSON but not an object ({{\"text\": ...}})"
    return None
