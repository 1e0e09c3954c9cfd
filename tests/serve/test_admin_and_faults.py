"""Adapter administration routes, and adapters the gateway must refuse while
it keeps serving everything else."""

import asyncio
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.models import make_random_lora
from tests.waiting import eventually

pytestmark = pytest.mark.engine

PROMPT = [{"role": "user", "content": "Hello there."}]


def ask(client, model: str):
    return client.chat.completions.create(model=model, messages=PROMPT, max_tokens=4)


def versions_by_state(http, name: str) -> dict[int, str]:
    entry = next(a for a in http.get("/v1/adapters").json()["data"] if a["name"] == name)
    return {v["version"]: v["state"] for v in entry["versions"]}


def local_root(store_url: str) -> Path:
    return Path(urlparse(store_url).path)


def test_admin_load_puts_an_adapter_in_the_engine_and_unload_takes_it_out(
    http, served_store, tiny_model_dir, tmp_path
):
    served_store.store.publish(make_random_lora(tiny_model_dir, tmp_path / "a", seed=51), "admin")
    http.post("/v1/adapters/refresh").raise_for_status()
    assert versions_by_state(http, "admin") == {1: "store"}
    loaded = http.post("/v1/adapters/admin/load")
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["adapter"] == "admin@1"
    assert versions_by_state(http, "admin") == {1: "engine"}
    assert http.post("/v1/adapters/admin@1/unload").json()["unloaded"] is True
    assert versions_by_state(http, "admin") == {1: "cache"}


def test_admin_load_of_an_unknown_adapter_is_a_404(http):
    response = http.post("/v1/adapters/nothing-here/load")
    assert response.status_code == 404
    assert response.json()["error"]["message"]


def counter(http, name: str) -> float:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


async def test_many_first_requests_fetch_an_adapter_once(
    async_client, http, served_store, tiny_model_dir, tmp_path
):
    served_store.store.publish(make_random_lora(tiny_model_dir, tmp_path / "c", seed=52), "crowd")
    misses = counter(http, "loraplex_adapter_cache_misses_total")
    hits = counter(http, "loraplex_adapter_cache_hits_total")
    await asyncio.gather(
        *(
            async_client.chat.completions.create(model="crowd", messages=PROMPT, max_tokens=2)
            for _ in range(16)
        )
    )
    assert counter(http, "loraplex_adapter_cache_misses_total") - misses == 1
    assert counter(http, "loraplex_adapter_cache_hits_total") - hits == 15


def test_tampered_adapter_is_refused_by_name_and_others_keep_serving(
    client, served_store, tiny_model_dir, tmp_path
):
    store = served_store.store
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "t", seed=53), "tampered")
    weights = local_root(store.url) / "tampered" / "v1" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, "tampered")
    assert 400 <= err.value.status_code < 500
    assert "adapter_model.safetensors" in err.value.body["message"]
    assert ask(client, "alpha").choices[0].message.content is not None


def test_adapter_for_another_base_is_refused(client, served_store, tiny_model_dir, tmp_path):
    store = served_store.store
    store.publish(make_random_lora(tiny_model_dir, tmp_path / "o", seed=54), "otherbase")
    manifest_path = local_root(store.url) / "otherbase" / "v1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["base"]["fingerprint"] = "0" * 64  # as if trained on another model
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "otherbase")
    assert "trained for base model" in err.value.body["message"]
    assert ask(client, "beta").choices[0].message.content is not None


def gauge(http, prefix: str) -> float:
    text = http.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


IN_FLIGHT, RUNNING = "loraplex_requests_in_flight", "vllm:num_requests_running"


def metric_lines(http, prefix: str) -> list[str]:
    return [line for line in http.get("/metrics").text.splitlines() if line.startswith(prefix)]


def test_a_client_that_disconnects_mid_stream_aborts_its_engine_request(gateway, http):
    # The tiny model generates 8 × 1,000 tokens in well under a second, faster than
    # the gauge can be read. With a small receive window the server's sends block
    # once the window and its own send buffer are full, so the stream stays in
    # flight until the client leaves. That buffer grows up to tcp_wmem's 4 MiB,
    # which the stream must exceed: with 20 top logprobs each of its 8,000 chat
    # chunks is about 1.5 KB, 12 MB in all (plain completion chunks, 2 MB, fitted).
    small_window = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    transport = httpx.HTTPTransport(socket_options=small_window)
    with httpx.Client(base_url=gateway.base_url, timeout=60, transport=transport) as c:
        # 8 is the server's limit on n, 20 vLLM's on logprobs.
        body = {"model": "alpha", "messages": PROMPT, "max_tokens": 1000, "n": 8}
        body |= {"ignore_eos": True, "stream": True, "logprobs": True, "top_logprobs": 20}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()  # keep a reference: a dropped iterator closes the stream
            assert next(lines).startswith("data:")
            eventually(
                lambda: gauge(http, IN_FLIGHT) == 1,
                10,
                f"the stream counted in flight (last: {metric_lines(http, IN_FLIGHT)})",
            )
    eventually(lambda: gauge(http, IN_FLIGHT) == 0, 10, "the aborted request off loraplex's gauge")
    # vLLM's own gauges are refreshed with its engine stats, every second or so.
    eventually(lambda: gauge(http, RUNNING) == 0, 10, "the aborted request off vLLM's gauge")
