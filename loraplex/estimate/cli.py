"""`loraplex estimate train|serve`: a thin layer over estimate_training / estimate_serving.

`estimate train` takes exactly `loraplex train`'s config and flags (its
signature is built from trainer/cli.py's, so the two cannot drift) plus the
device; `estimate serve` takes `loraplex serve`'s sizing flags. Only typer is
imported at load time. A user's mistake is one line on stderr, exit 1.
"""

import inspect
import json
from pathlib import Path

import typer

from loraplex.trainer.cli import FLAG_SETTINGS
from loraplex.trainer.cli import train as train_command

app = typer.Typer(
    help="Will it fit, and how long will it take: memory and time before anything loads.",
    no_args_is_help=True,
)
# `loraplex train` flags that do not change what a run needs
_NOT_FOR_ESTIMATE = {"resume", "show_example", "progress", "preflight"}
PLACEHOLDER_DATA = "<no data: full rows>"


def _estimate_options() -> list[inspect.Parameter]:
    def option(name: str, default, annotation) -> inspect.Parameter:
        kind = inspect.Parameter.KEYWORD_ONLY
        return inspect.Parameter(name, kind, default=default, annotation=annotation)

    return [
        option("gpu", typer.Option(None, help="GPU to size for: h100, a100-80g, l4..."), str),
        option(
            "device_memory",
            typer.Option(None, help="Memory of the device, e.g. 24GiB (overrides --gpu's)."),
            str,
        ),
        option("as_json", typer.Option(False, "--json", help="Print the estimate as JSON."), bool),
    ]


def estimate_train(**kwargs) -> None:
    """Peak memory per device of a `loraplex train` run (and its time, when data is named)."""
    flags = {n: kwargs[n] for n in FLAG_SETTINGS if kwargs.get(n) not in (None, [], ())}
    ranks = kwargs.get("nproc_per_node") or 1
    _run(lambda: _train(kwargs.get("config"), flags, kwargs["gpu"], kwargs["device_memory"], ranks),
         kwargs["as_json"])  # fmt: skip


def _train_signature() -> inspect.Signature:
    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, p in inspect.signature(train_command).parameters.items()
        if name not in _NOT_FOR_ESTIMATE
    ]
    return inspect.Signature(params + _estimate_options())


estimate_train.__signature__ = _train_signature()


def _train(
    config_path: Path | None, flags: dict, gpu: str | None, device_memory: str | None, ranks: int
):
    from loraplex.base_models.registry import resolve_base_model
    from loraplex.estimate.train import estimate_training, smallest_change_that_fits
    from loraplex.trainer.config import load_config

    overrides = {FLAG_SETTINGS[name]: value for name, value in flags.items()}
    config = load_config(config_path, {**_placeholder_data(config_path, overrides), **overrides})
    with_data = PLACEHOLDER_DATA not in map(str, config.data.train)
    base_model = resolve_base_model(config.base_model)
    device = local_or_named_device(config.training.device, gpu, device_memory)
    # The time is one process's: a run across ranks is not timed.
    estimate = estimate_training(
        config, base_model, device, with_data=with_data, with_time=with_data and ranks == 1,
        ranks=ranks,
    )  # fmt: skip
    if estimate.fits is False:
        change = smallest_change_that_fits(config, base_model, device, ranks)
        estimate.notes.append(f"would fit with {change}" if change else "no single change fits")
    return estimate


def _placeholder_data(config_path: Path | None, overrides: dict) -> dict:
    """Data is optional for an estimate: without it, full rows of max_length are assumed."""
    if "data.train" in overrides:
        return {}
    if config_path is not None:
        import yaml

        try:
            raw = yaml.safe_load(Path(config_path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}  # load_config reports it
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict) and raw["data"].get("train"):
            return {}
    return {"data.train": [PLACEHOLDER_DATA]}


def local_or_named_device(setting: str, gpu: str | None, device_memory: str | None):
    """--gpu / --device-memory if given; else this machine's CUDA device (free memory) or CPU."""
    from loraplex.estimate.devices import Device, cpu_device, parse_memory, pick_device

    if gpu or device_memory or setting == "cpu":
        return pick_device(gpu, device_memory, cpu=setting == "cpu" and not gpu)
    import torch

    if torch.cuda.is_available() and setting != "cpu":
        free, _ = torch.cuda.mem_get_info()
        return Device(torch.cuda.get_device_name(), "cuda", free, None)
    return cpu_device(parse_memory(device_memory) if device_memory else None)


def estimate_serve(
    base_model: str = typer.Option(None, help="Base model dir or known name (default SmolLM2)."),
    quantization: str = typer.Option("bitsandbytes", help="bitsandbytes, none, fp8, awq, ..."),
    dtype: str = typer.Option("auto", help="auto, bfloat16, float16 or float32."),
    max_model_len: int = typer.Option(None, help="Longest sequence (default: the model's)."),
    max_loras: int = typer.Option(8, help="Adapters in one batch (LoRA slots)."),
    max_lora_rank: int = typer.Option(16, help="Largest adapter rank served."),
    gpu_memory_utilization: float = typer.Option(0.9, help="Share of GPU memory vLLM takes."),
    gpu: str = typer.Option(None, help="GPU to size for (default: the CPU backend)."),
    device_memory: str = typer.Option(None, help="Memory of the GPU, e.g. 24GiB."),
    kv_cache_space: str = typer.Option(
        None, help="CPU: KV cache size [env VLLM_CPU_KVCACHE_SPACE, GiB]."
    ),
    cpu_lora_ops: str = typer.Option(
        "loraplex", help="CPU: loraplex (its fused copies count), grouped or vllm."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Weights, LoRA slots and KV cache of `loraplex serve` with these settings."""

    def run():
        from loraplex.base_models.registry import resolve_base_model
        from loraplex.estimate.devices import parse_memory, pick_device
        from loraplex.estimate.serve import estimate_serving

        device = pick_device(gpu, device_memory, cpu=False) if gpu or device_memory else None
        return estimate_serving(
            resolve_base_model(base_model),
            quantization=quantization,
            dtype=dtype,
            max_model_len=max_model_len,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            gpu_memory_utilization=gpu_memory_utilization,
            device=device,
            kv_cache_space_bytes=parse_memory(kv_cache_space) if kv_cache_space else None,
            cpu_lora_ops=cpu_lora_ops,
        )

    _run(run, as_json)


def _run(make, as_json: bool) -> None:
    from loraplex.estimate import report
    from loraplex.estimate.errors import EstimateError
    from loraplex.estimate.results import TrainEstimate
    from loraplex.trainer.cli import user_error

    try:
        estimate = make()
    except EstimateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(estimate.to_dict(), indent=2))
    elif isinstance(estimate, TrainEstimate):
        typer.echo(report.train_table(estimate))
    else:
        typer.echo(report.serve_table(estimate))


app.command("train")(estimate_train)
app.command("serve")(estimate_serve)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="estimate")
