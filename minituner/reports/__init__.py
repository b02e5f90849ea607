"""Generated reports: the preview's REPORT.md and the multirun report (sweep.csv, REPORT.md, sweep.png)."""

from minituner.reports.merge_fidelity import merge_fidelity
from minituner.reports.preview import report_text
from minituner.reports.sweep import write_sweep_report
from minituner.reports.sweep_callback import SweepReport

__all__ = ["SweepReport", "merge_fidelity", "report_text", "write_sweep_report"]
