"""Benchmark: how fast `loraplex eval` gets answers through the gateway, beside the
engine's own throughput for the same load.

One gateway (tiny model, float32, one adapter in its store). At concurrency
1, 8 and 32, in alternating rounds (eval, vLLM, vLLM, eval):

- `loraplex eval` (the `exact` metric: greedy answers only) answers every
  prompt of a held-out file through the gateway with the adapter: answers/s;
- `vllm.benchmarks.serve` (what `vllm bench serve` runs) sends the same
  prompts to the same gateway and adapter through the chat endpoint, each
  asked for eval's mean answer length in tokens (as the server counted them;
  `--sharegpt-output-len`, `--ignore-eos`), at the same concurrency:
  requests/s.

The ratio eval / vLLM's client is what evaluation's own client costs (1.0:
nothing). Results: bench/results/eval.json.

    .venv/bin/python -m bench.bench_eval [--prompts 48] [--max-tokens 32]
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from bench.adapters import random_adapters
from loraplex.adapters import open_store
from tests.fixtures.engine import GatewayProcess

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = (1, 8, 32)
ADAPTER = "bench"
TOPICS = ["the sea", "bread", "the moon", "rivers", "music", "trees", "rain", "bicycles"]


def held_out(path: Path, prompts: int) -> Path:
    lines = []
    for i in range(prompts):
        topic = TOPICS[i % len(TOPICS)]
        question = f"Question {i}: tell me one thing about {topic}."
        answer = f"Here is one thing about {topic}: it is number {i}."
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


def eval_run(gateway, data: Path, tokenizer, concurrency: int, max_tokens: int):
    from loraplex.evaluate.run import EvalSettings, evaluate

    settings = EvalSettings(
        endpoint=gateway.base_url,
        models=[ADAPTER],
        data=data,
        metrics=("exact",),
        concurrency=concurrency,
        max_tokens=max_tokens,
        progress=False,
    )
    result = evaluate(settings, tokenizer).models[0]
    return result.answers_per_s, [n or 0 for n in result.answer_tokens]


def vllm_run(gateway, base: Path, data: Path, output_len: int, concurrency: int, work: Path):
    """vLLM's benchmark client: the same prompts (a ShareGPT-format file), each asked for
    `output_len` tokens: eval's mean answer length, so both sides generate as much."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    dataset = work / "sharegpt.json"
    records = [json.loads(line) for line in data.read_text().splitlines()]
    dataset.write_text(
        json.dumps(
            [
                {
                    "conversations": [
                        {"from": "human", "value": r["messages"][0]["content"]},
                        {"from": "gpt", "value": "unused: --sharegpt-output-len sets it"},
                    ]
                }
                for r in records
            ]
        )
    )
    out = work / f"vllm-{concurrency}.json"
    argv = [
        "--backend", "openai-chat", "--base-url", gateway.base_url,
        "--endpoint", "/v1/chat/completions", "--model", str(base), "--served-model-name", ADAPTER,
        "--tokenizer", str(base), "--dataset-name", "sharegpt", "--dataset-path", str(dataset),
        "--num-prompts", str(len(records)), "--sharegpt-output-len", str(output_len),
        "--max-concurrency", str(concurrency), "--ignore-eos", "--temperature", "0",
        "--seed", "0", "--save-result", "--result-dir", str(work), "--result-filename", out.name,
        "--disable-tqdm",
    ]  # fmt: skip
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    result = main(parser.parse_args(argv))
    return result["request_throughput"], result["completed"]


def run(prompts: int, max_tokens: int, work: Path) -> dict:
    from transformers import AutoTokenizer

    from loraplex.base_models.registry import resolve_base_model

    base = resolve_base_model("tiny")
    tokenizer = AutoTokenizer.from_pretrained(base)
    store = open_store(str(work / "store"))
    store.publish(random_adapters(base, work / "adapters", 1)[0], ADAPTER, base_model=base)
    data = held_out(work / "held-out.jsonl", prompts)
    rows = {c: {"eval_answers_per_s": [], "vllm_requests_per_s": []} for c in CONCURRENCY}
    with GatewayProcess(base, store.url, work / "gateway") as gateway:
        eval_run(gateway, data, tokenizer, 8, max_tokens)  # warm-up: adapter loaded, caches
        for c in CONCURRENCY:
            lengths: list[int] = []
            for side in ("eval", "vllm", "vllm", "eval"):
                if side == "eval":
                    rate, lengths = eval_run(gateway, data, tokenizer, c, max_tokens)
                    rows[c]["eval_answers_per_s"].append(rate)
                else:
                    output_len = max(1, round(statistics.fmean(lengths)))
                    rate, completed = vllm_run(gateway, base, data, output_len, c, work)
                    rows[c]["vllm_requests_per_s"].append(rate)
                    rows[c]["vllm_completed"] = completed
            rows[c]["eval_mean_answer_tokens"] = round(statistics.fmean(lengths), 2)
    return summarize(prompts, max_tokens, rows)


def summarize(prompts: int, max_tokens: int, rows: dict) -> dict:
    table = {}
    for c, r in rows.items():
        ours, theirs = (
            statistics.median(r["eval_answers_per_s"]),
            statistics.median(r["vllm_requests_per_s"]),
        )
        table[str(c)] = {
            **r,
            "eval_answers_per_s_median": round(ours, 3),
            "vllm_requests_per_s_median": round(theirs, 3),
            "ratio_eval_over_vllm": round(ours / theirs, 3),
        }
    return {
        "benchmark": "eval",
        "model": "tiny (float32), one LoRA adapter, through the loraplex gateway",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_at_end": os.getloadavg(),
        "prompts": prompts,
        "max_tokens": max_tokens,
        "client": "loraplex eval (exact metric) vs vllm.benchmarks.serve (openai-chat, "
        "ShareGPT-format file: same prompts, eval's mean answer length, --ignore-eos)",
        "by_concurrency": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.prompts, args.max_tokens, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["by_concurrency"], indent=2))


if __name__ == "__main__":
    main()
