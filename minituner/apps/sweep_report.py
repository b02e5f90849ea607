"""``minituner-sweep-report <sweep dir>``: rebuild a multirun's ``sweep.csv``, ``REPORT.md`` and ``sweep.png``."""

from __future__ import annotations

from pathlib import Path

from minituner.reports.sweep import write_sweep_report
from minituner.training.terminal import PurposeFirstParser


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``minituner-sweep-report <sweep dir>``."""
    parser = PurposeFirstParser(
        "minituner-sweep-report",
        "rebuild a multirun's sweep.csv, REPORT.md and sweep.png (and sweep_groups.csv over seeds) from its jobs.",
        "  minituner-sweep-report outputs/multiruns/<date>_<time>_rank_ablation\n"
        "  minituner-sweep-report outputs/multiruns/<sweep>   # after adding or rerunning jobs\n"
        "  minituner-sweep-report <sweep dir> && cat <sweep dir>/REPORT.md\n\n"
        "writes: sweep.csv, REPORT.md and sweep.png in the sweep directory",
    )
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory (outputs/multiruns/<date>_<time>)")
    args = parser.parse_args(argv)
    try:
        jobs = write_sweep_report(args.sweep_dir)
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{len(jobs)} job(s) -> {args.sweep_dir / 'REPORT.md'}")


if __name__ == "__main__":
    main()
