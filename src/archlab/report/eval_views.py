"""Seed-style tables and plots of the evals' JSON: zero-shot MC, NIAH heatmaps, forgetting matrices, ...

``eval_views(rows, plots_dir)`` returns ``(title, markdown, images)`` sections, one per eval that at least
one run has; runs without that eval are left out of its table. Accuracies carry their 95% interval
and n, so a reader sees at once which differences are noise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from archlab.files import inside, slug  # noqa: E402
from archlab.report.collect import RunRow  # noqa: E402
from archlab.report.tables import fmt, to_markdown  # noqa: E402

Section = tuple[str, str, list[Path]]


def _plot_file(plots: Path, prefix: str, run_id: str) -> Path:
    return inside(plots, f"{prefix}_{slug(run_id.lower(), 60)}.png")


def _cell(payload: dict, key: str, digits: int = 3) -> str:
    value = payload.get("metrics", {}).get(key)
    if not isinstance(value, int | float):
        return "—"
    ci = payload.get("ci95", {}).get(key)
    return f"{value:.{digits}f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else fmt(value)


def _with(rows: list[RunRow], name: str) -> list[tuple[RunRow, dict[str, Any]]]:
    return [(r, r.evals[name]) for r in rows if name in r.evals]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mc_view(rows: list[RunRow], plots: Path) -> Section | None:
    have = _with(rows, "mc")
    if not have:
        return None
    memorize = any("acc_memorize" in p["metrics"] for _, p in have)
    header = ["Variant", "Task", "n", "acc", "acc_norm", "chance"]
    header += ["acc (memorize)", "acc_norm (memorize)"] if memorize else []
    body = []
    for row, p in have:
        line = [row.spec.title, str(p["details"].get("task")), str(p["n"]), _cell(p, "acc"), _cell(p, "acc_norm"),
                fmt(p["details"].get("chance"), 3)]
        line += [_cell(p, "acc_memorize"), _cell(p, "acc_norm_memorize")] if memorize else []
        body.append(line)
    note = "\n\nScored by continuation log-likelihood with lm-eval conventions (acc_norm: per character)."
    return "Multiple choice (zero-shot)", to_markdown([header, *body]) + note, []


def niah_view(rows: list[RunRow], plots: Path) -> Section | None:
    have = _with(rows, "niah")
    if not have:
        return None
    lengths = sorted({c["length"] for _, p in have for c in p["details"]["grid"]})
    header = ["Variant", "n", "rank acc", "exact match", *[f"rank acc @{n}" for n in lengths], "chance"]
    body, images = [], []
    for row, p in have:
        body.append([row.spec.title, str(p["n"]), _cell(p, "rank_accuracy"), _cell(p, "exact_match"),
                     *[fmt(p["metrics"].get(f"rank_accuracy@{n}"), 3) for n in lengths],
                     fmt(p["details"].get("chance_rank_accuracy"), 3)])
        images.append(niah_heatmap(p["details"]["grid"], _plot_file(plots, "niah", row.spec.id), row.spec.title))
    return "Needle in a haystack", to_markdown([header, *body]), images


def niah_heatmap(grid: list[dict], path: Path, title: str, metric: str = "rank_accuracy") -> Path:
    """Depth (rows) x length (columns) heatmap of one run's NIAH grid."""
    lengths = sorted({c["length"] for c in grid})
    depths = sorted({c["depth"] for c in grid})
    values = np.full((len(depths), len(lengths)), np.nan)
    for c in grid:
        if c.get(metric) is not None:
            values[depths.index(c["depth"]), lengths.index(c["length"])] = c[metric]
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2.5, 0.6 * len(depths) + 1.8))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"NIAH {metric}: {title}", fontsize=9)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def passkey_view(rows: list[RunRow], plots: Path) -> Section | None:
    have = _with(rows, "passkey")
    if not have:
        return None
    lengths = sorted({int(k) for _, p in have for k in p["details"].get("per_length", {})})
    header = ["Variant", "n", "exact match", *[f"@{n}" for n in lengths]]
    body = [[row.spec.title, str(p["n"]), _cell(p, "exact_match"),
             *[_cell(p, f"exact_match@{n}", 2) for n in lengths]] for row, p in have]
    return "Passkey retrieval", to_markdown([header, *body]), []


def continual_view(rows: list[RunRow], plots: Path) -> Section | None:
    have = _with(rows, "continual")
    if not have:
        return None
    names = [s["name"] for s in have[0][1]["details"]["segments"]]
    header = ["Variant", *[f"loss {n}" for n in names], *[f"loss after memorize {n}" for n in names], "forgetting"]
    body, images = [], []
    for row, p in have:
        m = p["metrics"]
        body.append([row.spec.title, *[fmt(m.get(f"loss/{n}")) for n in names],
                     *[fmt(m.get(f"loss_memorize/{n}")) for n in names], fmt(m.get("forgetting_mean"))])
        key = "matrix_memorize" if "matrix_memorize" in p["details"] else "matrix"
        images.append(forgetting_matrix(p["details"][key]["loss"], names,
                                        _plot_file(plots, "forgetting", row.spec.id), row.spec.title))
    note = "\n\nRows: after memorizing segment i; columns: held-out loss of segment j (never memorized)."
    return "Continual learning (forgetting)", to_markdown([header, *body]) + note, images


