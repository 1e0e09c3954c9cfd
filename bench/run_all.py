"""`make bench`: every benchmark, one after the other, then the plots.

Each benchmark is its own script (run one alone with `python -m bench.<name>`)
that compares side by side within its own run and writes JSON under
bench/results/; this runs them all and draws bench/results/*.png from those
files. Run it on a quiet machine: the ratios are robust to a steady load,
not to a load that comes and goes.
"""

import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RUNS = [
    ["bench.bench_store"],
    ["bench.bench_cpu_lora_ops"],
    ["bench.bench_adapter_cost"],
    ["bench.bench_lora_step"],
    ["bench.bench_decode_step"],
    ["bench.bench_serve", "--model", "tiny"],
    ["bench.bench_serve", "--model", "smollm2-135m-instruct"],
    ["bench.bench_parity"],
    ["bench.bench_load"],
    ["bench.bench_trainer"],
    ["bench.bench_eval"],
]
OPS_LOADS = ["base", "one_adapter", "mix_2", "mix_8", "mix_16", "distinct_16"]


def plot() -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ops = RESULTS / "cpu_lora_ops.json"
    if ops.exists():
        data = json.loads(ops.read_text())
        fig, axes = plt.subplots(1, len(data["results"]), figsize=(6 * len(data["results"]), 4))
        for ax, row in zip(list(getattr(axes, "flat", [axes])), data["results"], strict=True):
            loads = row["loads"]
            x = range(len(OPS_LOADS))
            sides = [("loraplex", "loraplex ops"),
                     ("loraplex-torch", "loraplex ops, torch's products"),
                     ("grouped", "loraplex ops, slice by slice"),
                     ("vllm", "vLLM 0.32 ops")]  # fmt: skip
            sides = [s for s in sides if f"{s[0]}_tokens_per_s" in loads["base"]]
            width = 0.8 / len(sides)
            for j, (key, label) in enumerate(sides):
                offset = (j - (len(sides) - 1) / 2) * width
                heights = [loads[k][f"{key}_tokens_per_s"] for k in OPS_LOADS]
                ax.bar([i + offset for i in x], heights, width, label=label)
            ax.set_xticks(list(x), OPS_LOADS)
            ax.set_ylabel("output tokens/s")
            ax.set_title(row["model"])
            ax.legend()
        written.append(_save(fig, "cpu_lora_ops.png"))
    for serve in sorted(RESULTS.glob("serve-*.json")):
        data = json.loads(serve.read_text())
        scaling = data["adapter_scaling"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(list(scaling), [v["vs_base"] for v in scaling.values()])
        ax.set_xlabel("distinct adapters in the load")
        ax.set_ylabel("output tokens/s, ratio to base alone")
        ax.set_title(f"gateway throughput vs adapters ({data['model']})")
        written.append(_save(fig, f"{serve.stem}-scaling.png"))
    trainer = RESULTS / "trainer.json"
    if trainer.exists():
        models = json.loads(trainer.read_text())["models"]
        fig, ax = plt.subplots(figsize=(6, 4))
        x = range(len(models))
        for offset, arm in ((-0.2, "baseline"), (0.2, "loraplex")):
            best = [max(r["tokens_per_second"] for r in m["runs"][arm]) for m in models]
            ax.bar([i + offset for i in x], best, 0.4, label=arm)
        ax.set_xticks(list(x), [m["model"] for m in models])
        ax.set_yscale("log")
        ax.set_ylabel("trained tokens/s (best run)")
        ax.set_title("trainer vs transformers Trainer + peft")
        ax.legend()
        written.append(_save(fig, "trainer.png"))
    return written


def _save(fig, name: str) -> Path:
    path = RESULTS / name
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main() -> None:
    for args in RUNS:
        print(f"== {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", *args], check=True)
    for path in plot():
        print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--plots"]:
        print("\n".join(map(str, plot())))
    else:
        main()
