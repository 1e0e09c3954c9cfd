"""Benchmark: the loraplex gateway against vLLM's own OpenAI server, and what
adapters cost, measured with vLLM's own benchmark client.

1. Side by side, same engine arguments, same 4 adapters: loraplex's gateway
   (adapters from its store) and vLLM's server (`--lora-modules`), one server
   up at a time, in `--pairs` pairs of rounds whose order alternates (AB, BA,
   AB, ...) so drift on a noisy machine hits both sides alike; each round runs
   `vllm.benchmarks.serve` `--repeats` times on the same random prompts. Each
   pair gives one ratio (median of its loraplex runs over the median of its
   vLLM runs); the result reports every pair's ratio and their min, median
   and max, so the spread of a single ratio is known. Goals: output tokens/s
   ratio loraplex/vLLM >= 0.97, median TTFT ratio <= 1.05 (median of pairs).
2. On the gateway: cold adapter load latency (first request for a version
   never seen vs a warm one), swap latency (alias move → first response from
   the new version, default poll interval), and throughput with 1, 4, 16 and
   64 distinct adapters (64 > max-loras) as a ratio to the base alone.

Results: bench/results/serve-<model>.json.

    .venv/bin/python -m bench.bench_serve [--model tiny|smollm2-135m-instruct]
        [--pairs 4] [--repeats 2] [--prompts 64]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.adapters import random_adapters
from loraplex.adapters import open_store
from tests.fixtures.engine import free_port

RESULTS = Path(__file__).parent / "results"
BASE = "base"
COLD = 5  # adapters for the cold-load latency


def engine_setup(model: str) -> tuple[str, list[str]]:
    """(quantization, other vLLM args), the same for both servers."""
    if model == "tiny":
        return "none", ["--dtype", "float32", "--max-model-len", "1024"]
    return "bitsandbytes", ["--dtype", "bfloat16", "--max-model-len", "2048"]


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loraplex_cmd(base: Path, store: str, port: int, model: str, cache: Path) -> list[str]:
    quantization, args = engine_setup(model)
    return [
        sys.executable, "-m", "loraplex.cli", "serve", "--base-model", str(base),
        "--store", store, "--port", str(port), "--served-model-name", BASE,
        "--cache-dir", str(cache), "--max-loras", "8", "--max-cpu-loras", "80",
        "--disable-uvicorn-access-log", "--quantization", quantization, *args,
    ]  # fmt: skip


def vllm_cmd(base: Path, adapters: dict[str, Path], port: int, model: str) -> list[str]:
    code = "from vllm.entrypoints.launchers.api_server.entry import main; main()"
    modules = [f"{name}={path}" for name, path in adapters.items()]
    quantization, args = engine_setup(model)
    quant = [] if quantization == "none" else ["--quantization", quantization]
    return [
        sys.executable, "-c", code, "--model", str(base), "--served-model-name", BASE,
        "--port", str(port), "--enable-lora", "--max-loras", "8", "--max-lora-rank", "16",
        "--max-cpu-loras", "80", "--lora-modules", *modules,
        "--disable-uvicorn-access-log", *quant, *args,
    ]  # fmt: skip


def vllm_bench(
    port: int, base: Path, loras: list[str], prompts: int, out: Path, range_ratio: float = 0.0
) -> dict:
    """Run vLLM's benchmark client (what `vllm bench serve` runs) from Python.
    `range_ratio` spreads the prompt and output lengths by that fraction each way."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = [
        "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}",
        "--endpoint", "/v1/completions", "--model", str(base), "--served-model-name", BASE,
        "--tokenizer", str(base), "--dataset-name", "random", "--random-input-len", "128",
        "--random-output-len", "64", "--num-prompts", str(prompts), "--max-concurrency", "16",
        "--ignore-eos", "--seed", "0", "--save-result", "--result-dir", str(out.parent),
        "--result-filename", out.name, "--disable-tqdm", "--random-range-ratio", str(range_ratio),
    ]  # fmt: skip
    if loras:
        argv += ["--lora-modules", *loras, "--lora-assignment", "round-robin"]
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    result = main(parser.parse_args(argv))
    return {
        "output_tokens_per_s": result["output_throughput"],
        "median_ttft_ms": result["median_ttft_ms"],
        "median_tpot_ms": result["median_tpot_ms"],
        "completed": result["completed"],
    }


def first_response_seconds(port: int, model: str) -> float:
    started = time.perf_counter()
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions",
        json={"model": model, "prompt": "Hello", "max_tokens": 1},
        timeout=120,
    )
    r.raise_for_status()
    return time.perf_counter() - started


def swap_seconds(port: int, store, name: str, version: int) -> float:
    store.set_alias(name, "prod", version)
    moved = time.perf_counter()
    while time.perf_counter() - moved < 30:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": f"{name}:prod", "prompt": "Hi", "max_tokens": 1},
            timeout=60,
        )
        if r.headers.get("x-loraplex-adapter") == f"{name}@{version}":
            return time.perf_counter() - moved
    raise RuntimeError("alias move never reached the gateway")


def round_order(pairs: int) -> list[tuple[int, str]]:
    """(pair, side) for every round: AB, BA, AB, ... so neither side always goes first."""
    order = []
    for pair in range(pairs):
        sides = ("loraplex", "vllm") if pair % 2 == 0 else ("vllm", "loraplex")
        order += [(pair, side) for side in sides]
    return order