def forgetting_matrix(matrix: list[list[float]], names: list[str], path: Path, title: str) -> Path:
    size = len(names)
    values = np.full((size, size), np.nan)
    for i, row in enumerate(matrix):
        values[i, : len(row)] = row
    fig, ax = plt.subplots(figsize=(1.3 * size + 2.5, 1.0 * size + 1.5))
    image = ax.imshow(values, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white")
    short = [n.split(":")[-1].split("/")[-1][:14] for n in names]
    ax.set_xticks(range(size), short, rotation=30, ha="right")
    ax.set_yticks(range(size), [f"after {s}" for s in short])
    ax.set_title(f"held-out loss: {title}", fontsize=9)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def multilingual_view(rows: list[RunRow], plots: Path) -> Section | None:
    have = _with(rows, "multilingual_bpb")
    if not have:
        return None
    slices = [i["slice"] for i in have[0][1]["details"]["slices"]]
    header = ["Variant", *slices, "mean"]
    body = [[row.spec.title, *[fmt(p["metrics"].get(f"bits_per_byte/{s}"), 3) for s in slices],
             fmt(p["metrics"].get("bits_per_byte_mean"), 3)] for row, p in have]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(slices) * max(1, len(have)) / 2 + 3), 4))
    width = 0.8 / len(have)
    for k, (row, p) in enumerate(have):
        values = [p["metrics"].get(f"bits_per_byte/{s}") or 0.0 for s in slices]
        ax.bar(np.arange(len(slices)) + k * width, values, width, label=row.spec.title)
    ax.set_xticks(np.arange(len(slices)) + 0.4 - width / 2, slices, rotation=20)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    image = _save(fig, inside(plots, "bpb_by_language.png"))
    return "Bits per byte by language and domain", to_markdown([header, *body]), [image]


def _simple(name: str, title: str, columns: list[tuple[str, str]],
            details: tuple[str, ...] = ()) -> Callable[[list[RunRow], Path], Section | None]:
    """A table of metric columns, plus settings from ``details`` (e.g. the sequence length of a timing)."""

    def view(rows: list[RunRow], plots: Path) -> Section | None:
        have = _with(rows, name)
        if not have:
            return None
        body = [[row.spec.title, str(p["n"]), *[str(p["details"].get(d, "—")) for d in details],
                 *[_cell(p, key) for _, key in columns]] for row, p in have]
        header = ["Variant", "n", *details, *[label for label, _ in columns]]
        return title, to_markdown([header, *body]), []

    return view


def probes_view(rows: list[RunRow], plots: Path) -> Section | None:
    have = _with(rows, "probes")
    if not have:
        return None
    tasks = have[0][1]["details"]["tasks"]
    return _simple("probes", "Character and arithmetic probes",
                   [("all", "accuracy"), *[(t, f"accuracy/{t}") for t in tasks]])(rows, plots)


VIEWS = [
    _simple("masked_loss", "Masked-diffusion loss (bidirectional runs, not comparable to next-token loss)",
            [("loss", "loss"), ("bits/byte", "bits_per_byte"), ("masked-token acc", "accuracy")],
            details=("split", "samples")),
    mc_view,
    niah_view,
    passkey_view,
    continual_view,
    _simple("long_ppl", "Long-document perplexity",
            [("perplexity", "perplexity"), ("bits/byte", "bits_per_byte"), ("loss", "loss")],
            details=("max_tokens", "window", "stride")),
    probes_view,
    multilingual_view,
    _simple("compression", "Compression", [("bytes/patch", "bytes_per_patch"), ("bytes/token", "bytes_per_token")]),
    _simple("speed", "Speed (measured)",
            [("train tok/s", "train_tokens_per_second"), ("train bytes/s", "train_bytes_per_second"),
             ("gen tok/s", "generate_tokens_per_second"), ("gen bytes/s", "generate_bytes_per_second"),
             ("ms/token", "latency_ms_per_token"), ("train FLOP/s", "train_flops_per_second"), ("MFU", "mfu")],
            details=("seq_len", "batch_size", "device", "precision")),
]


def eval_views(rows: list[RunRow], plots_dir: Path) -> list[Section]:
    """Every eval section that at least one run has: (title, markdown, images)."""
    sections = []
    for view in VIEWS:
        section = view(rows, Path(plots_dir))
        if section is not None:
            sections.append(section)
    return sections
