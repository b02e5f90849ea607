"""Which settings change the weights a CPU pretrains: threads and the kernel ISA. Prints JSON.

Pretrains the default base for ``--steps`` steps (``regime=pretrain``, seed 1234) once per setting,
each in a fresh outputs directory, and records the SHA-256 of the weights it saved: the default
(every core), one thread, ``ATEN_CPU_CAPABILITY`` set to this CPU's own capability and to
``default`` (no vector ISA), and the default again (the same settings twice give the same weights).
``--write`` also writes ``benchmarks/results/cpu_determinism.json`` and the generated ``.md``.

    .venv/bin/python benchmarks/cpu_determinism.py [--steps 200] [--write]     # about 2 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from cli_runs import emit_json, timed_run
from result_files import machine, markdown_table, write_results


def settings(capability: str) -> dict[str, dict[str, str]]:
    """Name -> the environment it changes (the default first and last)."""
    cores = str(os.cpu_count() or 1)
    return {
        f"default ({cores} threads)": {},
        "one thread": {"OMP_NUM_THREADS": "1"},
        f"ATEN_CPU_CAPABILITY={capability.lower()}": {"ATEN_CPU_CAPABILITY": capability.lower()},
        "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
        f"default ({cores} threads), again": {},
    }


def pretrain(steps: int, env: dict[str, str]) -> dict:
    """One short pretraining in a fresh outputs directory under ``env``: its weights' SHA-256 and metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds, metrics = timed_run(Path(tmp), "pretrain", "regime=pretrain", f"regime.max_steps={steps}", env=env)
    return {
        "env": env,
        "base_sha256": metrics["base_sha256"],
        "regular_ppl": round(metrics["regular_ppl"], 6),
        "wall_seconds": round(seconds, 1),
    }


def report(result: dict) -> str:
    """One row per setting; whether the default reproduced itself."""
    rows = [
        [name, f"`{run['base_sha256'][:16]}…`", run["regular_ppl"], f"{run['wall_seconds']} s"]
        for name, run in result["runs"].items()
    ]
    first, *_, last = result["runs"].values()
    repeat = "the same weights" if first["base_sha256"] == last["base_sha256"] else "**other weights**"
    distinct = len({run["base_sha256"] for run in result["runs"].values()})
    return (
        f"`regime=pretrain regime.max_steps={result['steps']}`, seed 1234, once per setting.\n\n"
        f"{markdown_table(['setting', 'SHA-256 of the weights', 'control perplexity', 'wall time'], rows)}\n\n"
        f"{distinct} distinct weight files from {len(rows)} runs; the default twice: {repeat}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps per setting")
    parser.add_argument("--write", action="store_true", help="write results/cpu_determinism.{json,md}")
    args = parser.parse_args()
    where = machine()
    runs = {name: pretrain(args.steps, env) for name, env in settings(where["cpu_capability"]).items()}
    result = {"benchmark": "cpu_determinism", "measured_on": where, "steps": args.steps, "runs": runs}
    if args.write:
        write_results(
            "cpu_determinism", result, "Threads and the kernel ISA change the pretrained weights", report(result)
        )
    emit_json(result, None)


if __name__ == "__main__":
    main()
