"""Generated reports: the preview's REPORT.md and the multirun report (sweep.csv, REPORT.md, sweep.png)."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {"preview": ["report_text"], "merge_fidelity": ["merge_fidelity"], "sweep": ["SweepReport", "write_sweep_report"]},
)
