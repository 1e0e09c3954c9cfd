"""Per-adapter metrics move by the right amount for the right adapter, streamed
or not, errors included; client-chosen names never become label values."""

import time
import uuid

import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.engine import BASE_NAME

pytestmark = pytest.mark.engine

PROMPT = [{"role": "user", "content": "Count to ten."}]
CHAT_ROUTE = "/v1/chat/completions"


def scrape(http) -> dict[tuple[str, frozenset], float]:
    text = http.get("/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def chat(client, model: str, *, stream: bool, max_tokens: int = 5) -> int:
    """Send one request that generates exactly `max_tokens`; return its prompt tokens."""
    kwargs = dict(
        model=model, messages=PROMPT, max_tokens=max_tokens, extra_body={"ignore_eos": True}
    )
    if not stream:
        return client.chat.completions.create(**kwargs).usage.prompt_tokens
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    return chunks[-1].usage.prompt_tokens


@pytest.mark.parametrize(("model", "label", "stream"), [
    ("alpha", "alpha", False),
    ("beta", "beta", True),
    (BASE_NAME, "base", False),
])  # fmt: skip
def test_request_token_and_latency_metrics_move_for_the_adapter(client, http, model, label, stream):
    before = scrape(http)
    prompt_tokens = sum(chat(client, model, stream=stream) for _ in range(3))
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("loraplex_completion_tokens_total", adapter=label) == 15
    assert delta("loraplex_prompt_tokens_total", adapter=label) == prompt_tokens
    assert delta("loraplex_time_to_first_token_seconds_count", adapter=label) == 3
    assert delta("loraplex_time_per_output_token_seconds_count", adapter=label) == 3
    duration = dict(adapter=label, route=CHAT_ROUTE, status="200")
    assert delta("loraplex_request_duration_seconds_count", **duration) == 3
    assert value(after, "loraplex_requests_in_flight", adapter=label) == 0
    other = "beta" if label != "beta" else "alpha"
    assert delta("loraplex_completion_tokens_total", adapter=other) == 0


def test_errors_are_counted_with_their_status(client, http):
    before = scrape(http)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing-adapter", messages=PROMPT, max_tokens=2)
    after = scrape(http)
    labels = dict(adapter="unknown", route=CHAT_ROUTE, status="404")
    assert (
        value(after, "loraplex_request_duration_seconds_count", **labels)
        - value(before, "loraplex_request_duration_seconds_count", **labels)
        == 1
    )


def adapter_label_values(samples) -> set[str]:
    return {
        v for (name, labels), _ in samples.items() if name.startswith("loraplex_")
        for k, v in labels if k == "adapter"
    }  # fmt: skip


def test_a_thousand_random_model_names_add_no_label_values(client, http):
    with pytest.raises(openai.NotFoundError):  # make sure `unknown` exists before we count
        client.chat.completions.create(model="nope", messages=PROMPT, max_tokens=1)
    before = adapter_label_values(scrape(http))
    for _ in range(1000):
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model=f"x-{uuid.uuid4().hex}", prompt="hi", max_tokens=1)
    after = adapter_label_values(scrape(http))
    assert after == before
    assert after <= {"base", "unknown", "other"} | set(scrape_store_names(http))


def scrape_store_names(http) -> list[str]:
    return [m["id"] for m in http.get("/v1/models").json()["data"]]


def test_gateway_state_metrics_are_exported(client, http):
    chat(client, "alpha", stream=False)
    samples = scrape(http)
    assert value(samples, "loraplex_adapters", state="store") >= 2
    assert value(samples, "loraplex_adapters", state="cache") >= 1
    assert value(samples, "loraplex_adapter_cache_hits_total") >= 1
    assert value(samples, "loraplex_adapter_fetch_seconds_count") >= 1
    assert value(samples, "loraplex_device_memory_total_bytes", device="cpu") > 0
    assert value(samples, "loraplex_process_resident_memory_bytes") > 0
    info = [k for k in samples if k[0] == "loraplex_build_info"]
    assert info and dict(info[0][1])["cpu_lora_ops"] == "loraplex"
    # vLLM's own metrics stay where dashboards expect them.
    assert any(name == "vllm:num_requests_waiting" for name, _ in samples)


def test_the_engine_state_follows_requests_and_an_idle_engine_is_not_polled(client, http, gateway):
    chat(client, "alpha", stream=False)
    deadline = time.monotonic() + 10
    while value(scrape(http), "loraplex_adapters", state="engine") < 1:
        assert time.monotonic() < deadline, "the engine state never showed alpha loaded"
        time.sleep(0.5)
    # Idle now: the gateway must not keep the engine's workers busy. vLLM's CPU
    # workers spin for a second after each RPC, so polling them every 2 s
    # would burn about half a core here.
    time.sleep(3)
    processes = psutil.Process(gateway.proc.pid).children(recursive=True)

    def cpu_seconds() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    before = cpu_seconds()
    time.sleep(6)
    assert cpu_seconds() - before < 1.5  # polled every 2 s: about 3 s (measured)
