"""Benchmark: an engine step's time by the adapters in its batch (issue 17).

One offline vLLM engine (`LLM`; SmolLM2-135M-Instruct in bf16 with loraplex's
CPU platform and ops, 16 slots, 16 sequences), no HTTP: 16 requests of 128
random prompt tokens, all on the base (`base`), all on one adapter
(`one_adapter`) or one per adapter (`distinct_16`, rank 16 on every linear
layer). Each load runs once with one output token (its prefill step) and
once with 64 (ignore_eos, greedy); a decode step is the difference over the
63 steps more. Loads run in a rotated order every round, and each load's
ratio to the base is taken within its round: the machine is shared and
noisy, and so is the base's own step.

Where `bench_adapter_cost` measures what a client sees over HTTP, this
times the engine's steps alone, so what an adapter costs a decode step can
be set against the LoRA work `bench_lora_step` measures for the same batch.

    .venv/bin/python -m bench.bench_decode_step [--rounds 3]

Results: bench/results/decode-step-smollm2-135m-instruct.json.
"""

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.adapters import random_adapters

RESULTS = Path(__file__).parent / "results" / "decode-step-smollm2-135m-instruct.json"
REQUESTS, PROMPT, OUTPUT = 16, 128, 64
LOADS = ("base", "one_adapter", "distinct_16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from loraplex.base_models.registry import resolve_base_model

    started, load_before = time.perf_counter(), os.getloadavg()
    base = resolve_base_model("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        paths = random_adapters(base, Path(tmp), REQUESTS)
        llm = LLM(
            model=str(base), dtype="bfloat16", enable_lora=True, max_loras=REQUESTS,
            max_lora_rank=16, max_cpu_loras=REQUESTS, max_model_len=1024,
            max_num_seqs=REQUESTS, enable_prefix_caching=False, seed=0,
        )  # fmt: skip
        adapters = [LoRARequest(f"a{i}", i + 1, str(p)) for i, p in enumerate(paths)]
        per_request = {
            "base": [None] * REQUESTS,
            "one_adapter": [adapters[0]] * REQUESTS,
            "distinct_16": adapters,
        }
        draw = random.Random(0)

        def run_ms(load: str, tokens: int) -> float:
            prompts = [
                TokensPrompt(prompt_token_ids=[draw.randrange(100, 40000) for _ in range(PROMPT)])
                for _ in range(REQUESTS)
            ]
            params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0)
            begun = time.perf_counter()
            llm.generate(prompts, params, lora_request=per_request[load], use_tqdm=False)
            return (time.perf_counter() - begun) * 1e3

        for load in LOADS:  # every adapter loaded, every path warm
            run_ms(load, 4)
        prefill = {load: [] for load in LOADS}
        decode = {load: [] for load in LOADS}
        for r in range(args.rounds):
            for load in LOADS[r % 3 :] + LOADS[: r % 3]:
                first = run_ms(load, 1)
                whole = run_ms(load, OUTPUT)
                prefill[load].append(round(first, 1))
                decode[load].append(round((whole - first) / (OUTPUT - 1), 2))
    ratios = {
        load: [round(b / d, 3) for b, d in zip(decode["base"], decode[load], strict=True)]
        for load in LOADS[1:]
    }
    result = {
        "benchmark": "decode_step",
        "model": "smollm2-135m-instruct (bf16)",
        "load": f"{REQUESTS} requests x {PROMPT} prompt tokens, {OUTPUT} output tokens",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "prefill_step_ms": prefill,
        "decode_step_ms": decode,
        "base_step_over_load_step_per_round": ratios,
        "median_ratio": {load: statistics.median(v) for load, v in ratios.items()},
        "total_s": round(time.perf_counter() - started),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("decode_step_ms", "median_ratio")}, indent=2))


if __name__ == "__main__":
    main()