def run(model: str, prompts: int, pairs: int, repeats: int, work: Path) -> dict:
    from loraplex.base_models.registry import resolve_base_model

    base = resolve_base_model(model)
    adapter_dirs = random_adapters(base, work / "adapters", 64 + 2 + COLD)
    store = open_store(str(work / "store"))
    for i, path in enumerate(adapter_dirs[:64]):
        store.publish(path, f"a{i}", base_model=base)
    store.publish(adapter_dirs[64], "swap")
    store.publish(adapter_dirs[65], "swap", aliases=["prod"])
    for i, path in enumerate(adapter_dirs[66:]):  # served for the first time when timed
        store.publish(path, f"cold{i}", base_model=base)
    four = [f"a{i}" for i in range(4)]
    rounds: list[dict] = []
    scaling: dict[str, dict] = {}
    latencies: dict[str, list[float]] = {"cold_load_s": [], "warm_s": [], "swap_s": []}
    for index, (pair, side) in enumerate(round_order(pairs)):
        port = free_port()
        log = work / f"{side}-{index}.log"
        if side == "loraplex":
            cmd = loraplex_cmd(base, store.url, port, model, work / f"cache-{index}")
        else:
            cmd = vllm_cmd(base, {n: adapter_dirs[i] for i, n in enumerate(four)}, port, model)
        proc = start(cmd, port, log)
        try:
            runs = [
                vllm_bench(port, base, four, prompts, work / f"{side}-{index}-{k}.json")
                for k in range(repeats)
            ]
            rounds.append({"pair": pair, "side": side, "runs": runs})
            if side == "loraplex" and not scaling:
                scaling = measure_scaling(port, base, prompts, work)
                latencies = measure_latencies(port, store)
        finally:
            stop(proc)
    return summarize(model, prompts, rounds, scaling, latencies)


def pair_ratios(rounds: list[dict], key: str) -> list[float]:
    """loraplex / vLLM for each pair: the median of its runs on each side."""
    ratios = []
    for pair in sorted({r["pair"] for r in rounds}):
        median = {
            r["side"]: statistics.median(run[key] for run in r["runs"])
            for r in rounds
            if r["pair"] == pair
        }
        ratios.append(round(median["loraplex"] / median["vllm"], 3))
    return ratios


def spread(values: list[float]) -> dict:
    return {
        "min": min(values),
        "median": round(statistics.median(values), 3),
        "max": max(values),
        "per_pair": values,
    }


def run_spread(rounds: list[dict], side: str, key: str) -> dict:
    """How much one side's single runs vary: min, median, max and max/min."""
    values = [run[key] for r in rounds if r["side"] == side for run in r["runs"]]
    low, high = min(values), max(values)
    return {"min": round(low, 2), "median": round(statistics.median(values), 2),
            "max": round(high, 2), "max_over_min": round(high / low, 3)}  # fmt: skip


def measure_scaling(port: int, base: Path, prompts: int, work: Path) -> dict:
    loads = {"base": [], "1": ["a0"], "4": [f"a{i}" for i in range(4)]}
    loads |= {"16": [f"a{i}" for i in range(16)], "64": [f"a{i}" for i in range(64)]}
    results = {
        k: vllm_bench(port, base, v, prompts, work / f"scale-{k}.json") for k, v in loads.items()
    }
    base_tps = results["base"]["output_tokens_per_s"]
    return {
        k: {**v, "vs_base": round(v["output_tokens_per_s"] / base_tps, 3)}
        for k, v in results.items()
    }


def measure_latencies(port: int, store) -> dict:
    cold, warm, swaps = [], [], []
    for i in range(COLD):  # versions no request has asked for yet
        cold.append(first_response_seconds(port, f"cold{i}"))
        warm.append(first_response_seconds(port, f"cold{i}"))
    for k in range(6):
        swaps.append(swap_seconds(port, store, "swap", 1 + k % 2))
    return {"cold_load_s": cold, "warm_s": warm, "swap_s": swaps}


def summarize(model, prompts, rounds, scaling, latencies) -> dict:
    tps, ttft = "output_tokens_per_s", "median_ttft_ms"
    return {
        "benchmark": "serve",
        "model": model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "client": "vllm.benchmarks.serve, random 128 in / 64 out, concurrency 16",
        "prompts_per_run": prompts,
        "rounds": rounds,
        "ratios": {
            "output_tokens_per_s_loraplex_over_vllm": spread(pair_ratios(rounds, tps)),
            "median_ttft_loraplex_over_vllm": spread(pair_ratios(rounds, ttft)),
        },
        "single_run_spread": {
            side: {tps: run_spread(rounds, side, tps), ttft: run_spread(rounds, side, ttft)}
            for side in ("loraplex", "vllm")
        },
        "goals": {"output_tokens_per_s_ratio_min": 0.97, "median_ttft_ratio_max": 1.05},
        "adapter_scaling": scaling,
        "latency": {
            "cold_load_median_s": round(statistics.median(latencies["cold_load_s"]), 4),
            "warm_request_median_s": round(statistics.median(latencies["warm_s"]), 4),
            "swap_median_s": round(statistics.median(latencies["swap_s"]), 4),
            "raw": latencies,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=4, help="loraplex/vLLM pairs of rounds")
    parser.add_argument("--repeats", type=int, default=2, help="benchmark runs per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.model, args.prompts, args.pairs, args.repeats, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serve-{args.model}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratios", "single_run_spread")}, indent=2))


if __name__ == "__main__":
    main()
