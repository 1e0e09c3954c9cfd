"""The gateway's state: the store, its index, the local cache, the engine's
adapters and the metrics about them.

One object, built once at start from the settings and kept on
`app.state.loraplex`; routes and middleware reach everything through it.
"""

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from prometheus_client import CollectorRegistry
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.lora.request import LoRARequest

from loraplex.adapters import AdapterNotServable, Store, fingerprint_base_model, open_store
from loraplex.jobs import FineTuningAPI, JobStore, Limits
from loraplex.serve.auth import request_key
from loraplex.serve.fine_tuned import JobMetricsCollector, JobWatch
from loraplex.serve.index import AdapterIndex, AdapterVersion
from loraplex.serve.loader import AdapterLoader
from loraplex.serve.metrics import GatewayMetrics, GatewayStateCollector
from loraplex.serve.model_cards import ModelCards
from loraplex.serve.routing import AdapterRouter
from loraplex.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: ServeSettings
    store: Store
    index: AdapterIndex
    loader: AdapterLoader
    router: AdapterRouter
    metrics: GatewayMetrics
    fine_tuning: FineTuningAPI
    job_watch: JobWatch
    # `name@N` of the versions loaded in the engine, refreshed by `track_engine`.
    in_engine: set[str] = field(default_factory=set)
    model_cards: ModelCards = field(init=False)

    def __post_init__(self) -> None:
        self.model_cards = ModelCards(self.router.base_name)

    @property
    def base_name(self) -> str:
        return self.router.base_name

    @classmethod
    def from_settings(cls, settings: ServeSettings, registry: CollectorRegistry) -> "Gateway":
        store = open_store(settings.store)
        base = fingerprint_base_model(Path(settings.base_model))
        metrics = GatewayMetrics(registry)
        # One cache folder per store, so two stores' `name@N` never share a path.
        store_key = hashlib.sha256(store.url.encode()).hexdigest()[:12]
        loader = AdapterLoader(store, settings.cache_dir / store_key, base.fingerprint, metrics)
        index = AdapterIndex(store)
        jobs = JobStore(store.backend)
        job_watch = JobWatch(jobs)
        router = AdapterRouter(settings.base_name(), index, loader, metrics.labels, job_watch)
        limits = Limits(
            settings.max_upload_bytes,
            settings.max_files_per_tenant,
            settings.max_queued_jobs_per_tenant,
        )
        fine_tuning = FineTuningAPI(jobs, settings.base_name(), limits)
        gateway = cls(settings, store, index, loader, router, metrics, fine_tuning, job_watch)
        registry.register(JobMetricsCollector(job_watch))
        registry.register(
            GatewayStateCollector(
                gateway.adapter_counts,
                gateway.adapter_bytes,
                lambda: index.alias_moves,
                gateway.adapter_tiers,
                lambda: index.store_reachable,
            )
        )
        return gateway

    def visible_names(self, request: Request) -> list[str]:
        """The store's names this request's API key may use (all, without auth)."""
        key = request_key(request.scope)
        names = self.index.names()
        return names if key is None else [n for n in names if key.may_use(n)]

    async def engine_lora_names(self, state) -> set[str]:
        loaded_ids = await state.engine_client.list_loras()
        requests = state.openai_serving_models.lora_requests
        return {name for name, lora in requests.items() if lora.lora_int_id in loaded_ids}

    async def track_engine(self, state, interval: float) -> None:
        """Keep `in_engine` current for the metrics, which are read synchronously.

        Asks the engine only after engine activity: each question is an RPC to
        the workers, and vLLM's CPU workers spin for a second after every RPC
        they serve (shm_broadcast's SpinCondition), so asking an idle engine
        every 2 s keeps half a core busy. Load and unload update `in_engine`
        themselves.
        """
        seen = None
        while True:
            if self.metrics.engine_activity != seen:
                seen = self.metrics.engine_activity
                self.in_engine = await self.engine_lora_names(state)
            await asyncio.sleep(interval)

    def state_of(self, adapter: AdapterVersion, in_engine: set[str]) -> str:
        if adapter.lora_name in in_engine:
            return "engine"
        if self.loader.local_path(adapter) is not None:
            return "cache"
        return "store"

    def adapter_counts(self) -> dict[str, int]:
        return {
            "store": len(self.index.names()),
            "cache": len(self.loader.cached()),
            "engine": len(self.in_engine),
        }

    def adapter_tiers(self) -> dict[str, int]:
        """Each adapter version counted once, in the nearest tier holding it;
        `store`: names none of whose versions is held nearer."""
        running = set(self.metrics.running_versions)
        cached = {a.lora_name: a.name for a in self.loader.cached()}
        cpu = self.in_engine - running
        disk = cached.keys() - running - cpu
        held = {cached.get(v) or v.partition("@")[0] for v in running | cpu | disk}
        store = sum(1 for name in self.index.names() if name not in held)
        return {"engine": len(running), "cpu": len(cpu), "disk": len(disk), "store": store}

    async def prefetch(self, state, adapters: list[AdapterVersion]) -> None:
        """Fetch, verify and load into vLLM's CPU tier the versions aliases just
        moved to, for adapters this replica has served (a version of theirs is
        in its local cache), so their next request finds the new version
        there. Adapters no request has named stay in the store: with
        thousands of them, every replica loading every publish would only
        churn the CPU tier. At most half the CPU tier per call."""
        served = {a.name for a in self.loader.cached()}
        wanted = [a for a in adapters if a.name in served and a.lora_name not in self.in_engine]
        for adapter in wanted[: max(1, self.settings.max_cpu_loras // 2)]:
            try:
                await self.loader.ensure_local(adapter, count=False)
                await self.load_into_engine(state, adapter, pin=False)
            except Exception as exc:  # a prefetch failure must not stop the watcher
                self.metrics.prefetches.labels("failed").inc()
                logger.warning("prefetch of %s failed: %s", adapter.lora_name, exc)
                continue
            self.metrics.prefetches.labels("loaded").inc()
            logger.info("prefetched %s into the CPU tier", adapter.lora_name)

    def adapter_bytes(self) -> dict[str, int]:
        cached = self.loader.cached()
        return {
            "cache": sum(self.loader.size_of(a) for a in cached),
            "engine": sum(self.loader.size_of(a) for a in cached if a.lora_name in self.in_engine),
        }

    async def load_into_engine(self, state, adapter: AdapterVersion, *, pin: bool) -> LoRARequest:
        """Load through vLLM's own resolver path, so a later request finds it loaded."""
        result = await state.openai_serving_models.resolve_lora(adapter.lora_name)
        if isinstance(result, ErrorResponse):
            raise AdapterNotServable(f"{adapter.lora_name}: {result.error.message}")
        if pin:
            await state.engine_client.pin_lora(result.lora_int_id)
        self.in_engine.add(adapter.lora_name)
        return result

    async def unload_from_engine(self, state, adapter: AdapterVersion) -> bool:
        models = state.openai_serving_models
        async with models.lora_resolver_lock[adapter.lora_name]:
            lora = models.lora_requests.pop(adapter.lora_name, None)
            if lora is None:
                return False
            await state.engine_client.remove_lora(lora.lora_int_id)
            self.in_engine.discard(adapter.lora_name)
            return True

    async def preload(self, state) -> None:
        for ref in self.settings.preload:
            adapter = await self.router.route(ref)
            await self.load_into_engine(state, adapter, pin=True)
            logger.info("preloaded %s", adapter.lora_name)


async def refresh_in_background(gateway: Gateway) -> None:
    try:
        await asyncio.to_thread(gateway.index.refresh)
    except Exception as exc:  # the watcher keeps trying; serving starts regardless
        logger.warning("first read of the adapter store failed: %s", exc)
