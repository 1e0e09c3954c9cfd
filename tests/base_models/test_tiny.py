"""The tiny random Llama: reproducible bytes, loads in transformers, speaks ChatML."""

import hashlib
from pathlib import Path

import pytest

from loraplex.base_models.tiny import ARCHITECTURE, make_tiny_model


def file_hashes(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in model_dir.iterdir()}


def test_same_seed_gives_identical_bytes_in_every_file(tiny_model_dir, tmp_path):
    again = make_tiny_model(tmp_path / "again", seed=0)
    hashes = file_hashes(tiny_model_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(hashes)
    assert file_hashes(again) == hashes


def test_another_seed_changes_only_the_weights(tiny_model_dir, tmp_path):
    other = file_hashes(make_tiny_model(tmp_path / "other", seed=1))
    ours = file_hashes(tiny_model_dir)
    assert other["model.safetensors"] != ours["model.safetensors"]
    assert {k: v for k, v in other.items() if k != "model.safetensors"} == {
        k: v for k, v in ours.items() if k != "model.safetensors"
    }


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_the_architecture_is_what_vllm_cpu_needs(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.hidden_size // config.num_attention_heads == 64  # CPU attention refuses 16
    assert config.initializer_range == 0.1  # 0.02 leaves LoRA nothing to learn (DESIGN.md)
    for key, value in ARCHITECTURE.items():
        if key != "rope_theta":  # transformers 5 moves it into rope_parameters
            assert getattr(config, key) == value, key


def test_tokenizer_has_the_chatml_template_and_im_end_as_eos(tokenizer, tiny_model_dir):
    from transformers import AutoConfig, GenerationConfig

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    assert AutoConfig.from_pretrained(tiny_model_dir).eos_token_id == tokenizer.eos_token_id
    assert GenerationConfig.from_pretrained(tiny_model_dir).eos_token_id == tokenizer.eos_token_id
    # The special tokens are single tokens, so a stop on <|im_end|> works.
    ids = tokenizer("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False).input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[-1] == tokenizer.eos_token_id


def test_tokenizer_config_carries_the_template_and_the_context_length(tiny_model_dir):
    import json

    from loraplex.base_models.tiny import CHAT_TEMPLATE

    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE  # for readers of this file alone
    assert (tiny_model_dir / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    assert config["model_max_length"] == 2048
    assert (config["eos_token"], config["pad_token"]) == ("<|im_end|>", "<|endoftext|>")


def test_weights_are_float32_safetensors(tiny_model_dir):
    import torch
    from safetensors import safe_open

    with safe_open(tiny_model_dir / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}  # no timestamps: same seed, same bytes
        names = set(f.keys())
        assert {f.get_tensor(n).dtype for n in names} == {torch.float32}
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= names  # untied


def test_tokenizer_round_trips_text(tokenizer):
    text = "Hello world, the capital of France is Paris. ¿Qué tal? 123"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_loads_in_transformers_and_generates(tiny_model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 8
    assert all(0 <= int(t) < len(tokenizer) for t in new)
    again = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, again)  # greedy is deterministic
