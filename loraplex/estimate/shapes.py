"""The micro-batches a run will see: from the config alone, or from the real data.

With data, the examples are tokenized and planned exactly as the trainer
does (dataset.py, plan.py) and each micro-batch is laid out as packing.py
lays it out: packed rows padded to the longest row, or (per-example
attention on the CPU) all examples end to end, or one padded example per
row. The largest micro-batch sets the peak; the sum sets the time.
"""

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


def from_data(config: TrainConfig, base_model: Path, flat: bool) -> Shapes:
    """Tokenize and plan the real data; `flat`: rows laid end to end (per-example attention)."""
    from transformers import AutoTokenizer

    from loraplex.trainer.dataset import prepare_datasets
    from loraplex.trainer.plan import plan_run
    from loraplex.trainer.train import resolve_auto

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except (OSError, ValueError) as exc:
        raise EstimateError(
            f"--data needs the base model's tokenizer, and {base_model} has none that loads "
            f"({' '.join(str(exc).split())[:120]})"
        ) from None
    data = prepare_datasets(config.data, tokenizer, config.training.seed)
    config, _ = resolve_auto(config, data)  # `batch_size: auto`, sized as the trainer sizes it
    examples = data.train
    lengths = [len(e) for e in examples]
    trained = [e.trained_tokens for e in examples]
    plan = plan_run(
        lengths,
        epochs=config.training.epochs,
        batch_size=config.training.batch_size,
        grad_accum=config.training.grad_accum,
        packing=config.data.packing,
        max_length=config.data.max_length,
        seed=config.training.seed,
    )
    largest = (0, 0, 0)  # tokens, rows, trained
    run_tokens = run_trained = micro_batches = 0
    for step in plan:
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
        steps=len(plan),
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
