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
    max_loras: int = typer.Option(None, help="Adapters in one batch (default 8)."),
    max_lora_rank: int = typer.Option(None, help="Largest rank served (default 16)."),
    max_cpu_loras: int = typer.Option(None, help="Adapters kept in host memory (default 64)."),
    preload: list[str] = typer.Option(None, help="Adapter to load at start (repeatable)."),
    poll_interval: float = typer.Option(None, help="Seconds between store polls."),
    cpu_lora_ops: str = typer.Option(None, help="loraplex (default) or vllm; CPU only."),
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


def register(app: typer.Typer) -> None:
    app.command(context_settings=_PASSTHROUGH)(serve)
