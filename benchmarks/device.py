"""Where a benchmark runs (``--device cpu|cuda``): its autocast, its clock and its memory readings.

On the CPU a benchmark runs in fp32 on 2 threads (the development machine's cores); on CUDA
the plain loops run under bf16 autocast and the Lightning Trainer with ``precision=bf16-mixed``,
every timer waits for the GPU's queued work (``torch.cuda.synchronize``), and peak memory is
``torch.cuda.max_memory_allocated``. Peak allocation of one call on either device:
:func:`Device.peak_allocated_bytes` (the profiler's allocation events on the CPU).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

CPU_THREADS = 2


@dataclass(frozen=True)
class Device:
    """A benchmark's device: ``cpu`` (fp32) or ``cuda`` (bf16 autocast)."""

    name: str

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.name)

    @property
    def is_cuda(self) -> bool:
        return self.name == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; nothing (fp32) on the CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.is_cuda else contextlib.nullcontext()

    def trainer_options(self) -> dict:
        """The Lightning Trainer's accelerator and precision on this device."""
        if self.is_cuda:
            return {"accelerator": "gpu", "precision": "bf16-mixed", "deterministic": False}
        return {"accelerator": "cpu", "precision": "32-true", "deterministic": True}  # as trainer=cpu runs

    def synchronize(self) -> None:
        """Wait for the work queued on the device (timers read the clock after it)."""
        if self.is_cuda:
            torch.cuda.synchronize()

    def reset_peak_memory(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        """Largest allocation total since :meth:`reset_peak_memory` (CUDA only; None on the CPU)."""
        return torch.cuda.max_memory_allocated() if self.is_cuda else None

    def median_seconds(self, function: Callable[[], object], repeats: int) -> float:
        """Median wall time of ``function`` over ``repeats`` calls after one warm-up, queued work included."""
        function()
        self.synchronize()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            function()
            self.synchronize()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def peak_allocated_bytes(self, function: Callable[[], object]) -> int:
        """Most bytes allocated at once during one call of ``function``, beyond what was allocated before it.

        CUDA: the caching allocator's peak. CPU: the profiler's allocation and free events replayed in
        order (every tensor allocation counts, whatever the allocator keeps).
        """
        if self.is_cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            function()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - before
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
            function()
        events = sorted(
            (e for e in profile.profiler.kineto_results.events() if e.name() == "[memory]"),
            key=lambda e: e.start_ns(),
        )
        live = peak = 0
        for event in events:
            live += event.nbytes()  # negative for a free
            peak = max(peak, live)
        return peak

    def setup(self) -> dict:
        """Thread count and determinism for this device; returns the host facts a result records."""
        if self.is_cuda:
            torch.use_deterministic_algorithms(False)  # cuBLAS determinism needs a workspace setting; speed here
            return {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
        torch.set_num_threads(CPU_THREADS)
        torch.use_deterministic_algorithms(True)  # as the cpu trainer config runs
        return {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}


CPU = Device("cpu")


def device_named(name: str) -> Device:
    """The ``--device`` argument: ``cpu``, or ``cuda`` when a GPU is visible (else a clear error)."""
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name!r}: choose cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch here (torch.cuda.is_available() is False)")
    return Device(name)


def add_device_argument(parser) -> None:
    """``--device cpu|cuda`` on a benchmark's argument parser (parsed into a :class:`Device`)."""
    parser.add_argument(
        "--device",
        type=device_named,
        default=CPU,
        help="cpu (fp32, 2 threads) or cuda (bf16 autocast, synchronised timers, CUDA peak memory)",
    )
