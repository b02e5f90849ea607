"""Screenshots of TensorBoard over a real run and a real sweep: the README's pictures.

Trains the default LoRA run (on the cached base) and a two-job rank sweep, starts a real
``tensorboard`` server on 127.0.0.1 over both, opens it in headless Chromium (Debian's
``chromium`` + ``chromium-driver``, driven by selenium) and saves PNGs of the loss and task
curves, the memory scalars and the HPARAMS view to ``benchmarks/figures/``. Prints JSON (the
runs, the server's URL, the files).

    apt-get install chromium chromium-driver && .venv/bin/pip install '.[screenshots]'
    .venv/bin/python benchmarks/tensorboard_screenshots.py
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from cli_runs import emit_json
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from minituner.apps.runner import run_app

FIGURES = Path(__file__).parent / "figures"
# The flags a root shell on a machine without a network needs (no sandbox, no background traffic).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
    "--hide-scrollbars",
)
PAGES = {  # file -> the dashboard and tag filter it shows
    "tensorboard_curves.png": "?tagFilter=train%2Floss%7Cval%2Firregular_acc%7Cval%2Fregular_ppl#timeseries",
    "tensorboard_memory.png": "?tagFilter=memory%2Fledger_total%7Cmemory%2Frss_mib#timeseries",
    "tensorboard_hparams.png": "#hparams",
}


def train_runs(root: Path, outputs: Path) -> dict[str, Path]:
    """The default LoRA run and a rank sweep of two jobs, as a user launches them."""
    run, sweep = root / "run", root / "sweep"
    for args in (
        [f"hydra.run.dir={run}"],
        ["-m", "lora.r=2,16", "regime.max_epochs=2", f"hydra.sweep.dir={sweep}"],  # Hydra wants -m first
    ):
        run_app("train", *args, f"paths.outputs_dir={outputs}", timeout=None, check=True)
    return {"run": run, "sweep": sweep}


def start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    """``tensorboard --logdir`` on 127.0.0.1 and a free port; the process and its URL."""
    command = [
        str(Path(sys.executable).with_name("tensorboard")),
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", process.stderr.readline())
        if found:
            return process, found.group(1)
    process.kill()
    raise RuntimeError("tensorboard did not say where it listens")


def screenshots(url: str, settle: float) -> list[str]:
    """Open each page in headless Chromium, let it draw, save it."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    saved = []
    try:
        for name, page in PAGES.items():
            driver.get(url + page)
            time.sleep(settle)  # TensorBoard loads its data and draws the charts asynchronously
            for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close side pane']"):
                button.click()  # the settings pane opens on a first visit: give the charts its room
            time.sleep(1)
            driver.save_screenshot(str(FIGURES / name))
            saved.append(str(FIGURES / name))
    finally:
        driver.quit()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--root", type=Path, default=Path("outputs/tensorboard_screenshots") / stamp)
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (its bases/ reused)")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds each page gets to draw")
    args = parser.parse_args()
    runs = train_runs(args.root, args.outputs)
    server, url = start_tensorboard(args.root)
    try:
        files = screenshots(url, args.settle)
    finally:
        server.terminate()
        server.wait(timeout=30)
    emit_json({"runs": {k: str(v) for k, v in runs.items()}, "tensorboard": url, "screenshots": files}, None)


if __name__ == "__main__":
    main()
