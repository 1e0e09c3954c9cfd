"""`AdapterAwareScheduler`: vLLM's scheduler with the admission plan applied
to its waiting queue before each step (see the package docstring)."""

import logging
import os
import time
from collections import Counter

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.metrics.stats import SchedulerStats
from vllm.v1.request import Request

from loraplex.serve.scheduling.admission import plan_admission

logger = logging.getLogger(__name__)

MAX_WAIT_ENV = "LORAPLEX_ADAPTER_MAX_WAIT"
DEFAULT_MAX_WAIT_S = 2.0


def _adapter_of(request: Request) -> int | None:
    lora = request.lora_request
    return lora.lora_int_id if lora is not None and lora.lora_int_id > 0 else None


def _arrival_of(request: Request) -> float:
    return request.arrival_time


class AdapterAwareScheduler(Scheduler):
    def __new__(cls, *args, **kwargs):
        # One name for `--scheduler-cls`: with async scheduling on (vLLM's
        # default on GPU) the same policy runs on vLLM's AsyncScheduler.
        vllm_config = kwargs.get("vllm_config", args[0] if args else None)
        if cls is AdapterAwareScheduler and vllm_config.scheduler_config.async_scheduling:
            cls = AsyncAdapterAwareScheduler
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adapter_max_wait = float(os.environ.get(MAX_WAIT_ENV, DEFAULT_MAX_WAIT_S))
        self._draining: frozenset[int] = frozenset()
        self._adapter_aware = self.lora_config is not None and isinstance(
            self.waiting, FCFSRequestQueue
        )
        if self.lora_config is not None and not self._adapter_aware:
            logger.warning("adapter-aware admission needs the fcfs policy; using vLLM's order")

    def schedule(self, *args, **kwargs) -> SchedulerOutput:
        if not self._adapter_aware or not self.waiting:
            return super().schedule(*args, **kwargs)
        try:
            held = self._plan_waiting()
        except Exception:  # a bug in the policy must not kill the engine
            logger.exception("adapter-aware admission failed; using vLLM's order from now on")
            self._adapter_aware = False
            return super().schedule(*args, **kwargs)
        try:
            return super().schedule(*args, **kwargs)
        finally:
            if held:
                self.waiting.extendleft(reversed(held))

    def _plan_waiting(self) -> list[Request]:
        running = Counter(a for r in self.running if (a := _adapter_of(r)) is not None)
        plan = plan_admission(
            list(self.waiting),
            running,
            adapter_of=_adapter_of,
            arrival_of=_arrival_of,
            max_loras=self.lora_config.max_loras,
            now=time.time(),
            max_wait=self.adapter_max_wait,
            draining_before=self._draining,
        )
        self._draining = plan.draining
        self.waiting.clear()
        self.waiting.extend(plan.order)
        return plan.held

    def make_stats(self, *args, **kwargs) -> SchedulerStats | None:
        """vLLM's stats, with each adapter's running and waiting requests, which
        `vllm:lora_requests_info` shows (vLLM 0.32's frontend no longer counts them)."""
        stats = super().make_stats(*args, **kwargs)
        if stats is not None and self.lora_config is not None:
            for queue, counts in (
                (self.running, stats.running_lora_adapters),
                (list(self.waiting) + list(self.kv_holding_waiting), stats.waiting_lora_adapters),
            ):
                for request in queue:
                    if request.lora_request is not None:
                        name = request.lora_request.lora_name
                        counts[name] = counts.get(name, 0) + 1
        return stats


class AsyncAdapterAwareScheduler(AdapterAwareScheduler, AsyncScheduler):
    """The same policy over vLLM's AsyncScheduler."""
