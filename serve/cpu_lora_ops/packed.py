"""vLLM's AMX GEMM for small weights (the SGL kernel), for the fused LoRA products.

Contract: `usable(dtype, k, n)` says whether a `[rows, k] @ [k, n]` product
in `dtype` can run on `weight_packed_linear`; `pack(w)` turns a `[n, k]`
weight (or a stack of them) into the kernel's VNNI layout, of the same shape
and size; `linear(out, x, packed)` writes `x @ w.T` into `out`, and
`bmm(out, x, packed)` does the same for each matrix of a stack (`bmm_cpu`).

Why: vLLM's CPU build ships this kernel for its own small linear layers
(`dispatch_cpu_unquantized_gemm`). At LoRA's shapes (16-64 rows, rank-wide
inner dimension) it took 10-30 us a product on a 2-core AMX Xeon, where
`torch.mm` in bfloat16 took about 60 us, mostly fixed cost; its batched form
(`bmm_cpu`) was 2-4x faster than `torch.bmm`. Its alignment rules are
vLLM's (`check_cpu_sgl_kernel`): an AMX CPU, bfloat16 (or float16 with
AMX-FP16), k a multiple of 32 and n of 16. vLLM's size cap on that check
picks oneDNN for large weights at large batches; LoRA's factors are small,
so it does not apply here.
"""

import functools

import torch
import vllm._custom_ops  # noqa: F401  (loads torch.ops._C)

K_ALIGN = 32
"""The kernel's k must be a multiple of this (the inner width is padded to it)."""

enabled = True
"""Benchmarks switch this off to compare with torch's products (bench_cpu_lora_ops)."""


def usable(dtype: torch.dtype, k: int, n: int) -> bool:
    return enabled and _runs_in(dtype) and k % K_ALIGN == 0 and n % 16 == 0


@functools.cache
def _runs_in(dtype: torch.dtype) -> bool:
    """The kernel is built and this CPU runs it in `dtype` (asked once: a hot path)."""
    if not hasattr(torch.ops._C, "bmm_cpu") or not torch.cpu._is_amx_tile_supported():
        return False
    if dtype == torch.float16:
        return torch.cpu._is_amx_fp16_supported()
    return dtype == torch.bfloat16


def pack(weight: torch.Tensor) -> torch.Tensor:
    """`[n, k]` or `[slots, n, k]` weights in the kernel's layout (same shape)."""
    return torch.ops._C.convert_weight_packed(weight.contiguous())


def linear(out: torch.Tensor, x: torch.Tensor, packed: torch.Tensor) -> None:
    """out = x @ w.T, for `packed = pack(w)`; `x` rows must be contiguous."""
    torch.ops._C.weight_packed_linear(out, x, packed, None, True)


def bmm(out: torch.Tensor, x: torch.Tensor, packed: torch.Tensor) -> None:
    """out[i] = x[i] @ w[i].T for a stack `packed = pack(w)`; all contiguous."""
    torch.ops._C.bmm_cpu(out, x, packed, True, None)
