"""Benchmark: the LoRA work of one step, by the shape of its batch (issue 17).

The fused CPU LoRA ops (`serve/cpu_lora_ops/fused.py`) of a SmolLM2-135M
layer's modules (QKV, O, gate/up, down; rank 16 on every module, 16 adapters
in slots 0-15, random weights), applied for its 30 layers to one batch's rows
as vLLM hands them:

- `decode_16_distinct`: 16 decode rows, one per adapter;
- `prefill_among_decode`: 15 decode rows of 15 adapters and a 128-token
  prefill of the 16th, as when a request arrives while others decode;
- `two_prefills_among_decode`: 14 decode rows and two 128-token prefills;
- `one_adapter_decode`: 16 decode rows of one adapter (a control: one run);
- `one_adapter_prefill`: four 128-token prompts of one adapter (one run);
- `prefill_16_adapters`: 16 prompts of 16 adapters, 128 tokens each;
- `prefill_15_adapters_and_a_decode_row`: 15 such prompts and one decode row,
  the batch vLLM ran when 16 requests of 16 adapters started together over
  HTTP (bench_adapter_cost);
- `prefill_16_adapters_varied`: 16 prompts of 16 adapters, 40-220 tokens;
- `prefill_8_adapters_among_decode`: 8 such prompts and 8 decode rows.

Four sides, side by side in rotated rounds: `now` (the defaults);
`prompts_in_block` (`plan.long_run` out of reach: with more than
`plan.MAX_RUNS` runs, prompts join the padded block unless at most
`long_runs_apart` of them are left out, as before); `one_block` (that, and
`plan.long_runs_apart = 0`: every row in one padded block, or one product per
adapter where padding would waste, as before 64e9cf7); `kernel_expands`
(`fused.ADDMM_ROWS` out of reach: a long run's expands on vLLM's kernel, then
a bf16 add into the output, as before 9f18965). Each cell is ms per step over
`--rounds` rounds (min, median, max), and each side's median over `now`'s.
Then `spread_slots`: with loraplex's 74 slots for SmolLM2 at concurrency 16,
vLLM's LRU eviction leaves a batch's 16 adapters anywhere in the stack
(SPREAD): `decode_16_spread` and `prefill_among_decode_spread` on those
slots, `batch_first` (the fused copies with the batch's slots first, as the
wrapper arranges them: positions.py) against `vllm_order` (the copies in
vLLM's slot order: the padded block gathers its adapters' weights).
Those sections apply one layer's four modules 30 times: their weights stay
in the cache, so they compare the ops' arrangements and their fixed costs.
Then `base_streamed`: 16 decode rows of one adapter against 16 of 16
adapters (bf16), 30 layers each with weights of its own (198 MB for 16
adapters) and the base model's 270 MB read between layers (untimed) as the
engine reads them, so the adapters' weights come from memory as in the
engine; `ms_per_extra_adapter` is what each more adapter in a decode step
costs, and `gb_per_s_of_extra_adapters` the rate its bytes are read at.
No engine: only the ops, so these are the steps' LoRA work, not their whole
time. Results: bench/results/lora-step.json.

    .venv/bin/python -m bench.bench_lora_step [--rounds 7] [--dtypes bfloat16 float32]
"""

import argparse
import contextlib
import functools
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from loraplex.serve.cpu_lora_ops import fused
from loraplex.serve.cpu_lora_ops import plan as plans
from loraplex.serve.cpu_lora_ops.fused import FusedWeights, apply_fused
from loraplex.serve.cpu_lora_ops.ops import slot_stack
from loraplex.serve.cpu_lora_ops.positions import Layout, Positions

