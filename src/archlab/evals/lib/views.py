"""How an eval shows itself in the report: a view declared beside the eval, keyed by the eval's name.

An eval module declares ``@eval_view("niah", order=30)`` on a function ``(runs, plots) -> View | None``;
``runs`` are the runs that have this eval's JSON (never empty), ``plots`` the folder for its images. The
report calls every declared view in ``order`` and knows nothing of any eval's keys, so a new eval with a
table or a plot is one file. ``simple_view`` declares the common case: one metric column per key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.files import inside, slug
from archlab.registry import Registry


@dataclass(frozen=True)
class EvalRun:
    """One run's result of one eval, as its view receives it."""

    id: str
    title: str
    payload: dict[str, Any]  # the eval's JSON: metrics, n, ci95, details

    @property
    def metrics(self) -> dict[str, Any]:
        return self.payload.get("metrics", {})

    @property
    def details(self) -> dict[str, Any]:
        return self.payload.get("details", {})


@dataclass
class View:
    """A report section: a table (header row first), a note under it and images under plots/."""

    title: str
    table: list[list[str]]
    note: str = ""
    images: list[Path] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return (to_markdown(self.table) if self.table else "") + (f"\n\n{self.note}" if self.note else "")


ViewFn = Callable[[list[EvalRun], Path], "View | None"]


@dataclass(frozen=True)
class ViewDef:
    fn: ViewFn
    order: int  # sections appear in increasing order; ties by name


EVAL_VIEWS: Registry[ViewDef] = Registry("eval view")


def eval_view(name: str, order: int = 100):
    """Declare ``fn(runs, plots) -> View | None`` as the report view of eval ``name``."""

    def wrap(fn: ViewFn) -> ViewFn:
        EVAL_VIEWS.register(name, ViewDef(fn, order), help=(fn.__doc__ or name).strip().splitlines()[0])
        return fn

    return wrap


def ordered_views() -> list[tuple[str, ViewDef]]:
    return sorted(((n, EVAL_VIEWS.get(n)) for n in EVAL_VIEWS), key=lambda item: (item[1].order, item[0]))


# ----------------------------------------------------------------------------------------- formatting
def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table: thousands separators from 1000 on, else ``digits`` significant digits."""
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def cell(payload: dict, key: str, digits: int = 3) -> str:
    """``value [low, high]`` when the eval gave a 95% interval for ``key``, else the value; — when absent."""
    value = payload.get("metrics", {}).get(key)
    if not isinstance(value, int | float):
        return "—"
    ci = payload.get("ci95", {}).get(key)
    return f"{value:.{digits}f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else fmt(value)


def to_markdown(table: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    header, *body = table
    lines = ["| " + " | ".join(esc(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def plot_file(plots: Path, prefix: str, run_id: str) -> Path:
    return inside(plots, f"{prefix}_{slug(run_id.lower(), 60)}.png")


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a view draws (importing evals stays fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def simple_view(name: str, title: str, columns: list[tuple[str, str]], details: tuple[str, ...] = (),
                order: int = 100, note: str = "") -> ViewFn:
    """Declare a view of ``name``: one row per run, ``n``, settings from ``details``, a column per metric key."""

    def view(runs: list[EvalRun], plots: Path) -> View:
        header = ["Variant", "n", *details, *[label for label, _ in columns]]
        body = [[r.title, str(r.payload.get("n")), *[str(r.details.get(d, "—")) for d in details],
                 *[cell(r.payload, key) for _, key in columns]] for r in runs]
        return View(title, [header, *body], note)

    view.__doc__ = title
    return eval_view(name, order)(view)
