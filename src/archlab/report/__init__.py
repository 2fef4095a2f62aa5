"""Reports: markdown tables, matplotlib plots and a static HTML page for a plan's runs."""

from archlab.report.build import write_report
from archlab.report.collect import RunRow, collect

__all__ = ["RunRow", "collect", "write_report"]
