"""Benchmark: what adapters cost over HTTP, as a ratio to the base alone (issue 17).

One loraplex gateway per `--ops` choice (SmolLM2-135M-Instruct in bf16 by
default, the default slots and scheduler), and vLLM's own benchmark client,
random 128 in / 64 out, concurrency 16, `--prompts` requests per run:

- `base`: no adapter;
- `one_adapter`: every request on one adapter;
- `distinct_16`: requests round-robin over 16 adapters, so 16 running
  requests hold 16 distinct adapters.

Every adapter is loaded before timing. Each round runs the three loads in a
rotated order; the ratio of a load to the base is taken within its round,
and the result keeps every round's ratios with their min, median and max:
on this noisy machine one ratio alone can be off by ±20%. Goals (issue 17):
one adapter ≥ 0.85× of the base, 16 distinct ≥ 0.75×.

With every request 128 in / 64 out the 16 running requests start and end
together, so a step is all prefills or all decodes. `--range-ratio 0.5`
draws lengths from 64-192 in and 32-96 out: requests then arrive while
others decode, as with real clients, and steps mix a prefill with decode
rows.

    .venv/bin/python -m bench.bench_adapter_cost [--model smollm2-135m-instruct]
        [--ops loraplex grouped] [--rounds 3] [--prompts 128] [--range-ratio 0.5]

Results: bench/results/adapter-cost-<model>[-range-<ratio>].json.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.adapters import random_adapters
from bench.bench_serve import BASE, first_response_seconds, start, stop, vllm_bench
from loraplex.adapters import open_store
from tests.fixtures.engine import free_port

RESULTS = Path(__file__).parent / "results"
LOADS = {"base": [], "one_adapter": ["a0"], "distinct_16": [f"a{i}" for i in range(16)]}
GOALS = {"one_adapter": 0.85, "distinct_16": 0.75}
DTYPES = {"tiny": "float32", "smollm2-135m-instruct": "bfloat16"}


def gateway_cmd(base: Path, store: str, port: int, model: str, ops: str, cache: Path) -> list[str]:
    return [
        sys.executable, "-m", "loraplex.cli", "serve", "--base-model", str(base),
        "--store", store, "--port", str(port), "--served-model-name", BASE,
        "--cache-dir", str(cache), "--quantization", "none", "--dtype", DTYPES[model],
        "--cpu-lora-ops", ops, "--max-model-len", "1024", "--disable-uvicorn-access-log",
    ]  # fmt: skip


def measure(
    model: str, ops: str, rounds: int, prompts: int, work: Path, range_ratio: float = 0.0
) -> dict:
    from loraplex.base_models.registry import resolve_base_model

    base = resolve_base_model(model)
    store = open_store(str(work / "store"))
    if not store.list_versions("a0"):
        for i, path in enumerate(random_adapters(base, work / "adapters", 16)):
            store.publish(path, f"a{i}", base_model=base)
    port = free_port()
    cmd = gateway_cmd(base, store.url, port, model, ops, work / f"cache-{ops}")
    proc = start(cmd, port, work / f"gateway-{ops}.log")
    try:
        for name in LOADS["distinct_16"]:  # fetched, verified and loaded before timing
            first_response_seconds(port, name)
        runs: dict[str, list[dict]] = {load: [] for load in LOADS}
        names = list(LOADS)
        for r in range(rounds):
            for load in names[r % 3 :] + names[: r % 3]:
                out = work / f"{ops}-{load}-{r}.json"
                runs[load].append(vllm_bench(port, base, LOADS[load], prompts, out, range_ratio))
    finally:
        stop(proc)
    tps = {load: [run["output_tokens_per_s"] for run in runs[load]] for load in LOADS}
    ratios = {
        load: [round(t / b, 3) for t, b in zip(tps[load], tps["base"], strict=True)]
        for load in GOALS
    }
    return {
        "ops": ops,
        "output_tokens_per_s": tps,
        "median_ttft_ms": {load: [run["median_ttft_ms"] for run in runs[load]] for load in LOADS},
        "vs_base_per_round": ratios,
        "vs_base": {
            load: {"min": min(v), "median": round(statistics.median(v), 3), "max": max(v)}
            for load, v in ratios.items()
        },
        "goals_met_by_median": {
            load: statistics.median(ratios[load]) >= goal for load, goal in GOALS.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", choices=list(DTYPES))
    parser.add_argument("--ops", nargs="+", default=["loraplex", "grouped"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument(
        "--range-ratio", type=float, default=0.0,
        help="spread prompt and output lengths by this fraction each way (0: all 128 in / 64 "
        "out, so the 16 running requests start and end together; 0.5: requests come and go "
        "while others decode, as with real clients)",
    )  # fmt: skip
    parser.add_argument("--note", default="", help="Written into the results (e.g. the load).")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        sides = [
            measure(args.model, ops, args.rounds, args.prompts, Path(tmp), args.range_ratio)
            for ops in args.ops
        ]
    result = {
        "benchmark": "adapter_cost",
        "model": args.model,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "client": f"vllm.benchmarks.serve, random 128 in / 64 out, range ratio "
        f"{args.range_ratio}, concurrency 16, {args.prompts} prompts per run",
        "goals_vs_base": GOALS,
        "note": args.note,
        "sides": sides,
        "total_s": round(time.perf_counter() - started),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    spread = f"-range-{args.range_ratio:g}" if args.range_ratio else ""
    out = RESULTS / f"adapter-cost-{args.model}{spread}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({s["ops"]: s["vs_base"] for s in sides}, indent=2))


if __name__ == "__main__":
    main()