RESULTS = Path(__file__).parent / "results" / "lora-step.json"
LAYERS, SLOTS, RANK, PROMPT = 30, 16, 16, 128
# SmolLM2-135M's LoRA modules: each slice's (in, out).
MODULES = {
    "qkv": ((576, 576), (576, 192), (576, 192)),
    "o": ((576, 576),),
    "gate_up": ((576, 1536), (576, 1536)),
    "down": ((1536, 576),),
}
PROMPT_LENGTHS = [40 + (73 * s) % 181 for s in range(SLOTS)]  # 40-220, spread
BATCHES = {
    "decode_16_distinct": list(range(SLOTS)),
    "prefill_among_decode": list(range(1, SLOTS)) + [0] * PROMPT,
    "two_prefills_among_decode": list(range(2, SLOTS)) + [0] * PROMPT + [1] * PROMPT,
    "one_adapter_decode": [0] * SLOTS,
    "one_adapter_prefill": [0] * (4 * PROMPT),
    "prefill_16_adapters": [slot for slot in range(SLOTS) for _ in range(PROMPT)],
    # What vLLM ran when 16 requests of 16 adapters started together over HTTP.
    "prefill_15_adapters_and_a_decode_row": [s for s in range(SLOTS - 1) for _ in range(PROMPT)]
    + [SLOTS - 1],
    "prefill_16_adapters_varied": [s for s in range(SLOTS) for _ in range(PROMPT_LENGTHS[s])],
    "prefill_8_adapters_among_decode": [s for s in range(8) for _ in range(PROMPT_LENGTHS[s])]
    + list(range(8, SLOTS)),
}
SPREAD_SLOTS = 74  # loraplex's slots for SmolLM2 at concurrency 16 (bench_scaling)
SPREAD = random.Random(0).sample(range(SPREAD_SLOTS), SLOTS)  # where LRU eviction leaves them
SPREAD_BATCHES = {
    "decode_16_spread": SPREAD,
    "prefill_among_decode_spread": SPREAD[1:] + [SPREAD[0]] * PROMPT,
}
BASE_BYTES = 270 * 10**6  # SmolLM2-135M's bf16 weights, read once per step
OUT_OF_REACH = 10**9
SIDES = {  # side → (plan.long_run, plan.long_runs_apart, fused.ADDMM_ROWS)
    "now": (plans.long_run, plans.long_runs_apart, fused.ADDMM_ROWS),
    "prompts_in_block": (OUT_OF_REACH, plans.long_runs_apart, fused.ADDMM_ROWS),
    "one_block": (OUT_OF_REACH, 0, fused.ADDMM_ROWS),
    "kernel_expands": (plans.long_run, plans.long_runs_apart, OUT_OF_REACH),
}


@contextlib.contextmanager
def side_settings(side: str) -> Iterator[None]:
    now = plans.long_run, plans.long_runs_apart, fused.ADDMM_ROWS
    plans.long_run, plans.long_runs_apart, fused.ADDMM_ROWS = SIDES[side]
    try:
        yield
    finally:
        plans.long_run, plans.long_runs_apart, fused.ADDMM_ROWS = now


def module_stacks(dtype: torch.dtype, slots: int = SLOTS, seed: int = 0) -> list[tuple]:
    """Each module's vLLM-style slot stacks (A, B) and output widths, random weights."""
    gen, stacks = torch.Generator().manual_seed(seed), []

    def stack(*shape: int) -> torch.Tensor:
        return (0.01 * torch.randn(slots, 1, *shape, generator=gen)).to(dtype)

    for slices in MODULES.values():
        a = tuple(stack(RANK, fan_in) for fan_in, _ in slices)
        b = tuple(stack(fan_out, RANK) for _, fan_out in slices)
        stacks.append((a, b, tuple(o for _, o in slices)))
    return stacks


def fused_modules(stacks: list[tuple], dtype: torch.dtype, layout: Layout) -> list[tuple]:
    """Each module's fused copy in `layout`'s order, its input and output widths, and
    its A stacks."""
    weights, modules = FusedWeights(), []
    for a, b, widths in stacks:
        ids = list(range(1, slot_stack(a[0]).shape[0] + 1))
        copy = weights.get(a, b, widths, ids, layout, dtype)
        # FusedWeights knows a module by its stacks' id(), as vLLM's live with the
        # model: they must outlive the lookups, or a new stack may reuse an id.
        modules.append((copy, slot_stack(a[0]).shape[2], sum(widths), a))
    return modules


