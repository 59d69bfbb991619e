"""Latency measurement: time a module on its inputs on this machine, many modules interleaved.

The seam: :meth:`Bench.prepare` turns (module, inputs) into what is called and its inputs
(here: the module in eval mode on the device, in the memory format); :meth:`Bench.run` times
every job. Another runtime (an exported graph, another library) subclasses ``Bench`` and
overrides ``prepare`` only; the tables never see how a job runs.

Timing: ``torch.utils.benchmark.Timer`` at a fixed thread count under
``torch.inference_mode``, after warm-up; each job is timed in rounds, every round visiting
all jobs in a fresh random order (so a burst of load from other processes hits one sample of
many jobs, not all samples of one), and the estimate is the median of the rounds. A job's
sample in a round is the best of ``blocks`` short timings: on a busy machine a call is
either undisturbed or preempted for a whole scheduler slice. Rounds go on (up to
``max_rounds``) until the distribution-free 95% confidence interval of each median is
within ``rel_tol`` of it. From the first timing on, the process keeps freed memory
(``keep_freed_memory``), so that parts and whole networks run under the same allocator.
"""

from __future__ import annotations

import math
import platform
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fnacli.errors import UserError

DEVICES = ("cpu", "cuda")
CONFIDENCE = 0.95


# -- where a table was measured --------------------------------------------------------------
def device_name(device: str) -> str:
    """The processor or GPU model, as the OS / CUDA report it."""
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class MeasureConfig:
    """How a table (or a check) is measured."""

    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    channels_last: bool | None = None  # None: whichever is faster on the reference network
    min_rounds: int = 7
    max_rounds: int = 21
    rel_tol: float = 0.05  # wanted half-width of the 95% CI of each median, relative
    # Work per sample (calls are repeated to reach it). Short on purpose: on a busy machine a
    # call is either undisturbed or preempted for a whole scheduler slice (a bimodal
    # distribution), and the median of short samples is the undisturbed time as long as
    # fewer than half are hit; long samples would all average some preemption in.
    sample_s: float = 0.002
    blocks: int = 3  # a round's sample is the best of this many (filters preempted ones)
    seed: int = 0

    def check(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"--device: expected cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available here")
        if self.threads < 1:
            raise UserError(f"--threads: expected at least 1, got {self.threads}")
        if self.batch < 1:
            raise UserError(f"--batch: expected at least 1, got {self.batch}")
        if self.min_rounds < 6:  # fewer samples cannot give a 95% interval of the median
            raise UserError(f"--rounds: expected at least 6, got {self.min_rounds}")
        if self.max_rounds < self.min_rounds:
            raise UserError("--max-rounds must be at least --rounds")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


# glibc's mallopt parameters (malloc.h) and its largest mmap threshold on 64-bit systems
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_allocator: str | None = None  # what keep_freed_memory() did in this process
_KEPT = "glibc, freed memory kept"


def _libc_mallopt() -> Callable[[int, int], int] | None:
    import ctypes

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> str:
    """Make the C allocator keep freed memory in the process from now on (process-wide,
    once): with glibc, no trimming of the heap and buffers up to 32 MiB from the heap
    instead of fresh mmaps. Returns how this process allocates while timing.

    Why: glibc's default thresholds adapt to recent frees, and whether a network's large
    activations are returned to the OS and page-faulted back on every call then depends on
    everything else alive in the process. Measured (docs/latency.md): in a check of 20 fna
    DeepLabv3 networks at 256x128, those whose first searched layer expands 6x ran 17-20%
    longer end to end than predicted from their parts, the others 0-3% (Spearman 0.75);
    with the memory kept, the misses are a near-constant offset (Spearman 0.94-0.98). Whole
    networks and the parts they are predicted from are thus timed under the same allocator.
    """
    global _allocator
    if _allocator is None:
        mallopt = _libc_mallopt()
        ok = mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) \
            and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
        _allocator = _KEPT if ok else "default"
    return _allocator


def allocator_setting() -> str:
    """How timings in this process allocate (what :func:`keep_freed_memory` does here)."""
    if _allocator is not None:
        return _allocator
    return _KEPT if _libc_mallopt() is not None else "default"


def environment(cfg: MeasureConfig) -> dict:
    """What a measurement depends on and is recorded with it."""
    return {"device": cfg.device, "device_name": device_name(cfg.device),
            "torch": torch.__version__, "threads": cfg.threads, "batch": cfg.batch,
            "host": platform.node(), "allocator": allocator_setting()}


