"""Where the metrics are measured: HTTP requests at the edge, engine requests at
the engine client.

- `RequestMetricsMiddleware` (outermost ASGI middleware) times every request
  by adapter, route template and status, errors included. The routing
  middleware inside it leaves the request's adapter label in
  `scope["state"]`.
- `instrument_engine` wraps the engine client's `generate` and `add_lora`:
  each finished engine request carries vLLM's own per-request stats, which
  give time to first token and time per output token for streamed and
  non-streamed requests alike, and the LoRA it ran with.
"""

import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.routing import Match

from loraplex.serve.metrics import BASE, GatewayMetrics, observe_request_output

ADAPTER_LABEL_KEY = "loraplex_adapter_label"


class RequestMetricsMiddleware:
    def __init__(self, app, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        status = 500
        started = time.perf_counter()

        async def _send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.metrics.request_duration.labels(
                state.get(ADAPTER_LABEL_KEY, BASE), _route_template(scope), str(status)
            ).observe(time.perf_counter() - started)


def _route_template(scope) -> str:
    """The matched route's path template, so client-chosen paths add no labels."""
    for route in scope["app"].router.routes:
        path = getattr(route, "path", None)
        if path is not None and route.matches(scope)[0] == Match.FULL:
            return path
    return "other"


def adapter_label(metrics: GatewayMetrics, lora_request: Any) -> str:
    if lora_request is None:
        return BASE
    return metrics.labels.for_adapter(lora_request.lora_name.partition("@")[0])


def instrument_engine(engine_client, metrics: GatewayMetrics) -> None:
    """Wrap the engine client's methods in place, before vLLM's serving objects use it."""
    generate = engine_client.generate
    add_lora = engine_client.add_lora

    async def instrumented_generate(*args, **kwargs) -> AsyncGenerator:
        lora = kwargs.get("lora_request")
        adapter = adapter_label(metrics, lora)
        version = lora.lora_name if lora is not None else None
        if version is not None:
            metrics.running_versions[version] += 1
        metrics.in_flight.labels(adapter).inc()
        metrics.engine_in_flight += 1
        metrics.engine_activity += 1
        first = last = None
        try:
            async for output in generate(*args, **kwargs):
                first = first or output
                last = output
                yield output
        finally:
            if version is not None:
                metrics.running_versions[version] -= 1
                if not metrics.running_versions[version]:
                    del metrics.running_versions[version]
            metrics.in_flight.labels(adapter).dec()
            metrics.engine_in_flight -= 1
            metrics.engine_activity += 1
            if last is not None and last.finished:
                observe_request_output(metrics, adapter, first, last)

    async def instrumented_add_lora(lora_request) -> bool:
        started = time.perf_counter()
        metrics.engine_activity += 1
        try:
            loaded = await add_lora(lora_request)
        except BaseException:
            metrics.load_failures.labels("engine").inc()
            raise
        metrics.load_seconds.observe(time.perf_counter() - started)
        return loaded

    engine_client.generate = instrumented_generate
    engine_client.add_lora = instrumented_add_lora
