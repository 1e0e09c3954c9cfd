"""Mixed batches through the gateway: base and two adapters share batches with
every LoRA slot in use (max_loras 2), and with loraplex's CPU ops each request
gets exactly what its model gives alone. That vLLM 0.32's own ops answer base
requests with an adapter's weights (vllm#48421) is shown, deterministically,
on an offline engine in test_cpu_lora_ops_engine.py."""

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.fixtures.engine import BASE_NAME

pytestmark = pytest.mark.engine

PROMPTS = ["Tell me a story about the sea.", "Name three colours.", "Why is the sky blue?"]
MODELS = [BASE_NAME, "alpha", "beta"]


def solo_answers(base_url: str) -> dict[tuple[str, str], str]:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    return {
        (model, prompt): client.completions.create(
            model=model, prompt=prompt, max_tokens=16, temperature=0
        )
        .choices[0]
        .text
        for model in MODELS
        for prompt in PROMPTS
    }


def concurrent_answers(base_url: str, rounds: int = 3) -> list[tuple[str, str, str]]:
    """24 requests at once, from threads: the engine batches them together."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

    def one(pair: tuple[str, str]) -> tuple[str, str, str]:
        model, prompt = pair
        r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
        return model, prompt, r.choices[0].text

    pairs = [(m, p) for _ in range(rounds) for m in MODELS for p in PROMPTS][:24]
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(one, pairs))


def test_loraplex_ops_answer_each_request_with_its_own_model(gateway):
    expected = solo_answers(gateway.base_url)
    for model, prompt, text in concurrent_answers(gateway.base_url):
        assert text == expected[(model, prompt)], (model, prompt)
