"""Many distinct adapters, fast: new random weights in an existing adapter's shape.

`make_random_lora` builds a PEFT model (seconds each); benchmarks need up to
64 adapters, so they make one and re-draw its tensors for the rest.
"""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_adapters(base_dir: Path, out: Path, count: int, *, r: int = 16) -> list[Path]:
    from tests.fixtures.models import make_random_lora

    first = make_random_lora(
        base_dir, out / "a0", r=r, target_modules=ALL_LINEAR, seed=0, init_scale=0.01
    )
    tensors = load_file(first / "adapter_model.safetensors")
    paths = [first]
    for i in range(1, count):
        target = out / f"a{i}"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(first / "adapter_config.json", target / "adapter_config.json")
        gen = torch.Generator().manual_seed(i)
        fresh = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in tensors.items()}
        save_file(fresh, str(target / "adapter_model.safetensors"))
        paths.append(target)
    return paths
