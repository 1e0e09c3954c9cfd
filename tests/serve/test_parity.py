"""Parity: the gateway's greedy tokens for an adapter equal HF transformers + PEFT's.

Float32 on both sides (DESIGN.md: bf16 flips near-tied logits on this random
model). The bar is 98% of positions over 8 prompts x 16 tokens.
"""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.engine

PROMPTS = [
    "The quick brown fox",
    "Once upon a time",
    "In the morning the city",
    "Water is made of",
    "My favourite colour is",
    "The train left the station",
    "Numbers like one two three",
    "A small boat on the lake",
]
NEW_TOKENS = 16


def peft_greedy(base_dir, adapter_dir, prompt_ids: list[list[int]]) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    outputs = []
    with torch.no_grad():
        for ids in prompt_ids:
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
            )
            outputs.append(out[0, len(ids) :].tolist())
    return outputs


def gateway_greedy(client, model: str, prompt_ids: list[list[int]]) -> list[list[int]]:
    outputs = []
    for ids in prompt_ids:
        response = client.completions.create(
            model=model,
            prompt=ids,
            max_tokens=NEW_TOKENS,
            temperature=0,
            extra_body={"return_token_ids": True, "ignore_eos": True},
        )
        outputs.append(response.choices[0].model_extra["token_ids"])
    return outputs


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [
        (x, y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)
    ]
    return sum(x == y for x, y in pairs) / (len(PROMPTS) * NEW_TOKENS)


def test_gateway_matches_peft_greedy_tokens_in_float32(client, tiny_model_dir, served_store):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    expected = peft_greedy(tiny_model_dir, served_store.adapter_dirs["alpha"], prompt_ids)
    served = gateway_greedy(client, "alpha", prompt_ids)
    assert agreement(served, expected) >= 0.98, (served, expected)
    # The adapter matters: the base alone must not reproduce the adapter's tokens.
    assert agreement(gateway_greedy(client, "tiny", prompt_ids), expected) < 0.9
