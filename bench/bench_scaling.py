"""Benchmark: many adapters at the speed of one? (issue 17)

vLLM's own benchmark client (`vllm.benchmarks.serve`, random 128 in / 64 out,
streaming, ignore-eos) drives the loraplex gateway with a load spread over N
adapters, by Zipf 1.0 or uniform popularity: each request's adapter is drawn
beforehand with a fixed seed and handed to the client in order (its
round-robin assignment over that list), so request i's TTFT is known to
belong to adapter k. Server configurations, each started once per model:

- today: vLLM's scheduler, `--max-loras 8` (loraplex's defaults before issue 17)
- loraplex-8: loraplex's scheduler with the same 8 slots
- vllm-sized / loraplex: vLLM's vs loraplex's scheduler with slots sized to
  the load (`loraplex` is the new default)

For each (configuration, popularity, N, concurrency) it records output
tokens/s, the ratio to one adapter on the same server, and TTFT p50/p99
overall and for the least popular decile of adapters (ranks 90-100%; under
uniform popularity, the last tenth of the names) and the most popular decile.

The full matrix (N = 1…1024, concurrency 16 and 64, tiny / SmolLM2 bf16 /
SmolLM2 4-bit) takes hours on a CPU; `--n`, `--concurrency`, `--models` and
`--configs` choose a part. Results: bench/results/scaling-<model>.json.

    .venv/bin/python -m bench.bench_scaling [--models tiny] [--n 1 16 64]
        [--concurrency 16] [--configs today loraplex-8 loraplex] [--prompts 128] [--tag large-n]
        [--popularity uniform]
"""

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.adapters import iter_random_adapters
from bench.bench_serve import start, stop
from loraplex.adapters import open_store
from tests.fixtures.engine import free_port

RESULTS = Path(__file__).parent / "results"
BASE = "base"
MODELS = {  # name → (base model, quantization, vLLM args)
    "tiny": ("tiny", "none", ["--dtype", "float32", "--max-model-len", "1024"]),
    "smollm2-bf16": ("smollm2-135m-instruct", "none", ["--dtype", "bfloat16"]),
    "smollm2-4bit": ("smollm2-135m-instruct", "bitsandbytes", ["--dtype", "bfloat16"]),
}
CONFIGS = {  # name → loraplex serve flags
    "today": ["--scheduler", "vllm", "--max-loras", "8"],
    "loraplex-8": ["--scheduler", "loraplex", "--max-loras", "8"],
    "vllm-sized": ["--scheduler", "vllm"],
    "loraplex": ["--scheduler", "loraplex"],
    # The default before the fused CPU wrapper: loraplex's ops slice by slice.
    "loraplex-grouped": ["--scheduler", "loraplex", "--cpu-lora-ops", "grouped"],
}
ALL_N = (1, 4, 16, 64, 256, 1024)


def popularity(kind: str, n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) if kind == "zipf" else np.ones(n)
    return weights / weights.sum()


def draw_adapters(kind: str, n: int, prompts: int, seed: int = 0) -> list[int]:
    """Adapter rank (0 = most popular) of each request, in request order."""
    rng = np.random.default_rng(seed)
    return [int(k) for k in rng.choice(n, size=prompts, p=popularity(kind, n))]


