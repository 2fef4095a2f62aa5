"""Plots a person would rather see than read: loss curves of every run, a bar chart of the headline metric."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from archlab.report.collect import RunRow  # noqa: E402

MAX_LEGEND, MAX_LABELLED_BARS, MAX_WIDTH_INCHES = 30, 60, 30  # past these a figure is unreadable and slow to draw


def loss_curves(rows: list[RunRow], path: Path, title: str) -> Path | None:
    drawn = [r for r in rows if r.curve]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(drawn) > MAX_LEGEND:  # hundreds of runs: one artist for all curves (no legend would be readable)
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection([row.curve for row in drawn], linewidths=0.6, alpha=0.5))
        dots = [point for row in drawn for point in row.eval_curve]
        if dots:
            ax.scatter(*zip(*dots, strict=True), s=4)
        ax.autoscale()
    for row in drawn if len(drawn) <= MAX_LEGEND else []:
        steps, losses = zip(*row.curve, strict=True)
        (line,) = ax.plot(steps, losses, label=row.spec.title, linewidth=1.4)
        if row.eval_curve:
            es, el = zip(*row.eval_curve, strict=True)
            ax.plot(es, el, "o", color=line.get_color(), markersize=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (dots: validation)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(drawn) <= MAX_LEGEND:
        ax.legend(fontsize=7, ncol=2 if len(drawn) > 6 else 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def headline_bars(rows: list[RunRow], metric: str, path: Path, title: str) -> Path | None:
    have = [(r, r.metric(metric), r.interval(metric)) for r in rows if r.metric(metric) is not None]
    if not have:
        return None
    labelled = len(have) <= MAX_LABELLED_BARS
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_INCHES, max(5, 0.7 * len(have) + 2)), 4))
    names = [r.spec.title for r, _, _ in have]
    values = [v for _, v, _ in have]
    errs = None
    if all(ci is not None for _, _, ci in have):
        errs = [[v - ci[0] for _, v, ci in have], [ci[1] - v for _, v, ci in have]]
    if labelled:
        bars = ax.bar(range(len(have)), values, yerr=errs, capsize=3, color="#4C72B0")
        ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], fontsize=8, padding=2)
    else:  # hundreds of runs: points with interval whiskers, drawn as a few collections instead of a patch each
        ax.errorbar(range(len(have)), values, yerr=errs, fmt="o", markersize=2, elinewidth=0.6, color="#4C72B0")
    lows = [ci[0] if ci else v for _, v, ci in have]
    highs = [ci[1] if ci else v for _, v, ci in have]
    span = max(highs) - min(lows) or abs(max(highs)) or 1.0
    # zoom on the differences: bars of nearly equal height are unreadable from zero
    ax.set_ylim(max(0.0, min(lows) - 0.6 * span) if min(lows) >= 0 else min(lows) - 0.6 * span, max(highs) + 0.4 * span)
    if labelled:
        ax.set_xticks(range(len(have)), names, rotation=30, ha="right", fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(have)} runs, in table order (values in the table)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
