"""The GPU inventory (NVML), waiting for freed memory, and CUDA peak-memory readings.

With an NVIDIA driver, NVML reports each visible device's total, used and free memory.
Free is what counts: on an H100 we saw NVML report ~480 MiB used with nothing running
(nvidia-smi showed 0), so "total minus our models" would over-commit. Without a driver
the configured virtual devices (``gpus:`` in the settings) stand in, for planning and
tests; with neither the runner is CPU only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("gen3d.gpus")
MIB = 2**20


@dataclass(frozen=True)
class Device:
    id: int  # as CUDA numbers it in this process (after CUDA_VISIBLE_DEVICES)
    name: str
    total_mb: int
    free_mb: int
    used_mb: int
    source: str  # "nvml" or "config"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nvml() -> Any | None:
    """The initialised pynvml module, or None without a usable NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML unavailable: %s", exc)
        return None
    return pynvml


def _visible(count: int) -> list[int]:
    """NVML indices of the devices CUDA will show this process, in CUDA's order."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(range(count))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part.isdigit():  # UUIDs and MIG names: not mapped here; stop like CUDA does
            break
        if int(part) < count:
            out.append(int(part))
    return out


def inventory(configured: list[dict[str, Any]] | None = None) -> list[Device]:
    """The GPUs this process can use: NVML's, else the configured virtual ones, else []."""
    nvml = _nvml()
    if nvml is not None:
        try:
            devices = []
            for cuda_id, index in enumerate(_visible(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = nvml.nvmlDeviceGetName(handle)
                devices.append(
                    Device(
                        cuda_id, name.decode() if isinstance(name, bytes) else str(name),
                        mem.total // MIB, mem.free // MIB, mem.used // MIB, "nvml",
                    )
                )  # fmt: skip
            return devices
        finally:
            nvml.nvmlShutdown()
    return [
        Device(int(g["id"]), str(g.get("name") or f"virtual-{g['id']}"), int(g["vram_mb"]),
               int(g["vram_mb"]), 0, "config")
        for g in configured or []
    ]  # fmt: skip


def free_mb(device_id: int) -> int | None:
    """NVML's free memory on a device now; None without NVML."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        visible = _visible(nvml.nvmlDeviceGetCount())
        handle = nvml.nvmlDeviceGetHandleByIndex(visible[device_id])
        return int(nvml.nvmlDeviceGetMemoryInfo(handle).free // MIB)
    finally:
        nvml.nvmlShutdown()


def wait_for_free(
    device_id: int, need_mb: float, timeout_s: float = 5.0, poll_s: float = 0.1
) -> bool:
    """After an unload, wait until the driver reports ``need_mb`` free (freed memory shows
    up with a delay; Ollama polls up to 5 s). True at once without NVML."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = free_mb(device_id)
        if free is None or free >= need_mb:
            return True
        if time.monotonic() >= deadline:
            log.warning("cuda:%d: %d MiB free after %.0f s, wanted %.0f", device_id, free,
                        timeout_s, need_mb)  # fmt: skip
            return False
        time.sleep(poll_s)


def _cuda_torch(device: str) -> Any | None:
    """torch, if an adapter already imported it and ``device`` is a usable CUDA device
    (this module never imports torch itself: CPU-only runs stay light)."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch


def reset_peak(device: str) -> None:
    torch = _cuda_torch(device)
    if torch is not None:
        torch.cuda.reset_peak_memory_stats(device)


def peak_reserved_mb(device: str) -> float | None:
    """The CUDA caching allocator's peak reservation since the last reset, in MiB (it
    leaves out the CUDA context, ~0.6 GiB per process: the reserve covers that)."""
    torch = _cuda_torch(device)
    if torch is None:
        return None
    return float(torch.cuda.max_memory_reserved(device)) / MIB
