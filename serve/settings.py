"""Gateway settings: one typed object, read once at start.

Every field can be set by a `LORAPLEX_<FIELD>` environment variable; the
command line overrides the environment (flags are passed as init values,
which pydantic-settings ranks above the environment).
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# vLLM's LoRA rank slots (vllm.config.lora.MaxLoRARanks).
VLLM_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAPLEX_", extra="forbid")

    base_model: str = Field(
        default="smollm2-135m-instruct",
        description="Base model: a Hugging Face model directory or a name `loraplex make-model` "
        "knows (prepared once into the cache).",
    )
    store: str | None = Field(
        default=None, description="Adapter store URL (file:// path or s3://bucket/prefix)."
    )
    cache_dir: Path = Field(
        default=Path(".loraplex/cache"),
        description="Where fetched and verified adapters are kept on local disk.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    served_model_name: str | None = Field(
        default=None, description="Name clients use for the base model (default: its folder)."
    )
    quantization: str = Field(
        default="bitsandbytes",
        description="bitsandbytes (4-bit NF4), none (bf16/fp32), or any vLLM method.",
    )
    max_loras: int | None = Field(
        default=None,
        ge=1,
        description="Adapters in one batch (LoRA slots); default: sized to the load.",
    )
    lora_slot_budget_mib: int | None = Field(
        default=None, gt=0, description="Memory for LoRA slots (default 2048 on CPU, 1024 on GPU)."
    )
    max_lora_rank: int = Field(default=16, description="Largest adapter rank served.")
    max_cpu_loras: int = Field(default=64, ge=1, description="Adapters kept in host memory.")
    preload: list[str] = Field(default_factory=list, description="Adapters loaded at start.")
    poll_interval: float | None = Field(
        default=None,
        gt=0,
        description="Seconds between store polls (default 0.5 for a local store, 2 for S3).",
    )
    scheduler: Literal["loraplex", "vllm"] = Field(
        default="loraplex",
        description="Admission: loraplex (adapter-aware, serve/scheduling) or vllm's own.",
    )
    adapter_max_wait: float = Field(
        default=2.0,
        gt=0,
        description="Seconds an adapter may wait for a LoRA slot before one is drained for it.",
    )
    cpu_lora_ops: Literal["loraplex", "grouped", "vllm"] = Field(
        default="loraplex",
        description="LoRA ops on the CPU platform (no effect on CUDA): loraplex (fused), "
        "grouped (slice by slice, for comparisons) or vllm's own.",
    )
    # Access
    api_keys_file: Path | None = Field(
        default=None, description="JSON list of {name, sha256, role, adapters}; none: no auth."
    )
    api_keys: str | None = Field(default=None, description="The same JSON, inline.")
    metrics_require_key: bool = Field(default=False, description="Put /metrics behind a key.")
    # Limits
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="Largest request.")
    max_tokens_cap: int | None = Field(
        default=None, gt=0, description="Largest max_tokens a request may ask for."
    )
    max_n: int = Field(default=8, ge=1, description="Largest `n` (choices per request).")
    max_concurrent_per_key: int = Field(
        default=64, ge=1, description="Requests one API key may have running (429 past it)."
    )
    max_queued_requests: int = Field(
        default=1024, ge=1, description="Engine requests in flight before new ones get 503."
    )
    drain_seconds: int = Field(
        default=30, ge=0, description="On SIGTERM, time running requests get to finish."
    )
    # Fine-tuning API (serve/fine_tuning.py)
    embedded_worker: bool | None = Field(
        default=None,
        description="Run one fine-tuning worker as a child process (default: on with a local "
        "store, off with S3, where worker Deployments run jobs).",
    )
    worker_args: list[str] = Field(
        default_factory=list, description="Extra `loraplex worker` arguments for that worker."
    )
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="Largest file upload (/v1/files)."
    )
    max_files_per_tenant: int = Field(default=100, ge=1, description="Files one tenant may keep.")
    max_queued_jobs_per_tenant: int = Field(
        default=5, ge=1, description="Fine-tuning jobs one tenant may have waiting (429 past it)."
    )
    default_tenant: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Tenant of every request when no API keys are configured.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_is_a_vllm_slot(cls, rank: int) -> int:
        if rank not in VLLM_RANK_SLOTS:
            slots = ", ".join(map(str, VLLM_RANK_SLOTS))
            raise ValueError(f"max_lora_rank {rank} is not a vLLM rank slot; use one of {slots}")
        return rank

    def effective_poll_interval(self, store_url: str) -> float:
        if self.poll_interval is not None:
            return self.poll_interval
        return 2.0 if store_url.startswith("s3://") else 0.5

    def runs_embedded_worker(self, store_url: str) -> bool:
        if self.embedded_worker is not None:
            return self.embedded_worker
        return not store_url.startswith("s3://")

    def base_name(self) -> str:
        return self.served_model_name or Path(self.base_model).name or "base"
