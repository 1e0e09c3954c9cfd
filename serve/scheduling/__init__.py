"""Adapter-aware admission for vLLM's v1 scheduler (`--scheduler-cls`).

Contract. vLLM admits a waiting LoRA request only while the running batch
holds fewer than `max_loras` distinct adapters, or already holds its
adapter; it passes over the rest in first-come order with no fairness
between adapters (vllm#16876). `AdapterAwareScheduler` subclasses vLLM's
scheduler and changes one thing: the order and membership of the waiting
queue that vLLM's own admission loop reads, recomputed before every step
(`admission.plan_admission`):

- free LoRA slots go to the waiting adapters with the most queued requests
  (the oldest first on a tie); the other cold adapters' requests move behind
  everything else for that step;
- requests of adapters already in the batch, and base-model requests, keep
  their first-come order: resident adapters keep flowing;
- aging: once an adapter's oldest waiting request has waited
  `LORAPLEX_ADAPTER_MAX_WAIT` seconds (default 2) with every slot taken, it
  gets the next free slot, and one resident adapter (the one with the fewest
  running requests) admits no new requests until its running ones finish.
  So a waiting adapter gets a slot within max-wait plus the time that
  adapter's running requests take to finish, under any popularity mix;
- base-model requests are never held back or moved back: they need no slot.

Everything else is vLLM's: token and sequence budgets, KV-cache allocation,
preemption, prefix caching, chunked prefill and the `max_loras` check itself.
With the `priority` scheduling policy (a heap, not a queue) or no LoRA
config, it schedules exactly as vLLM does.
"""

from loraplex.serve.scheduling.scheduler import AdapterAwareScheduler

SCHEDULER_CLS = "loraplex.serve.scheduling.AdapterAwareScheduler"

__all__ = ["SCHEDULER_CLS", "AdapterAwareScheduler"]
