"""`loraplex worker`: run fine-tuning jobs from the store. Only typer loads at import."""

from pathlib import Path

import typer


def worker(
    store: str = typer.Option(None, help="Adapter store URL [env LORAPLEX_STORE]."),
    base_model: str = typer.Option(
        "smollm2-135m-instruct", help="Base model dir or known name: what jobs train on."
    ),
    workdir: Path = typer.Option(Path(".loraplex/worker"), help="Where runs are kept."),
    method: str = typer.Option("qlora", help="qlora (4-bit base, the served one) or lora."),
    lease_seconds: float = typer.Option(30.0, help="A silent worker's job is taken back after."),
    poll_seconds: float = typer.Option(1.0, help="Seconds between looks at the queue."),
    max_attempts: int = typer.Option(3, help="Claims of one job before a lost worker fails it."),
    checkpoint_every: int = typer.Option(10, help="Checkpoint (and upload) every N steps."),
    min_examples: int = typer.Option(10, help="Fewest valid training examples a job may have."),
    max_rank: int = typer.Option(16, help="Largest LoRA rank the gateway serves."),
    nproc_per_node: int = typer.Option(None, min=1, help="Ranks per job (torchrun) on GPUs."),
    trainer_arg: list[str] = typer.Option(
        None, metavar="ARG", help="Extra `loraplex train` argument (repeatable)."
    ),
    once: bool = typer.Option(False, "--once", help="Run what is queued now, then exit."),
) -> None:
    """Claim queued fine-tuning jobs one at a time and train them (OpenAI's fine-tuning API)."""
    import logging

    from loraplex.adapters.errors import AdapterError
    from loraplex.base_models.errors import BaseModelUnavailable
    from loraplex.base_models.registry import resolve_base_model
    from loraplex.worker.settings import WorkerSettings
    from loraplex.worker.worker import run_worker

    logging.basicConfig(format="(loraplex worker) %(levelname)s %(asctime)s %(message)s")
    logging.getLogger("loraplex.worker").setLevel(logging.INFO)
    try:
        base = Path(resolve_base_model(base_model))
        settings = WorkerSettings(
            store=store, base_model=base, workdir=workdir,
            method=method, lease_seconds=lease_seconds, poll_seconds=poll_seconds,
            max_attempts=max_attempts, checkpoint_every=checkpoint_every,
            min_examples=min_examples, max_rank=max_rank, nproc_per_node=nproc_per_node,
            trainer_args=list(trainer_arg or []),
        )  # fmt: skip
        run_worker(settings, once=once)
    except (AdapterError, BaseModelUnavailable) as exc:  # a bad store or base model
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