def own_layers(dtype: torch.dtype, layout: Layout) -> list[list[tuple]]:
    """LAYERS layers of fused modules, each with weights of its own: 16 adapters'
    are then 198 MB in bf16, read from memory as the engine reads them, where
    one layer's modules applied LAYERS times stay in the cache."""
    return [
        fused_modules(module_stacks(dtype, seed=layer), dtype, layout) for layer in range(LAYERS)
    ]


def in_order(slots: int) -> Layout:
    """Every slot at its own position in the fused copies: vLLM's order."""
    return Positions().arrange(list(range(slots)))


def rotated(run: Callable[[str], float], sides: list[str], rounds: int) -> dict[str, list[float]]:
    """Each side's times over `rounds` rounds, the sides' order rotated every round."""
    times: dict[str, list[float]] = {side: [] for side in sides}
    for r in range(rounds):
        for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
            times[side].append(run(side))
    return times


def spread_of(times: list[float]) -> dict:
    return {
        key: round(f(times), 2)
        for key, f in (("min", min), ("median", statistics.median), ("max", max))
    }


def summary(slots: list[int], built: dict[str, plans.Plan], times: dict[str, list[float]]) -> dict:
    medians = {side: statistics.median(t) for side, t in times.items()}
    first = next(iter(medians.values()))
    return {
        "rows": len(slots),
        "plan": {side: describe(p) for side, p in built.items()},
        "ms_per_step": {side: spread_of(t) for side, t in times.items()},
        "median_over_" + next(iter(medians)): {
            side: round(m / first, 2) for side, m in medians.items()
        },
    }


def step_ms(
    layers: list[list[tuple]],
    plan: plans.Plan,
    rows: int,
    dtype: torch.dtype,
    base: torch.Tensor | None = None,
) -> float:
    """One step: every layer's modules, each on its own input and output. `layers`
    holds one list of modules per layer: one list LAYERS times (its weights stay
    in the cache) or own_layers(). With `base` (`[LAYERS, bytes]`), one layer's
    worth of it is read before each layer, untimed, as the engine reads the base
    model's weights between its LoRA ops."""
    io = [(torch.randn(rows, i).to(dtype), torch.zeros(rows, w, dtype=dtype))
          for _, i, w, _ in layers[0]]  # fmt: skip
    total = 0.0
    for layer, modules in enumerate(layers):
        if base is not None:
            base[layer].max()
        started = time.perf_counter()
        for (x, y), (copy, *_) in zip(io, modules, strict=True):
            apply_fused(x, copy, y, plan, 2.0)
        total += time.perf_counter() - started
    return total * 1e3


def settings_step(modules, built: dict, rows: int, dtype: torch.dtype, side: str) -> float:
    """One step of `side`'s plan under `side`'s settings (SIDES)."""
    with side_settings(side):
        return step_ms([modules] * LAYERS, built[side], rows, dtype)


def layout_step(modules: dict, built: dict, rows: int, dtype: torch.dtype, side: str) -> float:
    """One step of `side`'s copies and plan (measure_spread)."""
    return step_ms([modules[side]] * LAYERS, built[side], rows, dtype)


def describe(plan: plans.Plan) -> str:
    apart = plan.kind == "padded" and plan.runs
    return plan.kind + (f" + {len(plan.runs)} runs apart" if apart else "")


def measure(dtype: torch.dtype, rounds: int) -> dict:
    modules = fused_modules(module_stacks(dtype), dtype, in_order(SLOTS))
    result = {}
    for batch, slots in BATCHES.items():
        token_slots = torch.tensor(slots)
        built = {}
        for side in SIDES:
            with side_settings(side):
                built[side] = plans.build(token_slots)
        run = functools.partial(settings_step, modules, built, len(slots), dtype)
        run("now")  # warm-up
        result[batch] = summary(slots, built, rotated(run, list(SIDES), rounds))
    return result


