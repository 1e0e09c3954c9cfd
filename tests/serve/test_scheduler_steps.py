"""Adapter-aware admission on vLLM's real scheduler, stepped in-process.

vLLM's `Scheduler` (and loraplex's subclass) runs here without a model: each
step calls `schedule()`, then `update_from_output()` with one sampled token
per scheduled request, as the engine core does. Steps, not seconds, are the
clock, so the flood holds both LoRA slots by construction and every ordering
below is deterministic (the HTTP tests in test_scheduling.py show the same
scheduler wired into the gateway, where a 2-core machine's stalls make
orderings a race).
"""

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from vllm.config import CacheConfig, LoRAConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.lora.request import LoRARequest
from vllm.sampling_params import SamplingParams
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from loraplex.serve.scheduling import AdapterAwareScheduler
from loraplex.serve.scheduling.scheduler import MAX_WAIT_ENV

BLOCK = 16
HOT = {"hot1": 1, "hot2": 2}
COLD = ("cold", 3)
# Each hot adapter keeps one request in each lane; lanes of different
# lengths never all end on the same step, so both slots stay taken.
LANE_TOKENS = (4, 5, 6, 7)
FLOOD_STEPS = 150


def make_scheduler(model_dir: Path, cls: type[Scheduler]) -> Scheduler:
    """Two LoRA slots and room for every request of the flood at once: only
    the slot check can keep a request waiting."""
    config = VllmConfig(
        model_config=ModelConfig(model=str(model_dir), dtype="float32", skip_tokenizer_init=True),
        scheduler_config=SchedulerConfig(
            max_num_seqs=32,
            max_num_batched_tokens=2048,
            max_model_len=2048,
            is_encoder_decoder=False,
        ),
        cache_config=CacheConfig(block_size=BLOCK, enable_prefix_caching=False),
        lora_config=LoRAConfig(max_loras=2, max_lora_rank=8),
    )
    blocks = 2000
    config.cache_config.num_gpu_blocks = blocks
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=1, dtype=torch.float32)
    kv_cache = KVCacheConfig(
        num_blocks=blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l"], spec)]
    )
    return cls(
        vllm_config=config,
        kv_cache_config=kv_cache,
        structured_output_manager=StructuredOutputManager(config),
        block_size=BLOCK,
    )


class Engine:
    """Drives a scheduler the way vLLM's engine core does, one token per step."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.ids = itertools.count()
        self.first_step: dict[str, int] = {}  # request id -> step it was first scheduled
        self.step_no = 0

    def add(self, adapter: tuple[str, int] | None, max_tokens: int) -> str:
        request_id = f"r{next(self.ids)}"
        lora = LoRARequest(adapter[0], adapter[1], f"/{adapter[0]}") if adapter else None
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        params.update_from_generation_config({}, eos_token_id=None)
        self.scheduler.add_request(Request(request_id, [5] * 8, params, None, lora_request=lora))
        return request_id

    def step(self) -> None:
        output = self.scheduler.schedule()
        ids = list(output.num_scheduled_tokens)
        for request_id in ids:
            self.first_step.setdefault(request_id, self.step_no)
        runner = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={r: i for i, r in enumerate(ids)},
            sampled_token_ids=[[7] for _ in ids],
        )
        self.scheduler.update_from_output(output, runner)
        self.step_no += 1

    def running_adapters(self) -> set[str]:
        return {r.lora_request.lora_name for r in self.scheduler.running if r.lora_request}


def hot_flood(engine: Engine) -> Iterator[None]:
    """Each hot adapter keeps one request in every lane: a lane's next request
    is added as soon as its last one finished. Yields after each step."""
    lanes = {(name, n): engine.add((name, i), n) for name, i in HOT.items() for n in LANE_TOKENS}
    while True:
        engine.step()
        for (name, n), request_id in lanes.items():
            if request_id not in engine.scheduler.requests:
                lanes[(name, n)] = engine.add((name, HOT[name]), n)
        yield


def flooded(model_dir: Path, cls: type[Scheduler]) -> tuple[Engine, Iterator[None]]:
    """A scheduler of `cls` one step into the hot flood."""
    engine = Engine(make_scheduler(model_dir, cls))
    flood = hot_flood(engine)
    next(flood)
    return engine, flood


def test_vllms_scheduler_passes_a_cold_adapter_over_for_the_whole_flood(tiny_model_dir):
    """The failure loraplex's scheduler exists for (vllm#16876)."""
    engine, flood = flooded(tiny_model_dir, Scheduler)
    cold = engine.add(COLD, 8)
    for _ in range(FLOOD_STEPS):
        next(flood)
        assert engine.running_adapters() == set(HOT), "the flood let go of a slot"
    assert cold not in engine.first_step


def test_an_aged_cold_adapter_gets_a_slot_within_the_drain_bound(tiny_model_dir, monkeypatch):
    """Once aged, the cold adapter waits at most for one hot adapter's
    running requests to finish (the longest lane), and the flood goes on."""
    monkeypatch.setenv(MAX_WAIT_ENV, "0")
    engine, flood = flooded(tiny_model_dir, AdapterAwareScheduler)
    cold = engine.add(COLD, 8)
    sent = engine.step_no
    for _ in range(FLOOD_STEPS):
        next(flood)
    assert cold in engine.first_step, "the cold adapter starved"
    assert engine.first_step[cold] - sent <= max(LANE_TOKENS) + 2
    later = [s for r, s in engine.first_step.items() if s > engine.first_step[cold] + 20]
    assert later, "the flood had stopped: the bound was not tested"


def test_before_max_wait_a_cold_adapter_does_not_drain_a_hot_one(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(MAX_WAIT_ENV, "3600")
    engine, flood = flooded(tiny_model_dir, AdapterAwareScheduler)
    cold = engine.add(COLD, 8)
    for _ in range(30):
        next(flood)
        assert engine.running_adapters() == set(HOT)
    assert cold not in engine.first_step


@pytest.mark.parametrize("max_wait", ["0", "3600"])
def test_base_requests_are_scheduled_on_the_step_they_arrive(tiny_model_dir, monkeypatch, max_wait):
    """Base requests sent while cold-adapter requests wait for a slot, aged
    (a hot adapter draining) or not, are never held or queued behind them."""
    monkeypatch.setenv(MAX_WAIT_ENV, max_wait)
    engine, flood = flooded(tiny_model_dir, AdapterAwareScheduler)
    colds = [engine.add(COLD, 8) for _ in range(3)]
    behind_colds = 0
    for _ in range(12):
        base = engine.add(None, 3)
        arrived = engine.step_no
        behind_colds += any(c not in engine.first_step for c in colds)
        next(flood)
        assert engine.first_step.get(base) == arrived, f"base request waited at step {arrived}"
    assert behind_colds >= 3, "no base request arrived while the cold ones waited"
