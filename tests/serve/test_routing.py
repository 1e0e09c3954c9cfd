"""Per-request routing by `model` through the real gateway and the official openai client."""

import asyncio

import openai
import pytest

from tests.fixtures.engine import BASE_NAME

pytestmark = pytest.mark.engine

PROMPT = [{"role": "user", "content": "Tell me a story about the sea."}]


def chat(client, model: str, max_tokens: int = 12):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0
    )
    return raw.headers.get("x-loraplex-adapter"), raw.parse().choices[0].message.content


def test_base_and_each_adapter_answer_differently(client):
    _, base = chat(client, BASE_NAME)
    alpha_header, alpha = chat(client, "alpha")
    beta_header, beta = chat(client, "beta")
    assert alpha_header == "alpha@1"
    assert beta_header == "beta@1"
    assert len({base, alpha, beta}) == 3, (base, alpha, beta)


def test_name_alias_and_version_reach_the_same_weights(client):
    answers = {ref: chat(client, ref) for ref in ("alpha", "alpha:latest", "alpha@1")}
    assert {header for header, _ in answers.values()} == {"alpha@1"}
    assert len({text for _, text in answers.values()}) == 1


def test_base_request_carries_no_adapter_header(client):
    header, _ = chat(client, BASE_NAME)
    assert header is None


def test_completions_route_to_the_adapter(client):
    base = client.completions.create(
        model=BASE_NAME, prompt="The sea", max_tokens=12, temperature=0
    )
    alpha = client.completions.create(model="alpha", prompt="The sea", max_tokens=12, temperature=0)
    assert alpha.model == "alpha@1"
    assert base.choices[0].text != alpha.choices[0].text


def test_streaming_with_usage_matches_the_non_streamed_answer(client):
    _, expected = chat(client, "beta", max_tokens=10)
    stream = client.chat.completions.create(
        model="beta",
        messages=PROMPT,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


async def test_async_client_serves_concurrent_requests_for_several_adapters(async_client, client):
    expected = {m: chat(client, m)[1] for m in (BASE_NAME, "alpha", "beta")}

    async def one(model: str) -> tuple[str, str]:
        r = await async_client.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=12, temperature=0
        )
        return model, r.choices[0].message.content

    results = await asyncio.gather(*(one(m) for m in list(expected) * 4))
    for model, text in results:
        assert text == expected[model], model


@pytest.mark.parametrize("model", ["no-such-adapter", "Bad/Name", "../etc", "alpha@99", "a b"])
def test_unknown_or_invalid_model_is_a_404_error_object(client, model):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model=model, messages=PROMPT, max_tokens=2)
    body = err.value.body
    assert isinstance(body, dict) and body.get("message"), body
    assert err.value.status_code == 404


def test_models_lists_base_and_store_adapters_without_paths(client):
    models = {m.id: m for m in client.models.list().data}
    assert {BASE_NAME, "alpha", "beta"} <= set(models)
    assert models["alpha"].parent == BASE_NAME
    for m in models.values():
        assert "/" not in (m.model_extra.get("root") or ""), m


def test_vllm_arbitrary_path_lora_routes_are_not_exposed(http):
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        response = http.post(path, json={"lora_name": "x", "lora_path": "/tmp"})
        assert response.status_code in (404, 405), (path, response.status_code)
