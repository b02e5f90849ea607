"""Where a result came from: package versions, the git commit, the host."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGES = ("minituner", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # git finds the checkout from inside it


def package_versions() -> dict[str, str | None]:
    """Python and the versions of the packages a result depends on (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def git_state(directory: Path = PACKAGE_DIR) -> dict[str, str | bool | None]:
    """The checkout's commit and whether tracked or untracked files differ from it.

    Both are None outside a git checkout or without git.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
    }


def host_info() -> dict:
    """CPU, core count, OS and the CUDA GPU (None without one)."""
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_numerics": cpu_numerics(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
        "argv": sys.argv,
    }


# CPU flags whose presence changes which ATen / oneDNN / BLAS kernels run, hence float rounding
NUMERIC_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "neon", "asimd")


def cpu_numerics() -> dict:
    """What makes float results differ between CPUs.

    The kernel ISA torch picked, the CPU flags that matter, the thread counts, the BLAS and
    oneDNN builds, and the environment variables that override them.
    """
    backends = torch.backends
    return {
        "cpu_capability": backends.cpu.get_cpu_capability(),  # the ISA of ATen's vectorised kernels
        "flags": [f for f in NUMERIC_FLAGS if f in _cpu_flags()],
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkl": backends.mkl.is_available(),
        "mkldnn": backends.mkldnn.is_available(),
        "blas": _config_value("BLAS_INFO"),
        "lapack": _config_value("LAPACK_INFO"),
        "onednn": _onednn_version(),
        "env": {
            k: os.environ[k]
            for k in (
                "ATEN_CPU_CAPABILITY",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "ONEDNN_MAX_CPU_ISA",
                "DNNL_MAX_CPU_ISA",
            )
            if k in os.environ
        },
    }


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _config_value(name: str) -> str | None:
    """One ``NAME=value`` entry of ``torch.__config__.show()`` (None when the build does not say)."""
    found = re.search(rf"\b{name}=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else None


def _onednn_version() -> str | None:
    found = re.search(r"MKL-DNN v([\w.]+)", torch.__config__.show())
    return found.group(1) if found else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over minituner's Python sources: anything cached from the code is stale once they change."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
