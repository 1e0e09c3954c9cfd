"""Mixed batches on a real vLLM engine (tiny model, float32, max_loras 2).

24 requests for the base model and two adapters go to the engine in one
`generate` call, so they share batches with both LoRA slots in use. With
loraplex's ops each request gets exactly the tokens its model gives it
alone; with vLLM 0.32's own ops base requests get an adapter's output
(vllm#48421) — asserted, so this test notices when vLLM fixes it.

Each engine runs in a subprocess (cpu_lora_ops_engine_run.py) because the
ops are chosen by an environment variable that the engine core process must
inherit.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.models import make_random_lora

pytestmark = [pytest.mark.engine, pytest.mark.slow]

PROMPTS = ["Tell me a story about the sea.", "Name three colours.", "Why is the sky blue?"]
MODELS = [None, "alpha", "beta"]  # None: the base model
REQUESTS = [(m, p) for _ in range(3) for m in MODELS for p in PROMPTS][:24]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cpu-lora-ops-adapters")
    return {
        name: str(make_random_lora(tiny_model_dir, root / name, r=8, seed=seed))
        for seed, name in enumerate(("alpha", "beta"), start=1)
    }


def run_engine(ops: str, model_dir: Path, adapters: dict[str, str]) -> tuple[dict, str]:
    """(answers, engine log) of one engine with LORAPLEX_CPU_LORA_OPS=ops."""
    spec = json.dumps({"adapters": adapters, "requests": REQUESTS})
    env = {**os.environ, "LORAPLEX_CPU_LORA_OPS": ops, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-m", "tests.serve.cpu_lora_ops_engine_run", str(model_dir), spec],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = next((line for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert result, f"no result line:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    # vLLM logs to stdout.
    return json.loads(result.removeprefix("RESULT ")), out.stdout + out.stderr


@pytest.fixture(scope="module")
def loraplex_run(tiny_model_dir, adapters):
    return run_engine("loraplex", tiny_model_dir, adapters)


@pytest.fixture(scope="module")
def vllm_run(tiny_model_dir, adapters):
    return run_engine("vllm", tiny_model_dir, adapters)


def by_model(answers: list[list[int]]) -> dict[str | None, list[list[int]]]:
    return {m: [a for (rm, _), a in zip(REQUESTS, answers, strict=True) if rm == m] for m in MODELS}


def test_adapters_change_the_answers(loraplex_run):
    """Otherwise the mixed-batch checks below could not fail."""
    solo = by_model(loraplex_run[0]["solo"])
    assert solo[None] != solo["alpha"] and solo[None] != solo["beta"]
    assert solo["alpha"] != solo["beta"]


def test_loraplex_ops_answer_each_request_with_its_own_model(loraplex_run):
    answers, _ = loraplex_run
    wrong = [
        r for r, s, m in zip(REQUESTS, answers["solo"], answers["mixed"], strict=True) if s != m
    ]
    assert not wrong


def test_engine_core_logs_which_ops_are_active(loraplex_run, vllm_run):
    assert "EngineCore" in next(
        line for line in loraplex_run[1].splitlines() if "CPU LoRA ops: loraplex" in line
    )
    assert "CPU LoRA ops: vllm" in vllm_run[1]


def test_vllm_ops_leak_an_adapter_into_base_requests(vllm_run):
    answers, _ = vllm_run
    pairs = zip(REQUESTS, answers["solo"], answers["mixed"], strict=True)
    wrong = [r for r, s, m in pairs if s != m]
    assert any(model is None for model, _ in wrong), (
        "vLLM's CPU ops no longer leak an adapter into base requests (vllm#48421 fixed?): "
        "loraplex's replacement is then only a speed-up"
    )
