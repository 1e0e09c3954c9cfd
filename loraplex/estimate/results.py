"""The typed results of an estimate: what the table and `--json` are both made from."""

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class MemoryItem:
    what: str
    bytes: int
    how: str  # how it was counted, in a few words


@dataclass(frozen=True)
class Shapes:
    """The micro-batch that sets the peak, and the run's token counts."""

    rows: int  # sequences in the largest micro-batch
    tokens: int  # tokens the model processes in it (padding included)
    trained_tokens: int  # tokens with a label in it
    source: str  # "config" (batch × max_length, all trained) or "data"
    steps: int | None = None
    micro_batches: int | None = None
    run_tokens: int | None = None  # processed tokens over the run (every epoch)
    run_trained_tokens: int | None = None
    mean_example_tokens: float | None = None


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    tokens_per_second: float  # trained tokens per second
    flops: float | None  # FLOPs of the run (GPU model)
    how: str


@dataclass
class TrainEstimate:
    base_model: str
    model_type: str
    method: str
    device: str
    device_memory_bytes: int | None
    gradient_checkpointing: bool
    batch_size: int
    max_length: int
    lora_r: int
    lora_params: int
    shapes: Shapes
    items: list[MemoryItem]
    activation_bytes_per_token: dict[str, float]  # with / without checkpointing
    time: TimeEstimate | None = None
    notes: list[str] = field(default_factory=list)
    ranks: int = 1  # processes of the run (torchrun's --nproc-per-node)
    strategy: str = "none"  # none, ddp or fsdp: how the ranks hold the model

    @property
    def peak_bytes(self) -> int:
        """Peak of one device, that is of one rank: every rank holds the same."""
        return sum(item.bytes for item in self.items)

    @property
    def fits(self) -> bool | None:
        if self.device_memory_bytes is None:
            return None
        return self.peak_bytes <= self.device_memory_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "fits": self.fits}


@dataclass
class ServeEstimate:
    base_model: str
    model_type: str
    device: str
    device_memory_bytes: int | None
    quantization: str
    dtype: str
    max_model_len: int
    max_loras: int
    max_lora_rank: int
    gpu_memory_utilization: float
    items: list[MemoryItem]  # weights, LoRA slots, activations, ... then the KV cache
    kv_bytes_per_token: int
    kv_cache_bytes: int
    kv_tokens: int
    concurrent_sequences: float
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.kv_tokens >= self.max_model_len

    def to_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}
