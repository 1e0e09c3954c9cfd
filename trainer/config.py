"""`TrainConfig`: every setting of a training run, validated before anything loads.

The YAML file and the command-line flags fill the same model: flags are
dotted overrides (`training.epochs=3`) applied on top of the YAML, then the
whole is validated once (pydantic, unknown keys refused), so a typo or a bad
value is a one-line error before the tokenizer or the model is touched.
"""

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loraplex.adapters.errors import AdapterError
from loraplex.adapters.refs import check_name
from loraplex.adapters.validate import UNSERVABLE_MODULES, VLLM_RANK_SLOTS
from loraplex.trainer.errors import ConfigError

DataFormatName = Literal["auto", "chat", "prompt-completion", "alpaca"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    train: list[Path] = Field(min_length=1, description="Training JSONL files.")
    eval: list[Path] = Field(default=[], description="Evaluation JSONL files (eval loss/epoch).")
    eval_fraction: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Hold out this fraction of train as eval."
    )
    format: DataFormatName = Field(
        default="auto", description="Record format; auto detects it per file."
    )
    max_length: int = Field(default=1024, ge=16, description="Most tokens in one example.")
    too_long: Literal["drop", "truncate"] = Field(
        default="drop", description="What to do with an example longer than max_length."
    )
    packing: bool = Field(
        default=True, description="Pack examples into full sequences (no cross-attention)."
    )

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _one_eval_source(self) -> "DataSettings":
        if self.eval and self.eval_fraction:
            raise ValueError("give eval files or eval_fraction, not both")
        return self


class LoraSettings(_Section):
    r: int = Field(default=16, description="LoRA rank (a vLLM rank slot: 8, 16, 32, ...).")
    alpha: float = Field(default=32.0, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on LoRA inputs.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear",
        description="Module names to adapt; all-linear = every linear layer except lm_head.",
    )
    use_rslora: bool = Field(default=False, description="Rank-stabilised scale alpha/sqrt(r).")

    @field_validator("r")
    @classmethod
    def _rank_slot(cls, r: int) -> int:
        if r not in VLLM_RANK_SLOTS:
            slots = ", ".join(map(str, VLLM_RANK_SLOTS))
            raise ValueError(f"rank {r} is not a vLLM rank slot ({slots})")
        return r

    @field_validator("target_modules")
    @classmethod
    def _servable_targets(cls, targets: str | list[str]) -> str | list[str]:
        if targets == ["all-linear"]:  # what `--target-modules all-linear` gives
            return "all-linear"
        if isinstance(targets, list):
            if not targets:
                raise ValueError("target_modules is empty")
            if bad := sorted(set(targets) & UNSERVABLE_MODULES):
                raise ValueError(f"vLLM does not serve LoRA on {', '.join(bad)}")
        return targets


class TrainingSettings(_Section):
    epochs: int = Field(default=3, ge=1, description="Passes over the training data.")
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default="auto",
        description="Sequences per micro-batch (packed rows when packing); auto sizes it "
        "to the data (plan.py).",
    )
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0.0, lt=1.0, description="Fraction of steps spent warming up."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Clip gradients to this norm; null = no clipping."
    )
    seed: int = Field(default=0, description="Seed for LoRA init, dropout, split and order.")
    gradient_checkpointing: bool = Field(
        default=True, description="Recompute activations in backward to save memory."
    )
    checkpoint_every: int = Field(
        default=0, ge=0, description="Save a resumable checkpoint every N steps; 0 = never."
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Newest checkpoints kept.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto = CUDA when available, else CPU."
    )
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        default="auto",
        description="Across ranks (torchrun): ddp (whole base per rank) or fsdp (FSDP2, "
        "sharded); auto = ddp.",
    )
    collective_timeout: int = Field(
        default=600,
        ge=10,
        description="Seconds a rank waits on the others before the job fails (not hangs).",
    )


class OutputSettings(_Section):
    dir: Path | None = Field(
        default=None, description="Run directory (default runs/<publish name or 'adapter'>)."
    )
    publish: str | None = Field(default=None, description="Publish the adapter under this name.")
    aliases: list[str] = Field(default=[], description="Aliases to point at the new version.")
    store: str | None = Field(
        default=None, description="Adapter store URL (default: $LORAPLEX_STORE)."
    )
    max_rank: int = Field(
        default=16, ge=1, description="Largest rank the target server serves (--max-lora-rank)."
    )
    tensorboard: bool = Field(default=True, description="Write TensorBoard logs to <dir>/logs.")

    @field_validator("publish")
    @classmethod
    def _adapter_name(cls, name: str | None) -> str | None:
        return None if name is None else _checked_name(name, "adapter name")

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, aliases: list[str]) -> list[str]:
        return [_checked_name(a, "alias") for a in aliases]

    @model_validator(mode="after")
    def _aliases_need_publish(self) -> "OutputSettings":
        if self.aliases and not self.publish:
            raise ValueError("aliases need a name to publish under (output.publish)")
        return self

    @property
    def run_dir(self) -> Path:
        return self.dir or Path("runs") / (self.publish or "adapter")


class TrainConfig(_Section):
    base_model: str | None = Field(
        default=None, description="Base model directory or known name (default: SmolLM2)."
    )
    method: Literal["qlora", "lora"] = Field(
        default="qlora", description="qlora: 4-bit NF4 base; lora: bf16 base (fp32 on CPU)."
    )
    data: DataSettings
    lora: LoraSettings = LoraSettings()
    training: TrainingSettings = TrainingSettings()
    output: OutputSettings = OutputSettings()

    @model_validator(mode="after")
    def _rank_fits_server(self) -> "TrainConfig":
        if self.lora.r > self.output.max_rank:
            raise ValueError(
                f"lora.r={self.lora.r} is above output.max_rank={self.output.max_rank}, "
                "the largest rank the server serves"
            )
        return self

    @model_validator(mode="after")
    def _qlora_not_sharded(self) -> "TrainConfig":
        if self.method == "qlora" and self.training.distributed == "fsdp":
            raise ValueError(
                "QLoRA with FSDP2 is refused: bitsandbytes' 4-bit weights do not shard "
                "reliably (bitsandbytes#1945, accelerate#3983: silently wrong results); "
                "use training.distributed=ddp (--distributed ddp)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _checked_name(name: str, what: str) -> str:
    try:
        return check_name(name, what)
    except AdapterError as exc:  # pydantic reports only ValueErrors as validation errors
        raise ValueError(str(exc)) from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read `path` (YAML, optional), apply dotted `overrides` (flags), validate."""
    raw: dict[str, Any] = {}
    where = "flags"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {_one_line(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of settings, not {type(loaded).__name__}")
        raw = loaded or {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, where)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_validation_error(exc)}") from None


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {key} must be a mapping of settings")
        node = child
    node[leaf] = value


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem, as `section.key: message` (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown setting"
    elif first["type"] == "missing":
        message = "required setting is missing"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc or 'config'}: {message}{more}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
