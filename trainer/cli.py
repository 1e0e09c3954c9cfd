"""`loraplex train`: the trainer's command line.

A thin layer: flags become dotted overrides of the YAML config
(config.py), the base model name is resolved (loraplex.base_models), and
`train.train` runs. Only typer is imported at load time; torch and
transformers load inside the command. A user's mistake is one line on
stderr and exit status 1, never a traceback.

Under torchrun every rank runs this same command; rank 0 alone logs and
prints, and a mistake every rank makes alike (config, data) is reported by
rank 0 only. `--nproc-per-node N` checks the config and the data here, once,
then hands the process over to torchrun (`torch.distributed.run`) on this
machine, which starts N ranks of the same command.
"""

import logging
import os
import sys
from pathlib import Path

import typer

# Set by `--nproc-per-node` for the ranks it starts: the data was checked and reported.
DATA_CHECKED = "LORAPLEX_DATA_CHECKED"
# flag name → dotted setting it overrides
FLAG_SETTINGS = {
    "base_model": "base_model",
    "method": "method",
    "data": "data.train",
    "eval_data": "data.eval",
    "eval_fraction": "data.eval_fraction",
    "data_format": "data.format",
    "max_length": "data.max_length",
    "too_long": "data.too_long",
    "packing": "data.packing",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "target_modules": "lora.target_modules",
    "rslora": "lora.use_rslora",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "grad_accum": "training.grad_accum",
    "lr": "training.learning_rate",
    "lr_scheduler": "training.lr_scheduler",
    "warmup_ratio": "training.warmup_ratio",
    "seed": "training.seed",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "checkpoint_every": "training.checkpoint_every",
    "keep_checkpoints": "training.keep_checkpoints",
    "device": "training.device",
    "distributed": "training.distributed",
    "output": "output.dir",
    "publish": "output.publish",
    "alias": "output.aliases",
    "store": "output.store",
    "max_rank": "output.max_rank",
}