def vllm_bench(port: int, base: Path, names: list[str], conc: int, out: Path) -> dict:
    """vLLM's client with one adapter name per request (or none: the base)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = [
        "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}",
        "--endpoint", "/v1/completions", "--model", str(base), "--served-model-name", BASE,
        "--tokenizer", str(base), "--dataset-name", "random", "--random-input-len", "128",
        "--random-output-len", "64", "--num-prompts", str(len(names)),
        "--max-concurrency", str(conc), "--ignore-eos", "--seed", "0", "--save-result",
        "--save-detailed", "--result-dir", str(out.parent), "--result-filename", out.name,
        "--disable-tqdm", "--lora-modules", *names, "--lora-assignment", "round-robin",
    ]  # fmt: skip
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return main(parser.parse_args(argv))


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p99_ms": None}
    return {
        "p50_ms": round(float(np.percentile(values, 50)) * 1000, 1),
        "p99_ms": round(float(np.percentile(values, 99)) * 1000, 1),
    }


def summarize_run(result: dict, ranks: list[int], n: int) -> dict:
    errors = result.get("errors") or [""] * len(ranks)
    pairs = [(t, k) for t, k, e in zip(result["ttfts"], ranks, errors, strict=True) if not e]
    ttfts = [t for t, _ in pairs]
    decile = max(1, n // 10)
    least = [t for t, k in pairs if k >= n - decile]
    most = [t for t, k in pairs if k < decile]
    return {
        "output_tokens_per_s": round(result["output_throughput"], 1),
        "completed": result["completed"],
        "ttft": percentiles(ttfts),
        "ttft_least_popular_decile": percentiles(least),
        "ttft_most_popular_decile": percentiles(most),
        "distinct_adapters_used": len(set(ranks)),
    }


def serve_cmd(model: str, store: str, port: int, cache: Path, config: str) -> list[str]:
    from loraplex.base_models.registry import resolve_base_model

    base_name, quantization, args = MODELS[model]
    return [
        sys.executable, "-m", "loraplex.cli", "serve",
        "--base-model", str(resolve_base_model(base_name)), "--store", store,
        "--port", str(port), "--served-model-name", BASE, "--cache-dir", str(cache),
        "--quantization", quantization,
        "--disable-uvicorn-access-log", *CONFIGS[config], *args,
    ]  # fmt: skip


def run_config(model, config, base, store_url, ns, concs, prompts, work, kinds) -> dict:
    port = free_port()
    proc = start(serve_cmd(model, store_url, port, work / f"cache-{config}", config), port,
                 work / f"{model}-{config}.log")  # fmt: skip
    runs = {}
    try:
        slots = slots_from_metrics(port)
        for conc in concs:
            one = None
            for kind in ("zipf", "uniform"):
                for n in ns:
                    if n == 1 and kind == "uniform":
                        continue  # the same load as Zipf over one adapter
                    if n > 1 and kind not in kinds:
                        continue
                    ranks = draw_adapters(kind, n, prompts)
                    names = [f"a{k}" for k in ranks]
                    out = work / f"{model}-{config}-{kind}-{n}-{conc}.json"
                    started = time.perf_counter()
                    summary = summarize_run(vllm_bench(port, base, names, conc, out), ranks, n)
                    summary["seconds"] = round(time.perf_counter() - started, 1)
                    if n == 1:
                        one = summary["output_tokens_per_s"]
                    if one:
                        summary["vs_one_adapter"] = round(summary["output_tokens_per_s"] / one, 3)
                    runs[f"{kind}/N={n}/conc={conc}"] = summary
                    print(config, kind, n, conc, summary, flush=True)
    finally:
        stop(proc)
    return {"flags": CONFIGS[config], "lora_slots": slots, "runs": runs}


def slots_from_metrics(port: int) -> int | None:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("loraplex_lora_slots "):
            return int(float(line.split()[1]))
    return None


def run_model(model: str, ns, concs, configs, prompts: int, work: Path, kinds) -> dict:
    from loraplex.base_models.registry import resolve_base_model

    base = resolve_base_model(MODELS[model][0])
    store = open_store(str(work / f"store-{model}"))
    for i, path in enumerate(iter_random_adapters(base, work / f"adapters-{model}", max(ns))):
        store.publish(path, f"a{i}", base_model=base)
        shutil.rmtree(path)  # the store holds its copy; disk is the limit at N = 1,024
    results = {}
    for config in configs:  # one server at a time: two on 2 cores disturb each other
        results[config] = run_config(
            model, config, base, store.url, ns, concs, prompts, work, kinds
        )
        shutil.rmtree(work / f"cache-{config}", ignore_errors=True)
    return {
        "model": model,
        "client": "vllm.benchmarks.serve, random 128 in / 64 out, streaming, ignore-eos",
        "prompts_per_run": prompts,
        "n": list(ns),
        "concurrency": list(concs),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "configs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--n", nargs="+", type=int, default=list(ALL_N))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[16, 64])
    default_configs = [c for c in CONFIGS if c != "loraplex-grouped"]  # that one on request
    parser.add_argument("--configs", nargs="+", default=default_configs, choices=list(CONFIGS))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument(
        "--popularity", nargs="+", default=["zipf", "uniform"], choices=["zipf", "uniform"],
        help="The loads over N > 1 adapters (N = 1, the baseline, always runs).",
    )  # fmt: skip
    parser.add_argument("--note", default="", help="Written into the results (e.g. the load).")
    parser.add_argument("--tag", default="", help="Results go to scaling-<model>-<tag>.json.")
    args = parser.parse_args()
    random.seed(0)
    ns = sorted(set(args.n) | {1})
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for model in args.models:
            result = run_model(
                model, ns, args.concurrency, args.configs, args.prompts, Path(tmp), args.popularity
            )
            result["note"] = args.note
            RESULTS.mkdir(exist_ok=True)
            path = RESULTS / f"scaling-{model}{'-' + args.tag if args.tag else ''}.json"
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
