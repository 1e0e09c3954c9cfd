"""Benchmark: one process against two ranks (DDP, FSDP2) under torchrun.

The same LoRA run (fp32 base on CPU, bf16 on CUDA; FSDP2 does not take
QLoRA) three ways, side by side in one run, each in its own processes:

- one: `loraplex train`, one process with `--threads` torch threads and
  accumulation N (one micro-batch per rank of the others);
- ddp: `torchrun --nproc-per-node N loraplex train --distributed ddp`, N
  ranks of 1 thread each (torchrun's default), accumulation 1;
- fsdp: the same with `--distributed fsdp` (FSDP2, `fully_shard` per layer).

All three train the same steps on the same data (the plan is global), so the
work is the same; tokens/s is trained tokens over the training loop's wall
time (rank 0's), wall is the whole command (process start, model load,
export). Memory per rank: peak RSS of each rank, and the bytes of parameters
each rank holds (from the training record): DDP holds the whole model on
every rank, FSDP2 about 1/N of it. Each of `--repeats` rounds runs the
three arms in a rotated order (one-ddp-fsdp, ddp-fsdp-one, fsdp-one-ddp),
so drift hits every arm alike; each round gives one speedup ratio per arm,
and the summary reports their min, median and max. On a shared machine,
OpenMP threads of the one process wait on each other when other jobs hold
the cores, which favours the 1-thread ranks: compare on a quiet machine, or
with `--threads 1`. Results: bench/results/distributed-<model>.json.

    .venv/bin/python -m bench.bench_distributed [--model smollm2-135m-instruct] [--examples 16]
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

import yaml

from bench.bench_trainer import make_dataset, measured_now

RESULTS = Path(__file__).parent / "results"


def config(model_dir: Path, data: Path, max_length: int) -> dict:
    return {
        "base_model": str(model_dir),
        "method": "lora",
        "data": {"train": [str(data)], "max_length": max_length},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "training": {"epochs": 1, "batch_size": 1, "learning_rate": 2e-4, "seed": 0},
        "output": {"tensorboard": False},
    }


def run_arm(arm: str, config_file: Path, out: Path, nproc: int, threads: int) -> dict:
    train = ["-m", "loraplex.cli", "train", "-c", str(config_file), "--output", str(out)]
    train += ["--no-progress"]
    env = dict(os.environ)
    if arm == "one":
        # One process runs every rank's micro-batches: accumulation N·1.
        command = [sys.executable, *train, "--grad-accum", str(nproc)]
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc-per-node={nproc}", *train, "--grad-accum", "1"]
        command += ["--distributed", arm]
        env["OMP_NUM_THREADS"] = "1"
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{done.stderr[-3000:]}")
    record = json.loads((out / "record.json").read_text())
    ranks = record["distributed"]
    return {
        "arm": arm,
        "ranks": ranks["world_size"],
        "threads_per_rank": threads if arm == "one" else 1,
        "steps": record["steps"],
        "trained_tokens": record["trained_tokens"],
        "train_seconds": record["train_seconds"],
        "tokens_per_second": record["tokens_per_second"],
        "wall_seconds": round(wall, 1),
        "final_loss": record["final_loss"],
        "peak_rss_bytes_per_rank": ranks["peak_memory_bytes"],
        "parameter_bytes_per_rank": ranks["parameter_bytes"],
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def summarize(runs: dict[str, list[dict]], nproc: int) -> dict:
    best = {arm: max(r, key=lambda x: x["tokens_per_second"]) for arm, r in runs.items()}
    whole = best["one"]["parameter_bytes_per_rank"][0]
    rounds = range(len(runs["one"]))
    return {
        "tokens_per_second": {
            arm: spread([x["tokens_per_second"] for x in r]) for arm, r in runs.items()
        },
        # One ratio per round: both arms of a round ran minutes apart.
        "speedup_vs_one": {
            arm: spread(
                [r[i]["tokens_per_second"] / runs["one"][i]["tokens_per_second"] for i in rounds]
            )
            for arm, r in runs.items()
            if arm != "one"
        },
        "wall_seconds": {arm: spread([x["wall_seconds"] for x in r]) for arm, r in runs.items()},
        "parameter_share_per_rank": {
            arm: [round(x / whole, 3) for x in b["parameter_bytes_per_rank"]]
            for arm, b in best.items()
        },
        "peak_rss_mib_per_rank": {
            arm: [round(x / 2**20) for x in b["peak_rss_bytes_per_rank"]] for arm, b in best.items()
        },
        "fsdp_holds_about_1_over_n": all(
            abs(x / whole - 1 / nproc) < 0.05 for x in best["fsdp"]["parameter_bytes_per_rank"]
        ),
        # Not equal: dropout (0.05) draws other masks on each rank.
        "final_loss": {arm: round(b["final_loss"], 4) for arm, b in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads of the one process")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import torch

    from loraplex.base_models.registry import resolve_base_model
    from loraplex.trainer.model import load_tokenizer

    model_dir = resolve_base_model(args.model)
    runs: dict[str, list[dict]] = {"one": [], "ddp": [], "fsdp": []}
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.jsonl"
        make_dataset(load_tokenizer(model_dir), args.examples, args.max_length, data)
        config_file = work / "train.yaml"
        config_file.write_text(yaml.safe_dump(config(model_dir, data, args.max_length)))
        arms = list(runs)
        for repeat in range(args.repeats):
            for arm in arms[repeat % 3 :] + arms[: repeat % 3]:
                out = work / f"{arm}-{repeat}"
                result = run_arm(arm, config_file, out, args.nproc, args.threads)
                print(json.dumps(result), flush=True)
                runs[arm].append(result)
    results = {
        "model": args.model,
        "examples": args.examples,
        "max_length": args.max_length,
        "nproc": args.nproc,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_at_start": load_at_start,
        },
        "measured": measured_now(),
        "runs": runs,
        "summary": summarize(runs, args.nproc),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"distributed-{args.model}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