def measure_spread(dtype: torch.dtype, rounds: int) -> dict:
    """Batches whose slots are spread over SPREAD_SLOTS: `batch_first` (the fused
    copies with the batch's slots first, as the wrapper arranges them) against
    `vllm_order` (the copies in vLLM's slot order: the block gathers its weights)."""
    stacks = module_stacks(dtype, SPREAD_SLOTS)
    in_vllm_order = fused_modules(stacks, dtype, in_order(SPREAD_SLOTS))
    result = {}
    for batch, slots in SPREAD_BATCHES.items():
        token_slots = torch.tensor(slots)
        layout = Positions().arrange(sorted(set(slots)))
        modules = {"batch_first": fused_modules(stacks, dtype, layout), "vllm_order": in_vllm_order}
        built = {
            "batch_first": plans.build(layout.positions(token_slots)),
            "vllm_order": plans.build(token_slots),
        }
        run = functools.partial(layout_step, modules, built, len(slots), dtype)
        run("batch_first")  # warm-up
        result[batch] = summary(slots, built, rotated(run, list(modules), rounds))
    return result


def measure_base_streamed(rounds: int) -> dict:
    """16 decode rows of one adapter against 16 of 16 adapters (bf16), each of the
    30 layers with weights of its own and the base model's 270 MB read between
    layers as in the engine, so that the adapters' weights come from memory
    rather than from the cache: the difference is what 15 more adapters' bytes
    cost a decode step."""
    dtype = torch.bfloat16
    layers = own_layers(dtype, in_order(SLOTS))
    base = torch.ones(LAYERS, BASE_BYTES // LAYERS // 2, dtype=torch.int16)
    batches = {"one_adapter_decode": [0] * SLOTS, "decode_16_distinct": list(range(SLOTS))}
    built = {batch: plans.build(torch.tensor(slots)) for batch, slots in batches.items()}
    run = functools.partial(streamed_step, layers, built, SLOTS, dtype, base)
    run("one_adapter_decode")  # warm-up
    times = rotated(run, list(batches), rounds)
    medians = {batch: statistics.median(t) for batch, t in times.items()}
    extra = medians["decode_16_distinct"] - medians["one_adapter_decode"]
    adapter_bytes = copy_bytes_per_adapter(layers)
    return {
        "base_bytes_read_per_step": BASE_BYTES,
        "fused_bytes_per_adapter": adapter_bytes,
        "ms_per_step": {batch: spread_of(t) for batch, t in times.items()},
        "ms_per_extra_adapter": round(extra / (SLOTS - 1), 3),
        "gb_per_s_of_extra_adapters": round(adapter_bytes * (SLOTS - 1) / extra / 1e6, 1),
    }


def copy_bytes_per_adapter(layers: list[list[tuple]]) -> int:
    """The bytes one adapter's position holds in every module's fused copy."""
    return sum(
        tensor[0].numel() * tensor.element_size()
        for modules in layers
        for copy, *_ in modules
        for tensor in (copy.a, *copy.b)
    )


def streamed_step(layers, built: dict, rows: int, dtype, base, batch: str) -> float:
    """One step of `batch`'s plan with the base's bytes read between layers."""
    return step_ms(layers, built[batch], rows, dtype, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    args = parser.parse_args()
    torch.set_num_threads(1)  # as vLLM's CPU worker runs here: one core
    load_before = os.getloadavg()
    results = {dtype: measure(getattr(torch, dtype), args.rounds) for dtype in args.dtypes}
    spread = {dtype: measure_spread(getattr(torch, dtype), args.rounds) for dtype in args.dtypes}
    streamed = measure_base_streamed(args.rounds)
    out = {
        "benchmark": "lora_step",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "amx": torch.cpu._is_amx_tile_supported(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "shape": f"SmolLM2-135M, {LAYERS} layers, rank {RANK}, {SLOTS} adapters, prompt {PROMPT}",
        "rounds": args.rounds,
        "results": results,
        "spread_slots": spread,
        "base_streamed": streamed,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            {key: out[key] for key in ("results", "spread_slots", "base_streamed")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
