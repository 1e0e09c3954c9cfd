"""Many distinct adapters, fast: new random weights in an existing adapter's shape.

`make_random_lora` builds a PEFT model (seconds each); benchmarks need up to
1,024 adapters, so they make one and re-draw its tensors for the rest.
"""

from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_adapters(base_dir: Path, out: Path, count: int, *, r: int = 16) -> list[Path]:
    return list(iter_random_adapters(base_dir, out, count, r=r))


def iter_random_adapters(base_dir: Path, out: Path, count: int, *, r: int = 16) -> Iterator[Path]:
    """`random_adapters` one at a time: a caller may publish each and delete it
    before the next is written (1,024 SmolLM2 adapters are 20 GB)."""
    from tests.fixtures.models import make_random_lora

    first = make_random_lora(
        base_dir, out / "a0", r=r, target_modules=ALL_LINEAR, seed=0, init_scale=0.01
    )
    tensors = load_file(first / "adapter_model.safetensors")
    config = (first / "adapter_config.json").read_bytes()
    yield first
    for i in range(1, count):
        target = out / f"a{i}"
        target.mkdir(parents=True, exist_ok=True)
        (target / "adapter_config.json").write_bytes(config)
        gen = torch.Generator().manual_seed(i)
        fresh = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in tensors.items()}
        save_file(fresh, str(target / "adapter_model.safetensors"))
        yield target
