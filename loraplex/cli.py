"""The `loraplex` command: the composition root.

It wires the subcommands of each package and imports them lazily: each
package's `cli` module imports only typer at load time and its heavy
dependencies (torch, transformers, vLLM) inside the command body, so
`loraplex adapters ...` never loads torch or vLLM.
"""

import typer

from loraplex.adapters.cli import app as adapters_app
from loraplex.base_models.cli import register as register_base_model_commands

app = typer.Typer(
    name="loraplex",
    help="One quantized base model, many LoRA adapters, one OpenAI-compatible endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: it wraps at any width, where rich's tables cut long
    # option names ("--gradient-checkp…") and read "[env X]" as markup.
    rich_markup_mode=None,
)
app.add_typer(adapters_app, name="adapters", help="Publish, inspect and manage adapters.")
register_base_model_commands(app)

try:  # serve and train are only present when their packages are complete
    from loraplex.serve.cli import register as register_serve_commands

    register_serve_commands(app)
except ImportError:  # pragma: no cover - transitional
    pass
try:
    from loraplex.evaluate.cli import register as register_eval_commands

    register_eval_commands(app, adapters_app)
except ImportError:  # pragma: no cover - transitional
    pass
try:
    from loraplex.trainer.cli import register as register_train_commands

    register_train_commands(app)
except ImportError:  # pragma: no cover - transitional
    pass
try:
    from loraplex.estimate.cli import register as register_estimate_commands

    register_estimate_commands(app)
except ImportError:  # pragma: no cover - transitional
    pass
try:
    from loraplex.worker.cli import register as register_worker_commands

    register_worker_commands(app)
except ImportError:  # pragma: no cover - transitional
    pass


if __name__ == "__main__":
    app()
