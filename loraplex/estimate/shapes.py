"""The micro-batches a run will see: from the config alone, or from the real data.

With data, the examples are tokenized and planned exactly as the trainer
does (dataset.py, plan.py) and each micro-batch is laid out as packing.py
lays it out: packed rows padded to the longest row, or (per-example
attention on the CPU) all examples end to end, or one padded example per
row. The largest micro-batch sets the peak; the sum sets the time.
"""

from dataclasses import dataclass
from pathlib import Path

from loraplex.estimate.errors import EstimateError
from loraplex.estimate.results import Shapes
from loraplex.trainer.config import TrainConfig


def from_config(config: TrainConfig) -> Shapes:
    """No data: full rows of max_length, every token trained (the worst case).

    `batch_size: auto` is at most FULL_BATCH rows (plan.auto_batching), so that many.
    """
    from loraplex.trainer.plan import FULL_BATCH

    size = config.training.batch_size
    rows = FULL_BATCH if size == "auto" else size
    tokens = rows * config.data.max_length
    return Shapes(rows=rows, tokens=tokens, trained_tokens=tokens, source="config")


@dataclass(frozen=True)
class PlannedData:
    """The real data as the trainer will see it: its examples and its plan of steps."""

    config: TrainConfig  # with `batch_size: auto` resolved as the trainer resolves it
    examples: list  # trainer/render.py's Examples (the training set)
    plan: list  # trainer/plan.py's Steps
    pad_id: int


def plan_data(config: TrainConfig, base_model: Path) -> PlannedData:
    """Tokenize and plan the real data exactly as the trainer does (dataset.py, plan.py)."""
    from transformers import AutoTokenizer

    from loraplex.trainer.dataset import prepare_datasets
    from loraplex.trainer.plan import plan_run
    from loraplex.trainer.train import pad_id, resolve_auto

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except (OSError, ValueError) as exc:
        raise EstimateError(
            f"--data needs the base model's tokenizer, and {base_model} has none that loads "
            f"({' '.join(str(exc).split())[:120]})"
        ) from None
    data = prepare_datasets(config.data, tokenizer, config.training.seed)
    config, _ = resolve_auto(config, data)  # `batch_size: auto`, sized as the trainer sizes it
    plan = plan_run(
        [len(e) for e in data.train],
        epochs=config.training.epochs,
        batch_size=config.training.batch_size,
        grad_accum=config.training.grad_accum,
        packing=config.data.packing,
        max_length=config.data.max_length,
        seed=config.training.seed,
    )
    return PlannedData(config, data.train, plan, pad_id(tokenizer))


def from_data(planned: PlannedData, flat: bool) -> Shapes:
    """The largest micro-batch and the run's totals; `flat`: rows laid end to end
    (per-example attention)."""
    examples, config = planned.examples, planned.config
    lengths = [len(e) for e in examples]
    trained = [e.trained_tokens for e in examples]
    largest = (0, 0, 0)  # tokens, rows, trained
    run_tokens = run_trained = micro_batches = 0
    for step in planned.plan:
        for micro_batch in step.micro_batches:
            tokens = laid_out_tokens(micro_batch, lengths, config.data.packing, flat)
            trained_here = sum(trained[i] for row in micro_batch for i in row)
            largest = max(largest, (tokens, len(micro_batch), trained_here))
            run_tokens += tokens
            run_trained += trained_here
            micro_batches += 1
    return Shapes(
        rows=largest[1],
        tokens=largest[0],
        trained_tokens=max(largest[2], 1),
        source="data",
        steps=len(planned.plan),
        micro_batches=micro_batches,
        run_tokens=run_tokens,
        run_trained_tokens=run_trained,
        mean_example_tokens=sum(lengths) / len(lengths),
    )


def laid_out_tokens(micro_batch, lengths: list[int], packing: bool, flat: bool) -> int:
    """Tokens of a micro-batch as packing.collate lays it out (padding included)."""
    row_tokens = [sum(lengths[i] for i in row) for row in micro_batch]
    if packing and flat:
        return sum(row_tokens)
    return len(micro_batch) * max(row_tokens)
