"""Benchmark: how closely the gateway's greedy tokens follow HF transformers + PEFT.

The reference is PEFT on the float32 base (`tests/serve/test_parity.py`'s
helpers: 8 prompts x 16 greedy tokens, EOS ignored). The gateway serves the
same adapter with the base in float32, in bfloat16 and in 4-bit NF4
(bitsandbytes); each is one gateway started like a user would, and its
agreement is the share of token positions equal to the reference. The base
alone is measured too, as the floor that shows the adapter matters. The test
suite asserts the float32 bar (>= 98%); this records the other two, which
differ by numerics, not by bugs: near-tied logits flip in bf16, and 4-bit
weights are other weights. Results: bench/results/parity.json.

    .venv/bin/python -m bench.bench_parity [--models tiny smollm2-135m-instruct]
"""

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import openai

from loraplex.adapters import open_store
from tests.fixtures.engine import BASE_NAME, GatewayProcess
from tests.fixtures.models import make_random_lora
from tests.serve.test_parity import PROMPTS, agreement, gateway_greedy, peft_greedy

RESULTS = Path(__file__).parent / "results" / "parity.json"
# How the gateway holds the base: (loraplex --quantization, vLLM --dtype).
SERVINGS = {
    "float32": ("none", "float32"),
    "bfloat16": ("none", "bfloat16"),
    "nf4_4bit": ("bitsandbytes", "bfloat16"),
}
# A loud adapter on the random tiny model, a moderate one on the real model.
INIT_SCALE = {"tiny": 0.5, "smollm2-135m-instruct": 0.05}


def measure(name: str, work: Path) -> dict:
    from transformers import AutoTokenizer

    from loraplex.base_models.registry import resolve_base_model

    base = resolve_base_model(name)
    adapter = make_random_lora(base, work / "adapter", r=8, seed=1, init_scale=INIT_SCALE[name])
    store = open_store(str(work / "store"))
    store.publish(adapter, "parity", base_model=base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    expected = peft_greedy(base, adapter, prompt_ids)
    row: dict = {"model": name, "reference": "HF transformers + PEFT, float32", "servings": {}}
    for serving, (quantization, dtype) in SERVINGS.items():
        extra = ["--quantization", quantization, "--dtype", dtype]
        with GatewayProcess(base, store.url, work / serving, extra_args=extra) as gateway:
            client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused")
            served = gateway_greedy(client, "parity", prompt_ids)
            base_only = gateway_greedy(client, BASE_NAME, prompt_ids)
        row["servings"][serving] = {
            "quantization": quantization,
            "dtype": dtype,
            "adapter_agreement": round(agreement(served, expected), 4),
            "base_alone_agreement": round(agreement(base_only, expected), 4),
        }
        print(f"{name} {serving}: {row['servings'][serving]}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(INIT_SCALE), choices=list(INIT_SCALE))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(name, Path(tmp)))
    result = {
        "benchmark": "parity",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "prompts": len(PROMPTS),
        "tokens_per_prompt": 16,
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
