"""LoRA dropout for CPU training: the same kind of mask for a quarter of the random draws.

PEFT's LoRA layers drop their input with `nn.Dropout`. On CPU its mask costs
one Mersenne-Twister draw per element, and for LoRA that is a lot of
elements: every adapted layer drops its whole input, once in the forward
pass and again when gradient checkpointing recomputes it. Profiled on 2
cores, the mask drawing (`aten::bernoulli_`) took 19% of a SmolLM2 training
step and 30% of the tiny model's — more than attention.

`CheapDropout` draws 64 random bits at a time and cuts them into four 15-bit
numbers, one per element: an element is dropped when its number is below
round(p × 32768). So p is rounded to a multiple of 1/32768 (0.05 becomes
0.04999), and kept elements are scaled by 1 / (1 − that p), so the expected
output still equals the input. Masks are independent per layer and per
call, as with `nn.Dropout`. The bits come from PyTorch's default generator,
so `torch.manual_seed`, checkpointed RNG state and gradient checkpointing's
replay give the same masks as they would with `nn.Dropout`. Only a boolean
mask is kept for backward, as `nn.Dropout` keeps.

On CUDA, PyTorch's own dropout is a fused Philox kernel and already cheap:
this is for CPU runs only.
"""

import torch

LEVELS = 1 << 15  # a 15-bit number per element


class CheapDropout(torch.nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = min(round(p * LEVELS), LEVELS - 1)
        self.scale = 1.0 / (1.0 - self.threshold / LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        count = x.numel()
        # random_() on int64 fills bits 0–62: every 16-bit lane has 15 random low bits.
        lanes = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_()
        numbers = lanes.view(torch.int16)[:count].bitwise_and_(LEVELS - 1).view(x.shape)
        # In place: fewer buffers for glibc to keep resident; `where` saves only its mask.
        return torch.where(numbers >= self.threshold, x, 0.0).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.threshold / LEVELS:.5f}"


def use_cheap_lora_dropout(model: torch.nn.Module) -> int:
    """Swap every PEFT LoRA layer's `nn.Dropout` for `CheapDropout`; returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = CheapDropout(dropout.p)
                swapped += 1
    return swapped
