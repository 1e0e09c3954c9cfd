"""SmolLM2-135M-Instruct converted from the wheel's GGUF: a real model, reproducibly.

Slow: one conversion takes about 30-50 s on 2 cores (the `smollm2_model_dir`
fixture keeps its result in a cache that survives test runs; the
determinism test converts a second time).
"""

import hashlib
from pathlib import Path

import pytest

from loraplex.base_models.smollm2 import make_smollm2

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_the_converted_model_knows_the_capital_of_france(smollm2_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_model_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_the_converted_model_is_a_plain_llama_with_chatml(smollm2_model_dir):
    import json

    config = json.loads((smollm2_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config  # the GGUF quantizer is gone
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    template = (smollm2_model_dir / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template and "<|im_end|>" in template


def test_two_conversions_are_byte_identical(smollm2_model_dir, tmp_path):
    again = make_smollm2(tmp_path / "again")
    ours = {p.name: sha256(p) for p in smollm2_model_dir.iterdir()}
    assert {p.name: sha256(p) for p in again.iterdir()} == ours
