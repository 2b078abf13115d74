"""Step timing, cross-rank reduction of metric sums, and the GPU peak used for MFU.

Ranks accumulate *sums* (loss x tokens, tokens, samples) between reports; `reduce_sums`
all-reduces them so rank 0 reports numbers for the whole job, not for its own slice.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

# dense bf16 peak per GPU, FLOP/s (tensor cores, no sparsity)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def gpu_peak_flops(device: torch.device) -> float:
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak
    return 0.0


class StepTimer:
    """Splits wall time into waiting for data and computing."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.wait = 0.0
        self.compute = 0.0

    @property
    def total(self) -> float:
        return self.wait + self.compute

    @contextmanager
    def waiting(self):
        t0 = time.perf_counter()
        yield
        self.wait += time.perf_counter() - t0

    @contextmanager
    def computing(self):
        t0 = time.perf_counter()
        yield
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.compute += time.perf_counter() - t0


def reduce_sums(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum every key over ranks. Keys may differ between ranks (a task absent from one slice)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(sums)
    keys: list[list[str]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(keys, sorted(sums))
    union = sorted(set().union(*keys))
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    t = torch.tensor([float(sums.get(k, 0.0)) for k in union], dtype=dtype, device=device)
    dist.all_reduce(t)
    return dict(zip(union, t.tolist()))
