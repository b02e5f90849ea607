"""A built wheel works from anywhere: configs, examples, the shipped base inside it; callbacks as a subpackage."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "minituner" / "shipped"
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", ".*_cache")


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_wheel_installs_into_a_fresh_venv_and_trains_outside_the_checkout(tmp_path):
    # Build from a copy, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("minituner-*.whl")

    # A fresh venv: minituner only from the wheel; its dependencies (torch, Lightning, ...) from this
    # environment's site-packages, added by a .pth file (its editable-install hook is not run from there).
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        python,
        "-c",
        "import minituner, minituner.callbacks as c, minituner.config.shipped as s, minituner.store.shipped as b, "
        "minituner.data.examples as e; print(minituner.__file__, c.__file__, s.CONF_DIR, "
        "e.example_file('sentiment.jsonl'), b.SHIPPED_DIR)",
        cwd=elsewhere,
    ).stdout.split()
    assert all(path.startswith(str(site)) for path in where), where
    assert Path(where[2], "train.yaml").is_file() and Path(where[3]).is_file()
    shipped = Path(where[4])  # every shipped file, byte for byte
    assert sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file()) == sorted(
        p.relative_to(SHIPPED) for p in SHIPPED.rglob("*") if p.is_file()
    )
    done = run(venv / "bin" / "minituner-train", "model=tiny", "trainer.fast_dev_run=true", cwd=elsewhere)
    (run_dir,) = (elsewhere / "outputs" / "runs").iterdir()
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file(), done.stdout[-2000:]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "manifest.json").is_file()
