"""Benchmark: `loraplex estimate` against measured runs on this machine.

Memory: for each model (tiny, SmolLM2), method (LoRA, QLoRA), gradient
checkpointing on and off, and two sequence lengths, the estimate's peak
(`estimate_training` with the real data) against the trainer's measured
live peak: peak RSS of a real `loraplex.trainer.train` run in a fresh
process, with glibc mapping every buffer of 128 KiB or more on its own
(bench_trainer's memory pass), so RSS follows the live tensors. Goal: every
case within ±15%.

Time: the estimate's CPU time (a measured calibration of one layer) against
the same run's measured training seconds, in normal runs. Goal: ±25%.

Serving: the KV capacity `estimate_serving` predicts against what vLLM
itself logs at start ("KV cache size: N tokens") for the same settings, on
the CPU with VLLM_CPU_KVCACHE_SPACE. Goal: ±5%.

Results: bench/results/estimate.json.

    .venv/bin/python -m bench.bench_estimate [--models tiny ...] [--skip-serve]
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_trainer import MEMORY_PASS, make_dataset, measured_now

RESULTS = Path(__file__).parent / "results"
# model → (examples, batch size): enough for three optimizer steps, so the
# peak is measured with the optimizer's states in memory.
DATA = {"tiny": (24, 2), "smollm2-135m-instruct": (6, 1)}
LENGTHS = (256, 512)
METHODS = ("lora", "qlora")
# Timed runs, short: (model, method, examples, max_length, batch size)
TIMED = (
    ("tiny", "lora", 60, 512, 2),
    ("tiny", "qlora", 60, 512, 2),
    ("smollm2-135m-instruct", "lora", 10, 512, 2),
    ("smollm2-135m-instruct", "qlora", 10, 512, 2),
)


def config_for(model_dir: Path, data: Path, method: str, length: int, batch: int, ckpt: bool, out):
    from loraplex.trainer.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "base_model": str(model_dir),
            "method": method,
            "data": {"train": [str(data)], "max_length": length},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "training": {
                "epochs": 1,
                "batch_size": batch,
                "gradient_checkpointing": ckpt,
                "device": "cpu",
            },
            "output": {"dir": str(out), "tensorboard": False},
        }
    )


def arm_train(spec: dict) -> dict:
    """One real training run in this (fresh) process: its record's peak RSS and seconds."""
    from loraplex.trainer.train import train

    with tempfile.TemporaryDirectory() as out:
        config = config_for(**spec, out=Path(out) / "run")
        record = train(config, Path(spec["model_dir"]), progress=False).record
    return {
        "peak_memory_bytes": record.peak_memory_bytes,
        "train_seconds": record.train_seconds,
        "trained_tokens": record.trained_tokens,
        "steps": record.steps,
    }


