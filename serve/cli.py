"""`loraplex serve`: the gateway's command line.

Only typer is imported at load time; vLLM loads inside the command. Every
flag also has a `LORAPLEX_` environment variable (serve/settings.py), and
arguments loraplex does not know go to vLLM unchanged.
"""

from pathlib import Path

import typer

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def serve(
    ctx: typer.Context,
    base_model: str = typer.Option(
        None, help="Base model dir or known name (default: SmolLM2-135M-Instruct)."
    ),
    store: str = typer.Option(None, help="Adapter store URL [env LORAPLEX_STORE]."),
    cache_dir: Path = typer.Option(None, help="Local adapter cache [env LORAPLEX_CACHE_DIR]."),
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default 8000)."),
    served_model_name: str = typer.Option(None, help="Name of the base model for clients."),
    quantization: str = typer.Option(
        None, help="bitsandbytes (default, 4-bit NF4), none, or a vLLM method."
    ),
    max_loras: int = typer.Option(None, help="Adapters in one batch (default: sized)."),
    lora_slot_budget_mib: int = typer.Option(None, help="LoRA slot memory cap, MiB."),
    max_lora_rank: int = typer.Option(None, help="Largest rank served (default 16)."),
    max_cpu_loras: int = typer.Option(None, help="Adapters kept in host memory (default 64)."),
    preload: list[str] = typer.Option(
        None, metavar="REF", help="Adapter to load at start (repeatable)."
    ),
    poll_interval: float = typer.Option(None, help="Seconds between store polls."),
    scheduler: str = typer.Option(None, help="Admission: loraplex (default) or vllm."),
    adapter_max_wait: float = typer.Option(None, help="Max s an adapter waits for a slot (2)."),
    cpu_lora_ops: str = typer.Option(None, help="loraplex (default), grouped or vllm; CPU only."),
    api_keys_file: Path = typer.Option(None, help="JSON API keys (see `loraplex new-key`)."),
    metrics_require_key: bool = typer.Option(None, help="Put /metrics behind a key."),
    max_body_bytes: int = typer.Option(None, help="Largest request body (default 4 MiB)."),
    max_tokens_cap: int = typer.Option(None, help="Largest max_tokens a request may ask."),
    max_n: int = typer.Option(None, help="Largest n per request (default 8)."),
    max_concurrent_per_key: int = typer.Option(None, help="Running requests per key (64)."),
    max_queued_requests: int = typer.Option(None, help="Engine requests before 503 (1024)."),
    drain_seconds: int = typer.Option(None, help="SIGTERM grace for running requests (30)."),
    embedded_worker: bool = typer.Option(
        None,
        "--embedded-worker/--no-embedded-worker",
        help="Run a fine-tuning worker as a child (default: on with a local store).",
    ),
    worker_arg: list[str] = typer.Option(
        None, "--worker-arg", metavar="ARG", help="Extra `loraplex worker` argument (repeatable)."
    ),
    max_upload_bytes: int = typer.Option(None, help="Largest /v1/files upload (512 MiB)."),
    max_files_per_tenant: int = typer.Option(None, help="Files one tenant may keep (100)."),
    max_queued_jobs_per_tenant: int = typer.Option(None, help="Waiting jobs per tenant (5)."),
    default_tenant: str = typer.Option(None, help="Tenant when no API keys are set (default)."),
) -> None:
    """Serve the base model and every adapter of the store on one OpenAI endpoint.

    Extra arguments are passed to vLLM's server unchanged (e.g. --dtype float32).
    """
    import uvloop
    from pydantic import ValidationError

    from loraplex.base_models.registry import resolve_base_model
    from loraplex.serve.app import serve as run_gateway
    from loraplex.serve.settings import ServeSettings

    flags = {k: v for k, v in ctx.params.items() if v not in (None, [])}
    if "worker_arg" in flags:
        flags["worker_args"] = flags.pop("worker_arg")
    try:
        settings = ServeSettings(**flags)
        settings.base_model = str(resolve_base_model(settings.base_model))
    except ValidationError as exc:
        raise typer.BadParameter(_first_error(exc)) from None
    uvloop.run(run_gateway(settings, list(ctx.args)))


def _first_error(exc) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "settings"
    return f"{where}: {err['msg']}"


def new_key(
    name: str = typer.Option(..., help="Who the key is for (shown in errors and logs)."),
    role: str = typer.Option("inference", help="inference or admin."),
    adapter: list[str] = typer.Option(
        ["*"], metavar="PATTERN", help="Adapter name pattern it may use."
    ),
) -> None:
    """Make an API key: prints the key once, and the entry for the keys file (its hash)."""
    import json
    import secrets

    from loraplex.serve.auth import ApiKey, hash_key

    key = f"lpx-{secrets.token_urlsafe(32)}"
    entry = ApiKey(name=name, sha256=hash_key(key), role=role, adapters=adapter)
    typer.echo(f"key (shown once): {key}", err=True)
    typer.echo(json.dumps(entry.model_dump()))


def register(app: typer.Typer) -> None:
    app.command(context_settings=_PASSTHROUGH)(serve)
    app.command("new-key")(new_key)
