"""Artifacts survive SIGKILL mid-write, a full disk and a read-only directory."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from minituner.lora.adapter_io import read_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.artifacts import write_json_atomic
from minituner.store.base_cache import load_base
from minituner.store.checkpoint_io import load_checkpoint_dir

TINY = MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32)

# A host that imports once, then for each line on stdin forks a writer that rewrites one artifact
# forever, alternating two versions, and says "ready <pid>" once the first is complete; the host
# says "killed" when that writer has died (the test SIGKILLs it), then waits for the next line.
WRITER = """
import os, sys, torch
from pathlib import Path
from minituner.lora.adapter_io import save_adapter
from minituner.store.artifacts import write_json_atomic
from minituner.store.base_cache import save_base
from minituner.store.checkpoint_io import save_checkpoint_dir
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.model.minigpt import MiniGPT, MiniGPTConfig

kind, target = sys.argv[1], Path(sys.argv[2])
config = MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32)


def write_forever():
    version = 0
    while True:
        torch.manual_seed(version % 2)
        if kind == "json":
            write_json_atomic(target, {"version": version % 2, "payload": "x" * 200_000})
        elif kind == "base":
            save_base(MiniGPT(config), target, {"version": version % 2})
        elif kind == "checkpoint":
            state = {"state_dict": MiniGPT(config).state_dict(), "optimizer_states": [{"state": {0: {"step": 1.0}}}]}
            save_checkpoint_dir(state | {"version": version % 2}, target)
        else:
            model = MiniGPT(config)
            inject_lora(model, LoRAConfig(target_modules="all_linear", r=8))
            save_adapter(model, target, LoRAConfig(target_modules="all_linear", r=8), "base", "ab" * 32)
        if version == 0:
            print("ready", os.getpid(), flush=True)
        version += 1


for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        write_forever()
    os.waitpid(pid, 0)
    print("killed", flush=True)
"""


def check_whole(kind: str, target) -> None:
    if kind == "json":
        assert json.loads(target.read_text())["version"] in (0, 1)
    elif kind == "base":
        assert load_base(target, TINY).metadata["version"] in (0, 1)
    elif kind == "checkpoint":
        assert load_checkpoint_dir(target)["version"] in (0, 1)
    else:
        assert read_adapter(target).config.r == 8


@pytest.mark.parametrize("kind", ["json", "base", "adapter", "checkpoint"])
def test_sigkill_while_writing_leaves_a_whole_loadable_artifact(tmp_path, kind):
    target = tmp_path / ("manifest.json" if kind == "json" else kind)
    host = subprocess.Popen(
        [sys.executable, "-c", WRITER, kind, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        for delay in (0.05, 0.13, 0.31, 0.57):  # different moments of the write loop
            host.stdin.write("write\n")
            host.stdin.flush()
            ready, pid = host.stdout.readline().split()
            assert ready == "ready"
            time.sleep(delay)
            os.kill(int(pid), signal.SIGKILL)  # a whole writer process dies mid-write
            assert host.stdout.readline().strip() == "killed"
            check_whole(kind, target)  # the previous version or the new one; a killed temp file may remain
    finally:
        host.stdin.close()
        host.wait(timeout=30)


# Run in a child whose file-size limit makes any write past 64 KiB fail as on a full disk.
FULL_DISK = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
from minituner.store.artifacts import write_json_atomic
try:
    write_json_atomic(Path(sys.argv[1]), {"version": 2, "payload": "x" * 200_000})
except OSError as error:
    print(error)
    sys.exit(3)
"""


def test_a_full_disk_raises_naming_the_path_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"version": 1})
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(target)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert f"could not write {target}: File too large" in done.stdout
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


def saved_adapter(directory, seed: int) -> str:
    config = LoRAConfig(target_modules="attn_qv", r=4, seed=seed)  # seeds lora_A's initialisation
    model = MiniGPT(TINY)
    inject_lora(model, config)
    return save_adapter(model, directory, config, "base", "ab" * 32)


def test_a_read_only_directory_raises_naming_the_path_and_keeps_the_previous_artifacts(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_json_atomic(runs / "manifest.json", {"version": 1})
    first = saved_adapter(runs / "adapter", seed=0)
    runs.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permissions: fail the way the kernel fails everyone else

        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", denied)
        monkeypatch.setattr(tempfile, "mkdtemp", denied)
    try:
        with pytest.raises(OSError, match=f"could not write {runs / 'manifest.json'}: Permission denied"):
            write_json_atomic(runs / "manifest.json", {"version": 2})
        with pytest.raises(OSError, match=f"could not write {runs / 'adapter'}: Permission denied"):
            saved_adapter(runs / "adapter", seed=1)
    finally:
        runs.chmod(0o755)
    assert json.loads((runs / "manifest.json").read_text()) == {"version": 1}
    assert read_adapter(runs / "adapter").sha256 == first
    assert sorted(p.name for p in runs.iterdir()) == ["adapter", "manifest.json"]


def test_a_swap_cut_between_its_renames_still_reads_and_heals(tmp_path):
    first = saved_adapter(tmp_path / "adapter", seed=0)
    (tmp_path / "adapter").rename(tmp_path / ".adapter.old")  # as a kill between the two renames leaves it
    assert read_adapter(tmp_path / "adapter").sha256 == first  # readers find the previous version
    second = saved_adapter(tmp_path / "adapter", seed=1)  # the next write puts it back, then replaces it
    assert read_adapter(tmp_path / "adapter").sha256 == second != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
