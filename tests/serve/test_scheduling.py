"""Adapter-aware admission wired into the real gateway (serve/scheduling).

Two LoRA slots, two hot adapters that keep both slots busy, and a cold
adapter: loraplex's scheduler drains a slot for it after `--adapter-max-wait`.
Greedy answers are the same as under vLLM's default scheduler. The orderings
(vLLM's scheduler starving the cold adapter, base requests never held) are
shown step by step on the real scheduler in test_scheduler_steps.py: over
HTTP on 2 cores they are races.
"""

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from loraplex.adapters import open_store
from tests.fixtures.engine import BASE_NAME, GatewayProcess
from tests.fixtures.models import make_random_lora

pytestmark = pytest.mark.engine

HOT = ("hot1", "hot2")
COLD = "cold"
MAX_WAIT_S = 2.0
# The cold request must finish within this while the flood lasts FLOOD_LIMIT_S:
# max-wait, plus the drained adapter's running requests (up to 46 tokens),
# plus its own 8 tokens, with a wide margin for a busy 2-core machine.
COLD_BOUND_S = 45.0
FLOOD_LIMIT_S = 120.0
PER_HOT_ADAPTER = 6


@pytest.fixture(scope="module")
def store_url(tiny_model_dir, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("scheduling-store")
    store = open_store(f"file://{root / 'store'}")
    for seed, name in enumerate((*HOT, COLD), start=11):
        src = make_random_lora(tiny_model_dir, root / f"src-{name}", r=8, seed=seed)
        store.publish(src, name, base_model=tiny_model_dir)
    return store.url


@pytest.fixture(scope="module")
def gateway(tiny_model_dir, store_url, tmp_path_factory) -> Iterator[GatewayProcess]:
    """loraplex's scheduler (the default), two slots, a short max-wait."""
    workdir = tmp_path_factory.mktemp("scheduling-gateway")
    extra = ["--adapter-max-wait", str(MAX_WAIT_S)]
    with GatewayProcess(tiny_model_dir, store_url, workdir, extra_args=extra) as process:
        yield process


def async_client(gw: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key="unused", max_retries=0)


async def timed(client: openai.AsyncOpenAI, model: str, max_tokens: int) -> float:
    started = time.monotonic()
    await client.completions.create(
        model=model,
        prompt="Tell me a story.",
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    return time.monotonic() - started


async def flood_while(gw: GatewayProcess, probe, warmup: int = 12):
    """Keep both slots busy with the hot adapters while `probe(client)` runs;
    returns the probe's result and the hot requests completed after it ended.
    The client lives in this event loop: an httpx pool cannot outlive it."""
    client = async_client(gw)
    done = 0
    stop = asyncio.Event()
    started = asyncio.Event()

    async def hot_loop(model: str, i: int) -> None:
        # Different lengths: the adapter's requests never all end at once,
        # so it always holds its slot, as under real traffic.
        nonlocal done
        await asyncio.sleep(0.1 * i)
        while not stop.is_set():
            await timed(client, model, max_tokens=16 + 6 * i)
            done += 1
            if done >= warmup:
                started.set()

    loops = [asyncio.create_task(hot_loop(m, i)) for m in HOT for i in range(PER_HOT_ADAPTER)]
    try:
        await asyncio.wait_for(started.wait(), FLOOD_LIMIT_S)
        result = await asyncio.wait_for(probe(client), FLOOD_LIMIT_S)
        after = done
        await asyncio.sleep(1.0)  # the flood was still running when the probe ended
        return result, done - after
    finally:
        stop.set()
        failures = [e for e in await asyncio.gather(*loops, return_exceptions=True) if e]
        await client.close()
        assert not failures, f"hot requests failed: {failures[:3]}"


def test_a_cold_adapter_gets_a_slot_within_the_bound_during_a_hot_flood(gateway):
    latency, hot_after = asyncio.run(flood_while(gateway, lambda c: timed(c, COLD, 8)))
    assert latency < COLD_BOUND_S, f"cold request took {latency:.1f}s"
    assert hot_after > 0, "the flood had stopped: the bound was not tested"


PROMPTS = ["Tell me a story about the sea.", "Name three colours.", "Why is the sky blue?"]
MODELS = [BASE_NAME, *HOT, COLD]


def concurrent_answers(gw: GatewayProcess) -> dict[tuple[str, str, int], str]:
    """24 greedy requests at once over four models and two slots."""
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="unused", max_retries=0)
    jobs = [(m, p, i) for i in range(2) for m in MODELS for p in PROMPTS]

    def one(job: tuple[str, str, int]) -> str:
        model, prompt, _ = job
        r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
        return r.choices[0].text

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return dict(zip(jobs, pool.map(one, jobs), strict=True))


def test_greedy_answers_equal_vllm_default_schedulers(gateway, tiny_model_dir, store_url, tmp_path):
    ours = concurrent_answers(gateway)
    extra = ["--scheduler", "vllm"]
    with GatewayProcess(tiny_model_dir, store_url, tmp_path, extra_args=extra) as default:
        theirs = concurrent_answers(default)
    assert ours == theirs
    assert len(set(ours.values())) > len(PROMPTS), "the adapters did not change the answers"


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def version_state(gw: GatewayProcess, name: str, version: int) -> str | None:
    data = httpx.get(f"{gw.base_url}/v1/adapters", timeout=30).json()["data"]
    versions = next((a["versions"] for a in data if a["name"] == name), [])
    return next((v["state"] for v in versions if v["version"] == version), None)


def test_publish_and_alias_moves_prefetch_into_the_cpu_tier(
    gateway, store_url, tiny_model_dir, tmp_path
):
    """Once `fresh` has had a request, the gateway loads each version an alias
    moves to (a publish moves `latest`) before any request names it."""
    store = open_store(store_url)
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "v1", seed=31), "fresh")
    asyncio.run(timed(async_client(gateway), "fresh", 2))
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "v2", seed=32), "fresh")
    wait_for(lambda: version_state(gateway, "fresh", 2) == "engine", "fresh@2 prefetched")
    # Unload v1, then move an alias to it: it comes back without a request.
    assert httpx.post(f"{gateway.base_url}/v1/adapters/fresh@1/unload", timeout=30).is_success
    assert version_state(gateway, "fresh", 1) != "engine"
    store.set_alias("fresh", "prod", 1)
    wait_for(lambda: version_state(gateway, "fresh", 1) == "engine", "fresh@1 prefetched again")
    metrics = httpx.get(f"{gateway.base_url}/metrics", timeout=30).text
    assert 'loraplex_adapter_prefetches_total{outcome="loaded"} 2.0' in metrics
    assert 'loraplex_adapter_loaded{tier="cpu"}' in metrics


def test_an_adapter_no_request_named_is_not_prefetched(
    gateway, store_url, tiny_model_dir, tmp_path
):
    store = open_store(store_url)
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "u", seed=33), "unused")
    httpx.post(f"{gateway.base_url}/v1/adapters/refresh", timeout=30).raise_for_status()
    time.sleep(1.0)  # several polls (0.2 s)
    assert version_state(gateway, "unused", 1) == "store"


def test_lora_requests_info_names_the_running_adapters(gateway):
    async def probe(_client: openai.AsyncOpenAI) -> str:
        return await asyncio.to_thread(
            wait_for,
            lambda: re.search(
                r'vllm:lora_requests_info\{[^}]*running_lora_adapters="[^"]*hot1@1',
                httpx.get(f"{gateway.base_url}/metrics", timeout=30).text,
            ),
            "hot1@1 among the running adapters",
        )

    assert asyncio.run(flood_while(gateway, probe))[0]
