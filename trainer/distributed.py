"""Training on many processes: torch.distributed under torchrun, one rank or many.

The recipe (train.py) reads the same for one process or many; this module
holds everything that differs, as torchtune's `training/_distributed.py`
does for its recipes:

- `Group.from_env()` reads torchrun's environment (`RANK`, `WORLD_SIZE`,
  `LOCAL_RANK`, `LOCAL_WORLD_SIZE`). Without it the run is one process and
  every method below is the identity: no process group, no collective.
- `Group.start()` forms the process group (gloo on CPU, NCCL on CUDA) with a
  collective timeout, so a rank that dies or hangs ends the job with an
  error instead of a hang. The recipe calls it after the data is read (bad
  data is reported once, by the launcher or by rank 0, before any group
  forms) and before the model loads.
- `share()` gives each rank its part of one optimizer step's micro-batches
  (every world-th, starting at its rank). The plan is global (plan.py), so N
  ranks with accumulation k run the step one process with accumulation N·k
  runs. Every rank makes the same number of forward and backward passes
  (collectives must pair up): a rank short of micro-batches runs fillers
  whose loss is multiplied by zero.
- `wrap()` puts DDP or FSDP2 (`fully_shard`, one unit per decoder layer and
  one for the root, as torchtune's distributed LoRA recipe shards) around
  the loss module. DDP and FSDP average gradients over ranks; the loop
  multiplies each loss by `world` so the average is the step's sum.
- `sum()`, `gather()`, `barrier()`: the few collectives the loop and the
  record need. `full_trainable()` gathers the LoRA weights whole (FSDP2
  holds 1/N of each) on every rank.

The strategies: `ddp` keeps the whole base on every rank (4-bit for QLoRA)
and all-reduces only the LoRA gradients; `fsdp` shards every parameter, the
frozen base too, so a base too big for one device trains across several.
QLoRA with FSDP2 is refused at config time (config.py).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeVar

import torch
import torch.distributed as dist

Strategy = Literal["none", "ddp", "fsdp"]
T = TypeVar("T")


@dataclass
class Group:
    """This process's place in the job, and the job's strategy once chosen."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    nodes: int = 1
    strategy: Strategy = "none"

    @classmethod
    def from_env(cls) -> "Group":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world=world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            nodes=max(1, world // max(local_world, 1)),
        )

    @property
    def main(self) -> bool:
        """Rank 0: the one writer (progress, logs, record, export, publish)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def choose(self, setting: str) -> None:
        """`auto` is DDP across ranks; one process needs no strategy at all."""
        if self.distributed:
            self.strategy = "ddp" if setting == "auto" else setting  # type: ignore[assignment]

    def device(self, device: torch.device) -> torch.device:
        """CUDA: this rank's own GPU (LOCAL_RANK); CPU: the CPU."""
        if device.type == "cuda" and self.distributed:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device, timeout_s: int) -> None:
        if not self.distributed or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # --- the step's work, by rank -------------------------------------------------

    def share(self, items: list[T] | tuple[T, ...]) -> list[T | None]:
        """This rank's items (every world-th); None marks a filler, so that every
        rank gets ⌈len / world⌉ entries."""
        mine: list[T | None] = list(items[self.rank :: self.world])
        slots = -(-len(items) // self.world)
        return mine + [None] * (slots - len(mine))

    def wrap(
        self, module: torch.nn.Module, layers: list[torch.nn.Module], device: torch.device
    ) -> torch.nn.Module:
        """DDP or FSDP2 around `module` (the loss module); `layers`: its decoder layers.

        Under FSDP2 the module is still on the meta device (sharded.py)."""
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.local_rank] if next(module.parameters()).is_cuda else None
            # Every rank built the same LoRA weights from the seed (init_lora) and
            # loaded the same base: no need to send the whole base at start.
            return DistributedDataParallel(
                module, device_ids=ids, forward_sync_buffers=False, init_sync=False
            )
        if self.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(device.type, (self.world,))
            for layer in layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(module, mesh=mesh)
        return module

    @contextmanager
    def accumulating(self, module: torch.nn.Module, last: bool) -> Iterator[None]:
        """Gradients are exchanged only at the last micro-batch of a step."""
        if self.strategy == "ddp" and not last:
            with module.no_sync():
                yield
            return
        if self.strategy == "fsdp":
            module.set_requires_gradient_sync(last)
        with nullcontext():
            yield

    # --- collectives -----------------------------------------------------------

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, group=self._cpu_group())
        return float(tensor.item())

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        found: list = [None] * self.world
        dist.all_gather_object(found, value, group=self._cpu_group())
        return found

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self._cpu_group())

    def _cpu_group(self):
        """Collectives of Python numbers go over gloo even when the model's run over NCCL."""
        if dist.get_backend() == "gloo":
            return None
        if not hasattr(self, "_gloo"):
            self._gloo = dist.new_group(backend="gloo")
        return self._gloo


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: FSDP2 parameters are DTensors holding 1/N (a collective)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def full_trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable weight, whole, on the CPU, on every rank (FSDP2 gathers them)."""
    return {
        name: full_tensor(param.detach()).cpu().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def local_parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters this rank holds: all of them under DDP, 1/N under FSDP2."""
    total = 0
    for param in model.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        total += local.numel() * local.element_size()
    return total
