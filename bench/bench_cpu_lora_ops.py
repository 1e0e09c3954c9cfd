"""Benchmark: loraplex's CPU LoRA ops against vLLM 0.32's, side by side in one run.

For each base model (the tiny model and SmolLM2-135M-Instruct) and each ops
implementation, one vLLM engine (offline `LLM`, in its own subprocess so the
`LORAPLEX_CPU_LORA_OPS` choice applies to its workers) serves the same loads:
base only, one adapter, and a mix of base and 2, 8 and 16 adapters. Output
tokens/s are compared as ratios (to base only, and loraplex/vLLM), because
these machines are noisy. Results: bench/results/cpu_lora_ops.json.

    .venv/bin/python -m bench.bench_cpu_lora_ops [--quick]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.adapters import random_adapters

RESULTS = Path(__file__).parent / "results" / "cpu_lora_ops.json"
LOADS = {"base": 0, "one_adapter": 1, "mix_2": 2, "mix_8": 8, "mix_16": 16}


def requests_for(load: str, adapters: list[Path], n: int) -> list[int | None]:
    """Adapter index per request (None = base). Mixes alternate base and adapters."""
    k = LOADS[load]
    if k == 0:
        return [None] * n
    if load == "one_adapter":
        return [0] * n
    return [None if i % 2 == 0 else (i // 2) % k for i in range(n)]


def worker(model: str, dtype: str, adapters: list[str], n: int, tokens: int) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(
        model=model,
        dtype=dtype,
        enable_lora=True,
        max_loras=16,
        max_lora_rank=16,
        max_cpu_loras=32,
        max_model_len=512,
        seed=0,
    )
    params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0)
    loras = [LoRARequest(f"a{i}", i + 1, p) for i, p in enumerate(adapters)]
    prompts = [f"Question {i}: tell me about the number {i}." for i in range(n)]
    results = {}
    for load in LOADS:
        which = requests_for(load, loras, n)
        lora_requests = [None if w is None else loras[w] for w in which]
        llm.generate(prompts[:4], params, lora_request=lora_requests[:4], use_tqdm=False)  # warm
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, lora_request=lora_requests, use_tqdm=False)
        seconds = time.perf_counter() - started
        generated = sum(len(o.outputs[0].token_ids) for o in outputs)
        results[load] = {"output_tokens_per_s": generated / seconds, "seconds": seconds}
    return results


def run_side(model: Path, dtype: str, ops: str, adapters: list[Path], n: int, tokens: int):
    env = {**os.environ, "LORAPLEX_CPU_LORA_OPS": ops, "VLLM_CPU_KVCACHE_SPACE": "2"}
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        args = [sys.executable, "-m", "bench.bench_cpu_lora_ops", "--worker", str(model), dtype]
        args += ["--n", str(n), "--tokens", str(tokens), "--out", result.name]
        args += ["--adapters", *map(str, adapters)]
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"worker failed ({ops}, {model}):\n{out.stderr[-3000:]}")
        return json.loads(Path(result.name).read_text())


def compare(name: str, model: Path, dtype: str, n: int, tokens: int, tmp: Path) -> dict:
    adapters = random_adapters(model, tmp / name, 16)
    sides = {ops: run_side(model, dtype, ops, adapters, n, tokens) for ops in ("loraplex", "vllm")}
    summary = {}
    for load in LOADS:
        ours, theirs = sides["loraplex"][load], sides["vllm"][load]
        summary[load] = {
            "loraplex_tokens_per_s": round(ours["output_tokens_per_s"], 1),
            "vllm_tokens_per_s": round(theirs["output_tokens_per_s"], 1),
            "loraplex_vs_base": round(
                ours["output_tokens_per_s"] / sides["loraplex"]["base"]["output_tokens_per_s"], 3
            ),
            "vllm_vs_base": round(
                theirs["output_tokens_per_s"] / sides["vllm"]["base"]["output_tokens_per_s"], 3
            ),
            "loraplex_vs_vllm": round(
                ours["output_tokens_per_s"] / theirs["output_tokens_per_s"], 2
            ),
        }
    return {"model": name, "dtype": dtype, "requests": n, "tokens_per_request": tokens, **summary}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "DTYPE"))
    parser.add_argument("--adapters", nargs="*", default=[])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", help="(worker) where to write its JSON")
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    args = parser.parse_args()
    if args.worker:
        result = worker(*args.worker, args.adapters, args.n, args.tokens)
        Path(args.out).write_text(json.dumps(result))
        return

    from loraplex.base_models.registry import resolve_base_model
    from loraplex.base_models.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [compare("tiny", make_tiny_model(tmp / "tiny"), "float32", 64, 64, tmp)]
        if not args.quick:
            smol = resolve_base_model("smollm2-135m-instruct")
            rows.append(compare("smollm2-135m-instruct", smol, "bfloat16", 64, 64, tmp))
    result = {
        "benchmark": "cpu_lora_ops",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "goals": {"one_adapter_vs_base": 0.8, "mix_8_vs_base": 0.65, "loraplex_vs_vllm": 4.0},
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
