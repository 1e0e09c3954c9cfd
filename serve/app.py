"""Run vLLM's OpenAI server in-process with loraplex's extensions.

This mirrors vLLM's own `build_and_serve` (vllm/entrypoints/launchers/
api_server/entry.py) and adds loraplex between building the app and
serving it: the store-backed resolver, the routing middleware, the model
list and admin routes. vLLM's handlers serve every OpenAI request.
"""

import asyncio
import logging
import os
from argparse import Namespace

from fastapi import FastAPI
from starlette.middleware import Middleware

from loraplex import __version__
from loraplex.serve.auth import AuthMiddleware, KeyRing, load_keys
from loraplex.serve.embedded_worker import EmbeddedWorker
from loraplex.serve.engine_args import parse_vllm_args, size_lora_slots, vllm_argv
from loraplex.serve.estimate_log import log_serving_estimate
from loraplex.serve.fine_tuned import watch_jobs
from loraplex.serve.fine_tuning import router as fine_tuning_routes
from loraplex.serve.gateway import Gateway, refresh_in_background
from loraplex.serve.index import watch
from loraplex.serve.instrument import RequestMetricsMiddleware, instrument_engine
from loraplex.serve.limits import ConcurrencyMiddleware, RequestLimits
from loraplex.serve.resolver import StoreLoRAResolver, install_resolver
from loraplex.serve.routes import router as loraplex_routes
from loraplex.serve.routing import RoutingMiddleware
from loraplex.serve.settings import ServeSettings
from loraplex.serve.slots import SlotPlan

logger = logging.getLogger(__name__)

# vLLM routes that load adapters from arbitrary paths (its own and SageMaker's),
# that let any client rescale the cluster or abort others' requests, or that
# the gateway replaces with its own.
_REMOVED_ROUTES = {
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/adapters",
    "/adapters/{adapter_name}",
    "/scale_elastic_ep",
    "/is_scaling_elastic_ep",
    "/inference/v1/abort_requests",
    "/v1/models",
}


