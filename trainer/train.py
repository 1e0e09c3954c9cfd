"""The LoRA / QLoRA fine-tuning recipe: config → data → model → loop → export → publish.

What it does, and the trade-offs it makes:

- **Data** in OpenAI chat, prompt/completion or alpaca JSONL, validated record
  by record (every bad record reported as `file:line: reason`) before the
  model loads; rendered with the base tokenizer's own chat template, the one
  vLLM serves with, and trained only on the assistant's tokens and their
  end-of-turn token, so the adapter learns to answer *and to stop*.
- **QLoRA** (4-bit NF4 base, double quantization, bf16 compute on CUDA and
  fp32 on CPU; paged 8-bit AdamW on CUDA) trains the model the server runs
  by default; **LoRA** trains on a bf16 base (fp32 on CPU). Gradient
  checkpointing trades ~30% more compute for much less activation memory.
  On CPU, LoRA dropout draws its masks four to a random 64-bit number
  (dropout.py): masks like `nn.Dropout`'s, with p rounded to 1/32768, at a
  fraction of the cost.
- **Packing** fills every row with whole examples and no padding; position ids
  restart per example and attention stays inside each example, so packing
  changes the speed, not the loss.
- **Loss** is the sum of token losses over the total trained tokens of an
  optimizer step: gradient accumulation changes memory, not the update.
- **Checkpoints** every N steps hold LoRA weights, optimizer, scheduler and
  RNG states; `--resume` continues to the same final state as an
  uninterrupted run. A run that fails or is killed publishes nothing: the
  adapter is exported and published only after the last step.
- **Export** writes a PEFT adapter that passes the store's own validation;
  **publish** stores it as the next version, with this run's record in the
  manifest.
- **Ranks** (under torchrun): each rank takes its share of every step's
  micro-batches, and DDP or FSDP2 exchanges the LoRA gradients, so N ranks
  with accumulation k train the adapter one process with N·k trains
  (distributed.py). Rank 0 alone shows progress, writes the logs, the record
  and the adapter, and publishes; any rank's failure fails the job.
"""

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loraplex.adapters.manifest import Manifest
from loraplex.trainer.checkpoint import (
    TrainState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from loraplex.trainer.config import TrainConfig
from loraplex.trainer.dataset import Datasets, prepare_datasets
from loraplex.trainer.distributed import Group, full_trainable, local_parameter_bytes
from loraplex.trainer.dropout import use_cheap_lora_dropout
from loraplex.trainer.export import export_adapter, publish_adapter
from loraplex.trainer.loop import evaluate, train_step
from loraplex.trainer.loss import TokenLoss
from loraplex.trainer.model import (
    decoder_layers,
    init_lora,
    load_model,
    load_tokenizer,
    pick_attention,
    pick_device,
    trainable_parameters,
    uses_per_example_attention,
)
from loraplex.trainer.monitor import Monitor, peak_memory_bytes
from loraplex.trainer.optim import make_optimizer, make_scheduler
from loraplex.trainer.packing import Batch, collate
from loraplex.trainer.plan import Step, auto_batching, few_steps_advice, plan_eval, plan_run
from loraplex.trainer.record import DistributedRecord, TrainingRecord, make_record, summary
from loraplex.trainer.render import show_example
from loraplex.trainer.rundir import RunDir
from loraplex.trainer.sharded import build_on_meta, materialize, return_freed_buffers_on_cpu

log = logging.getLogger("loraplex.trainer")
data_log = logging.getLogger("loraplex.trainer.data")  # what became of each file's records


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    record: TrainingRecord
    manifest: Manifest | None  # None unless published


@dataclass
class Session:
    """The live objects of one run, built from the config."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module  # TokenLoss(model), wrapped by DDP or FSDP2 across ranks
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    plan: list[Step]
    device: torch.device
    batch: Callable  # micro-batch of the plan → Batch
    group: Group
    parameter_bytes: int  # held by this rank once wrapped (FSDP2: its shards)


def train(
    config: TrainConfig,
    base_model: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[TrainState], None] | None = None,
) -> TrainResult:
    """Train an adapter on `base_model` (a resolved directory) as `config` says."""
    run = RunDir(config.output.run_dir)
    group = Group.from_env()
    tokenizer = load_tokenizer(base_model)
    data = load_data(config, tokenizer)
    config, resolved = resolve_auto(config, data, group.world)
    session = setup(config, base_model, data, tokenizer, group)
    try:
        if group.main:
            run.start(config, resume)
        group.barrier()
        state = restore(run, session) if resume else TrainState(world_size=group.world)
        loop(config, session, data, run, state, progress, on_step)
        return finish(config, base_model, session, data, run, state, resolved)
    finally:
        group.stop()


def resolve_auto(
    config: TrainConfig, data: Datasets, world: int = 1
) -> tuple[TrainConfig, dict[str, Any]]:
    """The config with `batch_size: auto` sized to the data, and what was resolved."""
    if config.training.batch_size != "auto":
        return config, {}
    batching = auto_batching(
        [len(e) for e in data.train],
        epochs=config.training.epochs,
        grad_accum=config.training.grad_accum * world,  # the step of all ranks
        packing=config.data.packing,
        max_length=config.data.max_length,
        seed=config.training.seed,
        may_unpack="packing" not in config.data.model_fields_set,
    )
    resolved: dict[str, Any] = {"training.batch_size": batching.batch_size}
    if batching.packing != config.data.packing:
        resolved["data.packing"] = batching.packing
    unit = "packed row" if batching.packing else "example"
    log.info(
        "batch_size auto: %d %s%s per micro-batch%s, %d optimizer steps",
        batching.batch_size,
        unit,
        "s" * (batching.batch_size != 1),
        "" if batching.packing == config.data.packing else " (packing off: the data is small)",
        batching.steps,
    )
    training = config.training.model_copy(update={"batch_size": batching.batch_size})
    data_settings = config.data.model_copy(update={"packing": batching.packing})
    return config.model_copy(update={"training": training, "data": data_settings}), resolved


def setup(
    config: TrainConfig, base_model: Path, data: Datasets, tokenizer, group: Group
) -> Session:
    """Process group, model with LoRA (wrapped across ranks), optimizer, schedule, plan."""
    group.choose(config.training.distributed)
    device = group.device(pick_device(config.training.device))
    group.start(device, config.training.collective_timeout)
    seed, sharded = config.training.seed, group.strategy == "fsdp"
    if sharded:
        if device.type == "cpu":
            return_freed_buffers_on_cpu()
        log.info("building %s on the meta device, to load it shard by shard", base_model)
        model = build_on_meta(
            base_model, config.lora, device,
            config.training.gradient_checkpointing, pick_attention(base_model, device),
        )  # fmt: skip
    else:
        log.info("loading %s for %s on %s", base_model, config.method, device)
        model = load_model(
            base_model, config.method, config.lora, device, config.training.gradient_checkpointing
        )
        init_lora(model, seed)
    if device.type == "cpu":
        use_cheap_lora_dropout(model)
    torch.manual_seed(seed + 7919 * group.rank)  # each rank its own dropout masks
    loss_fn = group.wrap(TokenLoss(model), decoder_layers(model), device)
    if sharded:
        materialize(model, base_model, device, seed)
    params = list(trainable_parameters(model).values())  # FSDP2's shards, once wrapped
    parameter_bytes = local_parameter_bytes(model)
    plan = plan_run([len(e) for e in data.train], **plan_settings(config, world=group.world))
    if advice := few_steps_advice(len(plan)):
        log.warning("warning: %s", advice)
    optimizer = make_optimizer(params, config.training, config.method, device)
    scheduler = make_scheduler(optimizer, config.training, len(plan))
    pad, flat = pad_id(tokenizer), uses_per_example_attention(model)

    def batch(examples, micro_batch):
        return collate(examples, micro_batch, config.data.packing, pad, flat)

    return Session(
        model, loss_fn, params, optimizer, scheduler, plan, device, batch, group, parameter_bytes
    )


def restore(run: RunDir, s: Session) -> TrainState:
    checkpoints = list_checkpoints(run.checkpoints)
    if not checkpoints:
        log.info("no checkpoint in %s yet: starting from the first step", run.root)
        return TrainState()
    state = load_checkpoint(checkpoints[-1], s.model, s.optimizer, s.scheduler, s.group)
    log.info("resuming %s at step %d of %d", run.root, state.step, len(s.plan))
    return state


def loop(
    config: TrainConfig,
    s: Session,
    data: Datasets,
    run: RunDir,
    state: TrainState,
    progress: bool,
    on_step: Callable[[TrainState], None] | None,
) -> None:
    """Every remaining step of the plan; eval at each epoch's end; checkpoints."""
    eval_plan = plan_eval([len(e) for e in data.eval], **plan_settings(config, eval=True))
    eval_batches = rank_share(s, eval_plan, data.eval)
    logs = run.logs if config.output.tensorboard and s.group.main else None
    start = {
        "batch_size": config.training.batch_size,
        "n_epochs": config.training.epochs,
        "learning_rate": config.training.learning_rate,
        "packing": config.data.packing,
        "resumed_at_step": state.step,
    }
    monitor = Monitor(
        len(s.plan), state.step, logs, progress and s.group.main, s.group.main, run.metrics, start
    )
    every = config.training.checkpoint_every
    s.loss_fn.train()
    try:
        for index in range(state.step, len(s.plan)):
            step = s.plan[index]
            started, cpu_started = time.monotonic(), time.process_time()
            batches = rank_share(s, step.micro_batches, data.train)
            result = train_step(
                s.loss_fn, batches, s.optimizer, s.scheduler, s.params,
                config.training.max_grad_norm, s.device, s.group,
            )  # fmt: skip
            state.step += 1
            state.trained_tokens += result.tokens
            state.train_seconds += time.monotonic() - started
            state.train_cpu_seconds += time.process_time() - cpu_started
            state.losses.append(result.loss)
            monitor.step(state.step, result)
            if step.last_of_epoch:
                end_epoch(s, index, state, monitor, eval_batches)
            if every and (state.step % every == 0 or state.step == len(s.plan)):
                keep = config.training.keep_checkpoints
                save_checkpoint(
                    run.checkpoints, s.model, s.optimizer, s.scheduler, state, keep, s.group
                )
            if on_step is not None:
                on_step(state)
    finally:
        monitor.close()


def finish(
    config: TrainConfig,
    base_model: Path,
    s: Session,
    data: Datasets,
    run: RunDir,
    state: TrainState,
    resolved: dict[str, Any],
) -> TrainResult:
    """Rank 0: export the adapter through the gate, write the record, publish."""
    peaks = s.group.gather(peak_memory_bytes(s.device))
    ranks = DistributedRecord(
        world_size=s.group.world,
        strategy=s.group.strategy,
        nodes=s.group.nodes,
        peak_memory_bytes=peaks,
        parameter_bytes=s.group.gather(s.parameter_bytes),
    )
    record = make_record(
        config,
        resolved,
        str(config.base_model or base_model),
        str(s.device),
        data.files,
        (len(data.train), len(data.eval)),
        state,
        max(peaks),
        ranks,
    )
    weights = full_trainable(s.model)  # every rank: FSDP2 gathers
    if not s.group.main:
        return TrainResult(run.root, run.adapter, record, None)
    export_adapter(s.model, run.adapter, base_model, config.output.max_rank, weights)
    run.record.write_text(record.model_dump_json(indent=2) + "\n")
    log.info("%s\nadapter: %s", summary(record), run.adapter)
    manifest = None
    if config.output.publish:
        manifest = publish_adapter(
            run.adapter, config.output, base_model, record.model_dump(mode="json")
        )
        log.info("published %s to %s", manifest.ref, config.output.store or "the default store")
    return TrainResult(run.root, run.adapter, record, manifest)


def load_data(config: TrainConfig, tokenizer) -> Datasets:
    """Read, validate and render the data; report every problem and what was kept."""
    data = prepare_datasets(
        config.data, tokenizer, config.training.seed, report=lambda p: data_log.warning("%s", p)
    )
    for f in data.files:
        data_log.info(
            "%s (%s): %d records → %d examples (%d invalid, %d too long dropped, %d truncated)",
            f.path,
            f.format,
            f.records,
            f.examples,
            f.invalid,
            f.dropped,
            f.truncated,
        )
    log.info("%d training examples, %d eval examples", len(data.train), len(data.eval))
    return data


def end_epoch(s: Session, index: int, state: TrainState, monitor, eval_batches) -> None:
    """Record the epoch's mean step loss and, with eval data, its eval loss."""
    epoch = s.plan[index].epoch
    first = next(i for i, step in enumerate(s.plan) if step.epoch == epoch)
    train_loss = statistics.fmean(state.losses[first : index + 1])
    eval_loss = evaluate(s.loss_fn, eval_batches, s.device, s.group) if eval_batches else None
    state.epochs.append({"epoch": epoch + 1, "train_loss": train_loss, "eval_loss": eval_loss})
    monitor.epoch(epoch, state.step, train_loss, eval_loss)


def rank_share(s: Session, micro_batches, examples) -> list[Batch]:
    """This rank's micro-batches of a step (all of them for one process), fillers included."""
    return [
        s.batch(examples, mb) if mb is not None else filler(s, micro_batches, examples)
        for mb in s.group.share(micro_batches)
    ]


def filler(s: Session, micro_batches, examples) -> Batch:
    return s.batch(examples, micro_batches[0]).untrained()


def plan_settings(config: TrainConfig, eval: bool = False, world: int = 1) -> dict:
    settings = dict(
        batch_size=config.training.batch_size,
        packing=config.data.packing,
        max_length=config.data.max_length,
    )
    if not eval:
        settings.update(
            epochs=config.training.epochs,
            grad_accum=config.training.grad_accum * world,  # the step of all ranks
            seed=config.training.seed,
        )
    return settings


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def preview(config: TrainConfig, base_model: Path, color: bool = False) -> str:
    """The first training example, rendered, with its trained tokens marked."""
    tokenizer = load_tokenizer(base_model)
    data = load_data(config, tokenizer)
    return show_example(tokenizer, data.train[0], color=color)