def train(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (flags override it)."),
    base_model: str = typer.Option(None, help="Base model dir or known name (default SmolLM2)."),
    method: str = typer.Option(None, help="qlora (4-bit NF4 base) or lora (bf16/fp32 base)."),
    data: list[Path] = typer.Option(None, metavar="PATH", help="Training JSONL file (repeatable)."),
    eval_data: list[Path] = typer.Option(
        None, metavar="PATH", help="Evaluation JSONL file (repeatable)."
    ),
    eval_fraction: float = typer.Option(None, help="Hold out this fraction of train for eval."),
    data_format: str = typer.Option(
        None, "--format", help="auto, chat, prompt-completion or alpaca."
    ),
    max_length: int = typer.Option(None, help="Most tokens per example."),
    too_long: str = typer.Option(None, help="drop or truncate examples over max length."),
    packing: bool = typer.Option(None, "--packing/--no-packing", help="Pack examples."),
    lora_r: int = typer.Option(None, help="LoRA rank."),
    lora_alpha: float = typer.Option(None, help="LoRA alpha."),
    lora_dropout: float = typer.Option(None, help="LoRA dropout."),
    target_modules: list[str] = typer.Option(
        None, metavar="NAME", help="Module to adapt (repeatable)."
    ),
    rslora: bool = typer.Option(None, "--rslora/--no-rslora", help="Rank-stabilised LoRA."),
    epochs: int = typer.Option(None, help="Passes over the data."),
    batch_size: str = typer.Option(
        None, metavar="N|auto", help="Sequences per micro-batch; auto (default) fits the data."
    ),
    grad_accum: int = typer.Option(None, help="Micro-batches per optimizer step."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    lr_scheduler: str = typer.Option(None, help="cosine, linear or constant."),
    warmup_ratio: float = typer.Option(None, help="Fraction of steps warming up."),
    seed: int = typer.Option(None, help="Random seed."),
    gradient_checkpointing: bool = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Save memory."
    ),
    checkpoint_every: int = typer.Option(None, help="Checkpoint every N steps (0: never)."),
    keep_checkpoints: int = typer.Option(None, min=1, help="Newest checkpoints kept on disk."),
    device: str = typer.Option(None, help="auto, cpu or cuda."),
    distributed: str = typer.Option(
        None, help="Across ranks: ddp, fsdp (FSDP2, not with qlora) or auto (ddp)."
    ),
    nproc_per_node: int = typer.Option(
        None, min=1, help="Start this many ranks on this machine (hands over to torchrun)."
    ),
    output: Path = typer.Option(None, help="Run directory (default runs/<name>)."),
    publish: str = typer.Option(None, help="Publish the adapter under this name."),
    alias: list[str] = typer.Option(
        None, metavar="NAME", help="Alias for the new version (repeatable)."
    ),
    store: str = typer.Option(None, help="Adapter store URL [env LORAPLEX_STORE]."),
    max_rank: int = typer.Option(None, help="Largest rank the server serves."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output."),
    show_example: bool = typer.Option(
        False, "--show-example", help="Print the first example, trained tokens marked; exit."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    preflight: bool = typer.Option(
        True, "--preflight/--no-preflight", help="On CUDA, stop early if it cannot fit."
    ),
) -> None:
    """Fine-tune a LoRA or QLoRA adapter and (with --publish) put it in the store."""
    given = dict(locals())
    flags = {name: given[name] for name in FLAG_SETTINGS if given[name] not in (None, [], ())}
    log_to_stderr()
    try:
        if nproc_per_node is not None and "TORCHELASTIC_RUN_ID" not in os.environ:
            check_then_launch(config, flags, nproc_per_node)
        run(config, flags, resume=resume, show=show_example, progress=progress, preflight=preflight)
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: nothing was published; run again with --resume to continue "
            "(from the last checkpoint, if --checkpoint-every was set)",
            err=True,
        )
        raise typer.Exit(130) from None
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        if rank() == 0 or not same_on_every_rank(exc):
            typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def log_to_stderr() -> None:
    """The trainer's log lines (data problems, summaries) as plain lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("loraplex.trainer")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO if rank() == 0 else logging.ERROR)
    if os.environ.get(DATA_CHECKED):  # the launcher has reported the data already
        logging.getLogger("loraplex.trainer.data").setLevel(logging.ERROR)
    logger.propagate = False


def run(
    config_path: Path | None,
    flags: dict,
    *,
    resume: bool,
    show: bool,
    progress: bool,
    preflight: bool = True,
):
    from loraplex.base_models.registry import resolve_base_model
    from loraplex.trainer.config import load_config

    overrides = {FLAG_SETTINGS[name]: value for name, value in flags.items()}
    config = load_config(config_path, overrides)
    base_model = resolve_base_model(config.base_model)
    if show:
        from loraplex.trainer.train import preview

        typer.echo(preview(config, base_model, color=sys.stdout.isatty()))
        return
    if preflight:  # estimate vs free CUDA memory before the model loads (loraplex.estimate)
        from loraplex.estimate.preflight import check_fits

        check_fits(config, base_model)
    from loraplex.trainer.train import train as run_training

    if rank() != 0:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # rank 0's bars are enough

    result = run_training(config, base_model, resume=resume, progress=progress)
    if rank() == 0:
        typer.echo(result.manifest.ref if result.manifest else str(result.adapter_dir))


def check_then_launch(config_path: Path | None, flags: dict, nproc: int) -> None:
    """Check the config and the data once, then become torchrun with `nproc` ranks."""
    from loraplex.base_models.registry import resolve_base_model
    from loraplex.trainer.config import load_config
    from loraplex.trainer.model import load_tokenizer
    from loraplex.trainer.train import load_data

    overrides = {FLAG_SETTINGS[name]: value for name, value in flags.items()}
    config = load_config(config_path, overrides)
    load_data(config, load_tokenizer(resolve_base_model(config.base_model)))
    if sys.argv[1:2] != ["train"]:
        raise RuntimeError(f"cannot find the train command's arguments in {sys.argv}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", "-m", "loraplex.cli", "train"]
    command += without_nproc(sys.argv[2:])
    sys.stderr.flush()
    os.execve(sys.executable, command, {**os.environ, DATA_CHECKED: "1"})


def without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    return kept


def user_error(exc: Exception) -> str | None:
    """The one-line message for a user's mistake; None for a bug (shown with its traceback)."""
    from loraplex.adapters.errors import AdapterError
    from loraplex.base_models.errors import BaseModelUnavailable
    from loraplex.trainer.errors import TrainError

    if isinstance(exc, TrainError | AdapterError | BaseModelUnavailable):
        return str(exc)
    return None


def same_on_every_rank(exc: Exception) -> bool:
    """Mistakes in the config or the data: every rank finds them, rank 0 reports them."""
    from loraplex.trainer.errors import ConfigError, DataError, ResumeError, TemplateError

    return isinstance(exc, ConfigError | DataError | TemplateError | ResumeError)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
