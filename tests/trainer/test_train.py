"""Whole runs on the tiny model (CPU): losses fall, answers are learned, adapters publish."""

import itertools
import json

import pytest
import torch
from safetensors.torch import load_file

from loraplex.adapters.fingerprint import read_safetensors_header
from loraplex.adapters.store import open_store
from loraplex.adapters.validate import validate_adapter_dir
from loraplex.trainer.data import read_data_file
from loraplex.trainer.errors import TrainError
from loraplex.trainer.train import train
from tests.trainer.conftest import DATA, make_config


@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_run_finishes_loss_falls_and_the_adapter_is_servable(tiny_model_dir, tmp_path, method):
    config = make_config(
        tiny_model_dir,
        tmp_path / "run",
        method=method,
        data={"eval_fraction": 0.2},
        training={"epochs": 6},
        output={"tensorboard": True},
    )
    result = train(config, tiny_model_dir, progress=False)
    record = result.record
    epoch_losses = [e["train_loss"] for e in record.epoch_losses]
    assert len(epoch_losses) == 6
    assert all(b < a for a, b in itertools.pairwise(epoch_losses))
    assert epoch_losses[-1] < 0.75 * epoch_losses[0]
    assert all(e["eval_loss"] is not None for e in record.epoch_losses)
    assert record.trained_tokens > 0 and record.peak_memory_bytes > 0

    adapter = result.adapter_dir
    assert sorted(p.name for p in adapter.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    settings = validate_adapter_dir(adapter, base_model=tiny_model_dir)
    assert settings.target_modules == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert adapter_config["bias"] == "none" and not adapter_config["modules_to_save"]
    header = read_safetensors_header(adapter / "adapter_model.safetensors")
    assert {info["dtype"] for info in header.values()} == {"F32"}
    assert any((result.run_dir / "logs").iterdir())  # TensorBoard events
    start, *steps = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert start["event"] == "start" and start["total_steps"] == record.steps == len(steps)
    assert start["batch_size"] == 2 and start["n_epochs"] == 6
    assert [m["step"] for m in steps] == list(range(1, record.steps + 1))
    assert [m["train_loss"] for m in steps] == pytest.approx(record.losses, abs=1e-4)


def greedy_answers(model, tokenizer, conversations) -> list[str]:
    answers = []
    for conversation in conversations:
        prompt = tokenizer.apply_chat_template(
            [m.as_template_input() for m in conversation.messages[:-1]],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        out = model.generate(input_ids=ids, max_new_tokens=24, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1] :]))
    return answers


@pytest.mark.slow
def test_the_adapter_reproduces_the_trained_answers(tiny_model_dir, tmp_path, tokenizer):
    """QLoRA on six Q/A pairs: the adapter (on the fp32 base) answers them; the base does not."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = make_config(tiny_model_dir, tmp_path / "run", method="qlora", training={"epochs": 25})
    result = train(config, tiny_model_dir, progress=False)
    conversations = read_data_file(DATA / "chat.jsonl").conversations
    wanted = [f"{c.messages[-1].content}<|im_end|>" for c in conversations]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, result.adapter_dir)
    assert greedy_answers(tuned, tokenizer, conversations) == wanted
    with tuned.disable_adapter():
        from_base = greedy_answers(tuned, tokenizer, conversations)
    assert not set(from_base) & set(wanted)


def test_publish_stores_the_next_version_with_the_training_record(tiny_model_dir, tmp_path):
    store_url = f"file://{tmp_path / 'store'}"
    output = {"publish": "qa-bot", "aliases": ["staging"], "store": store_url}
    first = make_config(tiny_model_dir, tmp_path / "a", training={"epochs": 1}, output=output)
    second = make_config(tiny_model_dir, tmp_path / "b", training={"epochs": 1}, output=output)
    assert train(first, tiny_model_dir, progress=False).manifest.ref == "qa-bot@1"
    manifest = train(second, tiny_model_dir, progress=False).manifest
    assert manifest.ref == "qa-bot@2"
    store = open_store(store_url)
    assert store.aliases("qa-bot") == {"latest": 2, "staging": 2}
    training = store.resolve("qa-bot:staging").training
    assert training["data"][0]["sha256"] == read_data_file(DATA / "chat.jsonl").sha256
    assert training["config"]["output"]["publish"] == "qa-bot"
    assert set(training["versions"]) >= {"torch", "transformers", "peft", "bitsandbytes"}
    assert training["trained_tokens"] > 0 and training["peak_memory_bytes"] > 0
    assert manifest.base.fingerprint is not None


def test_a_new_run_refuses_a_directory_that_holds_one(tiny_model_dir, tmp_path):
    config = make_config(tiny_model_dir, tmp_path / "run", training={"epochs": 1})
    train(config, tiny_model_dir, progress=False)
    with pytest.raises(TrainError, match="already holds a run; pass --resume"):
        train(config, tiny_model_dir, progress=False)


def adapter_tensors(result) -> dict[str, torch.Tensor]:
    return load_file(result.adapter_dir / "adapter_model.safetensors")


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