def measure(spec: dict, live: bool) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_estimate", "--arm", json.dumps(spec)]
    env = {**threads_env(), **(MEMORY_PASS if live else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def predict(spec: dict, with_time: bool = False):
    from loraplex.estimate.devices import cpu_device
    from loraplex.estimate.train import estimate_training

    config = config_for(**spec, out="unused")
    return estimate_training(
        config, Path(spec["model_dir"]), cpu_device(), with_data=True, with_time=with_time
    )


def memory_cases(
    name: str, model_dir: Path, work: Path, lengths=LENGTHS, methods=METHODS
) -> list[dict]:
    from loraplex.trainer.model import load_tokenizer

    count, batch = DATA[name]
    cases = []
    for length in lengths:
        data = work / f"{name}-{length}.jsonl"
        make_dataset(load_tokenizer(model_dir), count, length, data)
        for method in methods:
            for ckpt in (True, False):
                spec = dict(
                    model_dir=str(model_dir), data=str(data), method=method, length=length,
                    batch=batch, ckpt=ckpt,
                )  # fmt: skip
                estimate = predict(spec)
                measured = measure(spec, live=True)
                ratio = estimate.peak_bytes / measured["peak_memory_bytes"]
                case = {
                    "model": name,
                    "method": method,
                    "gradient_checkpointing": ckpt,
                    "max_length": length,
                    "batch_size": batch,
                    "micro_batch_tokens": estimate.shapes.tokens,
                    "predicted_bytes": estimate.peak_bytes,
                    "measured_bytes": measured["peak_memory_bytes"],
                    "ratio": round(ratio, 3),
                    "within_15_percent": abs(ratio - 1) <= 0.15,
                    "steps": measured["steps"],
                    "breakdown": {i.what: i.bytes for i in estimate.items},
                    "load_average": os.getloadavg(),
                }
                print(json.dumps({k: v for k, v in case.items() if k != "breakdown"}), flush=True)
                cases.append(case)
    return cases


def threads_env() -> dict:
    """OMP_NUM_THREADS for the estimate and the run alike (--threads), else the default."""
    threads = os.environ.get("BENCH_ESTIMATE_THREADS")
    return {**os.environ, "OMP_NUM_THREADS": threads} if threads else dict(os.environ)


def estimate_cli(spec: dict, work: Path) -> dict:
    """`loraplex estimate train --json` in a fresh process, as a user runs it."""
    import yaml

    config = config_for(**spec, out=work / "unused").to_dict()
    path = work / "estimate-config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "loraplex.cli", "estimate", "train", "-c", str(path), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=threads_env())
    if proc.returncode != 0:
        raise RuntimeError(f"estimate failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def time_cases(models: list[str], work: Path, repeats: int) -> list[dict]:
    """Each case: the estimate (its calibration), then the run it predicts, back to back in
    fresh processes, so both see the same load; the cases alternate, `repeats` rounds."""
    from loraplex.base_models.registry import resolve_base_model
    from loraplex.trainer.model import load_tokenizer

    specs = []
    for name, method, count, length, batch in TIMED:
        if name not in models:
            continue
        model_dir = resolve_base_model(name)
        data = work / f"{name}-timed.jsonl"
        make_dataset(load_tokenizer(model_dir), count, length, data)
        spec = dict(
            model_dir=str(model_dir), data=str(data), method=method, length=length, batch=batch,
            ckpt=True,
        )  # fmt: skip
        specs.append((name, count, spec))
    cases = []
    for round_ in range(repeats):
        for name, count, spec in specs:
            load_before = os.getloadavg()
            started = time.monotonic()
            estimate = estimate_cli(spec, work)["time"]
            estimate_seconds = time.monotonic() - started
            load_between = os.getloadavg()
            measured = measure(spec, live=False)
            ratio = estimate["seconds"] / measured["train_seconds"]
            case = {
                "model": name,
                "method": spec["method"],
                "round": round_ + 1,
                "threads": os.environ.get("BENCH_ESTIMATE_THREADS", "default"),
                "examples": count,
                "max_length": spec["length"],
                "steps": measured["steps"],
                "predicted_seconds": round(estimate["seconds"], 2),
                "measured_seconds": measured["train_seconds"],
                "ratio": round(ratio, 3),
                "within_25_percent": abs(ratio - 1) <= 0.25,
                "how": estimate["how"],
                "estimate_command_seconds": round(estimate_seconds, 1),
                "load_average_before_estimate": load_before,
                "load_average_before_run": load_between,
                "load_average_after_run": os.getloadavg(),
            }
            print(json.dumps(case), flush=True)
            cases.append(case)
    return cases


def distributed_cases(work: Path) -> list[dict]:
    """Per-rank peaks of real 2-rank gloo runs of the tiny model (DDP and FSDP2), memory pass,
    against `estimate_training(..., ranks=2)`: torchrun as bench_distributed launches it."""
    import yaml

    from loraplex.base_models.registry import resolve_base_model
    from loraplex.estimate.devices import cpu_device
    from loraplex.estimate.train import estimate_training
    from loraplex.trainer.model import load_tokenizer

    model_dir = resolve_base_model("tiny")
    data = work / "tiny-ranks.jsonl"
    make_dataset(load_tokenizer(model_dir), 24, 256, data)
    cases = []
    for strategy in ("ddp", "fsdp"):
        spec = dict(
            model_dir=str(model_dir), data=str(data), method="lora", length=256, batch=2,
            ckpt=True,
        )  # fmt: skip
        config = config_for(**spec, out=work / f"ranks-{strategy}").to_dict()
        config["training"]["distributed"] = strategy
        path = work / f"ranks-{strategy}.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node=2", "-m", "loraplex.cli", "train", "-c", str(path)]
        command += ["--no-progress"]
        env = {**os.environ, **MEMORY_PASS, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{strategy} run failed:\n{proc.stderr[-3000:]}")
        record = json.loads((work / f"ranks-{strategy}" / "record.json").read_text())
        peaks = record["distributed"]["peak_memory_bytes"]
        from loraplex.trainer.config import TrainConfig

        estimate = estimate_training(
            TrainConfig.model_validate(config), model_dir, cpu_device(), with_data=True, ranks=2
        )
        ratios = [round(estimate.peak_bytes / peak, 3) for peak in peaks]
        case = {
            "model": "tiny",
            "method": "lora",
            "strategy": strategy,
            "ranks": 2,
            "steps": record["steps"],
            "predicted_bytes_per_rank": estimate.peak_bytes,
            "measured_bytes_per_rank": peaks,
            "parameter_bytes_per_rank": record["distributed"]["parameter_bytes"],
            # the sharding itself: weights and LoRA parameters a rank holds between steps
            "predicted_parameter_bytes_per_rank": sum(
                i.bytes for i in estimate.items if i.what.startswith(("base weights", "LoRA param"))
            ),
            "ratios": ratios,
            "within_15_percent": all(abs(r - 1) <= 0.15 for r in ratios),
            "breakdown": {i.what: i.bytes for i in estimate.items},
            "load_average": os.getloadavg(),
        }
        print(json.dumps({k: v for k, v in case.items() if k != "breakdown"}), flush=True)
        cases.append(case)
    return cases


def serve_case(model_dir: Path, work: Path) -> dict:
    """vLLM's own KV capacity for the gateway's test settings, against the estimate."""
    from loraplex.estimate.serve import estimate_serving
    from tests.fixtures.engine import GatewayProcess

    store = f"file://{work / 'store'}"
    with GatewayProcess(model_dir, store, work / "gateway") as gateway:
        log = gateway.log_path.read_text(errors="replace")
    reported = vllm_kv_tokens(log)
    estimate = estimate_serving(
        model_dir, quantization="none", dtype="float32", max_model_len=1024, max_loras=2,
        max_lora_rank=16, kv_cache_space_bytes=1 << 30,
    )  # fmt: skip
    ratio = estimate.kv_tokens / reported
    return {
        "settings": "tiny, float32, max_model_len 1024, VLLM_CPU_KVCACHE_SPACE=1",
        "predicted_kv_tokens": estimate.kv_tokens,
        "vllm_kv_tokens": reported,
        "ratio": round(ratio, 4),
        "within_5_percent": abs(ratio - 1) <= 0.05,
    }


def vllm_kv_tokens(log: str) -> int:
    match = re.search(r"KV cache size: ([\d,]+) tokens", log)
    if not match:
        raise RuntimeError("vLLM's log has no 'KV cache size' line")
    return int(match.group(1).replace(",", ""))


def _key(case: dict) -> tuple:
    keys = ("model", "method", "gradient_checkpointing", "max_length", "round")
    return tuple(case.get(k) for k in keys)


def merge_earlier(results: dict, out: Path) -> None:
    """Keep the earlier file's cases that this (partial) run did not measure, each with its
    own `measured` (time, commit, load), as bench_trainer does for its models."""
    for case in results["memory"] + results["time"]:
        case["measured"] = results["measured"]
    if not out.exists():
        return
    earlier = json.loads(out.read_text())
    for section in ("memory", "time"):
        done = {_key(c) for c in results[section]}
        kept = [c for c in earlier.get(section, []) if _key(c) not in done and "measured" in c]
        results[section] = sorted(kept + results[section], key=lambda c: str(_key(c)))
    if results["serve"] is None:
        results["serve"] = earlier.get("serve")
    for key, value in earlier.items():  # sections this run did not measure (ranks, published)
        results.setdefault(key, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=RESULTS / "estimate.json")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--ranks", action="store_true", help="2-rank DDP and FSDP2 runs")
    parser.add_argument(
        "--threads", type=int, help="OMP_NUM_THREADS of the timed estimates and runs alike"
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the timed cases")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm_train(json.loads(args.arm))))
        return
    if args.threads:
        os.environ["BENCH_ESTIMATE_THREADS"] = str(args.threads)

    from loraplex.base_models.registry import resolve_base_model

    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # AVX2 or AVX512/AMX: this project's CPU machines are of either kind.
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average_at_start": os.getloadavg(),
        },
        "memory": [],
        "time": [],
        "serve": None,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_memory:
            for name in args.models:
                model_dir = resolve_base_model(name)
                results["memory"] += memory_cases(name, model_dir, work, args.lengths, args.methods)
        if not args.skip_time:
            results["time"] = time_cases(args.models, work, args.repeats)
        if args.ranks:
            results["ranks"] = distributed_cases(work)
        if not args.skip_serve:
            results["serve"] = serve_case(resolve_base_model("tiny"), work)
            print(json.dumps(results["serve"]), flush=True)
    results["measured"] = measured_now()
    results["bench_seconds"] = round(time.monotonic() - started)
    out = args.out
    out.parent.mkdir(exist_ok=True)
    merge_earlier(results, out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
