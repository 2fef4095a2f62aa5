"""What the machine can do: native bf16, and the measured matmul ceiling that MFU is reported against.

Both are read off the machine, never guessed from a model name:

- ``native_bf16(device)``: CUDA asks torch (``is_bf16_supported``: Ampere and later); a CPU has native bf16
  when ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16`` (or torch reports an AMX capability).
  ``ARCHLAB_NATIVE_BF16=0|1`` overrides the probe (the test suite pins 0 so its numbers stay fp32).
- ``matmul_peak_flops(device, dtype)``: the best FLOP/s of large square matmuls in that precision, measured
  once per machine (device name, precision, threads) and cached as JSON under the archlab cache
  (``ARCHLAB_CACHE``, default ``~/.cache/archlab``) in ``hardware/matmul_peak.json``. MFU = achieved
  FLOP/s / this peak: a measured ceiling, so an MFU near 1 means "as fast as this machine multiplies
  matrices", as nanoGPT / torchtitan report it against the datasheet.
"""

from __future__ import annotations

import json
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

import torch

from archlab.files import atomic_write

PEAK_FILE = "matmul_peak.json"


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHLAB_CACHE", Path.home() / ".cache" / "archlab")) / "hardware"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    if {"avx512_bf16", "amx_bf16"} & cpu_flags():
        return True
    try:
        return "AMX" in torch.backends.cpu.get_cpu_capability().upper()
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matmuls natively (so bf16 autocast pays)."""
    override = os.environ.get("ARCHLAB_NATIVE_BF16")
    if override in ("0", "1"):
        return override == "1"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def _measure_peak(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # warm-up (kernel selection, oneDNN primitive creation)
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def matmul_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, *, seconds: float = 1.0,
                      refresh: bool = False, at_least: float = 0.0) -> float:
    """Measured matmul FLOP/s of ``device`` in ``dtype`` (cached per machine; ``refresh`` measures again).

    ``at_least``: a throughput the caller has just achieved; a cached peak below it was measured on a busy
    machine (MFU would read over 100%), so the peak is measured again. The best measurement is kept.
    """
    device = torch.device(device)
    key = f"{device_name(device)} | {str(dtype).removeprefix('torch.')}"
    path = cache_dir() / PEAK_FILE
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    cached = float(table[key]) if isinstance(table.get(key), int | float) and table[key] > 0 else 0.0
    if cached and not refresh and cached >= at_least:
        return cached
    # a measurement on a busy machine only underestimates the peak: keep the best one seen
    peak = max(_measure_peak(device, dtype, seconds), cached, at_least)
    table[key] = peak
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(table, indent=1))
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time
    return peak


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
