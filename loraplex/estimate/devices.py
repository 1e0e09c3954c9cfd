"""Devices an estimate is for: known GPUs (memory, dense bf16 peak), a memory size, the CPU.

Peak figures are the vendors' dense (no sparsity) bf16 tensor-core numbers;
memory is what the card reports to CUDA (MiB), not the marketing GB.
"""

import os
import re
from dataclasses import dataclass

from loraplex.estimate.errors import EstimateError

MiB = 1 << 20
GiB = 1 << 30
# CUDA context and kernels' workspace (cuBLAS, cuDNN) before any tensor: about
# 0.5 GiB on recent drivers; torch.cuda's own figures do not count it.
CUDA_CONTEXT = 512 * MiB


@dataclass(frozen=True)
class Device:
    name: str
    kind: str  # "cuda" or "cpu"
    memory_bytes: int | None  # None: not given (the estimate then fits nothing against it)
    bf16_flops: float | None = None  # dense peak, FLOP/s


# name → (memory MiB as CUDA reports it, dense bf16 TFLOP/s)
GPUS: dict[str, tuple[int, float]] = {
    "h200": (143_771, 989.0),
    "h100": (81_559, 989.0),
    "h100-pcie": (81_559, 756.0),
    "a100-80g": (81_920, 312.0),
    "a100-40g": (40_960, 312.0),
    "l40s": (46_068, 362.0),
    "a6000": (49_140, 154.8),
    "l4": (23_034, 121.0),
    "a10g": (23_028, 70.0),
    "rtx4090": (24_564, 165.2),
    "rtx3090": (24_576, 71.0),
    "t4": (15_360, 65.0),  # fp16: the T4 has no bf16
}

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_memory(text: str) -> int:
    """'24GiB', '24 GB', '80g', '1.5TiB', '2048MiB' → bytes (GiB/MiB binary, GB/MB decimal)."""
    match = _SIZE.match(text)
    if not match:
        raise EstimateError(f"cannot read memory size '{text}' (try 24GiB or 80GB)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower().rstrip("b")
    if unit.endswith("i"):
        return int(number * (1 << (10 * "kmgt".index(unit[0]) + 10)))
    return int(number * _UNITS[unit])


def gpu(name: str) -> Device:
    key = name.lower().replace("_", "-")
    if key not in GPUS:
        raise EstimateError(f"unknown GPU '{name}'; known: {', '.join(GPUS)} (or --device-memory)")
    memory, tflops = GPUS[key]
    return Device(key, "cuda", memory * MiB, tflops * 1e12)


def cpu_device(memory_bytes: int | None = None) -> Device:
    """This machine's CPU; its memory is what the OS has available now, unless given."""
    if memory_bytes is None:
        memory_bytes = available_memory()
    return Device("cpu", "cpu", memory_bytes)


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
    return pages * os.sysconf("SC_PAGE_SIZE") if pages else None


def pick_device(gpu_name: str | None, device_memory: str | None, cpu: bool) -> Device:
    """The device of an estimate from the CLI's flags (--gpu, --device-memory, --device cpu)."""
    if gpu_name and not cpu:
        base = gpu(gpu_name)
        if device_memory:
            return Device(base.name, "cuda", parse_memory(device_memory), base.bf16_flops)
        return base
    if cpu:
        return cpu_device(parse_memory(device_memory) if device_memory else None)
    if device_memory:
        return Device(f"gpu ({device_memory})", "cuda", parse_memory(device_memory), None)
    return cpu_device()
