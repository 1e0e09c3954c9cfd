"""The base model's shapes, from `config.json` alone: transformers builds it on the meta device.

Nothing is downloaded or allocated: `AutoModelForCausalLM.from_config` under
`torch.device("meta")` gives every module with its real shapes, so the counts
below (linear layers, embeddings, the output head, attention heads) are the
model's own, for any architecture transformers knows.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from loraplex.estimate.errors import EstimateError

# Attention used for the meta-device model (registered in activations.py).
META_ATTENTION = "loraplex_estimate"


@dataclass(frozen=True)
class Linear:
    name: str  # short name (q_proj, ...)
    in_features: int
    out_features: int
    bias: bool


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    linears: tuple[Linear, ...]  # of one decoder layer
    params: int  # every parameter, tied ones once
    linear_params: int  # weights of the decoder's linear layers (what 4-bit quantizes)
    head_params: int  # the output head's own weights (0 when tied to the embeddings)
    tied: bool
    config_dtype: str | None

    @property
    def other_params(self) -> int:
        """Embeddings, norms, biases, the head: what stays at the base dtype under 4-bit."""
        return self.params - self.linear_params

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of every layer for one token: 2 × layers × kv_heads × head_dim × bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def read_config(base_model: Path):
    from transformers import AutoConfig

    path = Path(base_model) / "config.json"
    if not path.is_file():
        raise EstimateError(f"{base_model} has no config.json")
    try:
        json.loads(path.read_text())
        return AutoConfig.from_pretrained(base_model)
    except json.JSONDecodeError as exc:
        raise EstimateError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, KeyError) as exc:
        raise EstimateError(
            f"{path}: transformers does not know this model ({_first(exc)})"
        ) from None


def meta_model(config, dtype: torch.dtype = torch.bfloat16, attention: str | None = None):
    """The causal LM on the meta device: real modules and shapes, no memory."""
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attention} if attention else {}
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    except (ValueError, KeyError, TypeError) as exc:
        kind = getattr(config, "model_type", "?")
        raise EstimateError(
            f"cannot build a causal LM for model type '{kind}' on the meta device: {_first(exc)}"
        ) from None
    model.config.use_cache = False
    return model


def decoder_layers(model) -> torch.nn.ModuleList:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        kind = model.config.model_type
        raise EstimateError(f"model type '{kind}' has no decoder layers loraplex can estimate")
    return layers


def _base_linears(module: torch.nn.Module, head=None) -> list[tuple[str, torch.nn.Linear]]:
    """(short name, layer) of every linear layer of the base, LoRA's own left out."""
    found = []
    for name, m in module.named_modules():
        if not isinstance(m, torch.nn.Linear) or m is head or "lora_" in name:
            continue
        found.append((name.removesuffix(".base_layer").rsplit(".", 1)[-1], m))
    return found


def describe(model) -> Architecture:
    """The shapes an estimate needs, read from a (meta) causal LM, with or without LoRA."""
    config = model.config.get_text_config()
    layers = decoder_layers(model)
    head = model.get_output_embeddings()
    linears = tuple(
        Linear(name, m.in_features, m.out_features, m.bias is not None)
        for name, m in _base_linears(layers[0])
    )
    unique = {id(p): p for name, p in model.named_parameters() if "lora_" not in name}
    params = sum(p.numel() for p in unique.values())
    linear_params = sum(m.weight.numel() for _, m in _base_linears(model, head))
    embed = model.get_input_embeddings()
    tied = head is not None and head.weight is embed.weight
    heads = config.num_attention_heads
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return Architecture(
        model_type=config.model_type,
        layers=len(layers),
        hidden=hidden,
        intermediate=getattr(config, "intermediate_size", 4 * hidden),
        vocab=embed.weight.shape[0],
        attention_heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        linears=linears,
        params=params,
        linear_params=linear_params,
        head_params=0 if tied or head is None else head.weight.numel(),
        tied=tied,
        config_dtype=str(getattr(config, "dtype", None) or "").removeprefix("torch.") or None,
    )


def read_architecture(base_model: Path) -> Architecture:
    return describe(meta_model(read_config(base_model)))


def _first(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
