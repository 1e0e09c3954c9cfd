"""loraplex's Prometheus metrics, in the same registry (and `/metrics`) as vLLM's.

vLLM exports engine-wide `vllm:*` metrics and nothing per adapter; these add
the per-adapter view. Label values are bounded: `adapter` is only ever a
name that exists in the store, `base`, `unknown` (whatever a client sent
that did not resolve) or `other` (past the cap), so no client can create
label values.
"""

import collections
import time
from collections.abc import Callable, Iterable

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

BASE, UNKNOWN, OTHER = "base", "unknown", "other"
LOAD_FAILURE_REASONS = ("not_servable", "integrity", "store_unavailable", "engine")
# From a cached 5 ms answer to a 10-minute generation.
REQUEST_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    20,
    30,
    60,
    120,
    300,
    600,
)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class AdapterLabels:
    """Maps what a request named to a bounded `adapter` label value."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self._seen: set[str] = set()

    def for_adapter(self, name: str) -> str:
        """`name` must be one the store resolved; past the cap it folds into `other`."""
        if name in self._seen:
            return name
        if len(self._seen) >= self.max_values:
            return OTHER
        self._seen.add(name)
        return name


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, max_adapter_labels: int = 100) -> None:
        self.labels = AdapterLabels(max_adapter_labels)
        self.engine_in_flight = 0  # all adapters; read by the back-pressure middleware
        # Bumped by every engine request and adapter load: what can change the
        # engine's set of loaded LoRAs (see Gateway.track_engine).
        self.engine_activity = 0
        # `name@N` → its requests in the engine now: the `engine` tier.
        self.running_versions: collections.Counter[str] = collections.Counter()
        adapter_route_status = ["adapter", "route", "status"]
        self.request_duration = Histogram(
            "loraplex_request_duration_seconds",
            "HTTP request duration through the gateway, by adapter, route and status.",
            adapter_route_status,
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "loraplex_time_to_first_token_seconds",
            "Time from the engine receiving a request to its first output token.",
            ["adapter"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "loraplex_time_per_output_token_seconds",
            "Mean time per output token after the first, per request.",
            ["adapter"],
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "loraplex_prompt_tokens", "Prompt tokens processed.", ["adapter"], registry=registry
        )
        self.completion_tokens = Counter(
            "loraplex_completion_tokens", "Output tokens generated.", ["adapter"], registry=registry
        )
        self.in_flight = Gauge(
            "loraplex_requests_in_flight",
            "Engine requests running or waiting.",
            ["adapter"],
            registry=registry,
        )
        self.fetch_seconds = Histogram(
            "loraplex_adapter_fetch_seconds",
            "Fetching and verifying an adapter version from the store into the local cache.",
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.load_seconds = Histogram(
            "loraplex_adapter_load_seconds",
            "Loading an adapter version into the engine (after the fetch).",
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.cache_hits = Counter(
            "loraplex_adapter_cache_hits", "Requests whose adapter was already local.",
            registry=registry,
        )  # fmt: skip
        self.cache_misses = Counter(
            "loraplex_adapter_cache_misses", "Requests that fetched their adapter.",
            registry=registry,
        )  # fmt: skip
        self.load_failures = Counter(
            "loraplex_adapter_load_failures",
            "Adapter versions refused or failed at fetch or load, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in LOAD_FAILURE_REASONS:  # at 0 from the start, so rate() sees the first
            self.load_failures.labels(reason)
        self.prefetches = Counter(
            "loraplex_adapter_prefetches",
            "Adapter versions fetched, verified and loaded into vLLM's CPU tier ahead of "
            "need (after a publish or an alias move), by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("loaded", "failed"):
            self.prefetches.labels(outcome)
        self.lora_slots = Gauge(
            "loraplex_lora_slots",
            "LoRA slots: distinct adapters one batch may hold (--max-loras).",
            registry=registry,
        )
        self.lora_slot_bytes = Gauge(
            "loraplex_lora_slot_bytes",
            "Memory of one LoRA slot: max rank x sum(in+out) of adaptable layers x dtype bytes.",
            registry=registry,
        )
        self.build_info = Info(
            "loraplex_build", "loraplex and vLLM versions, base model, quantization.",
            registry=registry,
        )  # fmt: skip


def observe_request_output(metrics: GatewayMetrics, adapter: str, first, last) -> None:
    """Record one finished engine request from its first and last RequestOutput.

    Streamed requests get delta outputs, so counts come from the first output
    (the prompt) and vLLM's per-request stats on the last (cumulative).
    """
    metrics.prompt_tokens.labels(adapter).inc(len(first.prompt_token_ids or ()))
    stats = last.metrics
    if stats is None:  # engine started with --disable-log-stats
        metrics.completion_tokens.labels(adapter).inc(sum(len(c.token_ids) for c in last.outputs))
        return
    metrics.completion_tokens.labels(adapter).inc(stats.num_generation_tokens)
    if not stats.first_token_ts:
        return
    metrics.ttft.labels(adapter).observe(stats.first_token_latency)
    if stats.num_generation_tokens > 1:
        decode = stats.last_token_ts - stats.first_token_ts
        metrics.tpot.labels(adapter).observe(decode / (stats.num_generation_tokens - 1))


class GatewayStateCollector(Collector):
    """Values read at scrape time: adapters by state, alias moves seen, whether
    the store answers, the device's memory (NVML on a GPU, host RAM on the CPU), this process's
    resident set, and the adapter weights held per tier."""

    def __init__(
        self,
        adapter_counts: Callable[[], dict[str, int]],
        adapter_bytes: Callable[[], dict[str, int]],
        alias_moves: Callable[[], int],
        adapter_tiers: Callable[[], dict[str, int]] = dict,
        store_reachable: Callable[[], bool] = lambda: True,
    ) -> None:
        self._adapter_tiers = adapter_tiers
        self._store_reachable = store_reachable
        self._adapter_counts = adapter_counts
        self._adapter_bytes = adapter_bytes
        self._alias_moves = alias_moves
        self._process = psutil.Process()

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield _labelled(
            "loraplex_adapters",
            "Adapter versions by state: store (names in the store), cache (versions fetched "
            "locally), engine (versions loaded in the engine).",
            "state",
            self._adapter_counts(),
        )
        yield _labelled(
            "loraplex_adapter_loaded",
            "Adapters by the nearest tier holding them: engine (requests running), cpu "
            "(vLLM's CPU LRU tier), disk (verified local cache), store (only in the store).",
            "tier",
            self._adapter_tiers(),
        )
        yield CounterMetricFamily(
            "loraplex_alias_moves", "Alias moves the gateway has seen in the store.",
            value=self._alias_moves(),
        )  # fmt: skip
        reachable = GaugeMetricFamily(
            "loraplex_store_reachable",
            "1 if the last poll of the adapter store succeeded, 0 while it fails "
            "(adapters already cached keep serving).",
        )
        reachable.add_metric([], float(self._store_reachable()))
        yield reachable
        used, total, device = device_memory()
        yield _labelled(
            "loraplex_device_memory_used_bytes", "Device memory in use.", "device", {device: used}
        )
        yield _labelled(
            "loraplex_device_memory_total_bytes", "Device memory in all.", "device", {device: total}
        )
        rss = GaugeMetricFamily(
            "loraplex_process_resident_memory_bytes", "Resident memory of the gateway process."
        )
        rss.add_metric([], self._process.memory_info().rss)
        yield rss
        yield _labelled(
            "loraplex_adapter_memory_bytes",
            "Bytes of adapter weights held, by tier (local cache, loaded in the engine).",
            "tier",
            self._adapter_bytes(),
        )


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def device_memory() -> tuple[int, int, str]:
    """(used, total, device): GPU 0 through NVML when there is one, else host memory."""
    try:
        import pynvml

        pynvml.nvmlInit()
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
        return int(info.used), int(info.total), "cuda:0"
    except Exception:  # no NVML library or no GPU: report the host
        vm = psutil.virtual_memory()
        return int(vm.total - vm.available), int(vm.total), "cpu"


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started
