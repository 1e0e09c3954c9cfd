"""Benchmark: publish and fetch a ~100 MB adapter on both store backends.

The adapter is PEFT-shaped (rank 16 on all seven linear layers of 20
Llama-7B-sized layers, float32 random weights, a matching adapter_config),
so publishing runs the real validation (without a base model), hashing and
upload; fetching runs download, verification and the atomic cache write;
a second fetch of the same version measures the cached path the gateway
takes afterwards (resolve, compare manifests, stat the files).
Each repetition publishes a new version and fetches it into an empty cache.
The S3 backend runs against a local SeaweedFS started for the run, so its
numbers measure the store's overhead plus SeaweedFS on this machine, not a
network. Results: bench/results/store.json (MB = 10^6 bytes).

With `--many N` it measures instead what a store of N adapters costs the
gateway and the CLI, on both backends (bench/results/store-many.json): the
index's first refresh (every aliases.json read; also with the backend's
reads at once against the other choice, 1 or 16, before any snapshot
exists), a second gateway's first
refresh from the alias snapshot the first one wrote (S3 only: local stamps
are no MD5s), its steady poll (the change feed: one short listing), a poll
after one alias move, the periodic full walk (one listing of the whole
store, nothing re-read), building the /v1/models answer (first call, then
with every card built), the memory the index holds (measured on a third
index, since tracing slows what it measures), and the first page of
`loraplex adapters list` next to the whole-store walk it replaced, and the
store reads behind that page (`Store.catalog_page`) next to the same reads
one name at a time, as the page read them before. The store
holds each name's committed layout (`v1/manifest.json`, `aliases.json`),
written directly: listing and polling
never open a manifest, so full adapters would only make the setup slower.

    .venv/bin/python -m bench.bench_store [--repetitions 3] [--layers 20]
    .venv/bin/python -m bench.bench_store --many 10000
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from loraplex.adapters import open_store

RESULTS = Path(__file__).parent / "results" / "store.json"
HIDDEN, INTERMEDIATE, RANK = 4096, 11008, 16
MODULES = {  # module → (in_features, out_features), as in Llama-2-7B
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (HIDDEN, INTERMEDIATE),
    "mlp.up_proj": (HIDDEN, INTERMEDIATE),
    "mlp.down_proj": (INTERMEDIATE, HIDDEN),
}


def write_adapter(out: Path, layers: int) -> int:
    """A PEFT LoRA adapter directory; returns the size of its files in bytes."""
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(layers):
        for module, (fan_in, fan_out) in MODULES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal(
                (RANK, fan_in), dtype=np.float32
            )
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal(
                (fan_out, RANK), dtype=np.float32
            )
    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
        "r": RANK,
        "lora_alpha": 2 * RANK,
        "target_modules": sorted(m.rsplit(".", 1)[1] for m in MODULES),
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return sum(p.stat().st_size for p in out.iterdir())


def run_backend(url: str, adapter: Path, size: int, repetitions: int, work: Path) -> dict:
    store = open_store(url)
    publish, fetch, cached = [], [], []
    for rep in range(repetitions):
        started = time.perf_counter()
        manifest = store.publish(adapter, "big", max_rank=RANK)
        publish.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.fetch(manifest.ref, work / f"cache-{rep}")
        fetch.append(time.perf_counter() - started)
        started = time.perf_counter()  # the gateway's path once an entry is cached
        store.fetch(manifest.ref, work / f"cache-{rep}")
        cached.append(time.perf_counter() - started)
    mb = size / 1e6
    return {
        "url": store.url,
        "publish_s": [round(s, 3) for s in publish],
        "fetch_s": [round(s, 3) for s in fetch],
        "fetch_cached_ms": [round(s * 1000, 1) for s in cached],
        "publish_MBps_median": round(mb / statistics.median(publish), 1),
        "fetch_MBps_median": round(mb / statistics.median(fetch), 1),
    }


def machine() -> dict:
    info = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
        )
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_GiB"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def populate(store, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> None:
        store.backend.write(f"m{i:05d}/v1/manifest.json", b"{}")
        store.backend.write(f"m{i:05d}/aliases.json", b'{"latest": 1}')

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4), result


def run_many(url: str, n: int) -> dict:
    import tracemalloc

    from typer.testing import CliRunner

    from loraplex.adapters.cli import app
    from loraplex.serve.index import AdapterIndex
    from loraplex.serve.model_cards import ModelCards

    store = open_store(url)
    setup, _ = timed(lambda: populate(store, n))

    def first_refresh_reading(readers: int) -> float:  # no snapshot written: each reads all
        default, store.backend.parallel_reads = store.backend.parallel_reads, readers
        try:
            return timed(AdapterIndex(store, snapshot_after=10**9).refresh)[0]
        finally:
            store.backend.parallel_reads = default

    # The backend's own number of reads at once against the other choice (one at
    # a time for S3, 16 locally), the other first: it warms what both read.
    readers = store.backend.parallel_reads
    other = 16 if readers == 1 else 1
    by_readers = {other: first_refresh_reading(other), readers: first_refresh_reading(readers)}
    by_readers = {str(k): by_readers[k] for k in sorted(by_readers)}
    index = AdapterIndex(store)
    first, _ = timed(index.refresh)  # reads every aliases.json, then writes the snapshot
    cold = AdapterIndex(store)
    from_snapshot, _ = timed(cold.refresh)
    tracemalloc.start()
    traced = AdapterIndex(store)
    traced.refresh()
    index_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del traced
    steady, _ = timed(index.refresh, repeat=3)  # the change feed: one short listing
    store.set_alias("m00042", "prod", 1)
    after_move, _ = timed(index.refresh)
    assert index.aliases("m00042") == {"latest": 1, "prod": 1} and len(index.names()) == n
    assert not index.last_refresh_walked
    walk, _ = timed(lambda: index.refresh(walk=True), repeat=3)  # the periodic full walk

    cards = ModelCards("base")

    def models_body() -> bytes:  # what GET /v1/models does after the first call
        return json.dumps({"object": "list", "data": cards.adapters(index.names())}).encode()

    first_models, _ = timed(models_body)
    models, body = timed(models_body, repeat=3)

    def first_page() -> list:  # what `loraplex adapters list` prints first
        result = CliRunner().invoke(app, ["list", "--json", "--store", url])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def first_page_by_walk() -> list:  # how it listed before `Store.catalog_page`
        catalog = store.catalog()
        return [(x, catalog[x], store.aliases(x)) for x in list(catalog)[:100]]

    def first_page_one_name_at_a_time() -> list:  # the page's reads in turn, as before
        names = store.backend.folders("")[:101]
        return [(x, store.list_versions(x), store.aliases(x)) for x in names]

    page, rows = timed(first_page, repeat=3)
    page_reads, _ = timed(lambda: store.catalog_page("", 100), repeat=3)
    page_in_turn, _ = timed(first_page_one_name_at_a_time, repeat=3)
    page_by_walk, rows_by_walk = timed(first_page_by_walk, repeat=3)
    assert [r["name"] for r in rows] == [r[0] for r in rows_by_walk] and len(rows) == 100
    return {
        "adapters": n,
        "setup_s": setup,
        "index_first_refresh_s": first,
        "index_first_refresh_from_snapshot_s": from_snapshot,
        "index_first_refresh_by_reads_at_once_s": by_readers,
        "names_from_snapshot": cold.names_from_snapshot,
        "index_poll_s": steady,
        "index_poll_after_one_alias_move_s": after_move,
        "index_full_walk_s": walk,
        "index_memory_bytes": index_bytes,
        "v1_models_first_s": first_models,
        "v1_models_s": models,
        "v1_models_bytes": len(body),
        "adapters_list_first_page_s": page,
        "catalog_page_s": page_reads,
        "catalog_page_one_name_at_a_time_s": page_in_turn,
        "adapters_list_first_page_by_walk_s": page_by_walk,
    }


def main_many(n: int, out: Path, note: str) -> None:
    from tests.fixtures.s3 import SeaweedFS

    with tempfile.TemporaryDirectory(prefix="bench-store-many-") as tmp:
        results = {"local": run_many(str(Path(tmp) / "store"), n)}
        print("local", results["local"], flush=True)
        with SeaweedFS() as s3:
            os.environ.update(s3.env)
            results["s3"] = run_many(f"s3://{s3.bucket}/many", n)
            results["s3"]["server"] = "SeaweedFS (weed server -s3) on this machine"
        print("s3", results["s3"])
    report = {"many": results, "note": note, "machine": machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--layers", type=int, default=20, help="20 layers ≈ 100 MB")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--many", type=int, default=None, help="Adapters for the listing bench.")
    parser.add_argument("--note", default="", help="Written into the results (e.g. the load).")
    args = parser.parse_args()
    if args.many:
        main_many(args.many, args.out or RESULTS.with_name("store-many.json"), args.note)
        return
    args.out = args.out or RESULTS

    from tests.fixtures.s3 import SeaweedFS

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        size = write_adapter(work / "adapter", args.layers)
        print(f"adapter: {size / 1e6:.1f} MB")
        results = {"local": run_backend(str(work / "store"), work / "adapter", size,
                                        args.repetitions, work / "local")}  # fmt: skip
        print("local", results["local"])
        with SeaweedFS() as s3:
            os.environ.update(s3.env)
            results["s3"] = run_backend(
                f"s3://{s3.bucket}/bench", work / "adapter", size, args.repetitions, work / "s3"
            )
            results["s3"]["server"] = "SeaweedFS (weed server -s3) on this machine"
        print("s3", results["s3"])

    report = {
        "adapter": {"bytes": size, "rank": RANK, "layers": args.layers, "dtype": "float32"},
        "repetitions": args.repetitions,
        "backends": results,
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
