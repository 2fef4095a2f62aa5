"""Tables that fit the terminal: short headers with a legend, numbers never cut, transposed when too wide.

A table is first drawn as is, with its short headers; when that is wider than the console it is
transposed (one column per run, in as many blocks as the width needs). Number cells never wrap, so a
value is never cut; only names (runs, what changed) fold.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

SHORT = {  # metric and column names -> short headers (the legend under the table spells them out)
    "bits_per_byte": "bpb", "accuracy": "acc", "perplexity": "ppl", "train_tokens_per_second": "tok/s",
    "train_bytes_per_second": "B/s", "generate_tokens_per_second": "gen tok/s", "generate_bytes_per_second": "gen B/s", "latency_ms_per_token": "ms/tok",
    "rank_accuracy": "rank acc", "exact_match": "EM", "What changed": "changed", "Variant": "run",
    "Non-emb": "non-emb", "Params": "params", "FLOPs": "FLOPs", "Status": "st",
}


def short_name(name: str) -> str:
    if name in SHORT:
        return SHORT[name]
    prefix, _, rest = name.partition(" ")
    if prefix == "Δ" and rest:
        return "Δ " + short_name(rest)
    return SHORT.get(name.rpartition(".")[2], name)


def short_metric(dotted: str) -> str:
    """'speed.train_tokens_per_second' -> 'speed.tok/s' (the eval name kept, its key shortened)."""
    name, _, key = dotted.rpartition(".")
    return f"{name}.{SHORT.get(key, key)}" if name else SHORT.get(key, key)


def two_lines(cell: str) -> str:
    """'6.493 [6.43, 6.56]' -> '6.493\\n[6.43,6.56]': a value over its interval keeps columns narrow."""
    if " [" in cell and cell.endswith("]"):
        value, _, interval = cell.partition(" [")
        return f"{value}\n[{interval.replace(', ', ',')}"
    return cell


def _plain(title: str, header: list[str], body: list[list[str]], text_columns: set[int]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title_justify="left")
    for j, name in enumerate(header):
        if j in text_columns:
            table.add_column(name, overflow="fold", min_width=min(10, max(len(name), 4)))
        else:
            table.add_column(name, no_wrap=True, justify="right")
    for row in body:
        table.add_row(*row)
    return table


def needed_width(header: list[str], body: list[list[str]], text_columns: set[int], fold_names: bool = False) -> int:
    """Columns at their narrowest without cutting a number: text columns fold (to 10 characters or their
    longest word), other cells keep their longest line; one space of padding each side."""
    total = 0
    for j, name in enumerate(header):
        cells = [row[j] for row in body if j < len(row)]
        if j in text_columns and not (fold_names and j == 0):
            words = [w for c in [name, *cells] for w in c.split()]
            total += min(10, max((len(w) for w in words), default=1)) + 2
        else:
            lines = [line for c in cells for line in c.splitlines()]
            total += max([len(line) for line in lines] + [min(len(name), 6)]) + 2
    return total


def fit_table(title: str, header: list[str], body: list[list[str]], width: int,
              text_columns: tuple[int, ...] = (0, 1)) -> RenderableType:
    """``header``/``body`` as a rich renderable no wider than ``width``, with a legend of the short headers."""
    shorts = [short_name(h) for h in header]
    legend = {s: h for s, h in zip(shorts, header, strict=True)
              if s.lower() != h.lower() and s not in ("run", "changed", "st")}
    cells = [[two_lines(c) for c in row] for row in body]
    table = _plain(title, shorts, cells, set(text_columns))
    parts: list[RenderableType] = []
    if needed_width(shorts, cells, set(text_columns)) <= width:
        parts.append(table)
    else:
        parts += _transposed(title, shorts, cells, width)
    if legend:
        parts.append(Text("  " + " · ".join(f"{s} = {h}" for s, h in legend.items()), style="dim"))
    return Group(*parts)


def _transposed(title: str, header: list[str], body: list[list[str]], width: int) -> list[Table]:
    """One column per run, as many runs per block as fit; a column is as wide as its longest word or number."""
    label_width = max(len(h) for h in header[1:]) + 2

    def column_width(row: list[str]) -> int:
        words = [w for c in row for line in c.splitlines() for w in line.split()]
        return max(6, *(len(w) for w in words)) + 2

    blocks, start = [], 0
    while start < len(body):
        end, used = start, label_width
        while end < len(body) and (end == start or used + column_width(body[end]) <= width):
            used += column_width(body[end])
            end += 1
        table = Table(title=title if start == 0 else None, box=box.SIMPLE_HEAD, pad_edge=False,
                      collapse_padding=True, title_justify="left")
        table.add_column("", no_wrap=True, style="bold")
        for row in body[start:end]:
            table.add_column(row[0], overflow="fold", justify="right")
        for j, name in enumerate(header[1:], 1):
            table.add_row(name, *[row[j] for row in body[start:end]])
        blocks.append(table)
        start = end
    return blocks
