"""report.html: structure, significance rule, vendored plotting library; the browser tests drive it in Chromium."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest

from archlab.report.html import Cell, render_table, significant, text_cell


def test_the_vendored_plotting_library_matches_its_recorded_provenance_and_licence():
    vendor = resources.files("archlab.report") / "vendor"
    provenance = json.loads((vendor / "PROVENANCE.json").read_text())
    for name, entry in provenance.items():
        data = (vendor / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert entry["license"] == "MIT" and "MIT License" in (vendor / entry["license_file"]).read_text()
        assert f"v{entry['version']}" in data[:200].decode()


def test_significance_is_non_overlap_of_both_intervals():
    assert significant((0.1, 0.2), (0.3, 0.4)) and significant((0.3, 0.4), (0.1, 0.2))
    assert not significant((0.1, 0.35), (0.3, 0.4))
    assert not significant(None, (0.3, 0.4))


def test_eval_view_cells_parse_value_and_interval_for_sorting_and_bars():
    cell = text_cell("0.500 [0.20, 0.80]")
    assert cell.sort == 0.5 and cell.ci == (0.2, 0.8)
    assert text_cell("1,500").sort == 1500.0 and text_cell("—").sort is None and text_cell("abc").sort == "abc"
    table = render_table(["Variant", "acc"], [[Cell("a", "a"), cell], [Cell("b", "b"), text_cell("0.1 [0.0, 0.3]")]],
                         "t", baseline_title="a")
    assert "class='baseline'" in table and "data-sort='0.5'" in table and "class='rng'" in table


@pytest.mark.slow  # trains the tiny plan
def test_the_report_of_a_finished_plan_shows_every_run_sizes_and_the_rule(finished_plan):
    from tests.report.conftest import FAILED_LINE

    _, runs = finished_plan
    page = (runs / "tiny_report" / "report.html").read_text()
    assert "do not overlap" in page and "Train FLOPs" in page and "Non-emb" in page
    for status in ("done", "failed", "pending"):
        assert f"status-{status}" in page
    assert FAILED_LINE in page
    assert "<script src='plots/plotly-basic.min.js'>" in page and "http://" not in page.split("<script>")[0][-2000:]
    assert (runs / "tiny_report" / "plots" / "plotly-basic.min.js").stat().st_size > 500_000
    markdown = (runs / "tiny_report" / "REPORT.md").read_text()
    assert "| Params | Non-emb | FLOPs |" in markdown and "≈" in markdown and FAILED_LINE in markdown
