"""vLLM's AMX GEMM for small weights (the SGL kernel), for the fused LoRA products.

Contract: `usable(dtype, k, n)` says whether a `[rows, k] @ [k, n]` product
in `dtype` can run on `weight_packed_linear`; `pack(w)` turns a `[n, k]`
weight (or a stack of them) into the kernel's VNNI layout, of the same shape
and size, and `write_rows` rewrites some rows of a packed weight in place;
`linear(out, x, packed)` writes `x @ w.T` into `out`, and
`bmm(out, x, packed)` does the same for each matrix of a stack (`bmm_cpu`).
`x` and `out` may be column slices of wider matrices: the kernel takes their
row strides.

Why: vLLM's CPU build ships this kernel for its own small linear layers
(`dispatch_cpu_unquantized_gemm`). At LoRA's shapes (16-64 rows, rank-wide
inner dimension) it took 10-30 us a product on a 2-core AMX Xeon, where
`torch.mm` in bfloat16 took about 60 us, mostly fixed cost; its batched form
(`bmm_cpu`) was 2-4x faster than `torch.bmm`. It needs an AMX CPU and
bfloat16 (or float16 with AMX-FP16); n must be a multiple of 32
(`bmm_cpu`'s own check: the kernel works in blocks of 32 columns) and k even
(the VNNI layout pairs k). vLLM's packer (`convert_weight_packed`) also asks
k to be a multiple of 32; the kernel does not (its AVX512-BF16 path steps k
in pairs, its AMX path hands any even k to oneDNN's brgemm), so `pack` lays
the weights out itself and a rank-16 slice is not padded to 32. vLLM's size
cap on that check picks oneDNN for large weights at large batches; LoRA's
factors are small, so it does not apply here.
"""

import functools

import torch
import vllm._custom_ops  # noqa: F401  (loads torch.ops._C)

N_ALIGN = 32
"""The kernel's n must be a multiple of this (the fused A's inner width is padded to it)."""

enabled = True
"""Benchmarks switch this off to compare with torch's products (bench_cpu_lora_ops)."""


def usable(dtype: torch.dtype, k: int, n: int) -> bool:
    return enabled and _runs_in(dtype) and k % 2 == 0 and n % N_ALIGN == 0


@functools.cache
def _runs_in(dtype: torch.dtype) -> bool:
    """The kernel is built and this CPU runs it in `dtype` (asked once: a hot path)."""
    if not hasattr(torch.ops._C, "bmm_cpu") or not torch.cpu._is_amx_tile_supported():
        return False
    if dtype == torch.float16:
        return torch.cpu._is_amx_fp16_supported()
    return dtype == torch.bfloat16


def pack(weight: torch.Tensor) -> torch.Tensor:
    """`[n, k]` or `[slots, n, k]` weights in the kernel's layout (same shape):
    per block of 32 rows of n, `[k / 2, 32, 2]`, as `convert_weight_packed` lays them."""
    *lead, n, k = weight.shape
    # A pair of k is one 32-bit word: the layout is then a transpose of words,
    # 2-4x faster to copy than one of 2-element rows.
    words = weight.contiguous().view(torch.int32).reshape(*lead, n // N_ALIGN, N_ALIGN, k // 2)
    return words.transpose(-2, -1).contiguous().view(weight.dtype).reshape(weight.shape)


def write_rows(packed: torch.Tensor, first: int, rows: torch.Tensor) -> None:
    """Write `rows` (`[r, k]`) as rows `first`.. of the `[n, k]` matrix that `packed`
    holds in the kernel's layout, leaving its other rows as they are: what
    `packed.copy_(pack(matrix))` does for a matrix that differs only there."""
    n, k = packed.shape
    # The packed words seen as [block, row in block, pair of k]: row-major again.
    dest = packed.view(torch.int32).view(n // N_ALIGN, k // 2, N_ALIGN).transpose(1, 2)
    src = rows.to(packed.dtype).contiguous().view(torch.int32)
    done = 0
    while done < src.shape[0]:
        block, at = divmod(first + done, N_ALIGN)
        left = src.shape[0] - done
        if at == 0 and left >= N_ALIGN:  # whole blocks in one copy
            count = left // N_ALIGN
            dest[block : block + count].copy_(
                src[done : done + count * N_ALIGN].view(count, N_ALIGN, -1)
            )
            done += count * N_ALIGN
        else:
            count = min(N_ALIGN - at, left)
            dest[block, at : at + count].copy_(src[done : done + count])
            done += count


def linear(out: torch.Tensor, x: torch.Tensor, packed: torch.Tensor) -> None:
    """out = x @ w.T, for `packed = pack(w)`."""
    torch.ops._C.weight_packed_linear(out, x, packed, None, True)


def bmm(out: torch.Tensor, x: torch.Tensor, packed: torch.Tensor) -> None:
    """out[i] = x[i] @ w[i].T for a stack `packed = pack(w)` (contiguous)."""
    torch.ops._C.bmm_cpu(out, x, packed, True, None)
