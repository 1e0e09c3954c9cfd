"""The real-model path: SmolLM2-135M-Instruct from `make-model`, a QLoRA adapter
trained on a style dataset, served by the gateway on the 4-bit base.

This is the demo's claim as a test: the gateway starts on the converted model
with bitsandbytes 4-bit, an adapter trained for 6 epochs on the 20 pirate-style
examples in examples/data is published while the gateway runs, and from then on
the adapter answers unseen questions in that style while the base's answers
stay exactly what they were.
"""

import json
import re
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from loraplex.adapters import open_store
from loraplex.adapters.evaluations import list_evaluations
from tests.fixtures.engine import GatewayProcess
from tests.waiting import eventually

pytestmark = [pytest.mark.engine, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = REPO / "examples" / "data" / "pirate-held-out.jsonl"  # questions not in training
BASE = "smollm2"
QUESTIONS = ["What is the capital of Italy?", "How do I make a sandwich?"]  # not in the data
# Words of the trained style (the base's own answers have none of the first two).
PIRATE = re.compile(r"\b(arr|matey|ye|be)\b", re.IGNORECASE)
PIRATE_ONLY = re.compile(r"\b(arr|matey)\b", re.IGNORECASE)


def answer(client: openai.OpenAI, model: str, question: str) -> str:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=32,
        temperature=0,
    )
    return response.choices[0].message.content


def train_pirate(base: Path, store_url: str, out: Path):
    from loraplex.trainer.config import load_config
    from loraplex.trainer.train import train

    settings = {
        "method": "qlora",
        "data.train": [str(REPO / "examples" / "data" / "pirate.jsonl")],
        "training.epochs": 6,
        # Six packed steps at a high rate: about 4x less CPU than the defaults'
        # 60 one-example steps (which `make demo` uses, and which also learn the
        # style: 10 of 10 held-out questions), to keep the suite's time down.
        "training.batch_size": 4,
        "training.learning_rate": 2e-3,
        "training.gradient_checkpointing": False,
        "output.dir": str(out),
        "output.publish": "pirate",
        "output.store": store_url,
        "output.tensorboard": False,
    }
    return train(load_config(None, settings), base, progress=False)


@pytest.fixture(scope="module")
def smollm2_gateway(smollm2_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("smollm2-gateway")
    store = open_store(str(work / "store"))
    extra = [
        "--served-model-name", BASE, "--quantization", "bitsandbytes",
        "--dtype", "bfloat16", "--max-model-len", "2048",
        # The embedded worker trains as train_pirate does (no recomputation: faster).
        "--worker-arg=--trainer-arg=--no-gradient-checkpointing",
    ]  # fmt: skip
    with GatewayProcess(smollm2_model_dir, store.url, work, extra_args=extra) as gateway:
        yield gateway, store, work


def test_make_model_output_is_served_and_a_qlora_adapter_changes_only_its_answers(
    smollm2_gateway, smollm2_model_dir
):
    gateway, store, work = smollm2_gateway
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)
    base_before = [answer(client, BASE, q) for q in QUESTIONS]
    assert "Rome" in base_before[0]  # a real instruct model, served from the 4-bit base

    result = train_pirate(smollm2_model_dir, store.url, work / "run")
    assert result.manifest.ref == "pirate@1"
    assert result.record.final_loss < result.record.losses[0]

    styled = [answer(client, "pirate", q) for q in QUESTIONS]
    for question, text in zip(QUESTIONS, styled, strict=True):
        assert PIRATE.search(text), (question, text)
    base_after = [answer(client, BASE, q) for q in QUESTIONS]
    assert base_after == base_before
    for text in base_after:
        assert not PIRATE_ONLY.search(text), text


def test_eval_through_the_gateway_scores_the_styled_adapter_above_the_base(
    smollm2_gateway, smollm2_model_dir, capsys
):
    """`loraplex eval` on held-out pirate-style questions: the QLoRA adapter beats the
    4-bit base on loss and ROUGE-L (and its figures are kept beside pirate@1)."""
    from loraplex.cli import app

    gateway, store, work = smollm2_gateway
    if "pirate" not in store.list_names():  # run alone (-k): train it here
        train_pirate(smollm2_model_dir, store.url, work / "run-for-eval")
    out = work / "eval.json"
    result = CliRunner().invoke(app, [
        "eval", "--endpoint", gateway.base_url, "--model", BASE, "--model", "pirate",
        "--data", str(HELD_OUT), "--metrics", "loss,exact,rouge-l,bleu-4",
        "--max-tokens", "40", "--base-model", str(smollm2_model_dir), "--store", store.url,
        "--json", str(out), "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    with capsys.disabled():  # the README's table comes from this output
        print("\n" + result.stdout)
    report = json.loads(out.read_text())
    base, pirate = ({k: f["value"] for k, f in m["metrics"].items()} for m in report["models"])
    assert report["quantization"] == "bitsandbytes" and report["data"]["examples"] == 10
    assert pirate["loss"] < base["loss"] - 0.5, (pirate, base)
    assert pirate["rouge-l"] > base["rouge-l"] + 0.1, (pirate, base)
    assert list_evaluations(store, "pirate")[-1].metrics["rouge-l"].value == pirate["rouge-l"]


def test_openai_sdk_fine_tuning_job_answers_in_the_trained_style(smollm2_gateway):
    """The issue's claim with the official SDK, unmodified: upload the pirate data,
    create a job (QLoRA on the served 4-bit base, by the gateway's embedded worker),
    poll it to `succeeded`, and chat with `job.fine_tuned_model`: it answers unseen
    questions in the trained style while the base does not."""
    gateway, store, _ = smollm2_gateway
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)
    data = (REPO / "examples" / "data" / "pirate.jsonl").read_bytes()
    upload = client.files.create(file=("pirate.jsonl", data), purpose="fine-tune")
    upload = client.files.wait_for_processing(upload.id, poll_interval=0.5, max_wait_seconds=60)
    assert upload.status == "processed", upload.status_details
    hyper = {"n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 10}  # 2e-3, as demo.py
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload.id, suffix="pirate",
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
    )  # fmt: skip
    job = eventually(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status
        in ("succeeded", "failed", "cancelled") and j,
        1200, "the fine-tuning job to end", every=2,  # ~60 s on a quiet machine
    )  # fmt: skip
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{BASE}:default:pirate:{job.id}"
    losses = [e.data["train_loss"] for e in client.fine_tuning.jobs.list_events(job.id)
              if e.type == "metrics"][::-1]  # fmt: skip
    assert len(losses) == 6 and losses[-1] < losses[0]
    for question in QUESTIONS:
        styled = answer(client, job.fine_tuned_model, question)
        assert PIRATE.search(styled), (question, styled)
        assert not PIRATE_ONLY.search(answer(client, BASE, question))
    manifest = store.resolve(job.fine_tuned_model.rsplit(":", 1)[1])
    assert manifest.training["job_id"] == job.id and manifest.training["method"] == "qlora"
