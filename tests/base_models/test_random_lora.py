"""The random LoRA fixtures: real PEFT adapters whose effect on greedy output is visible."""

import json

import pytest
from safetensors.torch import load_file

from tests.fixtures.models import make_random_lora

PROMPTS = ["Hello", "What is the weather like today?", "Tell me about the boat."]


def greedy(model, tokenizer, prompt: str, max_new_tokens: int = 8) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def outputs(tiny_model_dir, tiny_loras) -> dict[str, list[list[int]]]:
    """Greedy continuations of PROMPTS by the base and by each adapter (PEFT, float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    result = {"base": [greedy(base, tokenizer, p) for p in PROMPTS]}
    for lora in tiny_loras:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, lora)
        result[lora.name] = [greedy(model, tokenizer, p) for p in PROMPTS]
    return result


def test_the_adapter_is_a_peft_lora_with_non_zero_a_and_b(tiny_loras, tiny_model_dir):
    first, _ = tiny_loras
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    tensors = load_file(first / "adapter_model.safetensors")
    assert len(tensors) == 2 * 2 * 4  # A and B, 2 layers, 4 projections
    for name, tensor in tensors.items():
        assert tensor.abs().min() > 0, f"{name} has zero entries"


def test_the_two_session_adapters_differ(tiny_loras):
    first, second = (load_file(d / "adapter_model.safetensors") for d in tiny_loras)
    assert first.keys() == second.keys()
    assert all(not first[k].equal(second[k]) for k in first)


def test_same_seed_gives_the_same_weights(tiny_model_dir, tiny_loras, tmp_path):
    again = make_random_lora(tiny_model_dir, tmp_path / "again", seed=1)
    ours = load_file(tiny_loras[0] / "adapter_model.safetensors")
    theirs = load_file(again / "adapter_model.safetensors")
    assert all(ours[k].equal(theirs[k]) for k in ours)


def test_each_adapter_changes_the_first_greedy_token_of_every_prompt(outputs):
    base, first, second = outputs["base"], outputs["lora-1"], outputs["lora-2"]
    for i, prompt in enumerate(PROMPTS):
        assert len({base[i][0], first[i][0], second[i][0]}) == 3, prompt


def test_the_factory_writes_under_the_test_tmp_path(random_lora, tmp_path):
    adapter = random_lora("mine", r=4, target_modules=("q_proj",), seed=3)
    assert adapter == tmp_path / "mine"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["target_modules"]) == (4, ["q_proj"])
