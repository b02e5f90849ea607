"""TensorBoard itself reads our event files: a real server on loopback, asked through its own HTTP data API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, save_tiny_base

STARTUP_SECONDS = 90  # bounded: the server either says where it listens or the test fails


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A quick LoRA run that logs every step: 3 training steps, validation at steps 0 and 3."""
    tmp_path = tmp_path_factory.mktemp("tb")
    base = save_tiny_base(tmp_path / "base")
    cfg = compose_config([*QUICK, "regime=lora", f"base.path={base}", "trainer.log_every_n_steps=1"], tmp_path)
    train(cfg)
    return Path(cfg.paths.output_dir)


@pytest.fixture(scope="module")
def server(tiny_run: Path):
    """``tensorboard --logdir <run dir>`` on 127.0.0.1 and a free port (its run: ``tensorboard``); yields its URL."""
    command = [
        str(Path(sys.executable).with_name("tensorboard")),
        "--logdir",
        str(tiny_run),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, url = time.monotonic() + STARTUP_SECONDS, None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"at (http://127\.0\.0\.1:\d+/)", process.stderr.readline())
            url = found.group(1) if found else None
        assert url, f"tensorboard did not start (exit {process.poll()})"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def scalar_tags(server: str) -> dict:
    """The scalar tags, once the server has loaded the events (it reads them in the background)."""
    for _ in range(60):  # at most ~30 s
        tags = get(f"{server}data/plugin/scalars/tags").get("tensorboard", {})
        if "hparams/irregular_acc" in tags:
            return tags
        time.sleep(0.5)
    return tags


def points(server: str, tag: str) -> list[int]:
    return [step for _, step, _ in get(f"{server}data/plugin/scalars/scalars?run=tensorboard&tag={tag}")]


def test_tensorboard_serves_our_scalars_with_the_right_points(server):
    tags = scalar_tags(server)
    assert {"train/loss", "train/lr", "val/irregular_acc", "val/regular_ppl", "test/irregular_acc"} <= set(tags)
    assert points(server, "train/loss") == [0, 1, 2]  # every step of the 3
    assert points(server, "val/irregular_acc") == [0, 2]  # the base, then after the 3rd step (logged at index 2)
    memory = {t for t in tags if t.startswith("memory/")}
    assert {"memory/rss_mib/after_construction", "memory/rss_mib/after_step_2", "memory/ledger_total_mib/end"} <= memory
    assert all(len(points(server, tag)) == 1 for tag in sorted(memory)[:6])  # one snapshot each


def test_tensorboard_serves_the_hparams_session(server):
    scalar_tags(server)
    experiment = get(f"{server}data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"regime", "quant", "base_dtype", "lora_r", "lr", "seed"} <= {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"hparams/irregular_acc", "hparams/regular_ppl_drift"} <= metrics
    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 10,
    }
    groups = get(f"{server}data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert len(groups) == 1 and groups[0]["hparams"]["regime"] == "lora" and groups[0]["hparams"]["model"] == "tiny"