def same_machine(recorded: Mapping, here: Mapping) -> list[str]:
    """What differs between a table's recorded environment and this one (empty: the same)."""
    return [f"{k} {recorded.get(k)!r} here {here.get(k)!r}"
            for k in ("device", "device_name", "torch") if recorded.get(k) != here.get(k)]


# -- timing ------------------------------------------------------------------------------------
def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float,
                                                                                   float]:
    """(median, low, high): the median and a distribution-free interval for it, from order
    statistics (the binomial(n, ½) bound); needs n ≥ 6 for 95%."""
    xs = sorted(samples)
    n = len(xs)
    med = xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])
    k = 0  # largest k with P(x_(k) < median < x_(n-k+1)) ≥ confidence (1-based k)
    cdf = 0.0
    for j in range(n // 2):
        cdf += math.comb(n, j) / 2 ** n  # P(Bin ≤ j)
        if 1 - 2 * cdf >= confidence:
            k = j + 1
        else:
            break
    if k == 0:
        return med, xs[0], xs[-1]
    return med, xs[k - 1], xs[n - k]


@dataclass
class Timing:
    median_s: float
    low_s: float
    high_s: float
    rounds: int

    @property
    def rel_halfwidth(self) -> float:
        return (self.high_s - self.low_s) / 2 / self.median_s if self.median_s > 0 else 0.0


@dataclass
class Job:
    """One thing to time: ``fn()`` (a module on its prepared input)."""

    key: object
    module: nn.Module
    inputs: tuple
    samples: list[float] = field(default_factory=list)
    number: int = 1
    timer: object = None


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Bench:
    """Times many jobs interleaved (see the module docstring)."""

    def __init__(self, cfg: MeasureConfig, memory_format: torch.memory_format) -> None:
        self.cfg, self.memory_format = cfg, memory_format
        self.rng = random.Random(cfg.seed)

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[nn.Module,
                                                                                  tuple]:
        dev = self.cfg.torch_device
        module = module.to(dev).eval()
        if self.memory_format is torch.channels_last:
            module = module.to(memory_format=torch.channels_last)
        out = []
        for x in inputs:
            x = x.to(dev)
            if x.dim() == 4:
                x = x.contiguous(memory_format=self.memory_format)
            out.append(x)
        return module, tuple(out)

    def job(self, key: object, module: nn.Module, inputs: Sequence[torch.Tensor]) -> Job:
        m, xs = self.prepare(module, inputs)
        return Job(key, m, xs)

    def _sync(self) -> None:
        if self.cfg.device == "cuda":
            torch.cuda.synchronize()

    def _calibrate(self, job: Job) -> None:
        import logging

        # torch.utils.benchmark imports cpp_extension, which warns on machines without CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.benchmark import Timer

        for _ in range(3):  # warm-up: allocator, oneDNN primitive caches, cuDNN autotune
            job.module(*job.inputs)
        self._sync()
        t0 = time.perf_counter()
        job.module(*job.inputs)
        self._sync()
        once = max(time.perf_counter() - t0, 1e-7)
        job.number = max(1, min(1000, round(self.cfg.sample_s / once)))
        job.timer = Timer(stmt="m(*x)", globals={"m": job.module, "x": job.inputs},
                          num_threads=self.cfg.threads)

    def run(self, jobs: list[Job], progress: Callable[[int], None] | None = None
            ) -> dict[object, Timing]:
        cfg = self.cfg
        out: dict[object, Timing] = {}
        keep_freed_memory()
        with fixed_threads(cfg.threads), torch.inference_mode():
            for j in jobs:
                self._calibrate(j)
            pending = list(jobs)
            for r in range(cfg.max_rounds):
                order = list(pending)
                self.rng.shuffle(order)
                for j in order:
                    j.samples.append(min(j.timer.timeit(j.number).median
                                         for _ in range(cfg.blocks)))
                if r + 1 < cfg.min_rounds:
                    if progress:
                        progress(0)
                    continue
                still = []
                for j in pending:
                    t = Timing(*median_ci(j.samples), len(j.samples))
                    if t.rel_halfwidth <= cfg.rel_tol or r + 1 == cfg.max_rounds:
                        out[j.key] = t
                        if progress:
                            progress(1)
                    else:
                        still.append(j)
                pending = still
                if not pending:
                    break
        return out
