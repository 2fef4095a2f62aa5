"""The evals' own report sections: tables and plots each eval declares beside itself (archlab.evals.lib.views).

``eval_sections(rows, plots_dir)`` calls every declared view, in its declared order, with the runs that
have that eval's JSON; runs without it are left out of its table. The report knows no eval's keys.

``VIEWS`` stays for report sections that are not one eval's (a function ``(rows, plots) -> (title,
markdown, images) | None``, appended to the list); an eval's own table belongs beside the eval.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from archlab.evals.lib.views import EvalRun, View, ordered_views
from archlab.report.collect import RunRow
from archlab.report.tables import fmt, to_markdown

Section = tuple[str, str, list[Path]]

VIEWS: list[Callable[[list[RunRow], Path], Section | None]] = []


def eval_sections(rows: list[RunRow], plots_dir: Path) -> list[View]:
    """Every declared eval view that at least one run has, then the extra ``VIEWS`` sections."""
    plots = Path(plots_dir)
    sections = []
    for name, definition in ordered_views():
        runs = [EvalRun(r.spec.id, r.spec.title, r.evals[name]) for r in rows if name in r.evals]
        view = definition.fn(runs, plots) if runs else None
        if view is not None:
            sections.append(view)
    for extra in VIEWS:
        section = extra(rows, plots)
        if section is not None:
            title, markdown, images = section
            sections.append(View(title, [], markdown, list(images)))
    return sections


def best_checkpoint_view(rows: list[RunRow], plots: Path) -> Section | None:
    """Runs with train.load_best_model_at_end: the step whose weights were exported (and evaluated)."""
    have = [r for r in rows if r.best.get("best_step")]
    if not have:
        return None
    body = [[r.spec.title, str(r.best["best_step"]), str(r.best.get("step", "—")), fmt(r.best.get("best_metric"))]
            for r in have]
    return ("Best checkpoint (load_best_model_at_end)",
            to_markdown([["Variant", "best step", "last step", "best metric (metric_for_best_model)"], *body]), [])


VIEWS.append(best_checkpoint_view)


def eval_views(rows: list[RunRow], plots_dir: Path) -> list[Section]:
    """Every eval section as (title, markdown, images)."""
    return [(v.title, v.markdown, v.images) for v in eval_sections(rows, plots_dir)]

# seed 004: the success-criteria table (met / not met from measured numbers); its own module
from archlab.report.byte_latent_view import criteria_view, sizes_view  # noqa: E402

VIEWS.append(criteria_view)
VIEWS.append(sizes_view)
