"""The one place that turns a `device` setting into a torch device name."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from econsg.errors import EconsgError


def resolve_device(device: str, field: str = "device") -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu'; 'cuda[:N]' without CUDA is an error naming `field`."""
    import torch

    name = str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EconsgError(f"{field}: {name!r} requested but CUDA is not available; expected 'auto' or 'cpu'")
    try:
        torch.device(name)
    except RuntimeError as error:
        raise EconsgError(f"{field}: got {name!r}, expected 'auto', 'cpu' or 'cuda[:N]'") from error
    return name


def check_backend(backend: str, device: str, field: str = "splat.backend") -> None:
    """Refuse the gsplat rasterizer on a device other than CUDA before any work (it failed at the first render, after
    every input was read)."""
    if backend == "gsplat" and not str(device).startswith("cuda"):
        raise EconsgError(f"{field}: 'gsplat' needs a CUDA device, but device resolves to {device!r} here; expected "
                          "'auto' or 'torch' (the CPU rasterizer), or a machine with CUDA")


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): call before reading a clock around GPU work,
    or the time measures the launches, not the work. Nothing to wait for on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(work: Callable[[int], object], repeats: int, device) -> float:
    """Median wall seconds of `work(r)` for r in range(repeats), after one untimed call (r = -1) to warm up: the
    median, since on a shared machine a repeat that another process preempts would pull a mean far off."""
    work(-1)
    times = []
    for r in range(repeats):
        synchronize(device)  # on CUDA the clock must wait for the kernels, not their launches
        start = time.perf_counter()
        work(r)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