def configure_logging() -> None:
    """loraplex's own log lines, in the same stream and format as vLLM's."""
    root = logging.getLogger("loraplex")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("(loraplex) %(levelname)s %(asctime)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def prepare_environment(settings: ServeSettings) -> None:
    """Environment that vLLM and its engine processes read at start."""
    # vLLM consults LoRA resolvers only with runtime LoRA updating on; the
    # arbitrary-path load routes it also adds are removed in `extend_app`.
    os.environ["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    os.environ["LORAPLEX_CPU_LORA_OPS"] = settings.cpu_lora_ops
    os.environ["LORAPLEX_ADAPTER_MAX_WAIT"] = str(settings.adapter_max_wait)
    for var in ("VLLM_LORA_RESOLVER_CACHE_DIR", "VLLM_LORA_RESOLVER_HF_REPO_LIST"):
        os.environ.pop(var, None)
    # An explicit plugin list must keep 4-bit loading and loraplex's CPU ops.
    if plugins := os.environ.get("VLLM_PLUGINS"):
        needed = ["bitsandbytes", "loraplex_cpu_lora_ops", "loraplex_cpu"]
        names = [p for p in plugins.split(",") if p]
        os.environ["VLLM_PLUGINS"] = ",".join(names + [n for n in needed if n not in names])


def extend_app(app: FastAPI, gateway: Gateway, keyring: KeyRing) -> None:
    settings = gateway.settings
    app.router.routes = [
        r for r in app.router.routes if getattr(r, "path", None) not in _REMOVED_ROUTES
    ]
    app.include_router(loraplex_routes)
    app.include_router(fine_tuning_routes)
    limits = RequestLimits(settings.max_body_bytes, settings.max_tokens_cap, settings.max_n)
    # Outermost first: metrics see every answer, auth guards everything after
    # it, back-pressure counts per key, routing rewrites `model`; all run
    # before vLLM's own middleware. build_app has already built the stack
    # (the SageMaker bootstrap does), so insert and rebuild as that does.
    app.user_middleware[:0] = [
        Middleware(RequestMetricsMiddleware, metrics=gateway.metrics),
        Middleware(AuthMiddleware, keyring=keyring),
        Middleware(
            ConcurrencyMiddleware,
            per_key=settings.max_concurrent_per_key,
            queue_cap=settings.max_queued_requests,
            engine_in_flight=lambda: gateway.metrics.engine_in_flight,
        ),
        Middleware(RoutingMiddleware, router=gateway.router, limits=limits),
    ]
    app.middleware_stack = app.build_middleware_stack()
    app.state.loraplex = gateway


def record_build_info(gateway: Gateway) -> None:
    import vllm

    from loraplex.serve.cpu_lora_ops.plugin import active_cpu_lora_ops

    settings = gateway.settings
    gateway.metrics.build_info.info(
        {
            "version": __version__,
            "vllm_version": vllm.__version__,
            "base_model": gateway.base_name,
            "quantization": settings.quantization,
            "cpu_lora_ops": active_cpu_lora_ops(),
        }
    )


def note_shutdown_requests(engine_client) -> asyncio.Event:
    """Set when vLLM's signal handler (SIGTERM, SIGINT) shuts the engine down,
    which tells a requested stop from an engine that died."""
    requested = asyncio.Event()
    shutdown = engine_client.shutdown

    def _shutdown(*args, **kwargs):
        requested.set()
        return shutdown(*args, **kwargs)

    engine_client.shutdown = _shutdown
    return requested


async def serve(settings: ServeSettings, passthrough: list[str]) -> None:
    configure_logging()
    prepare_environment(settings)
    args = parse_vllm_args(vllm_argv(settings, passthrough))
    slots = size_lora_slots(settings, args, passthrough)
    settings.max_loras = slots.max_loras
    await run(settings, args, slots)


async def run(settings: ServeSettings, args: Namespace, slots: SlotPlan | None = None) -> None:
    import vllm.envs as envs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server
    from vllm.v1.metrics.prometheus import get_prometheus_registry

    keyring = KeyRing(
        load_keys(settings.api_keys_file, settings.api_keys), settings.metrics_require_key
    )
    if not keyring.enabled:
        logger.warning("no API keys configured: every client may use every route")
    gateway = Gateway.from_settings(settings, get_prometheus_registry())
    if slots is not None:
        gateway.metrics.lora_slots.set(slots.max_loras)
        gateway.metrics.lora_slot_bytes.set(slots.slot_bytes or 0)
    await refresh_in_background(gateway)
    listen_address, sock = setup_server(args, reuse_port=False)
    worker = EmbeddedWorker.for_gateway(settings, gateway.store.url)
    async with build_async_engine_client(args) as engine_client, worker:
        install_resolver(StoreLoRAResolver(gateway.loader))
        instrument_engine(engine_client, gateway.metrics)
        shutdown_requested = note_shutdown_requests(engine_client)
        record_build_info(gateway)
        log_serving_estimate(settings, args, engine_client.vllm_config)
        supported_tasks = await engine_client.get_supported_tasks()
        app = build_app(args, supported_tasks, engine_client.model_config)
        extend_app(app, gateway, keyring)
        await init_app_state(engine_client, app.state, args, supported_tasks)
        await gateway.preload(app.state)
        interval = settings.effective_poll_interval(gateway.store.url)
        background = [
            asyncio.create_task(
                watch(gateway.index, interval, lambda moved: gateway.prefetch(app.state, moved))
            ),
            asyncio.create_task(gateway.track_engine(app.state, interval=2.0)),
            asyncio.create_task(watch_jobs(gateway.job_watch, max(interval, 1.0))),
        ]
        logger.info("loraplex gateway on %s (store %s)", listen_address, gateway.store.url)
        shutdown_task = await serve_http(
            app,
            sock=sock,
            host=args.host,
            port=args.port,
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
        )
        # The server has stopped. Was it asked to (SIGTERM), or did the engine die?
        asked_to_stop = shutdown_requested.is_set()
        for task in background:
            task.cancel()
    try:
        await shutdown_task
    finally:
        sock.close()
    if not asked_to_stop:
        # Nobody asked for a shutdown: vLLM's watchdog stopped the server
        # because the engine died. Exit non-zero so Kubernetes restarts the pod.
        raise SystemExit("the vLLM engine died; exiting so the pod restarts")
