"""Adapter-aware admission on the real engine (serve/scheduling).

Two LoRA slots, two hot adapters that keep both slots busy, and a cold
adapter: vLLM's own admission passes the cold request over for as long as the
flood lasts (vllm#16876); loraplex's drains a slot for it after
`--adapter-max-wait`.
Base requests go through whatever the adapters do, and greedy answers are
the same as under vLLM's default scheduler.
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
# The cold request must finish within this during the flood: max-wait, plus
# the drained adapter's running requests (up to HOT_TOKENS tokens), plus its
# own 8 tokens, with a wide margin for a busy 2-core machine.
COLD_BOUND_S = 90.0
FLOOD_LIMIT_S = 120.0
# The sustained flood's request length (a relay per hot adapter).
HOT_TOKENS = 1000
TOKENS_SO_FAR = re.compile(r'"completion_tokens":\s*(\d+)')
# A probe whose cold request got in before max-wait ran during a lapse of the
# flood (a stalled client): it tests nothing and is run again, this many times.
PROBE_ATTEMPTS = 3


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


@pytest.fixture(scope="module")
def vllm_gateway(tiny_model_dir, store_url, tmp_path_factory) -> Iterator[GatewayProcess]:
    """The same, with vLLM's own admission."""
    workdir = tmp_path_factory.mktemp("scheduling-vllm-gateway")
    extra = ["--scheduler", "vllm"]
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


async def sustained_flood(gw: GatewayProcess, probe):
    """Hold both slots for as long as `probe()` runs, then return its result.

    Each hot adapter runs a relay of streamed requests of HOT_TOKENS tokens:
    the next one starts when the current one is halfway, so the adapter
    always has a request running, with half a request's time to spare; a slot
    frees only if the scheduler drains it. The margin is wide because on 2
    cores, under this load, a client process stalls for up to 3 s at a time
    while the engine runs on (measured with a bare sleep loop): a flood of
    short requests stalled with it, and let a cold request in within 0.5 s
    whatever the scheduler. (Plain httpx here: the SDK's per-chunk
    parsing costs the starved client more.)
    """
    started = {model: asyncio.Event() for model in HOT}
    # Each chunk counts the tokens so far: a chunk can carry several tokens
    # when the client falls behind, so counting chunks reaches halfway late or never.
    usage = {"include_usage": True, "continuous_usage_stats": True}
    body = {"prompt": "Tell me a story.", "max_tokens": HOT_TOKENS, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": usage}  # fmt: skip

    async def stream(http: httpx.AsyncClient, model: str, halfway: asyncio.Event) -> None:
        request = {**body, "model": model}
        try:
            async with http.stream("POST", "/v1/completions", json=request) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    tokens = TOKENS_SO_FAR.search(line)
                    if tokens and int(tokens[1]) >= HOT_TOKENS // 2:
                        halfway.set()
        finally:
            halfway.set()  # an error ends the relay (gathered below), never hangs it

    async def relay(http: httpx.AsyncClient, model: str) -> None:
        running: list[asyncio.Task] = []
        try:
            while True:
                halfway = asyncio.Event()
                running = [t for t in running if not t.done()]
                running.append(asyncio.create_task(stream(http, model, halfway)))
                if len(running) > 1:
                    started[model].set()
                await halfway.wait()
                if running[-1].done():
                    running[-1].result()  # raises the stream's error, if any
        finally:
            for task in running:
                task.cancel()  # closing the stream aborts the request
            await asyncio.gather(*running, return_exceptions=True)

    async with httpx.AsyncClient(base_url=gw.base_url, timeout=FLOOD_LIMIT_S) as http:
        relays = [asyncio.create_task(relay(http, model)) for model in HOT]
        try:
            every_relay = asyncio.gather(*(e.wait() for e in started.values()))
            await asyncio.wait_for(every_relay, FLOOD_LIMIT_S)
            result = await probe()
            assert not any(r.done() for r in relays), "the flood stopped during the probe"
            return result
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)


async def cold_latency(client: openai.AsyncOpenAI, limit: float) -> float | None:
    """Seconds for one cold-adapter request, or None if it did not finish within `limit`."""
    try:
        return await asyncio.wait_for(timed(client, COLD, 8), limit)
    except TimeoutError:
        return None


def test_a_cold_adapter_gets_a_slot_within_the_bound_during_a_hot_flood(gateway):
    client = async_client(gateway)
    for _ in range(PROBE_ATTEMPTS):
        latency = asyncio.run(sustained_flood(gateway, lambda: cold_latency(client, COLD_BOUND_S)))
        assert latency is not None, f"the cold request waited more than {COLD_BOUND_S}s"
        if latency >= MAX_WAIT_S:
            return
    raise AssertionError("the cold request never had to wait: the flood did not hold the slots")


def test_base_requests_are_not_delayed_behind_waiting_adapters(gateway):
    """Cold-adapter requests wait for a slot (max-wait, then a drain); base
    requests sent after them finish first, since they need no slot."""
    client = async_client(gateway)

    async def probe() -> tuple[float, list[float]]:
        sent = time.monotonic()
        cold = [asyncio.create_task(timed(client, COLD, 8)) for _ in range(3)]
        await asyncio.sleep(0.2)
        await asyncio.gather(*(timed(client, BASE_NAME, 8) for _ in range(3)))
        base_done = time.monotonic() - sent
        return base_done, await asyncio.gather(*cold)

    for _ in range(PROBE_ATTEMPTS):
        base_done, cold = asyncio.run(sustained_flood(gateway, probe))
        if min(cold) >= MAX_WAIT_S:
            assert base_done < min(cold), f"base done at {base_done:.1f}s, cold at {min(cold):.1f}s"
            return
    raise AssertionError("the cold requests never had to wait: the flood did not hold the slots")


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


def test_greedy_answers_equal_vllm_default_schedulers(gateway, vllm_gateway):
    ours = concurrent_answers(gateway)
    theirs = concurrent_answers(vllm_gateway)
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
    async def probe() -> str:
        return await asyncio.to_thread(
            wait_for,
            lambda: re.search(
                r'vllm:lora_requests_info\{[^}]*running_lora_adapters="[^"]*hot1@1',
                httpx.get(f"{gateway.base_url}/metrics", timeout=30).text,
            ),
            "hot1@1 among the running adapters",
        )

    assert asyncio.run(sustained_flood(gateway, probe))
