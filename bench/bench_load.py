"""Load with swaps and disconnects: nothing is lost.

1,000 requests at concurrency 32 over 8 adapters (and the base) on the tiny
model, while an alias moves 20 times and 50 clients hang up mid-stream. Every
request must complete or get a documented error; no 5xx. Counts go to
bench/results/load.json.

    .venv/bin/python -m bench.bench_load
"""

import asyncio
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.adapters import random_adapters
from loraplex.adapters import open_store
from loraplex.base_models.tiny import make_tiny_model
from tests.fixtures.engine import GatewayProcess

RESULTS = Path(__file__).parent / "results" / "load.json"
REQUESTS, CONCURRENCY, MOVES, DISCONNECTS = 1000, 32, 20, 50
DOCUMENTED = {200, 400, 404, 413, 422, 429, 503}


async def one(client: httpx.AsyncClient, model: str, hang_up: bool) -> str:
    body = {"model": model, "prompt": "Tell me a story", "max_tokens": 32, "stream": hang_up}
    try:
        if hang_up:
            async with client.stream("POST", "/v1/completions", json=body) as r:
                async for _ in r.aiter_lines():
                    return "disconnected"  # leave after the first line
            return str(r.status_code)
        r = await client.post("/v1/completions", json=body)
        return str(r.status_code)
    except httpx.HTTPError as exc:
        return f"client-error:{type(exc).__name__}"


async def drive(base_url: str, store, models: list[str]) -> dict:
    rng = random.Random(0)
    hang_ups = set(rng.sample(range(REQUESTS), DISCONNECTS))
    semaphore = asyncio.Semaphore(CONCURRENCY)
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:

        async def job(i: int) -> None:
            async with semaphore:
                outcomes[await one(client, models[i % len(models)], i in hang_ups)] += 1

        async def mover() -> int:
            for k in range(MOVES):
                await asyncio.to_thread(store.set_alias, "a0", "prod", 1 + k % 2)
                await asyncio.sleep(0.5)
            return MOVES

        started = time.perf_counter()
        moves, _ = await asyncio.gather(mover(), asyncio.gather(*(job(i) for i in range(REQUESTS))))
        seconds = time.perf_counter() - started
    return {"outcomes": dict(outcomes), "alias_moves": moves, "seconds": round(seconds, 1)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = make_tiny_model(tmp / "tiny")
        store = open_store(str(tmp / "store"))
        dirs = random_adapters(base, tmp / "adapters", 9, r=8)
        for i in range(8):
            store.publish(dirs[i], f"a{i}", base_model=base)
        store.publish(dirs[8], "a0", base_model=base)  # a0@2, for the alias to move between
        store.set_alias("a0", "prod", 1)
        models = ["tiny", "a0:prod", *[f"a{i}" for i in range(1, 8)]]
        with GatewayProcess(base, store.url, tmp / "gw", extra_args=["--max-loras", "4"]) as gw:
            result = asyncio.run(drive(gw.base_url, store, models))
    server_errors = sum(n for k, n in result["outcomes"].items() if k.startswith("5"))
    undocumented = {
        k: n
        for k, n in result["outcomes"].items()
        if k != "disconnected" and not (k.isdigit() and int(k) in DOCUMENTED)
    }
    report = {
        "benchmark": "load",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "adapters": 8,
        **result,
        "server_errors_5xx": server_errors,
        "undocumented_outcomes": undocumented,
        "passed": server_errors == 0 and not undocumented,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
