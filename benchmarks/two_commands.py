"""How long the README's two commands take on a fresh clone: ``make main`` then ``make test``.

Clones the current commit into a temporary directory (``git clone`` of this checkout, so nothing of
this working tree is reused: no ``.venv``, no ``outputs/``), runs ``make main`` and then ``make test``
there as a new user would, and records each one's wall time, the preview's own clock (from its
``preview.json``), pytest's summary line and its slowest tests (``--durations``); ``--write`` also
keeps the preview's ``REPORT.md`` as ``results/preview_report.md``. The clone is deleted afterwards.

    python benchmarks/two_commands.py --write        # about 30 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from cli_runs import emit_json
from result_files import machine, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run ``command`` in ``cwd``; its wall seconds and combined output (raises if it fails)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def measure(skip_test: bool) -> dict:
    """Both commands on a fresh clone of HEAD: wall times, the preview's clock, pytest's summary."""
    with tempfile.TemporaryDirectory(prefix="minituner-clone-") as scratch:
        clone = Path(scratch) / "minituner"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        cloned = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True)
        main_seconds, _ = timed(["make", "main"], clone)
        (preview,) = (clone / "outputs" / "preview").glob("*/preview.json")
        result = {
            "measured_on": machine() | {"commit": cloned.stdout.strip()[:12]},  # the clone's, not this tree's
            "make_main_seconds": round(main_seconds, 1),
            "preview_seconds": json.loads(preview.read_text())["seconds"],
            "preview_report": (preview.parent / "REPORT.md").read_text(),
        }
        if not skip_test:
            test_seconds, output = timed(["make", "test"], clone)
            summary = re.findall(r"=+ (\d+ passed.*?) in ([\d.]+)s", output)
            slowest = re.findall(r"^([\d.]+)s (call|setup|teardown) +(.+?) *$", output, flags=re.MULTILINE)
            result |= {
                "make_test_seconds": round(test_seconds, 1),
                "pytest_summary": summary[-1][0] if summary else None,
                "slowest_tests": [{"seconds": float(s), "phase": phase, "test": test} for s, phase, test in slowest],
            }
        return result


def report(result: dict) -> str:
    """One row per command."""
    rows = [
        [
            "`make main` (fresh clone: `.venv`, then the preview)",
            f"{result['make_main_seconds']:.0f} s",
            f"the preview's own clock: {result['preview_seconds']:.0f} s (cold)",
        ],
    ]
    if "make_test_seconds" in result:
        rows.append(
            [
                "`make test` (after `make main`: `.venv` reused)",
                f"{result['make_test_seconds']:.0f} s",
                f"pytest: {result['pytest_summary']}",
            ]
        )
    table = markdown_table(["command", "wall time", "detail"], rows)
    slowest = [[f"{t['seconds']:.1f} s", t["phase"], f"`{t['test']}`"] for t in result.get("slowest_tests", [])]
    if slowest:
        table += "\n\nThe slowest tests (pytest `--durations`, two workers):\n\n"
        table += markdown_table(["time", "phase", "test"], slowest)
    return table


def write_preview_report(report_text: str, measured_on: dict) -> None:
    """Keep the fresh clone's preview ``REPORT.md`` as ``results/preview_report.md``: the README quotes it."""
    kept = {"benchmark": "preview_report", "measured_on": measured_on, "report": report_text}
    below_title = report_text.split("\n", 1)[1]
    write_results("preview_report", kept, "The QLoRA preview's REPORT.md on a fresh clone (`make main`)", below_title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-test", action="store_true", help="time make main only")
    parser.add_argument("--write", action="store_true", help="write results/two_commands.{json,md}")
    args = parser.parse_args()
    result = {"benchmark": "two_commands", **measure(args.skip_test)}
    preview_report = result.pop("preview_report")
    if args.write:
        write_results("two_commands", result, "The two commands on a fresh clone", report(result))
        write_preview_report(preview_report, result["measured_on"])
    emit_json(result, None)


if __name__ == "__main__":
    main()
