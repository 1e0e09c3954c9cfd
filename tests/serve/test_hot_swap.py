"""Hot swap without restart: new versions and alias moves reach new requests,
running requests finish on the version they started with, nothing fails."""

import asyncio

import pytest

from tests.fixtures.models import make_random_lora
from tests.waiting import eventually

pytestmark = pytest.mark.engine

PROMPT = [{"role": "user", "content": "Name three colours."}]
# The product promises one second for a local store (the fixture polls every 0.2 s).
SWAP_DEADLINE_S = 1.0


def answer(client, model: str, max_tokens: int = 12) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0
    )
    return raw.headers["x-loraplex-adapter"], raw.parse().choices[0].message.content


@pytest.fixture(scope="module")
def swap(served_store, tiny_model_dir, tmp_path_factory):
    """An adapter `swap` with two versions (different weights) and an alias `prod` on v1."""
    src = tmp_path_factory.mktemp("swap")
    store = served_store.store
    for seed in (31, 32):
        store.publish(make_random_lora(tiny_model_dir, src / f"s{seed}", seed=seed), "swap")
    store.set_alias("swap", "prod", 1)
    return store


def test_a_new_version_is_served_within_a_second_of_publishing(
    client, served_store, tiny_model_dir, tmp_path
):
    store = served_store.store
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "v1", seed=41), "fresh")
    assert answer(client, "fresh")[0] == "fresh@1"  # a never-seen name is read through
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "v2", seed=42), "fresh")
    eventually(
        lambda: answer(client, "fresh")[0] == "fresh@2", SWAP_DEADLINE_S, "fresh@2 after publish"
    )


def test_an_alias_move_is_served_within_a_second(client, swap):
    def served_by(version: int):
        header, text = answer(client, "swap:prod")
        return (header, text) if header == f"swap@{version}" else None

    swap.set_alias("swap", "prod", 1)
    header_before, text_before = eventually(lambda: served_by(1), SWAP_DEADLINE_S, "prod → v1")
    swap.set_alias("swap", "prod", 2)
    header_after, text_after = eventually(lambda: served_by(2), SWAP_DEADLINE_S, "prod → v2")
    assert (header_before, header_after) == ("swap@1", "swap@2")
    assert text_before != text_after
    assert answer(client, "swap@1") == (header_before, text_before)


def test_refresh_route_applies_a_move_at_once(client, http, swap):
    swap.set_alias("swap", "prod", 2)
    http.post("/v1/adapters/refresh").raise_for_status()
    swap.set_alias("swap", "prod", 1)
    assert http.post("/v1/adapters/refresh").json()["refreshed"] is True
    assert answer(client, "swap:prod")[0] == "swap@1"


def test_a_running_stream_finishes_on_the_version_it_started_with(client, http, swap):
    swap.set_alias("swap", "prod", 1)
    http.post("/v1/adapters/refresh").raise_for_status()
    expected = answer(client, "swap@1", max_tokens=40)[1]
    stream = client.chat.completions.create(
        model="swap:prod", messages=PROMPT, max_tokens=40, temperature=0, stream=True
    )
    parts = []
    for i, chunk in enumerate(stream):
        if i == 2:  # mid-stream: move the alias and make the gateway see it
            swap.set_alias("swap", "prod", 2)
            http.post("/v1/adapters/refresh").raise_for_status()
        parts.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(parts) == expected
    assert answer(client, "swap:prod")[0] == "swap@2"


async def test_swaps_under_load_lose_no_request(async_client, client, http, swap):
    expected = {v: answer(client, f"swap@{v}")[1] for v in (1, 2)}
    models = ["alpha", "beta", "swap:prod", "tiny"]
    semaphore = asyncio.Semaphore(32)
    failures: list[BaseException] = []

    async def one(i: int) -> None:
        async with semaphore:
            try:
                await async_client.chat.completions.create(
                    model=models[i % len(models)], messages=PROMPT, max_tokens=8, temperature=0
                )
            except Exception as exc:  # every failure is reported below
                failures.append(exc)

    async def mover() -> list[tuple[int, str, str]]:
        seen = []
        for move in range(6):
            version = 1 + move % 2
            await asyncio.to_thread(swap.set_alias, "swap", "prod", version)
            await asyncio.sleep(SWAP_DEADLINE_S)
            raw = await async_client.chat.completions.with_raw_response.create(
                model="swap:prod", messages=PROMPT, max_tokens=12, temperature=0
            )
            seen.append((version, raw.headers["x-loraplex-adapter"], raw.parse()))
        return seen

    load = asyncio.gather(*(one(i) for i in range(240)))
    seen, _ = await asyncio.gather(mover(), load)
    assert failures == []
    for version, header, response in seen:
        assert header == f"swap@{version}"
        assert response.choices[0].message.content == expected[version]
